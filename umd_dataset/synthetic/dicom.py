"""Synthetic studies written as DICOM, so that ingest can be tested on full studies with known answers.

`write_dicom_study` turns one study of a synthetic release into DICOM series as a scanner would
export them: the CT or MR series and the PET series in Bq/ml with a per-slice rescale slope and
the radiopharmaceutical tags SUV needs (so the SUV factor is known exactly), sharing one frame of
reference; plus a DICOM SEG of the structural label map, and, on request, the series ingest must
leave out (a localizer, a PET without attenuation correction, a dose report). Slices are written in
a scrambled file order with InstanceNumbers that run against the slice positions, so a reader that
sorts by either gets the volume wrong.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from umd_dataset.io.dicom import SOP_CLASS, plane_tags, slice_position
from umd_dataset.io.files import atomic_path
from umd_dataset.io.nifti import read_nifti
from umd_dataset.labels.dicom_seg import write_seg_file
from umd_dataset.schema.organs import load_schema
from umd_dataset.schema.studies import modalities

__all__ = ["DicomPatient", "PetDose", "write_dicom_series", "write_dicom_study", "F18_HALF_LIFE_S"]

F18_HALF_LIFE_S = 6586.2


@dataclass(frozen=True)
class DicomPatient:
    """The identity written into the headers (what ingest must pseudonymize away)."""

    name: str = "Doe^Jane"
    patient_id: str = "MRN0001"
    birth_date: str = "19600101"
    sex: str = "F"
    weight_kg: float = 72.0


@dataclass(frozen=True)
class PetDose:
    """Radiopharmaceutical tags of a PET series.

    Attributes:
        injected_bq: RadionuclideTotalDose, in Bq (written in MBq if `dose_in_mbq`).
        injection: injection date-time; the scan starts `uptake_s` later.
        with_date: write RadiopharmaceuticalStartDateTime (else only the time, without a date).
        decay_correction: START or ADMIN.
    """

    injected_bq: float = 3.5e8
    injection: datetime = datetime(2024, 3, 5, 9, 30, 0)
    uptake_s: float = 3600.0
    with_date: bool = True
    dose_in_mbq: bool = False
    decay_correction: str = "START"

    @property
    def scan_start(self) -> datetime:
        return self.injection + timedelta(seconds=self.uptake_s)

    def suv_factor(self, weight_kg: float) -> float:
        """The exact SUVbw factor these tags imply (weight in g over the dose decayed to the scan start)."""
        if self.decay_correction == "ADMIN":
            return weight_kg * 1000.0 / self.injected_bq
        return weight_kg * 1000.0 / (self.injected_bq * 2.0 ** (-self.uptake_s / F18_HALF_LIFE_S))


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def write_dicom_series(
    folder: str | os.PathLike,
    stored: np.ndarray,
    affine: np.ndarray,
    *,
    modality: str,
    patient: DicomPatient,
    study_uid: str,
    series_uid: str,
    frame_of_reference: str,
    series_number: int,
    description: str,
    when: datetime,
    slopes: np.ndarray | None = None,
    intercept: float = 0.0,
    extra: dict | None = None,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
) -> list[Path]:
    """Write a volume (column, row, slice axes; RAS affine) as one DICOM file per slice.

    Args:
        stored: the stored integer values (uint16 or int16).
        slopes: RescaleSlope per slice (default 1).
        extra: further top-level tags, by keyword (e.g. PET's Units).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plane = plane_tags(affine)
    n = stored.shape[2]
    order = np.random.default_rng(zlib.crc32(series_uid.encode())).permutation(n)  # scrambled file order
    paths = []
    for rank, k in enumerate(int(i) for i in order):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = SOP_CLASS[modality]
        ds.file_meta.MediaStorageSOPInstanceUID = _uid(series_uid, k)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = SOP_CLASS[modality], ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = modality, study_uid, series_uid
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient.name, patient.patient_id, patient.birth_date, patient.sex
        ds.PatientWeight = f"{patient.weight_kg:g}"
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = when.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = when.strftime("%H%M%S")
        ds.AcquisitionTime = (when + timedelta(seconds=2 * k)).strftime("%H%M%S")
        ds.SeriesNumber, ds.SeriesDescription = series_number, description
        ds.ImageType = list(image_type)
        ds.InstanceNumber = n - k  # runs against the slice positions on purpose
        ds.ImagePositionPatient = slice_position(affine, k)
        for keyword, value in plane.items():
            setattr(ds, keyword, value)
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
        ds.RescaleSlope = f"{float(slopes[k]) if slopes is not None else 1.0:.10g}"
        ds.RescaleIntercept = f"{intercept:g}"
        for keyword, value in (extra or {}).items():
            setattr(ds, keyword, value)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        path = folder / f"IM{rank:05d}_{zlib.crc32(f'{series_uid}.{k}'.encode()):08x}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths


def write_dicom_study(
    release,
    subject: str,
    study: str,
    out: str | os.PathLike,
    *,
    patient: DicomPatient | None = None,
    dose: PetDose | None = None,
    seg: bool = True,
    extras: bool = False,
) -> dict:
    """Write one study of a synthetic release as DICOM series under ``out/<patient id>/<study>/``.

    Returns:
        What ingest should find: the folder, the study UID, the SUV factor the PET tags imply, and
        the source scans (``{"structural": ScanRecord, "functional": ScanRecord}``).
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    patient = patient or DicomPatient()
    dose = dose or PetDose()
    record = release.subjects[subject].studies[study]
    spec = modalities().study(study)
    folder = Path(out) / patient.patient_id / study
    study_uid = _uid(patient.patient_id, subject, study)
    frame = _uid(study_uid, "frame")
    when = dose.scan_start

    structural = record.scans[spec.structural]
    values, affine = read_nifti(release.image_path(structural))
    values = np.asarray(values)
    modality = modalities().scan(spec.structural).modality
    if modality == "CT":
        stored, intercept, description = (values.astype(np.int32) + 1024).clip(0, 65535).astype(np.uint16), -1024.0, "CT WB 5.0 B31f"
    else:
        stored, intercept, description = values.clip(0, 65535).astype(np.uint16), 0.0, "t1_vibe_dixon_tra_in"
    image_type = ("ORIGINAL", "PRIMARY", "AXIAL") if modality == "CT" else ("ORIGINAL", "PRIMARY", "DIXON", "IN_PHASE")
    write_dicom_series(
        folder / f"{modality}_{spec.structural}", stored, affine, modality=modality, patient=patient, study_uid=study_uid,
        series_uid=_uid(study_uid, modality), frame_of_reference=frame, series_number=2, description=description,
        when=when, intercept=intercept, image_type=image_type,
    )

    pet_record = record.scans[spec.functional]
    suv, pet_affine = read_nifti(release.image_path(pet_record))
    factor = dose.suv_factor(patient.weight_kg)
    activity = np.asarray(suv, dtype=np.float64) / factor  # Bq/ml
    slopes = np.maximum(activity.max(axis=(0, 1)), 1e-3) / 32000.0
    stored_pet = np.rint(activity / slopes[None, None, :]).astype(np.uint16)
    info = Dataset()
    info.Radiopharmaceutical = "Fluorodeoxyglucose"
    info.RadionuclideTotalDose = f"{dose.injected_bq / 1e6 if dose.dose_in_mbq else dose.injected_bq:.6g}"
    info.RadionuclideHalfLife = f"{F18_HALF_LIFE_S}"
    if dose.with_date:
        info.RadiopharmaceuticalStartDateTime = dose.injection.strftime("%Y%m%d%H%M%S")
    info.RadiopharmaceuticalStartTime = dose.injection.strftime("%H%M%S")
    pet_tags = {
        "Units": "BQML", "DecayCorrection": dose.decay_correction, "CorrectedImage": ["ATTN", "DECY", "SCAT"],
        "RadiopharmaceuticalInformationSequence": Sequence([info]), "SeriesType": ["WHOLE BODY", "IMAGE"],
    }
    write_dicom_series(
        folder / "PT_ac", stored_pet, pet_affine, modality="PT", patient=patient, study_uid=study_uid,
        series_uid=_uid(study_uid, "PT"), frame_of_reference=frame, series_number=3, description="PET WB AC",
        when=when, slopes=slopes, extra=pet_tags,
    )
    if extras:
        nac = dict(pet_tags, CorrectedImage=["DECY"])
        write_dicom_series(
            folder / "PT_nac", stored_pet, pet_affine, modality="PT", patient=patient, study_uid=study_uid,
            series_uid=_uid(study_uid, "PT NAC"), frame_of_reference=frame, series_number=4, description="PET WB NAC",
            when=when, slopes=slopes, extra=nac,
        )
        scout = stored[:, :, stored.shape[2] // 2 : stored.shape[2] // 2 + 1]
        write_dicom_series(
            folder / "scout", scout, affine, modality=modality, patient=patient, study_uid=study_uid,
            series_uid=_uid(study_uid, "scout"), frame_of_reference=frame, series_number=1, description="Topogram 0.6 T20f",
            when=when, intercept=intercept, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
        )
        _write_dose_report(folder / "dose_report.dcm", patient, study_uid, when)
    if seg:
        labels, label_affine = read_nifti(release.label_path(structural))
        write_seg_file(
            folder / "seg" / "labels.dcm", np.asarray(labels), label_affine, load_schema(),
            study_uid=study_uid, frame_of_reference=frame, patient=patient,
        )
    return {"folder": folder, "study_uid": study_uid, "suv_factor": factor, "structural": structural, "functional": pet_record}


def _write_dose_report(path: Path, patient: DicomPatient, study_uid: str, when: datetime) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    sop = SOP_CLASS["DOSE_SR"]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = _uid(study_uid, "dose")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop, ds.file_meta.MediaStorageSOPInstanceUID, "SR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, _uid(study_uid, "dose series")
    ds.PatientName, ds.PatientID = patient.name, patient.patient_id
    ds.SeriesNumber, ds.SeriesDescription = 999, "Dose Report"
    ds.StudyDate = when.strftime("%Y%m%d")
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
