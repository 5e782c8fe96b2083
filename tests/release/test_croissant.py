"""A release's croissant.json: valid Croissant that mlcroissant iterates offline, the right records,
nothing the release does not already publish, and known to `verify` (checksummed, never an orphan,
stale when the files it names change)."""

from __future__ import annotations

import json

import pytest

from helpers import edit_descriptor, edit_manifest
from umd_dataset import ReleaseFormatError, open_release
from umd_dataset.release.croissant import release_croissant
from umd_dataset.release.format import CROISSANT, README
from umd_dataset.release.writer import write_metadata


def _mlcroissant_dataset(root):
    mlc = pytest.importorskip("mlcroissant")
    dataset = mlc.Dataset(jsonld=str(root / CROISSANT))  # tests/conftest.py fails any test that reaches the network
    issues = dataset.metadata.ctx.issues
    assert not issues.errors and all("datePublished" in w for w in issues.warnings), issues.report()
    return dataset


def test_release_croissant_validates_and_yields_the_release_records(small_release, small_release_root):
    dataset = _mlcroissant_dataset(small_release_root)
    splits = [(r["splits/name"], r["splits/url"]) for r in dataset.records(record_set="splits")]
    assert splits == [("train", "cr:TrainingSplit"), ("validation", "cr:ValidationSplit"), ("test", "cr:TestSplit")]
    organs = [(r["organs/id"], r["organs/slug"].decode(), r["organs/name"].decode(), r["organs/snomed_code"].decode())
              for r in dataset.records(record_set="organs")]
    assert organs == [(o.id, o.slug, o.name, o.snomed_code) for o in small_release.schema]
    subjects = {r["subjects/subject"]: r["subjects/split"] for r in dataset.records(record_set="subjects")}
    assert subjects == {s: name for name, ids in small_release.splits.items() for s in ids}
    scans = sorted(
        (r["scans/subject"].decode(), r["scans/study"].decode(), r["scans/scan"].decode(), r["scans/split"].decode(),
         r["scans/image"].decode(), r["scans/image_sha256"].decode(), tuple(r["scans/shape"]), tuple(r["scans/organs"]))
        for r in dataset.records(record_set="scans")
    )
    assert scans == sorted(
        (r.subject, r.study, r.scan, r.split, r.image, r.image_sha256, r.shape, tuple(o.encode() for o in r.organs))
        for r in small_release.scans
    )


def test_release_croissant_publishes_nothing_the_release_does_not(small_release, small_release_root):
    text = (small_release_root / CROISSANT).read_text()
    document = json.loads(text)
    assert str(small_release_root) not in text and "provenance" not in text  # no host path, no per-study record
    assert document["name"] == small_release.info.name and document["version"] == small_release.info.version
    files = {n["contentUrl"]: n.get("sha256") for n in document["distribution"] if n["@type"] == "cr:FileObject"}
    assert files == {name: small_release.info.files[name] for name in ("manifest.parquet", "labels.json", "splits.json")}
    subjects = [r["subjects/subject"] for rs in document["recordSet"] if rs["@id"] == "subjects" for r in rs["data"]]
    assert sorted(subjects) == sorted(small_release.subjects)  # the pseudonymized ids splits.json already lists
    # a pure function of the index: written again, the same bytes
    again = release_croissant(small_release.info, small_release.schema, small_release.splits,
                              {k: small_release.info.files[k] for k in files})
    assert json.dumps(again, indent=2, ensure_ascii=False) + "\n" == text


def test_readme_and_croissant_are_checksummed_and_never_orphans(small_release, release_copy):
    assert {README, CROISSANT} <= set(small_release.info.files)
    report = small_release.verify()
    assert report.ok and report.files_checked == 2 * len(small_release.scans) + len(small_release.info.files)
    release = open_release(release_copy)
    (release_copy / README).write_text("edited by hand\n")
    assert [(p.path, p.kind) for p in release.verify().problems] == [(README, "checksum")]
    with pytest.raises(ReleaseFormatError, match=r"README\.md does not match its checksum"):  # opening checks it too
        open_release(release_copy)


def test_a_croissant_that_describes_other_files_is_stale_until_written_again(release_copy):
    def change(rows):
        rows[0]["organ_voxels"] = [rows[0]["organ_voxels"][0] + 1, *rows[0]["organ_voxels"][1:]]  # only deep verify reads voxels

    edit_manifest(release_copy, change)
    release = open_release(release_copy)
    problems = [(p.path, p.kind) for p in release.verify().problems]
    assert problems == [(CROISSANT, "stale")]
    assert "records sha256" in str(release.verify()) and "write_metadata" in str(release.verify())
    write_metadata(release)
    assert open_release(release_copy).verify().ok
    _mlcroissant_dataset(release_copy)


def test_a_release_written_before_readme_and_croissant_opens_verifies_and_can_get_them(release_copy):
    (release_copy / README).unlink()
    (release_copy / CROISSANT).unlink()

    def old(data):
        data["files"] = {k: v for k, v in data["files"].items() if k not in (README, CROISSANT)}

    edit_descriptor(release_copy, old)
    release = open_release(release_copy)
    assert release.verify().ok
    (release_copy / CROISSANT).write_text("{}")  # not listed by the descriptor: an orphan
    assert [(p.path, p.kind) for p in release.verify().problems] == [(CROISSANT, "orphan")]
    write_metadata(release)
    release = open_release(release_copy)
    assert {README, CROISSANT} <= set(release.info.files) and release.verify().ok
    _mlcroissant_dataset(release_copy)
