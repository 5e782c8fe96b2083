"""A minimal DICOM SEG writer for tests: binary segments with codes, frames placed by position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from umd_dataset.dicomseg import SEG_SOP_CLASS
from umd_dataset.io import Geometry

FLIP = np.diag([-1.0, -1.0, 1.0])


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def write_seg(path: Path, geometry: Geometry, segments: list[dict]) -> Path:
    """Write a SEG whose frames are the axial slices of `geometry`.

    Each segment: {"label": str, "mask": bool array on geometry, "code": (value, scheme, meaning) or None,
    "laterality": (value, scheme, meaning) or None}. Empty slices are left out, as real writers do.
    """
    affine = geometry.affine
    spacing = geometry.spacing_mm
    row_dir = FLIP @ affine[:3, 0] / spacing[0]  # column index increases along array axis 0
    col_dir = FLIP @ affine[:3, 1] / spacing[1]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SEG_SOP_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = SEG_SOP_CLASS, ds.file_meta.MediaStorageSOPInstanceUID, "SEG"
    ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
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
    shared = Dataset()
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
    measures.PixelSpacing = [float(spacing[1]), float(spacing[0])]
    measures.SliceThickness = float(spacing[2])
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
            position.ImagePositionPatient = [float(v) for v in FLIP @ (affine @ [0, 0, k, 1])[:3]]
            ident.ReferencedSegmentNumber = number
            group.PlanePositionSequence, group.SegmentIdentificationSequence = Sequence([position]), Sequence([ident])
            per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.NumberOfFrames = len(frames)
    ds.PixelData = pack_bits(np.stack(frames).astype(np.uint8))
    ds.save_as(path, enforce_file_format=True)
    return path
