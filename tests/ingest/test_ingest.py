"""Ingest of generated DICOM studies, NIfTI mappings and nnU-Net folders into verified releases."""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import shutil
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from umd_dataset import IncompleteReleaseError, open_release
from umd_dataset.ingest import IngestError, IngestOptions, ingest
from umd_dataset.labels.harmonize import HarmonizeOptions
from umd_dataset.io import read_nifti, write_nifti
from umd_dataset.synthetic.dicom import DicomPatient, PetDose, write_dicom_study

PATIENTS = [
    DicomPatient(name="Smith^Alice", patient_id="PID-778899", birth_date="19540312", weight_kg=64.0),
    DicomPatient(name="Jones^Bob", patient_id="PID-112233", birth_date="19610708", weight_kg=91.5),
]
DOSES = {
    "petct": PetDose(injected_bq=3.3e8, injection=datetime(2024, 3, 5, 9, 30), uptake_s=3720.0),
    # the PET/MRI headers: injection time without a date, dose written in MBq
    "petmri": PetDose(injected_bq=2.9e8, injection=datetime(2024, 3, 6, 23, 50), uptake_s=4000.0, with_date=False, dose_in_mbq=True),
}


def hand_factor(weight_kg: float, dose: PetDose) -> float:
    return weight_kg * 1000.0 / (dose.injected_bq * math.exp(-math.log(2) * dose.uptake_s / 6586.2))


@pytest.fixture(scope="module")
def dicom_tree(small_release, tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom") / "raw"
    written = {}
    for patient, subject in zip(PATIENTS, small_release.pairs()[:2]):
        for study in ("petct", "petmri"):
            written[(patient.patient_id, study)] = write_dicom_study(
                small_release, subject.id, study, root, patient=patient, dose=DOSES[study], extras=(study == "petct")
            )
    (root / "README.txt").write_text("export notes")
    junk = root / "PID-778899" / "petct" / "junk"
    junk.mkdir()
    (junk / "random.dcm").write_bytes(os.urandom(2000))
    return root, written


@pytest.fixture(scope="module")
def ingested(dicom_tree, tmp_path_factory):
    root, written = dicom_tree
    out = tmp_path_factory.mktemp("ingested") / "release"
    mapping = tmp_path_factory.mktemp("private") / "mapping.csv"
    release, report = ingest(root, out, options=IngestOptions(secret="k3y", mapping_path=str(mapping)))
    return release, report, written, mapping


def canonical(path):
    image = nib.as_closest_canonical(nib.load(path))
    return np.asanyarray(image.dataobj), image.affine


def test_release_passes_verify_and_pairs_studies_of_one_person(ingested):
    release, report, _, _ = ingested
    assert release.verify(deep=True).ok
    assert release.info.counts.subjects == 2 and release.info.counts.paired_subjects == 2
    assert all(s.id.startswith("UMD-") for s in release.subjects.values())
    assert sorted(report.written) == sorted(f"{s}/{st}" for s in release.subjects for st in ("petct", "petmri"))


def test_left_out_series_and_unusable_files_are_reported(ingested):
    _, report, _, _ = ingested
    text = "\n".join(report.left_out)
    assert "PET WB NAC" in text and "pet_nac" in text
    assert "Topogram" in text and "localizer" in text
    assert "Dose Report" in text
    assert report.skipped_files == 2  # README.txt and random bytes


def test_voxels_and_world_coordinates_match_the_source(ingested, small_release):
    """The phantom is asymmetric (liver right, spleen left): written as DICOM and ingested, every
    voxel lands at the same world position as in the NIfTI it was made from."""
    release, _, written, _ = ingested
    for (patient_id, study), info in written.items():
        subject = next(s for s in release.subjects.values() if study in s.studies and _same_data(release, s, study, info, small_release))
        mine = subject.studies[study].scans
        for scan, source in (("ct" if study == "petct" else "mri", info["structural"]), ("pet", info["functional"])):
            a, a_affine = canonical(small_release.image_path(source))
            b, b_affine = canonical(release.image_path(mine[scan]))
            assert np.allclose(a_affine, b_affine, atol=1e-4), (study, scan)
            if scan == "pet":
                assert np.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.max()))
            else:
                assert np.array_equal(a, b) and b.dtype == np.int16
            la, _ = canonical(small_release.label_path(source))
            lb, _ = canonical(release.label_path(mine[scan]))
            if scan == "pet":  # carried from the structural grid: compare organ by organ
                for organ in range(1, 14):
                    x, y = la == organ, lb == organ
                    assert 2 * (x & y).sum() / (x.sum() + y.sum()) > 0.8, (study, organ)
            else:
                assert np.array_equal(la, lb)
        ijk = np.argwhere(np.asanyarray(nib.load(release.label_path(mine["pet"])).dataobj) == 3).mean(axis=0)
        world = nib.load(release.label_path(mine["pet"])).affine @ np.append(ijk, 1)
        assert world[0] < 0  # the left kidney is on the patient's left (RAS: -x)


def _same_data(release, subject, study, info, source_release) -> bool:
    mine = subject.studies[study].scans["pet"]
    return mine.shape == info["functional"].shape and np.isclose(
        np.asanyarray(nib.load(release.image_path(mine)).dataobj).sum(),
        np.asanyarray(nib.load(source_release.image_path(info["functional"])).dataobj).sum(), rtol=1e-3,
    )


def test_suv_factor_is_recorded_and_matches_hand_computation(ingested):
    release, _, _, _ = ingested
    for subject in release.subjects.values():
        for study in ("petct", "petmri"):
            folder = release.image_path(subject.studies[study].scans["pet"]).parent
            record = json.loads((folder / "provenance.json").read_text())["scans"]["pet"]["suv"]
            patient = next(p for p in PATIENTS if math.isclose(p.weight_kg, record["weight_kg"]))
            assert record["factor"] == pytest.approx(hand_factor(patient.weight_kg, DOSES[study]), rel=1e-9)
            assert record["uptake_s"] == pytest.approx(DOSES[study].uptake_s)
            if study == "petmri":
                assert any("MBq" in n for n in record["notes"]) and any("without a date" in n for n in record["notes"])


def test_no_identifying_value_reaches_the_release(ingested, dicom_tree):
    release, _, written, mapping = ingested
    secrets_ = [p.name for p in PATIENTS] + [p.patient_id for p in PATIENTS] + [p.birth_date for p in PATIENTS]
    secrets_ += [str(info["study_uid"]) for info in written.values()] + ["20240305", "20240306"]
    for path in Path(release.root).rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if path.name.endswith(".gz"):
                data = gzip.decompress(data)
            for secret in secrets_:
                assert secret.encode() not in data, (secret, path)
    rows = list(csv.DictReader(open(mapping)))
    assert {r["identity"] for r in rows} == {f"|{p.patient_id}" for p in PATIENTS}
    assert not mapping.is_relative_to(release.root)


def test_same_key_gives_the_same_ids_and_no_mapping_unless_asked(ingested, dicom_tree, tmp_path):
    release, _, _, _ = ingested
    again, _ = ingest(dicom_tree[0], tmp_path / "again", options=IngestOptions(secret="k3y"))
    assert set(again.subjects) == set(release.subjects)
    assert not list(tmp_path.rglob("*.csv"))
    other, _ = ingest(dicom_tree[0], tmp_path / "other", options=IngestOptions(secret="another key"))
    assert not set(other.subjects) & set(release.subjects)


def test_a_broken_study_does_not_stop_the_others_and_a_rerun_finishes(dicom_tree, tmp_path):
    root, _ = dicom_tree
    raw = tmp_path / "raw"
    shutil.copytree(root, raw)
    pet = sorted((raw / "PID-112233" / "petmri" / "PT_ac").iterdir())
    hidden = tmp_path / "hidden.dcm"
    shutil.move(pet[len(pet) // 2], hidden)  # a slice missing in the middle of one PET series
    out = tmp_path / "release"
    with pytest.raises(IngestError, match=r"(?s)1 of 4 studies failed.*missing slice") as caught:
        ingest(raw, out, options=IngestOptions(secret="s"))
    assert len(caught.value.report.written) == 3
    with pytest.raises(IncompleteReleaseError):
        open_release(out)
    shutil.move(hidden, pet[len(pet) // 2])
    release, report = ingest(raw, out, options=IngestOptions(secret="s"))
    assert len(report.resumed) == 3 and len(report.written) == 1
    assert release.info.counts.studies == {"petct": 2, "petmri": 2}


def test_skip_failed_finishes_without_the_broken_study(dicom_tree, tmp_path):
    root, _ = dicom_tree
    raw = tmp_path / "raw"
    shutil.copytree(root, raw)
    victim = sorted((raw / "PID-778899" / "petct" / "PT_ac").iterdir())[10]
    victim.write_bytes(victim.read_bytes()[:-5000])  # truncated inside the pixel data
    release, report = ingest(raw, tmp_path / "release", options=IngestOptions(secret="s", skip_failed=True))
    assert len(report.failed) == 1 and "petct" in next(iter(report.failed))
    assert release.info.counts.studies == {"petct": 1, "petmri": 2}
    assert release.verify().ok


def test_nifti_mapping_with_free_text_masks(small_release, tmp_path):
    subject = small_release.pairs()[0]
    ct = subject.studies["petct"].scans["ct"]
    labels, affine = read_nifti(small_release.label_path(ct))
    for name, organ in {"Liver": 1, "Lt Kidney": 3, "Rt Kidney": 4}.items():
        write_nifti(tmp_path / "masks" / f"{name}.nii.gz", (np.asarray(labels) == organ).astype(np.uint8), affine)
    mri = subject.studies["petmri"].scans["mri"]
    rows = [
        {"subject": "patient-7", "study": "petct", "scan": "ct", "image": str(small_release.image_path(ct)), "label": "masks"},
        {"subject": "patient-7", "study": "petct", "scan": "pet", "image": str(small_release.image_path(subject.studies["petct"].scans["pet"])), "suv_factor": "2.0"},
        {"subject": "patient-7", "study": "petmri", "scan": "mri", "image": str(small_release.image_path(mri)),
         "label": str(small_release.label_path(mri)), "label_source": "umd"},
        {"subject": "patient-7", "study": "petmri", "scan": "pet", "image": str(small_release.image_path(subject.studies["petmri"].scans["pet"]))},
    ]
    with open(tmp_path / "mapping.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["subject", "study", "scan", "image", "label", "label_source", "suv_factor"])
        writer.writeheader()
        writer.writerows(rows)
    release, _ = ingest(tmp_path / "mapping.csv", tmp_path / "release", keep_ids=True)
    [only] = release.subjects.values()
    assert only.id == "patient-7" and only.paired
    assert set(only.studies["petct"].scans["pet"].organs) == {"liver", "kidney_left", "kidney_right"}
    assert set(only.studies["petmri"].scans["pet"].organs) == set(release.schema.slugs)
    pet_source = np.asanyarray(nib.load(small_release.image_path(subject.studies["petct"].scans["pet"])).dataobj)
    pet_mine = np.asanyarray(nib.load(release.image_path(only.studies["petct"].scans["pet"])).dataobj)
    assert np.allclose(pet_mine, 2.0 * pet_source)


def test_nnunet_raw_folder(small_release, tmp_path):
    raw = tmp_path / "Dataset042_PETCT"
    for number, subject in enumerate(small_release.pairs()[:2]):
        ct = subject.studies["petct"].scans["ct"]
        image, affine = read_nifti(small_release.image_path(ct))
        labels, _ = read_nifti(small_release.label_path(ct))
        pet = np.asarray(labels, dtype=np.float32) * 0.5  # a PET channel on the CT grid, as nnU-Net requires
        write_nifti(raw / "imagesTr" / f"case_{number:03d}_0000.nii.gz", np.asarray(image), affine)
        write_nifti(raw / "imagesTr" / f"case_{number:03d}_0001.nii.gz", pet, affine)
        write_nifti(raw / "labelsTr" / f"case_{number:03d}.nii.gz", np.asarray(labels), affine)
    names = {"background": 0, **{o.name: o.id for o in small_release.schema}, "tumor": 14}  # a lesion label besides the organs
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT", "1": "PET"}, "labels": names, "numTraining": 2, "file_ending": ".nii.gz"}))
    release, _ = ingest(raw, tmp_path / "release", keep_ids=True)  # "tumor" is unknown but occurs in no voxel: no error
    assert sorted(release.subjects) == ["case_000", "case_001"]
    record = release.subjects["case_000"].studies["petct"].scans["ct"]
    expected, _ = read_nifti(raw / "labelsTr" / "case_000.nii.gz")
    assert np.array_equal(read_nifti(release.label_path(record))[0], expected)


def test_unknown_label_that_occurs_is_an_error_unless_dropped(small_release, tmp_path):
    ct = small_release.pairs()[0].studies["petct"].scans["ct"]
    image, affine = read_nifti(small_release.image_path(ct))
    labels = np.asarray(read_nifti(small_release.label_path(ct))[0]).copy()
    labels[:3, :3, :3] = 14
    raw = tmp_path / "Dataset043"
    write_nifti(raw / "imagesTr" / "case_0000.nii.gz", np.asarray(image), affine)
    write_nifti(raw / "imagesTr" / "case_0001.nii.gz", np.zeros(labels.shape, np.float32), affine)
    write_nifti(raw / "labelsTr" / "case.nii.gz", labels, affine)
    names = {"background": 0, **{o.name: o.id for o in small_release.schema}, "tumor": 14}
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT", "1": "PET"}, "labels": names, "file_ending": ".nii.gz"}))
    with pytest.raises(IngestError, match="Unknown label name 'tumor'"):
        ingest(raw, tmp_path / "refused", keep_ids=True)
    release, _ = ingest(raw, tmp_path / "release", keep_ids=True, options=IngestOptions(labels=HarmonizeOptions(drop=("tumor",))))
    provenance = json.loads((release.image_path(release.scans[0]).parent / "provenance.json").read_text())
    assert {"name": "tumor", "status": "dropped", "voxels": 27} == {k: v for k, v in next(r for r in provenance["labels"]["labels"] if r["name"] == "tumor").items() if k in ("name", "status", "voxels")}


def test_a_seg_series_stored_as_several_instances_is_read_whole(small_release, tmp_path):
    from umd_dataset.io.geometry import Geometry
    from umd_dataset.labels.dicom_seg import write_seg

    subject = small_release.pairs()[0]
    info = write_dicom_study(small_release, subject.id, "petct", tmp_path / "raw", patient=PATIENTS[0], dose=DOSES["petct"], seg=False)
    ct = subject.studies["petct"].scans["ct"]
    labels, affine = read_nifti(small_release.label_path(ct))
    labels = np.asarray(labels)
    import pydicom

    first = pydicom.dcmread(next((info["folder"] / "CT_ct").iterdir()), stop_before_pixels=True)
    series = "1.2.826.0.1.3680043.8.498.77"
    for number, organs in enumerate(((1, "Liver"), (9, "Urinary bladder"))):
        path = write_seg(tmp_path / "raw" / f"seg{number}.dcm", Geometry(labels.shape, affine),
                         [{"label": organs[1], "mask": labels == organs[0]}],
                         study_uid=str(info["study_uid"]), frame_of_reference=str(first.FrameOfReferenceUID))
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series  # two instances of one SEG series
        ds.save_as(path)
    release, _ = ingest(tmp_path / "raw", tmp_path / "release", options=IngestOptions(secret="s"))
    [record] = release.select(scan="ct")
    assert set(record.organs) == {"liver", "urinary_bladder"}


def test_the_report_shows_the_suv_notes_and_names_skipped_files_without_identifiers(ingested):
    """Issue 12, item 15: the MBq dose note and the other SUV notes reached only provenance.json, and
    "non-DICOM files skipped: 4" named none of them."""
    _, report, _, _ = ingested
    text = str(report)
    notes = [line for line in text.splitlines() if line.startswith("note: ")]
    assert any("petmri/pet: SUV: RadionuclideTotalDose" in n and "taken as MBq" in n for n in notes)
    assert any("petmri/pet: SUV: injection time without a date" in n for n in notes)
    skipped = next(line for line in text.splitlines() if line.startswith("non-DICOM files skipped: "))
    assert "README.txt" in skipped
    for patient in PATIENTS:  # the folder names of the raw tree hold patient ids: never printed
        assert patient.patient_id not in text and patient.name not in text
