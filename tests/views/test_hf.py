"""The Hugging Face view: load_dataset, configs, splits, organ selection, streaming, the Hub export."""

from __future__ import annotations

import json
import os
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
    assert len(list((out / "data" / "petct").glob("train-*.parquet"))) == 4  # 6 train scans -> 4 shards
    script = """
import json, sys, numpy as np, datasets
from datasets.distributed import split_dataset_by_node
ds = datasets.load_dataset(sys.argv[1], "petct", split="test")
row = ds[0]
stream = datasets.load_dataset(sys.argv[1], "paired", split="train", streaming=True)
ranks = [[r["subject"] for r in split_dataset_by_node(stream, rank=i, world_size=2)] for i in range(2)]
print(json.dumps({"n": len(ds), "subject": row["subject"], "scan": row["scan"], "sum": float(np.asanyarray(row["image"].dataobj).sum()),
                  "shape": list(row["image"].shape), "ranks": ranks, "modules": "umd_dataset" in sys.modules}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["n"] == len(small_release.select(study="petct", split="test")) and not loaded["modules"]
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
