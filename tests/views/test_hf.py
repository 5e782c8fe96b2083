"""The Hugging Face view: load_dataset, configs, splits, organ selection, streaming, the Hub export."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from helpers import edit_descriptor
from umd_dataset import ReleaseNotFoundError, UMDError
from umd_dataset.views.export import export_hf
from umd_dataset.views.hf import load_dataset
from umd_dataset.io import read_nifti


def test_configs_splits_and_columns(small_release_root, small_release):
    petct = load_dataset("umd", "petct", data_dir=small_release_root)
    assert set(petct) == {"train", "validation", "test"}
    assert sum(len(d) for d in petct.values()) == 10
    row = petct["train"][0]
    assert {"subject", "study", "scan", "domain", "spacing_mm", "organs", "image", "label"} <= set(row)
    assert row["study"] == "petct" and len(row["spacing_mm"]) == 3
    record = next(r for r in small_release.scans if (r.subject, r.study, r.scan) == (row["subject"], "petct", row["scan"]))
    image, affine = read_nifti(small_release.image_path(record))
    assert np.array_equal(np.asanyarray(row["image"].dataobj), image)
    assert np.allclose(row["image"].affine, affine)
    # no subject in two splits
    seen = [set(d["subject"]) for d in petct.values()]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])


def test_paired_rows_never_mix_subjects(small_release_root):
    paired = load_dataset(str(small_release_root), "paired")
    assert sum(len(d) for d in paired.values()) == 4
    for split in paired.values():
        for row in split.with_format(None).cast_column("ct", split.features["ct"].__class__(decode=False)).cast_column(
            "petmri_pet", split.features["petmri_pet"].__class__(decode=False)
        ):
            assert f"/{row['subject']}/petct/ct.nii.gz" in row["ct"]["path"]
            assert f"/{row['subject']}/petmri/pet.nii.gz" in row["petmri_pet"]["path"]


def test_split_organs_version_and_streaming(small_release_root):
    test = load_dataset(str(small_release_root), "petmri", split="test")
    assert set(test["split"]) == {"test"}
    liver = load_dataset(str(small_release_root), "petct", split="train", organs=["liver", "brain"])
    assert all({"liver", "brain"} <= set(organs) for organs in liver["organs"])
    with pytest.raises(UMDError, match=r"holds UMD-test version 1\.0\.0, not 2\.0\.0"):
        load_dataset(str(small_release_root), version="2.0.0")
    stream = load_dataset(str(small_release_root), "petct", split="train", streaming=True)
    first = next(iter(stream))
    assert first["study"] == "petct" and np.asanyarray(first["image"].dataobj).ndim == 3


def test_missing_release_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.delenv("UMD_DATA_DIR", raising=False)
    with pytest.raises(ReleaseNotFoundError, match=r"data_dir=.*UMD_DATA_DIR.*hub_repo=.*'umd-mini'"):
        load_dataset("umd")
    with pytest.raises(ReleaseNotFoundError, match="HF_HUB_OFFLINE is set"):
        load_dataset("umd", hub_repo="someone/umd")
    with pytest.raises(ReleaseNotFoundError, match="umd synth"):
        load_dataset(str(tmp_path / "nothing"))


def test_umd_mini_is_generated_on_first_use_and_says_where(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("UMD_CACHE", str(tmp_path))
    train = load_dataset("umd-mini", "paired", split="train")
    assert (tmp_path / "umd-mini-1.0.0" / "release.json").is_file()
    told = capsys.readouterr().err
    assert f"generating the synthetic UMD-mini 1.0.0 (about 20 MB, once) into {tmp_path / 'umd-mini-1.0.0'}" in told
    assert "UMD_CACHE" in told  # ... and how to put it elsewhere
    load_dataset("umd-mini", "petct", split="test")
    assert "generating" not in capsys.readouterr().err  # reading never writes again
    from umd_dataset.synthetic.release import SynthConfig, plan

    expected = sorted(s.id for s in plan(SynthConfig()) if s.split == "train" and len(s.studies) == 2)
    assert sorted(train["subject"]) == expected and len(expected) == 4
    assert train[0]["ct"].shape == (80, 80, 100) and train[0]["petct_pet"].shape == (50, 50, 100)


def test_export_loads_with_stock_datasets_in_a_fresh_process(small_release_root, small_release, tmp_path):
    out = export_hf(small_release, tmp_path / "hub", min_shards=4)
    card = (out / "README.md").read_text()
    assert "config_name: paired" in card and "data/petct/train-*.parquet" in card and "2602.07643" in card
    # 3 train subjects (6 scans): fewer subjects than min_shards -> one shard per subject, never one per scan
    assert len(list((out / "data" / "petct").glob("train-*.parquet"))) == 3
    script = """
import json, sys, numpy as np, datasets
from datasets.distributed import split_dataset_by_node
ds = datasets.load_dataset(sys.argv[1], "petct", split="test")
row = ds[0]
default = datasets.load_dataset(sys.argv[1], split="test")  # no config name: the card's default config
stream = datasets.load_dataset(sys.argv[1], "paired", split="train", streaming=True)
ranks = [[r["subject"] for r in split_dataset_by_node(stream, rank=i, world_size=2)] for i in range(2)]
print(json.dumps({"n": len(ds), "subject": row["subject"], "scan": row["scan"], "sum": float(np.asanyarray(row["image"].dataobj).sum()),
                  "shape": list(row["image"].shape), "ranks": ranks, "modules": "umd_dataset" in sys.modules,
                  "default": sorted(set(default["study"]))}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["n"] == len(small_release.select(study="petct", split="test")) and not loaded["modules"]
    assert loaded["default"] == ["petct"]
    record = next(r for r in small_release.scans if (r.subject, r.study, r.scan) == (loaded["subject"], "petct", loaded["scan"]))
    image, _ = read_nifti(small_release.image_path(record))
    assert loaded["sum"] == pytest.approx(float(image.sum())) and loaded["shape"] == list(image.shape)
    rank0, rank1 = map(set, loaded["ranks"])
    assert rank0 and rank1 and not rank0 & rank1
    assert rank0 | rank1 == {s.id for s in small_release.pairs(split="train")}
    with pytest.raises(UMDError, match="exists; pass overwrite=True"):
        export_hf(small_release, out)


def test_interrupted_export_leaves_nothing(small_release, tmp_path, monkeypatch):
    import umd_dataset.views.export as hf

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hf, "_card", broken)
    with pytest.raises(KeyboardInterrupt):
        export_hf(small_release, tmp_path / "hub")
    assert not (tmp_path / "hub").exists()


def test_release_edit_is_seen_by_the_view(release_copy):
    edit_descriptor(release_copy, lambda d: d.update(version="1.1.0"))
    assert load_dataset(str(release_copy), "petct", split="train", version="1.1.0")[0]["release"] == "UMD-test 1.1.0"


# --- several nodes: whole subjects on every node (issue 12, item 3) ---------------------------


@pytest.fixture(scope="module")
def export_two(small_release, tmp_path_factory):
    """An export whose shards hold one or two subjects (min_shards=2: 3 train subjects -> 2 shards)."""
    return export_hf(small_release, tmp_path_factory.mktemp("export") / "hub", min_shards=2)


def _keys(dataset, config: str) -> list[tuple]:
    """(subject, scan) of every row (paired: (subject,)), reading no image."""
    columns = ["subject"] if config == "paired" else ["subject", "scan"]
    return [tuple(row[c] for c in columns) for row in dataset.select_columns(columns)]


def _expected(release, config: str, split: str) -> dict[str, list[tuple]]:
    if config == "paired":
        return {s.id: [(s.id,)] for s in release.pairs(split=split)}
    expected: dict[str, list[tuple]] = {}
    for r in release.select(study=config, split=split):
        expected.setdefault(r.subject, []).append((r.subject, r.scan))
    return expected


def _assert_whole_disjoint_subjects(parts: list[list[tuple]], expected: dict[str, list[tuple]], what: str) -> None:
    owners: dict[str, int] = {}
    for rank, part in enumerate(parts):
        for subject in {key[0] for key in part}:
            assert subject not in owners, f"{what}: subject {subject} on nodes {owners[subject]} and {rank}"
            owners[subject] = rank
            assert sorted(k for k in part if k[0] == subject) == sorted(expected[subject]), f"{what}: {subject} not whole"
    assert set(owners) == set(expected), f"{what}: subjects {sorted(set(expected) - set(owners))} on no node"


@pytest.mark.parametrize("config", ["petct", "paired"])
def test_split_by_node_gives_every_node_whole_disjoint_subjects(config, export_two, small_release, small_release_root, tmp_path):
    from umd_dataset.views.hf import split_by_node

    for split in ("train", "validation"):  # validation: one subject, fewer than the nodes
        sources = {
            "export": datasets_load(export_two, config, split, tmp_path),
            "export streaming": datasets_load(export_two, config, split, tmp_path, streaming=True),
            "load_dataset": load_dataset(str(small_release_root), config, split=split),
            "load_dataset streaming": load_dataset(str(small_release_root), config, split=split, streaming=True),
        }
        expected = _expected(small_release, config, split)
        for world_size in (2, 3, 4):
            found = {}
            for name, dataset in sources.items():
                parts = [_keys(split_by_node(dataset, rank, world_size), config) for rank in range(world_size)]
                _assert_whole_disjoint_subjects(parts, expected, f"{config}/{split} {name}, {world_size} nodes")
                found[name] = [sorted(part) for part in parts]
            assert found["load_dataset"] == found["load_dataset streaming"]  # one assignment, streaming or not


def datasets_load(folder, config, split, tmp_path, **kwargs):
    import datasets

    return datasets.load_dataset(str(folder), config, split=split, cache_dir=str(tmp_path / "hf"), **kwargs)


def test_stock_split_dataset_by_node_streams_whole_subjects_when_the_nodes_divide_the_shards(
    export_two, small_release, small_release_root, tmp_path
):
    """The defect quoted: one shard per row put every CT on rank 0 and every PET on rank 1."""
    from datasets.distributed import split_dataset_by_node

    stream = datasets_load(export_two, "petct", "train", tmp_path, streaming=True)
    assert stream.num_shards == 2  # 3 subjects in 2 shards
    parts = [_keys(split_dataset_by_node(stream, rank=r, world_size=2), "petct") for r in range(2)]
    _assert_whole_disjoint_subjects(parts, _expected(small_release, "petct", "train"), "export, 2 nodes")
    view = load_dataset(str(small_release_root), "petct", split="train", streaming=True)
    assert view.num_shards == 3  # one shard per subject
    parts = [_keys(split_dataset_by_node(view, rank=r, world_size=3), "petct") for r in range(3)]
    _assert_whole_disjoint_subjects(parts, _expected(small_release, "petct", "train"), "load_dataset streaming, 3 nodes")


def test_stock_split_dataset_by_node_of_the_paired_config_gives_whole_subjects_map_style(export_two, small_release, tmp_path):
    """Map-style, stock `split_dataset_by_node` cuts blocks of rows by count (datasets'
    `_split_by_node_map_style_dataset`: ``shard(contiguous=True)``): only a config with one row per
    subject, ``paired``, keeps subjects whole on any number of nodes (up to the number of rows:
    beyond it datasets itself raises IndexError); per-scan configs need `split_by_node`."""
    from datasets.distributed import split_dataset_by_node

    train = datasets_load(export_two, "paired", "train", tmp_path)
    for world_size in range(1, len(train) + 1):
        parts = [_keys(split_dataset_by_node(train, rank=r, world_size=world_size), "paired") for r in range(world_size)]
        _assert_whole_disjoint_subjects(parts, _expected(small_release, "paired", "train"), f"paired, {world_size} nodes")


def test_split_by_node_refuses_a_bad_rank(small_release_root):
    from umd_dataset import InvalidOptionError
    from umd_dataset.views.hf import split_by_node

    train = load_dataset(str(small_release_root), "petct", split="train")
    with pytest.raises(InvalidOptionError, match=r"rank must be 0\.\.1 for world_size=2; got 2"):
        split_by_node(train, 2, 2)
    with pytest.raises(InvalidOptionError, match="world_size must be"):
        split_by_node(train, 0, 0)
    both = split_by_node(load_dataset(str(small_release_root), "paired"), 0, 2)
    assert set(both) == {"train", "validation", "test"} and both["validation"]["subject"] == ["UMD0002"]


# --- a release folder given to stock datasets (item 8) -----------------------------------------


def test_stock_datasets_refuses_a_release_folder_and_names_umd_dataset(small_release_root, tmp_path):
    import datasets

    for kwargs in ({}, {"name": "petct"}, {"streaming": True}):
        with pytest.raises(FileNotFoundError, match=r"This folder is a UMD release.*umd_dataset\.load_dataset.*umd export-hf"):
            datasets.load_dataset(str(small_release_root), cache_dir=str(tmp_path / "hf"), **kwargs)


# --- version= (item 9) -------------------------------------------------------------------------


def test_a_wrong_version_names_the_versions_there_are(small_release_root, tmp_path, monkeypatch):
    from umd_dataset import InvalidOptionError, ReleaseVersionError

    with pytest.raises(ReleaseVersionError) as caught:
        load_dataset(str(small_release_root), version="2.0.0")
    assert re.search(r"holds UMD-test version 1\.0\.0, not 2\.0\.0\. There is no other release beside it\.", str(caught.value))
    assert "Or leave the version out to take 1.0.0." in str(caught.value)
    with pytest.raises(ReleaseVersionError, match=r"not 1\.0\. Did you mean '1\.0\.0'\? Versions compare exactly"):
        load_dataset(str(small_release_root), version="1.0")
    monkeypatch.setenv("UMD_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ReleaseVersionError, match=r"'umd-mini' is the synthetic UMD-mini .* exists in version 1\.0\.0 only, not 2\.0\.0"):
        load_dataset("umd-mini", version="2.0.0")
    assert not (tmp_path / "cache").exists()  # nothing generated for a version that cannot be
    with pytest.raises(InvalidOptionError, match=r"version='1\.0\.0' cannot be checked on the Hub copy 'someone/umd'"):
        load_dataset("umd", hub_repo="someone/umd", version="1.0.0")


# --- the bytes a view hands on are the verified ones, wherever it runs --------------------------


def test_streaming_decodes_the_verified_bytes_even_where_a_file_of_that_name_exists(small_release_root, small_release,
                                                                                    tmp_path, monkeypatch):
    (tmp_path / "ct.nii.gz").write_bytes(b"not this one")
    monkeypatch.chdir(tmp_path)
    stream = load_dataset(str(small_release_root), "petct", split="train", streaming=True)
    row = next(iter(stream.decode(False)))
    assert row["image"]["bytes"] is not None and row["image"]["path"] is None  # datasets drops bytes beside a path
    first = next(iter(stream))
    record = small_release.subject(first["subject"]).studies["petct"].scans[first["scan"]]
    assert np.array_equal(np.asanyarray(first["image"].dataobj), small_release.read(record)[0])


def test_a_node_reads_only_the_files_of_its_own_subjects_when_streaming(small_release_root, monkeypatch):
    import umd_dataset.views.hf as hf

    read = []
    original = hf.read_bytes
    monkeypatch.setattr(hf, "read_bytes", lambda release, record, which: read.append(record.subject) or original(release, record, which))
    stream = load_dataset(str(small_release_root), "petct", split="train", streaming=True)
    mine = hf.split_by_node(stream, rank=1, world_size=3)
    assert read == []  # deciding reads nothing
    subjects = {row["subject"] for row in mine}
    assert len(subjects) == 1 and set(read) == subjects and len(read) == 4  # its CT and PET, image and label each
