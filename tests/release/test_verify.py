"""`verify` names every damaged file at once: changed bytes, missing files, wrong geometry, wrong labels."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import edit_manifest
from umd_dataset import VerificationError, open_release
from umd_dataset.io import read_nifti, write_nifti
from umd_dataset.release.writer import write_metadata


def test_generated_release_verifies(small_release):
    report = small_release.verify(deep=True)
    assert report.ok, str(report)
    assert report.files_checked == 40 + 5  # 20 scans and their label maps, and the 5 files release.json lists
    assert "no problem found" in str(report)
    report.raise_if_failed()


def test_every_problem_is_reported_at_once(release_copy):
    release = open_release(release_copy)
    flipped, deleted, reshaped = release.scans[0], release.scans[5], release.scans[10]
    path = release.image_path(flipped)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    release.label_path(deleted).unlink()

    def change(rows):
        for row in rows:
            if row["image"] == reshaped.image:
                row["shape"] = [row["shape"][0] + 1, row["shape"][1], row["shape"][2]]

    edit_manifest(release_copy, change)
    report = open_release(release_copy).verify()
    found = {(p.path, p.kind) for p in report.problems}
    assert (flipped.image, "checksum") in found
    assert (deleted.label, "missing") in found
    assert (reshaped.image, "geometry") in found and (reshaped.label, "geometry") in found
    assert not report.ok
    text = str(report)
    assert flipped.image in text and deleted.label in text and "manifest says" in text
    with pytest.raises(VerificationError) as caught:
        report.raise_if_failed()
    assert caught.value.report is report


def test_truncated_file_is_reported_not_raised(release_copy):
    release = open_release(release_copy)
    scan = release.scans[3]
    path = release.label_path(scan)
    path.write_bytes(path.read_bytes()[:50])
    problems = {p.kind for p in release.verify().problems if p.path == scan.label}
    assert {"size", "checksum", "unreadable"} <= problems


def test_deep_verify_finds_label_values_outside_the_schema(release_copy):
    release = open_release(release_copy)
    scan = release.scans[1]
    labels, affine = read_nifti(release.label_path(scan))
    labels = np.array(labels)
    labels[0, 0, 0] = 200
    write_nifti(release.label_path(scan), labels, affine)
    # make the checksum agree so that only the voxel check can catch it
    from umd_dataset.io.files import sha256_file

    def change(rows):
        for row in rows:
            if row["label"] == scan.label:
                row["label_sha256"] = sha256_file(release.label_path(scan))
                row["label_bytes"] = release.label_path(scan).stat().st_size

    edit_manifest(release_copy, change)
    write_metadata(open_release(release_copy))  # croissant.json records the manifest's sha256: describe the new one
    release = open_release(release_copy)
    assert release.verify().ok  # header and checksum agree
    problems = [p for p in release.verify(deep=True).problems if p.path == scan.label]
    assert any("values [200] are not organ ids" in p.message for p in problems)
