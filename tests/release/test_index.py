"""The release index: opening, subjects, pairs, splits, filters, and the errors of a bad folder."""

from __future__ import annotations

import json
import os

import pytest

from helpers import edit_descriptor, edit_manifest, resign_file
from umd_dataset import (
    IncompleteReleaseError,
    ReleaseFormatError,
    ReleaseNotFoundError,
    ReleaseVersionError,
    UnknownNameError,
    UnsafePathError,
    open_release,
)
from umd_dataset.release.format import ReleaseCounts, ScanRecord
from umd_dataset.release.writer import ReleaseWriter
from umd_dataset.schema.organs import load_schema


def test_counts_match_the_plan(small_release):
    counts = small_release.info.counts
    assert counts == ReleaseCounts(
        subjects=6, studies={"petct": 5, "petmri": 5}, scans={"ct": 5, "petct_pet": 5, "mri": 5, "petmri_pet": 5},
        paired_subjects=4,
    )
    assert len(small_release) == 20
    assert len(small_release.pairs()) == 4
    assert all(s.paired for s in small_release.pairs())
    assert sorted(len(s.studies) for s in small_release.subjects.values()) == [1, 1, 2, 2, 2, 2]


def test_both_studies_of_a_subject_share_its_split(small_release):
    seen = {}
    for name, ids in small_release.splits.items():
        for subject in ids:
            assert subject not in seen, f"{subject} in {seen.get(subject)} and {name}"
            seen[subject] = name
    assert set(seen) == set(small_release.subjects)
    for subject in small_release.subjects.values():
        splits = {scan.split for scan in subject.scans} | {study.split for study in subject.studies.values()}
        assert splits == {subject.split} == {seen[subject.id]}
    for pair in small_release.pairs():
        assert pair.studies["petct"].split == pair.studies["petmri"].split


def test_subject_holds_both_studies_with_their_scans(small_release):
    subject = small_release.pairs()[0]
    assert set(subject.studies) == {"petct", "petmri"}
    assert set(subject.studies["petct"].scans) == {"ct", "pet"}
    assert set(subject.studies["petmri"].scans) == {"mri", "pet"}
    ct = subject.studies["petct"].scans["ct"]
    assert ct.modality == "CT" and ct.domain == "ct" and ct.dtype == "int16"
    assert subject.studies["petmri"].scans["pet"].domain == "petmri_pet"
    assert small_release.image_path(ct).is_file() and small_release.label_path(ct).is_file()


def test_select_filters(small_release):
    release = small_release
    assert len(release.select(study="petct")) == 10
    assert len(release.select(scan="pet")) == 10
    assert {r.domain for r in release.select(domain=["ct", "mri"])} == {"ct", "mri"}
    train = release.select(split="train")
    assert train and all(r.split == "train" for r in train)
    assert len(release.select(organ="liver")) == 20
    assert len(release.select(organ=["liver", "brain"], scan="ct")) == 5
    one = release.pairs()[0].id
    assert {r.subject for r in release.select(subject=one)} == {one}
    assert len(release.studies(study="petmri")) == 5


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"study": "pet_ct"}, r"Unknown study 'pet_ct'. Did you mean 'petct'"),
        ({"split": "val"}, r"Unknown split 'val'.*Available: 'train', 'validation', 'test'"),
        ({"organ": "kidney"}, r"Unknown organ .*'kidney'.*Did you mean"),
        ({"scan": "MR"}, r"Unknown scan 'MR'"),
    ],
)
def test_select_rejects_unknown_values(small_release, kwargs, pattern):
    with pytest.raises(UnknownNameError, match=pattern):
        small_release.select(**kwargs)


def test_folder_that_is_not_a_release(tmp_path):
    with pytest.raises(ReleaseNotFoundError, match=r"is not a UMD release.*release\.json.*umd synth"):
        open_release(tmp_path)
    with pytest.raises(FileNotFoundError):  # also a built-in FileNotFoundError
        open_release(tmp_path / "missing")


def test_interrupted_release_says_how_to_finish(tmp_path):
    ReleaseWriter(tmp_path / "r", job={"x": 1}, schema=load_schema())
    with pytest.raises(IncompleteReleaseError, match=r"interrupted.*Run the same command again"):
        open_release(tmp_path / "r")


def test_newer_major_format_is_refused_with_the_fix(release_copy):
    edit_descriptor(release_copy, lambda d: d.update(format_version="2.0"))
    with pytest.raises(ReleaseVersionError, match=r"format 2\.0; this umd_dataset reads format 1\.x.*pip install --upgrade"):
        open_release(release_copy)


def test_format_1_0_descriptor_keyed_by_study_and_scan_is_read(release_copy):
    def to_1_0(data: dict) -> None:
        data["format_version"] = "1.0"
        data["counts"]["scans"] = {"petct/ct": 5, "petct/pet": 5, "petmri/mri": 5, "petmri/pet": 5}

    edit_descriptor(release_copy, to_1_0)
    assert open_release(release_copy).info.counts.scans == {"ct": 5, "petct_pet": 5, "mri": 5, "petmri_pet": 5}


def test_newer_minor_format_is_read(release_copy):
    edit_descriptor(release_copy, lambda d: d.update(format_version="1.7"))
    assert len(open_release(release_copy)) == 20


def test_not_a_descriptor(release_copy):
    (release_copy / "release.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ReleaseFormatError, match=r"expected \"format\": \"umd-release\""):
        open_release(release_copy)


def test_changed_manifest_fails_its_checksum(release_copy):
    edit_manifest(release_copy, lambda rows: rows[:-1], resign=False)
    with pytest.raises(ReleaseFormatError, match=r"manifest\.parquet does not match its checksum"):
        open_release(release_copy)


def test_counts_disagreeing_with_manifest(release_copy):
    first = next(r for r in open_release(release_copy).scans if r.study == "petmri")
    edit_manifest(release_copy, lambda rows: [r for r in rows if (r["subject"], r["study"]) != (first.subject, "petmri")])
    with pytest.raises(ReleaseFormatError, match=r"records counts .* but .*manifest\.parquet holds"):
        open_release(release_copy)


def test_subject_in_two_splits(release_copy):
    data = json.loads((release_copy / "splits.json").read_text())
    data["splits"]["test"].append(data["splits"]["train"][0])
    (release_copy / "splits.json").write_text(json.dumps(data))
    resign_file(release_copy, "splits.json")
    with pytest.raises(ReleaseFormatError, match=r"subjects in two splits: UMD\d+ \(train and test\)"):
        open_release(release_copy)


@pytest.mark.parametrize("bad", ["../outside.nii.gz", "/etc/passwd", "subjects/../../x.nii.gz", "C:/x.nii.gz", "a\\b.nii.gz"])
def test_manifest_paths_escaping_the_root_are_rejected(release_copy, bad):
    def change(rows):
        rows[0]["image"] = bad

    edit_manifest(release_copy, change)
    with pytest.raises(UnsafePathError, match="not a plain relative path"):
        open_release(release_copy)


def test_symlink_out_of_the_root_is_rejected(release_copy, tmp_path):
    release = open_release(release_copy)
    scan = release.scans[0]
    outside = tmp_path / "outside.nii.gz"
    path = release.image_path(scan)
    os.replace(path, outside)
    os.symlink(outside, path)
    with pytest.raises(UnsafePathError, match="outside the release root"):
        release.image_path(scan)
    report = release.verify()
    assert [(p.path, p.kind) for p in report.problems] == [(scan.image, "unsafe_path")]


def test_opening_reads_no_image(tmp_path):
    """A 1,000-scan index opens with no image file present at all: the index alone is read."""
    schema = load_schema()
    writer = ReleaseWriter(tmp_path, job={"test": "index only"}, schema=schema)
    subjects = [f"S{i:04d}" for i in range(250)]
    for subject in subjects:
        for study, scans in (("petct", ("ct", "pet")), ("petmri", ("mri", "pet"))):
            rows = []
            for scan in scans:
                rows.append(
                    ScanRecord(
                        subject=subject, study=study, scan=scan, modality={"ct": "CT", "pet": "PT", "mri": "MR"}[scan],
                        image=f"subjects/{subject}/{study}/{scan}.nii.gz", label=f"subjects/{subject}/{study}/{scan}_labels.nii.gz",
                        shape=(512, 512, 400), spacing_mm=(1.0, 1.0, 2.5), affine=tuple(float(v) for v in range(16)),
                        dtype="int16", label_dtype="uint8", image_sha256="0" * 64, label_sha256="0" * 64,
                        image_bytes=1, label_bytes=1, organs=("liver",), organ_voxels=(100,),
                    )
                )
            writer.record_study(rows)
    writer.finalize(name="big", version="1.0.0", splits={"train": subjects[:200], "test": subjects[200:]})
    release = open_release(tmp_path)
    assert len(release) == 1000 and len(release.pairs()) == 250
    assert not (tmp_path / "subjects").exists()
    report = release.verify(workers=2)
    assert len([p for p in report.problems if p.kind == "missing"]) == 2000


def test_the_summary_is_a_typed_object(small_release):
    from umd_dataset import ReleaseSummary
    from umd_dataset.release.index import SplitCounts

    summary = small_release.summary()
    assert isinstance(summary, ReleaseSummary) and summary.counts == small_release.info.counts
    train = small_release.splits["train"]
    assert summary.splits["train"] == SplitCounts(
        subjects=len(train), studies=sum(len(small_release.subject(s).studies) for s in train),
        scans=len(small_release.select(split="train")),
    )
    assert sum(s.subjects for s in summary.splits.values()) == 6
    assert list(summary.label_maps_with_organ) == ["ct", "petct_pet", "mri", "petmri_pet"]
    assert summary.organ_totals()["liver"] == sum(d["liver"] for d in summary.label_maps_with_organ.values())
    assert summary.to_dict()["label_maps_with_organ_by_domain"] == summary.label_maps_with_organ
    assert str(summary).splitlines()[0].startswith("UMD-test 1.0.0 at ")
