"""The Hub export: shards of whole subjects, a default config, its Croissant metadata, bytes always
embedded, and an error that spells its option for each reader."""

from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq
import pytest
import yaml

from umd_dataset import OutputExistsError
from umd_dataset.io.files import sha256_file
from umd_dataset.views.export import export_hf


@pytest.fixture(scope="module")
def export_dir(small_release, tmp_path_factory):
    return export_hf(small_release, tmp_path_factory.mktemp("export") / "hub", min_shards=2)


def test_shards_are_a_multiple_of_min_shards_of_whole_subjects():
    from umd_dataset.views.export import shard_subjects

    assert shard_subjects([], 500, 16) == []
    assert shard_subjects([10] * 3, 500, 16) == [range(0, 1), range(1, 2), range(2, 3)]  # fewer subjects: one each
    assert shard_subjects([10] * 5, 500, 2) == [range(0, 2), range(2, 5)]
    # the real UMD's train split: about 330 subjects of 300 MB -> 198 shards of 500 MB -> 208, a multiple of 16
    plan = shard_subjects([300 * 2**20] * 330, 500 * 2**20, 16)
    assert len(plan) == 208 and [i for r in plan for i in r] == list(range(330))
    assert {len(r) for r in plan} == {1, 2}


def test_every_shard_holds_whole_subjects_in_subject_order(export_dir, small_release):
    for config in ("petct", "petmri", "paired"):
        for split in ("train", "validation", "test"):
            shards = sorted((export_dir / "data" / config).glob(f"{split}-*.parquet"))
            subjects = [pq.read_table(p, columns=["subject"]).column("subject").to_pylist() for p in shards]
            flat = [s for shard in subjects for s in shard]
            assert flat == sorted(flat)  # subject order, and so no subject in two shards unless adjacent ...
            for before, after in zip(subjects, subjects[1:]):
                assert before[-1] != after[0]  # ... and never across a shard boundary
            scans = {r.subject for r in small_release.select(study=config, split=split)} if config != "paired" else \
                {s.id for s in small_release.pairs(split=split)}
            assert set(flat) == scans


def test_the_export_has_a_default_config(export_dir, tmp_path):
    import datasets

    card = yaml.safe_load((export_dir / "README.md").read_text().split("---\n")[1])
    assert [c["config_name"] for c in card["configs"] if c.get("default")] == ["petct"]
    loaded = datasets.load_dataset(str(export_dir), cache_dir=str(tmp_path / "hf"))  # no config name
    assert set(loaded) == {"train", "validation", "test"} and set(loaded["train"]["study"]) == {"petct"}


def test_export_embeds_the_bytes_even_where_a_file_of_that_name_exists(small_release, tmp_path, monkeypatch):
    """`datasets.Nifti` keeps only the path of a value whose path names a file: run from a folder
    holding ``pet.nii.gz``, the export lost every PET."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("ct.nii.gz", "pet.nii.gz", "mri.nii.gz"):
        (work / name).write_bytes(b"not a scan of the release")
    monkeypatch.chdir(work)
    out = export_hf(small_release, tmp_path / "hub")
    for shard in (out / "data").rglob("*.parquet"):
        table = pq.read_table(shard)
        for column in ("image", "label", "ct", "petct_pet", "mri", "petmri_pet"):
            if column in table.column_names:
                values = table.column(column).to_pylist()
                assert all(v is None or v["bytes"] for v in values), f"{shard.name}: {column} without bytes"


def test_an_existing_export_is_refused_with_the_option_of_each_reader(export_dir, small_release):
    with pytest.raises(OutputExistsError) as caught:
        export_hf(small_release, export_dir)
    assert str(caught.value) == f"{export_dir} exists; pass overwrite=True to replace it."
    assert caught.value.for_cli() == f"{export_dir} exists; pass --overwrite to replace it."


def test_export_croissant_validates_and_iterates_offline(export_dir, small_release):
    mlc = pytest.importorskip("mlcroissant")

    document = json.loads((export_dir / "croissant.json").read_text())
    shards = {n["contentUrl"]: n["sha256"] for n in document["distribution"] if n["@type"] == "cr:FileObject"}
    assert shards == {p.relative_to(export_dir).as_posix(): sha256_file(p) for p in (export_dir / "data").rglob("*.parquet")}
    dataset = mlc.Dataset(jsonld=str(export_dir / "croissant.json"))  # the network is off (tests/conftest.py)
    issues = dataset.metadata.ctx.issues
    assert not issues.errors and all("datePublished" in w for w in issues.warnings)  # no date: the same bytes every time
    records = list(dataset.records(record_set="petct"))
    keys = sorted((r["petct/subject"].decode(), r["petct/scan"].decode(), r["petct/split"].decode()) for r in records)
    assert keys == sorted((r.subject, r.scan, r.split) for r in small_release.select(study="petct"))
    record = small_release.select(study="petct", scan="pet")[0]
    row = next(r for r in records if (r["petct/subject"].decode(), r["petct/scan"].decode()) == (record.subject, "pet"))
    assert row["petct/image"] == gzip.decompress(small_release.image_path(record).read_bytes())  # stored uncompressed
    assert list(row["petct/shape"]) == list(record.shape)
    paired = list(dataset.records(record_set="paired"))
    assert sorted(r["paired/subject"].decode() for r in paired) == sorted(s.id for s in small_release.pairs())
    assert all(r["paired/petct_pet"] and r["paired/petmri_pet"] for r in paired)
    organs = [(r["organs/id"], r["organs/slug"]) for r in dataset.records(record_set="organs")]
    assert organs == [(o.id, o.slug) for o in small_release.schema]


def test_export_rows_hold_uncompressed_nifti_under_zstd_and_decode_to_the_release_voxels(export_dir, small_release, tmp_path):
    """Issue 13, item 3: stock `datasets.Nifti` decodes ``.nii.gz`` bytes with Python's gzip (a row took
    4-5 s for a whole-body CT); the export stores the NIfTI uncompressed and lets Parquet's zstd keep
    the size, a row group per row."""
    import datasets
    import numpy as np

    from umd_dataset.io.nifti import read_nifti

    shard = sorted((export_dir / "data" / "petct").glob("train-*.parquet"))[0]
    metadata = pq.ParquetFile(shard).metadata
    assert metadata.num_row_groups == metadata.num_rows
    columns = {metadata.row_group(0).column(i).path_in_schema: metadata.row_group(0).column(i).compression
               for i in range(metadata.num_columns)}
    assert columns["image.bytes"] == columns["label.bytes"] == "ZSTD"
    raw = pq.read_table(shard, columns=["image"]).column("image").to_pylist()
    assert all(v["path"].endswith(".nii") and v["bytes"][:2] != b"\x1f\x8b" for v in raw)
    for streaming in (False, True):
        rows = datasets.load_dataset(str(export_dir), "petct", split="train", streaming=streaming, cache_dir=str(tmp_path / "hf"))
        seen = 0
        for row in rows:
            record = next(r for r in small_release.select(study="petct") if (r.subject, r.scan) == (row["subject"], row["scan"]))
            for column, path in (("image", small_release.image_path(record)), ("label", small_release.label_path(record))):
                array = np.asanyarray(row[column].dataobj)
                expected, affine = read_nifti(path)
                assert array.dtype == expected.dtype and np.array_equal(array, expected), (record.key, column)
                assert np.allclose(row[column].affine, affine)
            seen += 1
        assert seen == len(small_release.select(study="petct", split="train"))
