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
    assert "PET/CT: 5  PET/MRI: 5" in out
    rows = [line.split()[0] for line in out.splitlines() if line.split()[:1] in (["train"], ["validation"], ["test"])]
    assert rows == ["train", "validation", "test"]
    assert "urinary_bladder" in out and "PET of PET/MRI" in out
    summary = json.loads(umd("info", str(small_release_root), "--json").stdout)
    assert summary["label_maps_with_organ"]["liver"] == 20
    assert summary["label_maps_with_organ_by_domain"]["petmri_pet"]["liver"] == 5
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
    assert open_release(tmp_path / "r").info.counts.subjects == 1
    help_text = umd("--help").stdout
    assert all(command in help_text for command in ("synth", "info", "verify"))


def test_labels_commands(small_release_root, small_release, tmp_path):
    schema = umd("labels", "schema")
    assert schema.returncode == 0 and " 9  urinary_bladder" in schema.stdout
    assert "totalsegmentator_total_v1" in umd("labels", "sources").stdout
    table = umd("labels", "source", "totalsegmentator_total_v1").stdout
    assert "urinary_bladder  <- 104 urinary_bladder" in table and "heart_myocardium" in table
    assert "not provided" in umd("labels", "source", "amos22").stdout
    resolved = umd("labels", "resolve", "Lt Kidney", "gall bladder").stdout
    assert "-> kidney_left" in resolved and "-> outside_schema" in resolved
    unknown = umd("labels", "resolve", "tumour", "Lt Kidney", "Leberx")  # every name is resolved, then exit 1
    assert unknown.returncode == 1 and "Unknown label name 'tumour'" in unknown.stdout and "'Lt Kidney'" in unknown.stdout
    assert "--alias 'Leberx=ORGAN'" in unknown.stdout and "aliases=" not in unknown.stdout
    assert "error: 2 of 3 names are unknown." in unknown.stderr
    assert "Organ masks in all:" in umd("labels", "coverage", str(small_release_root)).stdout

    from helpers import to_total
    from umd_dataset.io import read_nifti, write_nifti

    record = small_release.pairs()[0].studies["petct"].scans["ct"]
    labels, affine = read_nifti(small_release.label_path(record))
    write_nifti(tmp_path / "total.nii.gz", to_total(labels), affine)
    out = tmp_path / "h.nii.gz"
    done = umd("labels", "harmonize", str(tmp_path / "total.nii.gz"), str(out), "--source", "totalsegmentator_total",
               "--target", str(small_release.image_path(record)))
    assert done.returncode == 0, done.stderr
    assert "gallbladder (outside_schema, 500 voxels)" in done.stdout
    assert (read_nifti(out)[0] == labels).all()
    assert json.loads((tmp_path / "h.provenance.json").read_text())["source"] == "totalsegmentator_total"


def test_synth_dicom_then_ingest(tmp_path):
    assert umd("synth", str(tmp_path / "r"), "--subjects", "1").returncode == 0
    written = umd("synth-dicom", str(tmp_path / "r"), str(tmp_path / "dicom"), "--extras")
    assert written.returncode == 0, written.stderr
    result = umd("ingest", str(tmp_path / "dicom"), str(tmp_path / "ingested"), "--secret", "k", "--write-mapping", str(tmp_path / "map.csv"))
    assert result.returncode == 0, result.stderr
    assert "studies written: 2" in result.stdout and "verified" in result.stdout
    assert "PET WB NAC" in result.stdout  # left out, and said so
    release = open_release(tmp_path / "ingested")
    assert release.info.counts.paired_subjects == 1
    assert (tmp_path / "map.csv").read_text().startswith("identity,subject")
    again = umd("ingest", str(tmp_path / "dicom"), str(tmp_path / "ingested"), "--secret", "k")
    assert again.returncode == 2 and "already holds a complete release" in again.stderr
