"""The `umd` command: synth, info, verify; errors print one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

from umd_dataset import open_release


def umd(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "umd_dataset.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_info_prints_counts_per_study_scan_split_and_organ(small_release_root):
    result = umd("info", str(small_release_root))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "subjects: 6  (with both studies: 4)" in out
    assert "petct: 5  petmri: 5" in out
    rows = [line.split()[0] for line in out.splitlines() if line.split()[:1] in (["train"], ["validation"], ["test"])]
    assert rows == ["train", "validation", "test"]
    assert "urinary_bladder" in out and "petmri/pet" in out
    summary = json.loads(umd("info", str(small_release_root), "--json").stdout)
    assert summary["label_maps_with_organ"]["liver"] == 20
    assert sum(s["subjects"] for s in summary["splits"].values()) == 6


def test_verify_exit_codes(release_copy):
    assert umd("verify", str(release_copy)).returncode == 0
    release = open_release(release_copy)
    release.image_path(release.scans[2]).unlink()
    result = umd("verify", str(release_copy))
    assert result.returncode == 1
    assert f"{release.scans[2].image}: [missing]" in result.stdout


def test_errors_are_one_line_with_exit_code_2(tmp_path):
    result = umd("info", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "umd synth" in result.stderr
    assert "Traceback" not in result.stderr


def test_synth_shows_progress_and_help_is_fast(tmp_path):
    result = umd("synth", str(tmp_path / "r"), "--subjects", "1")
    assert result.returncode == 0, result.stderr
    assert "synth UMD-mini" in result.stderr and "study" in result.stderr  # the progress bar
    assert open_release(tmp_path / "r").info.counts["subjects"] == 1
    help_text = umd("--help").stdout
    assert all(command in help_text for command in ("synth", "info", "verify"))
