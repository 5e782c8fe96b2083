"""The dataset card documents exactly what the code writes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

import umd_dataset
from umd_dataset import load_schema
from umd_dataset.release.card import card_text
from umd_dataset.release.format import DESCRIPTOR, FORMAT_VERSION, LABELS, MANIFEST, SPLITS, ReleaseInfo, manifest_schema

ROOT_CARD = Path(__file__).resolve().parents[2] / "dataset_card.md"
CARD = card_text()


def test_the_card_read_is_the_one_copy_at_the_repository_root():
    assert CARD == ROOT_CARD.read_text()
    packaged = Path(umd_dataset.__file__).parent / "dataset_card.md"
    assert not packaged.exists(), "the card must live once, at the repository root (wheels carry a copy)"


def _header() -> dict:
    return yaml.safe_load(CARD.split("---\n")[1])


def test_card_header_has_the_hub_fields():
    header = _header()
    assert header["license"] == "cc-by-4.0"
    assert "2602.07643" in header["citation"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", header["version"])
    configs = {c["config_name"]: c for c in header["configs"]}
    assert set(configs) == {"petct", "petmri", "paired"}
    for config in configs.values():
        assert [f["split"] for f in config["data_files"]] == ["train", "validation", "test"]


def test_card_documents_the_manifest_columns_and_files():
    section = CARD.split("### `manifest.parquet` columns")[1]
    documented = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    assert documented == manifest_schema().names
    for name in (DESCRIPTOR, MANIFEST, LABELS, SPLITS):
        assert name in CARD
    assert f"## The release format (version {FORMAT_VERSION})" in CARD
    descriptor = CARD.split("### `release.json`")[1].split("###")[0]
    fields = set(re.findall(r"`(\w+)`", descriptor))
    assert set(ReleaseInfo.__dataclass_fields__) | {"format"} <= fields


def test_card_organ_table_matches_the_schema():
    rows = re.findall(r"^\| (\d+) \| (\w+) \| ([^|]+) \| ?(\w*) ?\| (\d+) \|$", CARD, flags=re.M)
    schema = load_schema()
    assert [(int(i), slug, name.strip(), lat or None, code) for i, slug, name, lat, code in rows] == [
        (o.id, o.slug, o.name, o.laterality, o.snomed_code) for o in schema
    ]
