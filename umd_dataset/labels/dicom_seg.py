"""DICOM Segmentation objects (SEG), read and written: segments, their codes, and their masks on a grid.

Reading (`read_dicom_seg`) places frames by their ImagePositionPatient and the shared
ImageOrientationPatient, never by their order in the file; world coordinates are converted from
DICOM's LPS to NIfTI's RAS. Writing (`write_seg`, `write_seg_file`) makes a binary SEG with one
segment per organ, coded by SNOMED CT with laterality: used to make DICOM studies for ingest, and
by users who want a label map in a DICOM viewer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from umd_dataset.errors import GridMismatchError, SegmentationError
from umd_dataset.io.dicom import SEG_SOP_CLASS, plane_tags, slice_position, volume_affine
from umd_dataset.io.files import atomic_path
from umd_dataset.io.geometry import LPS_TO_RAS, Geometry
from umd_dataset.schema.organs import LabelSchema

__all__ = ["Segment", "SegFile", "read_dicom_seg", "write_seg", "write_seg_file"]


@dataclass
class Segment:
    """One segment of a SEG: its number, label, coded concept and mask (bool, on the read grid, in
    Fortran order: each frame is one contiguous plane of it, and nothing reorders the whole volume;
    harmonization reorders only each organ's box)."""

    number: int
    label: str
    code: tuple[str, str, str] | None  # (value, scheme, meaning) of SegmentedPropertyType
    laterality: tuple[str, str, str] | None  # (value, scheme, meaning) of its modifier, if any
    mask: np.ndarray


@dataclass
class SegFile:
    path: str
    geometry: Geometry
    segments: list[Segment]
    notes: list[str] = field(default_factory=list)


def _code(item) -> tuple[str, str, str] | None:
    if item is None:
        return None
    return (str(item.CodeValue), str(item.CodingSchemeDesignator), str(getattr(item, "CodeMeaning", "")))


def _first(dataset, keyword):
    sequence = getattr(dataset, keyword, None)
    return sequence[0] if sequence else None


def read_dicom_seg(path: str | os.PathLike, target: Geometry | None = None, fractional_threshold: float = 0.5) -> SegFile:
    """Read a DICOM SEG file into one boolean mask per segment.

    Args:
        path: the SEG file.
        target: grid to place the frames on (e.g. the scan the SEG was drawn on). Its slices must
            coincide with the frames (same orientation and pixel spacing); otherwise a
            `GridMismatchError` names both grids. None: the SEG's own grid, built from the frames.
        fractional_threshold: for FRACTIONAL segmentations, voxels at or above this fraction of
            MaximumFractionalValue are inside.

    Raises:
        SegmentationError: not a SEG, or frames without the geometry needed to place them.
        GridMismatchError: frames that do not lie on `target`'s slices, or foreground outside it.
    """
    import pydicom

    path = str(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as error:  # pydicom raises several types for non-DICOM or truncated files
        raise SegmentationError(f"{path} is not a readable DICOM file: {error}") from error
    if str(getattr(ds, "SOPClassUID", "")) != SEG_SOP_CLASS:
        raise SegmentationError(f"{path} is not a DICOM Segmentation (SOP class {getattr(ds, 'SOPClassUID', 'missing')}).")
    notes: list[str] = []
    pixels = np.asarray(ds.pixel_array)
    if pixels.ndim == 2:
        pixels = pixels[None]
    frames = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(frames) != pixels.shape[0]:
        notes.append(
            f"{len(frames)} per-frame functional groups but {pixels.shape[0]} frames of pixel data; "
            f"the first {min(len(frames), pixels.shape[0])} frames are used."
        )
    count = min(len(frames), pixels.shape[0])
    if count == 0:
        raise SegmentationError(f"{path}: no frame with per-frame functional groups (position, segment number).")
    seg_type = str(getattr(ds, "SegmentationType", "BINARY"))
    if seg_type == "FRACTIONAL":
        maximum = float(getattr(ds, "MaximumFractionalValue", 255))
        pixels = pixels >= fractional_threshold * maximum
        notes.append(f"FRACTIONAL segmentation thresholded at {fractional_threshold} x {maximum:g}.")
    elif pixels.dtype == np.uint8 and int(pixels.max(initial=0)) <= 1:  # unpacked 1-bit frames: 0 and 1, read as bool without a copy
        pixels = pixels.view(bool)
    else:
        pixels = pixels.astype(bool)

    shared = _first(ds, "SharedFunctionalGroupsSequence")
    positions, orientations, spacings, numbers = [], [], [], []
    for index in range(count):
        frame = frames[index]
        orientation = _first(frame, "PlaneOrientationSequence") or (shared and _first(shared, "PlaneOrientationSequence"))
        measures = _first(frame, "PixelMeasuresSequence") or (shared and _first(shared, "PixelMeasuresSequence"))
        position = _first(frame, "PlanePositionSequence")
        ident = _first(frame, "SegmentIdentificationSequence") or (shared and _first(shared, "SegmentIdentificationSequence"))
        if orientation is None or measures is None or position is None or ident is None:
            raise SegmentationError(f"{path}: frame {index + 1} lacks its orientation, pixel spacing, position or segment number.")
        orientations.append(np.asarray(orientation.ImageOrientationPatient, dtype=np.float64))
        spacings.append(np.asarray(measures.PixelSpacing, dtype=np.float64))
        positions.append(np.asarray(position.ImagePositionPatient, dtype=np.float64))
        numbers.append(int(ident.ReferencedSegmentNumber))
    if not all(np.allclose(o, orientations[0], atol=1e-4) for o in orientations):
        raise SegmentationError(f"{path}: frames with different orientations; one SEG must hold parallel frames.")
    if not all(np.allclose(s, spacings[0], atol=1e-4) for s in spacings):
        raise SegmentationError(f"{path}: frames with different pixel spacings.")
    row_dir, col_dir = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row_dir, col_dir)
    d_row, d_col = spacings[0]  # PixelSpacing = (between rows, between columns)
    rows, cols = pixels.shape[1:]

    if target is None:
        # the SEG's own grid: writers leave out empty slices, so the slice spacing is the declared
        # one (SpacingBetweenSlices, else SliceThickness), not the gap between the frames present
        heights = np.array([p @ normal for p in positions])
        levels = np.unique(np.round(heights, 3))
        measures = shared and _first(shared, "PixelMeasuresSequence")
        declared = float(getattr(measures, "SpacingBetweenSlices", 0) or getattr(measures, "SliceThickness", 0) or 0)
        if declared > 0:
            d_slice = declared
        elif len(levels) > 1:
            d_slice = float(np.diff(levels).min())
            notes.append(f"no slice spacing declared: {d_slice} mm, the smallest gap between frames, was used.")
        else:
            d_slice = 1.0
            notes.append("one slice position and no declared spacing: 1 mm used.")
        index = (levels - levels[0]) / d_slice
        if not np.allclose(index, np.round(index), atol=1e-2):
            raise SegmentationError(
                f"{path}: frame positions {np.round(levels, 3).tolist()} mm are not on a grid of {d_slice} mm slices; "
                "give the scan the SEG was drawn on as the target grid."
            )
        origin = positions[int(np.argmin(heights))] - normal * (heights.min() - levels[0])
        affine = volume_affine(row_dir, col_dir, (d_row, d_col), normal * d_slice, origin)
        target = Geometry((cols, rows, int(round(index[-1])) + 1), affine)

    to_voxel = np.linalg.inv(target.affine) @ LPS_TO_RAS
    step_c = to_voxel[:3, :3] @ (row_dir * d_col)
    step_r = to_voxel[:3, :3] @ (col_dir * d_row)
    for name, step in (("column", step_c), ("row", step_r)):
        if not (np.isclose(np.abs(step).max(), 1.0, atol=1e-3) and np.isclose(np.abs(step).sum(), 1.0, atol=1e-3)):
            raise GridMismatchError(
                f"{path}: the SEG's {name} step ({d_col if name == 'column' else d_row} mm along "
                f"{np.round(row_dir if name == 'column' else col_dir, 4).tolist()} LPS) is not one voxel of the "
                f"target grid ({target.describe()}). The SEG was drawn on another grid: harmonize it onto "
                "the scan it was drawn on, then carry the label map to other grids in world coordinates."
            )
    by_number: dict[int, np.ndarray] = {}
    c_idx = r_idx = None  # (rows, cols) index grids, made only if a frame needs the general placement
    for index in range(count):
        start = to_voxel @ np.append(positions[index], 1.0)
        if not np.allclose(start[:3], np.round(start[:3]), atol=1e-2):
            raise GridMismatchError(
                f"{path}: frame {index + 1} at {positions[index].round(3).tolist()} mm (LPS) falls between the "
                f"voxels of the target grid ({target.describe()})."
            )
        frame = pixels[index]
        # Fortran order: a frame (a plane of the first two axes, as SEGs drawn on a scan are) is one contiguous block
        mask = by_number.setdefault(numbers[index], np.zeros(target.shape, dtype=bool, order="F"))
        if _place_as_block(mask, frame, start[:3], step_c, step_r):
            continue
        if c_idx is None:
            c_idx, r_idx = np.meshgrid(np.arange(cols), np.arange(rows))
        ijk = [np.rint(start[a] + c_idx * step_c[a] + r_idx * step_r[a]).astype(np.int64) for a in range(3)]
        inside = np.ones(c_idx.shape, dtype=bool)
        for a in range(3):
            inside &= (ijk[a] >= 0) & (ijk[a] < target.shape[a])
        lost = int(np.count_nonzero(frame & ~inside))
        if lost:
            raise GridMismatchError(
                f"{path}: {lost} foreground pixels of frame {index + 1} (segment {numbers[index]}) lie outside the "
                f"target grid ({target.describe()})."
            )
        mask[ijk[0][inside], ijk[1][inside], ijk[2][inside]] |= frame[inside]

    segments = []
    for item in ds.SegmentSequence:
        number = int(item.SegmentNumber)
        prop = _first(item, "SegmentedPropertyTypeCodeSequence")
        modifier = _first(prop, "SegmentedPropertyTypeModifierCodeSequence") if prop is not None else None
        modifier = modifier or _first(item, "AnatomicRegionModifierSequence")
        mask = by_number.get(number)
        if mask is None:
            mask = np.zeros(target.shape, dtype=bool, order="F")
            notes.append(f"segment {number} ({getattr(item, 'SegmentLabel', '')}) has no frame.")
        segments.append(Segment(number, str(getattr(item, "SegmentLabel", "")), _code(prop), _code(modifier), mask))
    return SegFile(str(Path(path)), target, segments, notes)


def _place_as_block(mask: np.ndarray, frame: np.ndarray, start: np.ndarray, step_c: np.ndarray, step_r: np.ndarray) -> bool:
    """OR a frame into `mask` as one block, when its columns and rows run along target axes in
    whole voxels (the usual case: a SEG drawn on the scan's own slices), and return True; return
    False to leave it to the general, per-pixel placement. The block is exactly what the
    per-pixel rounding gives: the rounded start, steps and axes are taken only when the drift
    they leave over the whole frame stays below half a voxel."""
    rows, cols = frame.shape
    steps = np.rint(np.stack([step_c, step_r])).astype(np.int64)
    drift = np.abs(start - np.rint(start)) + (cols - 1) * np.abs(step_c - steps[0]) + (rows - 1) * np.abs(step_r - steps[1])
    if drift.max() >= 0.5 or sorted(np.abs(steps).sum(axis=1)) != [1, 1]:
        return False
    axis_c, axis_r = int(np.flatnonzero(steps[0])[0]), int(np.flatnonzero(steps[1])[0])
    if axis_c == axis_r:
        return False
    axis_s = 3 - axis_c - axis_r
    origin = np.rint(start).astype(np.int64)
    shape = mask.shape

    def span(first: int, sign: int, count: int, size: int) -> tuple[int, int]:
        """Frame indices 0 <= i < count whose target index first + i * sign lies in 0..size-1."""
        if sign > 0:
            return max(0, -first), min(count, size - first)
        return max(0, first - size + 1), min(count, first + 1)

    c_lo, c_hi = span(int(origin[axis_c]), int(steps[0][axis_c]), cols, shape[axis_c])
    r_lo, r_hi = span(int(origin[axis_r]), int(steps[1][axis_r]), rows, shape[axis_r])
    level = int(origin[axis_s])
    if not 0 <= level < shape[axis_s] or c_lo >= c_hi or r_lo >= r_hi:
        return False  # nothing of the frame lands inside: the general placement counts what is lost
    inner = frame[r_lo:r_hi, c_lo:c_hi]
    if np.count_nonzero(inner) != np.count_nonzero(frame):
        return False  # foreground outside: the general placement raises, naming it

    def target(axis: int, sign: int, lo: int, hi: int):
        begin = int(origin[axis]) + lo * sign
        end = int(origin[axis]) + (hi - 1) * sign
        return slice(begin, end + 1) if sign > 0 else slice(begin, end - 1 if end > 0 else None, -1)

    index: list = [None, None, None]
    index[axis_c] = target(axis_c, int(steps[0][axis_c]), c_lo, c_hi)
    index[axis_r] = target(axis_r, int(steps[1][axis_r]), r_lo, r_hi)
    index[axis_s] = level
    view = mask[tuple(index)]  # its axes in target order: (row, column) if axis_r < axis_c
    view |= inner if axis_r < axis_c else inner.T
    return True


# ----------------------------------------------------------------------------------------------
# writing


def _code_item(value: str, scheme: str, meaning: str):
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
    """Write a binary SEG whose frames are the slices of `geometry` along its third axis, atomically.

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
        item.SegmentedPropertyCategoryCodeSequence = Sequence([_code_item("123037004", "SCT", "Anatomical Structure")])
        if segment.get("code"):
            prop = _code_item(*segment["code"])
            if segment.get("laterality"):
                prop.SegmentedPropertyTypeModifierCodeSequence = Sequence([_code_item(*segment["laterality"])])
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
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
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
