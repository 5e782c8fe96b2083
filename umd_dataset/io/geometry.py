"""Voxel grids in world space: `Geometry` (shape + RAS affine), voxel spacing, and the LPS <-> RAS flip.

NIfTI world space is RAS+ (x toward the patient's right, y anterior, z superior); DICOM and ITK
use LPS+ (x toward the left, y posterior). `LPS_TO_RAS` is the one copy of the matrix between them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from umd_dataset.io.nifti import read_nifti_header

__all__ = ["Geometry", "spacing_from_affine", "LPS_TO_RAS"]

#: RAS = LPS_TO_RAS @ LPS (its own inverse): x and y change sign.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis: the norms of the affine's first three columns."""
    affine = np.asarray(affine, dtype=np.float64)
    return tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))


@dataclass(frozen=True)
class Geometry:
    """A voxel grid: its shape and voxel-to-world (RAS, mm) affine.

    Example:
        >>> Geometry((2, 2, 2), np.eye(4)).spacing_mm
        (1.0, 1.0, 1.0)
    """

    shape: tuple[int, ...]
    affine_values: tuple[float, ...]

    def __init__(self, shape, affine) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in shape))
        object.__setattr__(self, "affine_values", tuple(float(v) for v in np.asarray(affine, dtype=np.float64).ravel()))

    @property
    def affine(self) -> np.ndarray:
        return np.asarray(self.affine_values).reshape(4, 4)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return spacing_from_affine(self.affine)

    @classmethod
    def of_nifti(cls, path: str | os.PathLike) -> Geometry:
        shape, affine, _ = read_nifti_header(path)
        return cls(shape, affine)

    def matches(self, other: Geometry, atol_mm: float = 1e-3) -> bool:
        """Same shape, and affines equal within `atol_mm` (so every voxel centre agrees)."""
        if self.shape != other.shape:
            return False
        corner = np.asarray(self.shape, dtype=np.float64)
        # compare the world positions of the first and last voxel centres, and the linear parts
        return bool(
            np.allclose(self.affine[:3], other.affine[:3], atol=atol_mm)
            and np.allclose(self.affine[:3, :3] @ corner, other.affine[:3, :3] @ corner, atol=atol_mm)
        )

    def describe(self) -> str:
        spacing = ", ".join(f"{v:.4g}" for v in self.spacing_mm)
        origin = ", ".join(f"{v:.4g}" for v in self.affine[:3, 3])
        return f"shape {self.shape}, spacing ({spacing}) mm, origin ({origin}) mm"
