"""DICOM constants and plane geometry: SOP class UIDs, and the mapping between a grid's RAS affine
and the plane tags of its slices (ImageOrientationPatient, PixelSpacing, ImagePositionPatient).

Reading series and SEG files lives in `umd_dataset.ingest.dicom` and `umd_dataset.labels.dicom_seg`;
both use these helpers, as do the writers of synthetic studies and of SEG files.
"""

from __future__ import annotations

import numpy as np

from umd_dataset.io.geometry import LPS_TO_RAS

__all__ = ["SOP_CLASS", "SEG_SOP_CLASS", "SECONDARY_CAPTURE_PREFIX", "plane_tags", "slice_position", "volume_affine"]

#: Storage SOP classes of the images the package reads and writes.
SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "SEG": "1.2.840.10008.5.1.4.1.1.66.4",
    "DOSE_SR": "1.2.840.10008.5.1.4.1.1.88.67",
}
SEG_SOP_CLASS = SOP_CLASS["SEG"]
#: Every secondary capture SOP class starts with this UID.
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"

_FLIP = LPS_TO_RAS[:3, :3]  # RAS <-> LPS for directions and points


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


def volume_affine(row_dir, col_dir, pixel_spacing, slice_step, origin) -> np.ndarray:
    """The RAS affine of slices on (column, row, slice) array axes, from DICOM plane geometry.

    Args:
        row_dir, col_dir: the two unit vectors of ImageOrientationPatient (LPS).
        pixel_spacing: PixelSpacing, (between rows, between columns) in mm.
        slice_step: the LPS vector from one slice's origin to the next (the normal times the spacing).
        origin: ImagePositionPatient of the first slice (LPS, mm).
    """
    d_row, d_col = (float(v) for v in pixel_spacing)
    lps = np.eye(4)
    lps[:3, 0] = np.asarray(row_dir, dtype=np.float64) * d_col
    lps[:3, 1] = np.asarray(col_dir, dtype=np.float64) * d_row
    lps[:3, 2] = np.asarray(slice_step, dtype=np.float64)
    lps[:3, 3] = np.asarray(origin, dtype=np.float64)
    return LPS_TO_RAS @ lps
