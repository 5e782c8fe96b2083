"""The dataset card documents exactly what the code writes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from umd_dataset import load_schema
from umd_dataset.release import DESCRIPTOR, FORMAT_VERSION, LABELS, MANIFEST, SPLITS, ReleaseInfo, manifest_schema

CARD = (Path(__file__).resolve().parents[1] / "src" / "umd_dataset" / "dataset_card.md").read_text()


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
