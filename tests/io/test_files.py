"""Atomic writes, JSON files and checksums."""

from __future__ import annotations

import hashlib
import json

import pytest

from umd_dataset.io.files import atomic_path, read_json, sha256_file, write_json


def test_atomic_path_replaces_the_target_in_one_step(tmp_path):
    target = tmp_path / "deep" / "file.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "file.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_temporary_keeps_the_nifti_suffixes_and_may_live_in_a_scratch_folder(tmp_path):
    with atomic_path(tmp_path / "scan.nii.gz", tmp_path / "scratch") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path / "scratch"
        tmp.write_bytes(b"x")
    assert (tmp_path / "scan.nii.gz").read_bytes() == b"x"


def test_json_is_sorted_indented_and_round_trips(tmp_path):
    write_json(tmp_path / "a.json", {"b": [1, 2], "a": {"z": 1, "y": None}})
    text = (tmp_path / "a.json").read_text()
    assert text == json.dumps({"a": {"y": None, "z": 1}, "b": [1, 2]}, indent=2, sort_keys=True) + "\n"
    assert read_json(tmp_path / "a.json") == {"a": {"y": None, "z": 1}, "b": [1, 2]}


def test_sha256_reads_in_chunks(tmp_path):
    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk_bytes=1000) == hashlib.sha256(data).hexdigest()
