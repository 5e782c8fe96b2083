"""DICOM series discovery, classification and volume assembly.

- `discover`: walk a folder tree of any depth, read every file's header (no pixels), group the
  files into studies and series; non-DICOM, corrupt and truncated files are reported, never fatal.
- `classify`: what a series is (CT, attenuation-corrected PET or not, MR and its contrast,
  localizer, MIP, secondary capture, dose report, SEG), with the reason.
- `assemble`: one series -> a volume and its RAS affine. Slices are ordered by their position along
  the slice normal (never by InstanceNumber), rescaled slice by slice, and checked: mixed
  orientations, duplicate positions, missing slices and uneven spacing raise a `SeriesGeometryError`
  that says where; gantry tilt is corrected explicitly (each slice shifted in plane) and reported.
  Multi-frame (enhanced) files are read frame by frame from their functional groups.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from umd_dataset.errors import SeriesGeometryError
from umd_dataset.io.dicom import SECONDARY_CAPTURE_PREFIX, SEG_SOP_CLASS, volume_affine
from umd_dataset.io.jobs import track
from umd_dataset.schema.studies import modalities

__all__ = [
    "FileProblem",
    "Header",
    "Series",
    "Discovery",
    "Volume",
    "discover",
    "classify",
    "assemble",
]
_IMAGE_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Modality",
    "SeriesNumber", "SeriesDescription", "ImageType", "Rows", "Columns", "ImagePositionPatient",
    "ImageOrientationPatient", "PixelSpacing", "InstanceNumber", "NumberOfFrames", "PatientID",
    "IssuerOfPatientID", "PatientName", "PatientBirthDate", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime",
    "CorrectedImage", "AttenuationCorrectionMethod", "GantryDetectorTilt", "ScanningSequence", "SequenceName",
    "ContentDate", "AcquisitionDate", "AcquisitionTime", "SliceThickness",
]


@dataclass(frozen=True)
class FileProblem:
    """A file of the input tree that could not be used, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Header:
    """The header fields of one DICOM file that discovery and classification need."""

    path: str
    sop_class: str
    study_uid: str
    series_uid: str
    frame_of_reference: str
    modality: str
    series_number: int
    description: str
    image_type: tuple[str, ...]
    rows: int
    columns: int
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    frames: int
    patient_id: str
    patient_issuer: str
    patient_name: str
    birth_date: str
    study_date: str
    corrected: tuple[str, ...]
    sequence: str

    @classmethod
    def of(cls, path: str, ds) -> Header:
        def text(keyword: str) -> str:
            value = ds.get(keyword, "")
            return "" if value is None else str(value).strip()

        def numbers(keyword: str) -> tuple[float, ...] | None:
            value = ds.get(keyword)
            return tuple(float(v) for v in value) if value else None

        def words(keyword: str) -> tuple[str, ...]:
            value = ds.get(keyword)
            if value is None:
                return ()
            items = [value] if isinstance(value, str) else list(value)
            return tuple(str(v).strip().upper() for v in items)

        return cls(
            path=path,
            sop_class=text("SOPClassUID"),
            study_uid=text("StudyInstanceUID"),
            series_uid=text("SeriesInstanceUID"),
            frame_of_reference=text("FrameOfReferenceUID"),
            modality=text("Modality").upper(),
            series_number=int(ds.get("SeriesNumber") or 0),
            description=text("SeriesDescription"),
            image_type=words("ImageType"),
            rows=int(ds.get("Rows") or 0),
            columns=int(ds.get("Columns") or 0),
            position=numbers("ImagePositionPatient"),
            orientation=numbers("ImageOrientationPatient"),
            frames=int(ds.get("NumberOfFrames") or 1),
            patient_id=text("PatientID"),
            patient_issuer=text("IssuerOfPatientID"),
            patient_name=text("PatientName"),
            birth_date=text("PatientBirthDate"),
            study_date=text("StudyDate"),
            corrected=words("CorrectedImage"),
            sequence=" ".join(words("ScanningSequence") + words("SequenceName")),
        )


@dataclass
class Series:
    """The files of one series, with what `classify` made of it."""

    study_uid: str
    series_uid: str
    headers: list[Header]
    kind: str = ""
    contrast: str = ""
    reason: str = ""

    @property
    def first(self) -> Header:
        return self.headers[0]

    @property
    def slices(self) -> int:
        return sum(h.frames for h in self.headers)

    def describe(self) -> str:
        h = self.first
        return f"series {h.series_number} '{h.description}' ({h.modality}, {self.slices} slices, {self.kind}{'/' + self.contrast if self.contrast else ''})"


@dataclass
class Discovery:
    """What `discover` found: series by study, and the files it could not use."""

    root: str
    series: list[Series]
    problems: list[FileProblem] = field(default_factory=list)
    skipped: list[FileProblem] = field(default_factory=list)

    def studies(self) -> dict[str, list[Series]]:
        grouped: dict[str, list[Series]] = {}
        for series in self.series:
            grouped.setdefault(series.study_uid, []).append(series)
        return grouped


def _read_ahead(path: str) -> None:
    """Read the start of a file, so that parsing its header finds it in the OS cache."""
    try:
        with open(path, "rb") as handle:
            handle.read(1 << 16)
    except OSError:
        return  # `_read_header` reads it again and reports why it cannot


def _read_header(path: str) -> tuple[Header | None, FileProblem | None, bool]:
    """(header, problem, is_dicom). Non-DICOM files are skipped quietly but listed."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with open(path, "rb") as handle:
            preamble = handle.read(132)
    except OSError as error:
        return None, FileProblem(path, f"unreadable: {error}"), True
    if len(preamble) < 132 or preamble[128:132] != b"DICM":
        return None, FileProblem(path, "not a DICOM file (no DICM prefix)"), False
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_IMAGE_TAGS)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as error:
        return None, FileProblem(path, f"corrupt or truncated DICOM: {error}"), True
    if not ds.get("SeriesInstanceUID") or not ds.get("StudyInstanceUID"):
        return None, FileProblem(path, "DICOM file without Study/Series Instance UID (a DICOMDIR, or a truncated file)"), True
    try:  # pydicom converts values when they are read: a malformed one surfaces here
        return Header.of(path, ds), None, True
    except (ValueError, TypeError, KeyError, OverflowError) as error:
        return None, FileProblem(path, f"malformed header value: {error}"), True


def discover(root: str | os.PathLike, *, workers: int | None = None, progress: bool = False) -> Discovery:
    """Find every DICOM series below `root` (any depth), reading headers only.

    Every series is classified (`classify`). Files that are not DICOM are listed in `skipped`;
    corrupt and truncated DICOM files in `problems`; neither stops the others.
    """
    paths = sorted(str(Path(folder) / name) for folder, _, names in os.walk(root) for name in names)
    workers = workers or min(16, (os.cpu_count() or 1) * 4)
    headers: list[Header] = []
    problems, skipped = [], []
    with ThreadPoolExecutor(workers) as pool:
        # `workers` threads read the files ahead (I/O releases the GIL), this one parses them in order: parsing
        # is Python, and threads that parse side by side only queue for the GIL (twice as slow on 2 cores)
        pool.map(_read_ahead, paths)
        results = track(map(_read_header, paths), total=len(paths), desc="read headers", unit="file", enabled=progress)
        for header, problem, is_dicom in results:
            if header is not None:
                headers.append(header)
            elif is_dicom:
                problems.append(problem)
            else:
                skipped.append(problem)
    grouped: dict[tuple[str, str], list[Header]] = {}
    for header in headers:
        grouped.setdefault((header.study_uid, header.series_uid), []).append(header)
    series = []
    for (study_uid, series_uid), members in sorted(grouped.items()):
        item = Series(study_uid, series_uid, sorted(members, key=lambda h: h.path))
        item.kind, item.contrast, item.reason = classify(item)
        series.append(item)
    return Discovery(str(root), series, problems, skipped)


_DIXON = [
    ("water", re.compile(r"\b(W|WATER)\b|_W$|\bWATER\b")),
    ("fat", re.compile(r"\b(F|FAT)\b|_F$")),
    ("in_phase", re.compile(r"\b(IP|IN|IN_PHASE|INPHASE)\b|IN[ _-]?PHASE|_IP?$")),
    ("opposed_phase", re.compile(r"\b(OP|OPP|OUT|OPP_PHASE|OUT_PHASE)\b|(OUT|OPP(OSED)?)[ _-]?PHASE|_OP?P?$")),
]


def classify(series: Series) -> tuple[str, str, str]:
    """(kind, contrast, reason) of a series.

    Kinds: the scan key of the modality (``ct``, ``pet`` for an attenuation-corrected PET,
    ``mri``; from ``modalities.json``), ``pet_nac``, ``seg``, ``localizer``, ``mip``,
    ``secondary``, ``dose_report``, ``other``. MR contrasts: ``water``, ``fat``, ``in_phase``,
    ``opposed_phase`` (Dixon), ``t1``, ``t2``, ``diffusion``, or ``""``.
    """
    h = series.first
    description = h.description.upper()
    image_type = set(h.image_type)
    if h.sop_class == SEG_SOP_CLASS or h.modality == "SEG":
        return "seg", "", "DICOM Segmentation"
    if h.modality in ("SR", "KO", "PR") or "DOSE" in description and ("REPORT" in description or h.modality == "SR"):
        return "dose_report", "", f"modality {h.modality}, a report, not an image"
    if h.sop_class.startswith(SECONDARY_CAPTURE_PREFIX) or h.modality == "OT" or "SCREEN SAVE" in description:
        return "secondary", "", "secondary capture"
    if "LOCALIZER" in image_type or re.search(r"\b(SCOUT|TOPOGRAM|SURVIEW|LOCALI[SZ]ER|TOPO|PILOT|3[ -]?PLANE)\b", description):
        return "localizer", "", "ImageType LOCALIZER or a scout/pilot description"
    if "MIP" in image_type or re.search(r"\bMIP\b", description) or "PROJECTION IMAGE" in image_type:
        return "mip", "", "maximum intensity projection"
    orientations = {tuple(np.round(o.orientation, 3)) for o in series.headers if o.orientation}
    if len(orientations) > 1:
        return "localizer", "", f"slices in {len(orientations)} orientations (a multi-plane localizer)"
    if (h.position is None or h.orientation is None) and h.frames == 1:
        return "other", "", "no ImagePositionPatient/ImageOrientationPatient: not a volume slice"
    scan = modalities().scan_of_modality("PT" if h.modality == "PET" else h.modality)
    if scan is None:
        return "other", "", f"modality {h.modality}"
    if h.modality == "CT":
        return scan.key, "", "modality CT"
    if scan.functional:
        corrected = "ATTN" in h.corrected
        nac = re.search(r"\bNAC\b|NON[ _-]?AC|NO[ _-]?AC|UNCORR|NOT[ _-]?CORR", description)
        if nac or (h.corrected and not corrected):
            return "pet_nac", "", "PET without attenuation correction (CorrectedImage lacks ATTN or NAC in description)"
        return scan.key, "", "PET, attenuation-corrected" + ("" if corrected else " (assumed: CorrectedImage absent)")
    if h.modality == "MR":
        types = " ".join(h.image_type) + " " + description
        for contrast, pattern in _DIXON:
            if pattern.search(types):
                return scan.key, contrast, f"MR, Dixon {contrast} (ImageType/description)"
        if re.search(r"DWI|DIFFUSION|\bADC\b|\bEP\b", types + " " + h.sequence):
            return scan.key, "diffusion", "MR diffusion"
        if re.search(r"\bT2\b|HASTE|SSFSE|TSE.*T2", description):
            return scan.key, "t2", "MR T2 (description)"
        if re.search(r"\bT1\b|VIBE|LAVA|MPRAGE|FLASH", description):
            return scan.key, "t1", "MR T1 (description)"
        return scan.key, "", "MR"
    return "other", "", f"modality {h.modality}"


@dataclass
class Volume:
    """An assembled series: voxels on (column, row, slice) axes and the voxel-to-RAS affine."""

    array: np.ndarray
    affine: np.ndarray
    headers: list  # the pydicom datasets (or per-frame views) of each slice, in slice order
    notes: list[str] = field(default_factory=list)
    slopes: np.ndarray | None = None
    intercepts: np.ndarray | None = None


@dataclass
class _Slice:
    position: np.ndarray
    orientation: np.ndarray
    spacing: np.ndarray  # (between rows, between columns)
    pixels: np.ndarray
    slope: float
    intercept: float
    dataset: object
    label: str


def _frame_group(ds, index: int, keyword: str):
    for groups in (ds.get("PerFrameFunctionalGroupsSequence"), ds.get("SharedFunctionalGroupsSequence")):
        if groups:
            group = groups[index] if groups is ds.get("PerFrameFunctionalGroupsSequence") else groups[0]
            sequence = group.get(keyword)
            if sequence:
                return sequence[0]
    return None


_NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")  # implicit and explicit VR little endian


def pixels_of(ds) -> np.ndarray:
    """The pixel array of a dataset, equal to pydicom's ``ds.pixel_array``.

    A single-frame, uncompressed little-endian, one-sample image (what CT, MR and PET series are)
    is read straight from its bytes, with pydicom's rules: values masked to BitsStored
    (unsigned) or sign-extended from it (signed). Anything else goes through ``ds.pixel_array``.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
    allocated, stored = int(ds.get("BitsAllocated") or 0), int(ds.get("BitsStored") or 0)
    simple = (
        syntax in _NATIVE_LITTLE_ENDIAN and "PixelData" in ds and int(ds.get("SamplesPerPixel") or 1) == 1
        and int(ds.get("NumberOfFrames") or 1) == 1 and allocated in (8, 16, 32) and 0 < stored <= allocated
        and ds.get("PixelRepresentation") in (0, 1)
    )
    if not simple:
        return np.asarray(ds.pixel_array)
    signed = int(ds.PixelRepresentation) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    rows, columns = int(ds.Rows), int(ds.Columns)
    data = ds.PixelData
    if len(data) < rows * columns * dtype.itemsize:
        return np.asarray(ds.pixel_array)  # pydicom says what is wrong
    pixels = np.frombuffer(data, dtype=dtype, count=rows * columns).reshape(rows, columns)
    if stored < allocated:
        if signed:
            shift = allocated - stored
            pixels = (pixels << shift) >> shift  # sign-extend from BitsStored
        else:
            pixels = pixels & dtype.type((1 << stored) - 1)
    return pixels.astype(dtype.newbyteorder("="), copy=False)


def _slices_of(path: str) -> list[_Slice]:
    """The slices of one file: one for a classic image, one per frame for an enhanced multi-frame image."""
    import pydicom

    ds = pydicom.dcmread(path)
    pixels = pixels_of(ds)
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames == 1 and "PerFrameFunctionalGroupsSequence" not in ds:
        if ds.get("ImagePositionPatient") is None or ds.get("ImageOrientationPatient") is None or ds.get("PixelSpacing") is None:
            raise SeriesGeometryError(f"{path}: no ImagePositionPatient, ImageOrientationPatient or PixelSpacing.")
        return [
            _Slice(
                np.asarray(ds.ImagePositionPatient, float), np.asarray(ds.ImageOrientationPatient, float),
                np.asarray(ds.PixelSpacing, float), pixels, float(ds.get("RescaleSlope", 1) or 1),
                float(ds.get("RescaleIntercept", 0) or 0), ds, path,
            )
        ]
    if pixels.ndim == 2:
        pixels = pixels[None]
    if "PerFrameFunctionalGroupsSequence" not in ds:
        offsets = ds.get("GridFrameOffsetVector")
        if offsets is None or ds.get("ImagePositionPatient") is None:
            raise SeriesGeometryError(
                f"{path}: a multi-frame file ({frames} frames) without per-frame functional groups or "
                "GridFrameOffsetVector: the frames cannot be placed."
            )
        orientation = np.asarray(ds.ImageOrientationPatient, float)
        normal = np.cross(orientation[:3], orientation[3:])
        origin = np.asarray(ds.ImagePositionPatient, float)
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        slope *= float(ds.get("DoseGridScaling", 1) or 1)
        return [
            _Slice(origin + float(o) * normal, orientation, np.asarray(ds.PixelSpacing, float), pixels[i], slope, intercept, ds,
                   f"{path} frame {i + 1}")
            for i, o in enumerate(offsets)
        ]
    slices = []
    for index in range(min(frames, pixels.shape[0])):
        position = _frame_group(ds, index, "PlanePositionSequence")
        orientation = _frame_group(ds, index, "PlaneOrientationSequence")
        measures = _frame_group(ds, index, "PixelMeasuresSequence")
        if position is None or orientation is None or measures is None:
            raise SeriesGeometryError(f"{path} frame {index + 1}: no plane position, orientation or pixel measures.")
        transform = _frame_group(ds, index, "PixelValueTransformationSequence")
        slope = float(getattr(transform, "RescaleSlope", 1) or 1) if transform is not None else float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(getattr(transform, "RescaleIntercept", 0) or 0) if transform is not None else float(ds.get("RescaleIntercept", 0) or 0)
        slices.append(
            _Slice(np.asarray(position.ImagePositionPatient, float), np.asarray(orientation.ImageOrientationPatient, float),
                   np.asarray(measures.PixelSpacing, float), pixels[index], slope, intercept, ds, f"{path} frame {index + 1}")
        )
    return slices


def _stack(slices: list[_Slice]) -> np.ndarray:
    """Rescaled slices on (column, row, slice) axes, in one preallocated array.

    Integer pixels with slope 1 and integer intercepts stay integers (int16 when the range fits,
    else int32); anything else becomes float32 (exact for integers up to 2**24, and for SUV).

    Each slice is written whole into a (slice, row, column) buffer, one contiguous block per slice,
    and the volume is that buffer's transposed view: Fortran order, the order of a NIfTI file, so
    neither the stack nor the file writer copies voxels across strides.
    """
    rows, cols = slices[0].pixels.shape
    integral = all(
        np.issubdtype(s.pixels.dtype, np.integer) and s.slope == 1.0 and float(s.intercept).is_integer() for s in slices
    )
    if integral:
        low = min(int(np.iinfo(s.pixels.dtype).min) + int(s.intercept) for s in slices)
        high = max(int(np.iinfo(s.pixels.dtype).max) + int(s.intercept) for s in slices)
        dtype = np.int16 if low >= -32768 and high <= 32767 else np.int32
        observed = [(int(s.pixels.min()) + int(s.intercept), int(s.pixels.max()) + int(s.intercept)) for s in slices]
        if dtype == np.int32 and min(o[0] for o in observed) >= -32768 and max(o[1] for o in observed) <= 32767:
            dtype = np.int16
    else:
        dtype = np.float32
    buffer = np.empty((len(slices), rows, cols), dtype=dtype)
    for k, s in enumerate(slices):
        if integral:  # computed in int32 (the range was checked above), stored in the buffer's type
            np.add(s.pixels, np.int32(int(s.intercept)), out=buffer[k], dtype=np.int32, casting="unsafe")
        else:
            buffer[k] = s.pixels.astype(np.float64) * s.slope + s.intercept
    return buffer.transpose(2, 1, 0)


def assemble(paths: Iterable[str], *, spacing_tolerance: float = 0.01) -> Volume:
    """Assemble the files of one series into a volume with a RAS affine.

    Args:
        paths: the series' files (any order; multi-frame files allowed).
        spacing_tolerance: relative deviation of slice spacing accepted as even.

    Returns:
        A `Volume` whose array holds the values after each slice's rescale slope and intercept:
        integers (int16/int32) when every slope is 1 and every intercept an integer, else float32.

    Raises:
        SeriesGeometryError: mixed orientations or pixel spacings, duplicate positions with
            different pixels, missing slices, uneven spacing; the message names the files and
            positions.
    """
    slices = [s for path in paths for s in _slices_of(path)]
    if not slices:
        raise SeriesGeometryError("an empty series")
    notes: list[str] = []
    first = slices[0]
    for s in slices[1:]:
        if not np.allclose(s.orientation, first.orientation, atol=1e-4):
            raise SeriesGeometryError(
                f"mixed orientations in one series: {s.label} has {np.round(s.orientation, 4).tolist()}, "
                f"{first.label} has {np.round(first.orientation, 4).tolist()}. Split the series (localizers mixed in?)."
            )
        if not np.allclose(s.spacing, first.spacing, atol=1e-4) or s.pixels.shape != first.pixels.shape:
            raise SeriesGeometryError(f"mixed pixel spacing or matrix size in one series: {s.label} and {first.label}.")
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row_dir, col_dir)
    heights = np.array([s.position @ normal for s in slices])
    order = np.argsort(heights, kind="stable")
    slices = [slices[i] for i in order]
    heights = heights[order]
    keep = [0]
    for i in range(1, len(slices)):
        if abs(heights[i] - heights[keep[-1]]) < 1e-3:
            previous = slices[keep[-1]]
            if np.array_equal(slices[i].pixels, previous.pixels):
                notes.append(f"duplicate slice at {heights[i]:.3f} mm along the normal ({slices[i].label}) dropped: same pixels as {previous.label}.")
                continue
            raise SeriesGeometryError(
                f"two different slices at the same position ({heights[i]:.3f} mm along the normal): {previous.label} and "
                f"{slices[i].label}. The series mixes acquisitions (e.g. phases or echoes): split it."
            )
        keep.append(i)
    slices = [slices[i] for i in keep]
    heights = heights[keep]
    if len(slices) > 1:
        steps = np.diff(heights)
        step = float(np.median(steps))
        uneven = np.abs(steps - step) > spacing_tolerance * step
        if uneven.any():
            where = int(np.flatnonzero(uneven)[0])
            ratio = steps[where] / step
            what = (
                f"about {int(round(ratio)) - 1} missing slice(s)"
                if ratio > 1.5 and abs(ratio - round(ratio)) < 0.1
                else f"uneven slice spacing ({steps[where]:.3f} mm instead of {step:.3f} mm)"
            )
            raise SeriesGeometryError(
                f"{what} between {slices[where].label} ({heights[where]:.3f} mm) and {slices[where + 1].label} "
                f"({heights[where + 1]:.3f} mm along the slice normal). Restore the missing files, or export the "
                "series again; a volume with a gap would put every slice after it in the wrong place."
            )
    else:
        step = float(getattr(first.dataset, "SpacingBetweenSlices", 0) or getattr(first.dataset, "SliceThickness", 0) or 1.0)
        notes.append(f"a single slice: slice spacing {step} mm taken from the header.")
    d_row, d_col = first.spacing
    array = _stack(slices)
    # gantry tilt: slice positions do not advance along the normal; shift each slice in plane
    origin = slices[0].position
    advance = np.array([s.position - origin for s in slices])
    in_plane = advance - np.outer(advance @ normal, normal)
    if len(slices) > 1 and np.abs(in_plane).max() > 1e-3 * max(d_row, d_col):
        from scipy import ndimage

        tilt = np.degrees(np.arctan2(np.linalg.norm(in_plane[-1]), heights[-1] - heights[0]))
        array = array.astype(np.float32)  # interpolated values are no longer integers
        for k in range(array.shape[2]):
            shift_cols = in_plane[k] @ row_dir / d_col
            shift_rows = in_plane[k] @ col_dir / d_row
            array[:, :, k] = ndimage.shift(array[:, :, k], (shift_cols, shift_rows), order=1, mode="nearest")
        notes.append(
            f"gantry tilt of {tilt:.2f} degrees corrected: each slice shifted in plane onto an orthogonal grid "
            "(linear interpolation)."
        )
    return Volume(
        array=array,
        affine=volume_affine(row_dir, col_dir, first.spacing, normal * step, origin),
        headers=[s.dataset for s in slices],
        notes=notes,
        slopes=np.array([s.slope for s in slices]),
        intercepts=np.array([s.intercept for s in slices]),
    )
