"""Voxel grids in world space: `Geometry` (shape + RAS affine), voxel spacing, the LPS <-> RAS flip,
and moving arrays and points between grids through world coordinates.

NIfTI world space is RAS+ (x toward the patient's right, y anterior, z superior); DICOM and ITK
use LPS+ (x toward the left, y posterior). `LPS_TO_RAS` is the one copy of the matrix between them.

Moving between grids (what model adapters do): `to_world` / `to_voxel` map points,
`reorient` permutes and flips axes exactly (no interpolation) to axis codes such as ``RAS``,
`resampled_grid` is the grid of the same field of view at another spacing, and `resample_onto`
samples an array onto any other grid (nearest neighbour for labels and masks, linear for
intensities and probabilities), working only in the block the array's support maps to, so that a
small organ mask goes back onto a whole-body CT grid in milliseconds. Bounding boxes: `support_box`
(the non-zero voxels of an array) and `label_boxes` (every label of a label map in one pass).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from umd_dataset.io.nifti import read_nifti_header

__all__ = ["Geometry", "spacing_from_affine", "LPS_TO_RAS", "to_world", "to_voxel", "reorient", "resampled_grid", "resample_onto", "shifted", "permuted", "zoomed",
           "support_box", "label_boxes"]

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


def to_world(affine: np.ndarray, voxels) -> np.ndarray:
    """World coordinates (mm) of voxel coordinates (..., 3), integer or fractional."""
    voxels = np.asarray(voxels, dtype=np.float64)
    affine = np.asarray(affine, dtype=np.float64)
    return voxels @ affine[:3, :3].T + affine[:3, 3]


def to_voxel(affine: np.ndarray, points_mm) -> np.ndarray:
    """Fractional voxel coordinates (..., 3) of world points (mm) on the grid of `affine`."""
    inverse = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    return np.asarray(points_mm, dtype=np.float64) @ inverse[:3, :3].T + inverse[:3, 3]


def reorient(array: np.ndarray, affine: np.ndarray, axcodes: str = "RAS") -> tuple[np.ndarray, np.ndarray]:
    """`array` with its first three axes permuted and flipped so that they run toward `axcodes`
    (nibabel's closest-axis rule), and the affine of the result. Exact: voxels are moved, never
    interpolated, and every voxel keeps its world position (an oblique affine stays oblique)."""
    import nibabel.orientations as orientations

    affine = np.asarray(affine, dtype=np.float64)
    transform = orientations.ornt_transform(orientations.io_orientation(affine), orientations.axcodes2ornt(tuple(axcodes)))
    moved = orientations.apply_orientation(array, transform)
    return moved, affine @ orientations.inv_ornt_aff(transform, array.shape[:3])


def resampled_grid(shape, affine: np.ndarray, spacing_mm) -> tuple[tuple[int, int, int], np.ndarray]:
    """(shape, affine) of the grid with the same axis directions, first voxel centre and field of
    view as (`shape`, `affine`), at `spacing_mm` (the number of voxels rounded to cover the extent)."""
    affine = np.asarray(affine, dtype=np.float64)
    old = np.asarray(spacing_from_affine(affine))
    new = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,))
    extent = old * (np.asarray(shape[:3], dtype=np.float64) - 1)
    new_shape = tuple(int(v) for v in np.maximum(np.rint(extent / new) + 1, 1))
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] / old * new
    return new_shape, new_affine


def resample_onto(values: np.ndarray, source_affine: np.ndarray, target_shape, target_affine: np.ndarray, *, order: int = 0,
                  fill: float = 0, support: bool = True) -> np.ndarray:
    """`values` (on the grid of `source_affine`) sampled at every voxel centre of the target grid.

    Args:
        order: 0 nearest neighbour (labels, masks; the dtype is kept; a target voxel takes the
            source voxel it falls in, up to the source's outer voxel faces, not only up to its
            outer voxel centres as scipy's ``constant`` mode would), 1 linear (intensities,
            probabilities; float32).
        fill: the value outside the source grid.
        support: compute only the target block that the source's non-zero voxels map to (with
            ``fill == 0``); the rest of the target is `fill`.
    """
    from scipy import ndimage

    values = np.asarray(values)
    target_shape = tuple(int(s) for s in target_shape[:3])
    mapping = np.linalg.inv(np.asarray(source_affine, dtype=np.float64)) @ np.asarray(target_affine, dtype=np.float64)
    dtype = values.dtype if order == 0 else np.float32
    if values.dtype == bool:
        values = values.view(np.uint8)
    result = np.full(target_shape, fill, dtype=np.uint8 if dtype == bool else dtype)
    low, high = np.zeros(3, dtype=int), np.asarray(target_shape)
    if support and fill == 0:
        box = support_box(values)
        if box is None:
            return result.astype(dtype, copy=False)
        lo = np.asarray([b.start for b in box], dtype=np.float64) - 1
        hi = np.asarray([b.stop - 1 for b in box], dtype=np.float64) + 1
        corners = np.array([[(lo, hi)[b][axis] for axis, b in enumerate(bits)] for bits in np.ndindex(2, 2, 2)])
        inside = to_voxel(mapping, corners)  # source corners in target voxel coordinates
        low = np.clip(np.floor(inside.min(axis=0)).astype(int), 0, high)
        high = np.clip(np.ceil(inside.max(axis=0)).astype(int) + 1, 0, high)
        if (high <= low).any():
            return result.astype(dtype, copy=False)
    block = tuple(int(h - l) for l, h in zip(low, high))
    offset = mapping[:3, :3] @ low + mapping[:3, 3]
    sampled = ndimage.affine_transform(values if order == 0 else values.astype(np.float32), mapping[:3, :3], offset=offset,
                                       output_shape=block, order=order, mode="grid-constant" if order == 0 else "constant", cval=fill, prefilter=False)
    result[low[0] : high[0], low[1] : high[1], low[2] : high[2]] = sampled
    return result.astype(dtype, copy=False)


def support_box(values: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The bounding box of the non-zero voxels of a 3D array (None if there is none), from its
    projections onto the three axes: the box of ``np.nonzero`` without listing the voxels."""
    axes = [np.flatnonzero(np.asarray(values).any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(len(a) == 0 for a in axes):
        return None
    return tuple(slice(int(a[0]), int(a[-1]) + 1) for a in axes)


def label_boxes(labels: np.ndarray, top: int, workers: int | None = None) -> list[tuple[slice, slice, slice] | None]:
    """The bounding box of each label 1..`top` of a 3D label map, as `scipy.ndimage.find_objects`
    gives them (None for a label that is absent), in about half its time and in `workers` threads.

    Each voxel's label becomes one bit (``1 << label``), and the bits are OR-reduced onto the
    three axes, a block of slices at a time; a label's box spans the first to the last index whose
    bits hold it. Maps with labels outside 0..63 go to `find_objects`.
    """
    from concurrent.futures import ThreadPoolExecutor

    from scipy import ndimage

    labels = labels if labels.dtype.kind in "ui" else np.asarray(labels, dtype=np.int32)
    low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if labels.ndim != 3 or low < 0 or high > 63:
        return ndimage.find_objects(labels, max_label=top)
    bits = np.uint16 if high < 16 else np.uint32 if high < 32 else np.uint64
    one = bits(1)

    def block(start: int):
        part = np.left_shift(one, labels[start : start + 16], dtype=bits, casting="unsafe")  # values are 0..63 here
        per_row = np.bitwise_or.reduce(part, axis=2)  # (slices, Y)
        return np.bitwise_or.reduce(per_row, axis=1), np.bitwise_or.reduce(per_row, axis=0), np.bitwise_or.reduce(part, axis=(0, 1))

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:  # numpy's loops release the GIL
        parts = list(pool.map(block, range(0, labels.shape[0], 16)))
    projections = (
        np.concatenate([p[0] for p in parts]),
        np.bitwise_or.reduce(np.stack([p[1] for p in parts]), axis=0),
        np.bitwise_or.reduce(np.stack([p[2] for p in parts]), axis=0),
    )
    boxes: list[tuple[slice, slice, slice] | None] = []
    for label in range(1, top + 1):
        if label > high:
            boxes.append(None)
            continue
        where = [np.flatnonzero(projection & (one << bits(label))) for projection in projections]
        boxes.append(None if any(len(w) == 0 for w in where) else tuple(slice(int(w[0]), int(w[-1]) + 1) for w in where))
    return boxes


def shifted(affine: np.ndarray, start) -> np.ndarray:
    """The affine of a crop (or pad, with negative `start`) whose first voxel is voxel `start` of `affine`'s grid."""
    result = np.asarray(affine, dtype=np.float64).copy()
    result[:3, 3] = to_world(affine, np.asarray(start, dtype=np.float64))
    return result


def permuted(affine: np.ndarray, axes) -> np.ndarray:
    """The affine of ``array.transpose(axes)`` (first three axes) when `affine` is the array's."""
    result = np.asarray(affine, dtype=np.float64).copy()
    result[:3, :3] = result[:3, list(axes)]
    return result


def zoomed(affine: np.ndarray, shape, new_shape, align_corners: bool = False) -> np.ndarray:
    """The affine of an array resized from `shape` to `new_shape` over the same field of view:
    ``align_corners=False`` as `torch.nn.functional.interpolate` by default (the outer voxel
    edges stay in place), True keeps the first and last voxel centres."""
    shape, new_shape = np.asarray(shape[:3], dtype=np.float64), np.asarray(new_shape[:3], dtype=np.float64)
    if align_corners:
        scale = np.where(new_shape > 1, (shape - 1) / np.maximum(new_shape - 1, 1), 1.0)
        start = np.zeros(3)
    else:
        scale = shape / new_shape
        start = (scale - 1) / 2
    step = np.eye(4)
    step[:3, :3] = np.diag(scale)
    step[:3, 3] = start
    return np.asarray(affine, dtype=np.float64) @ step
