"""Writing label maps as DICOM SEG (binary, one segment per organ, coded by SNOMED CT with laterality).

Used to make DICOM studies for ingest, and by users who want a label map in a DICOM viewer.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from umd_dataset.io import Geometry
from umd_dataset.labels import LabelSchema

__all__ = ["write_seg", "write_seg_file", "plane_tags", "slice_position"]

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_FLIP = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS


def plane_tags(affine: np.ndarray) -> dict:
    """ImageOrientationPatient, PixelSpacing and SliceThickness of the slices of a grid (RAS affine)
    written as DICOM frames: rows run along array axis 1, columns along array axis 0."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    row_dir = _FLIP @ affine[:3, 0] / spacing[0]  # the column index runs along array axis 0
    col_dir = _FLIP @ affine[:3, 1] / spacing[1]
    return {
        "ImageOrientationPatient": [round(float(v), 8) for v in (*row_dir, *col_dir)],
        "PixelSpacing": [round(float(spacing[1]), 6), round(float(spacing[0]), 6)],
        "SliceThickness": round(float(spacing[2]), 6),
    }


def slice_position(affine: np.ndarray, k: int) -> list[float]:
    """ImagePositionPatient (LPS, mm) of slice `k` of a grid (RAS affine)."""
    return [round(float(v), 6) for v in _FLIP @ (affine @ [0, 0, k, 1])[:3]]


def _code(value: str, scheme: str, meaning: str):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def write_seg(
    path: str | os.PathLike,
    geometry: Geometry,
    segments: list[dict],
    *,
    study_uid: str | None = None,
    frame_of_reference: str | None = None,
    patient=None,
) -> Path:
    """Write a binary SEG whose frames are the slices of `geometry` along its third axis.

    Args:
        segments: each ``{"label": str, "mask": bool array on geometry, "code": (value, scheme,
            meaning) or None, "laterality": (value, scheme, meaning) or None}``. Empty slices are
            left out, as real writers do.
        study_uid, frame_of_reference, patient: identifiers to share with the scans.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels import pack_bits
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = geometry.affine
    plane = plane_tags(affine)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SEG_SOP_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = SEG_SOP_CLASS, ds.file_meta.MediaStorageSOPInstanceUID, "SEG"
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.FrameOfReferenceUID = frame_of_reference or generate_uid()
    ds.SeriesNumber, ds.SeriesDescription = 100, "Organ segmentation"
    if patient is not None:
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = patient.name, patient.patient_id, patient.birth_date
    ds.Rows, ds.Columns = geometry.shape[1], geometry.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.SegmentationType = "BINARY"
    items = []
    for number, segment in enumerate(segments, start=1):
        item = Dataset()
        item.SegmentNumber, item.SegmentLabel, item.SegmentAlgorithmType = number, segment["label"], "MANUAL"
        item.SegmentedPropertyCategoryCodeSequence = Sequence([_code("123037004", "SCT", "Anatomical Structure")])
        if segment.get("code"):
            prop = _code(*segment["code"])
            if segment.get("laterality"):
                prop.SegmentedPropertyTypeModifierCodeSequence = Sequence([_code(*segment["laterality"])])
            item.SegmentedPropertyTypeCodeSequence = Sequence([prop])
        items.append(item)
    ds.SegmentSequence = Sequence(items)
    shared, orientation, measures = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = plane["ImageOrientationPatient"]
    measures.PixelSpacing, measures.SliceThickness = plane["PixelSpacing"], plane["SliceThickness"]
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = Sequence([orientation]), Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames, per_frame = [], []
    for number, segment in enumerate(segments, start=1):
        for k in range(geometry.shape[2]):
            plane = segment["mask"][:, :, k]
            if not plane.any():
                continue
            frames.append(plane.T)  # rows = array axis 1, columns = array axis 0
            group, position, ident = Dataset(), Dataset(), Dataset()
            position.ImagePositionPatient = slice_position(affine, k)
            ident.ReferencedSegmentNumber = number
            group.PlanePositionSequence, group.SegmentIdentificationSequence = Sequence([position]), Sequence([ident])
            per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.NumberOfFrames = len(frames)
    ds.PixelData = pack_bits(np.stack(frames).astype(np.uint8)) if frames else b""
    ds.save_as(path, enforce_file_format=True)
    return path


def write_seg_file(path: str | os.PathLike, labels: np.ndarray, affine: np.ndarray, schema: LabelSchema, **ids) -> Path:
    """Write a canonical label map as a SEG: one segment per organ present, SNOMED CT coded."""
    segments = []
    for organ in schema:
        mask = labels == organ.id
        if not mask.any():
            continue
        laterality = None
        if organ.laterality in ("left", "right"):
            code, meaning, _ = schema.laterality_codes[organ.laterality]
            laterality = (code, "SCT", meaning)
        segments.append({"label": organ.name, "mask": mask, "code": (organ.snomed_code, "SCT", organ.snomed_meaning), "laterality": laterality})
    return write_seg(path, Geometry(labels.shape, affine), segments, **ids)
