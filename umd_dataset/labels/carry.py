"""Carrying a label map onto another grid of the same study, in world coordinates.

The rule (`carry_labels`), chosen so that thin organs survive the step from a fine CT or MR grid to
a coarse PET grid:

1. for every organ, the fraction of each target voxel it covers is measured by sampling the
   target voxel at several points per axis (as many as source voxels fit in it, up to 5) and
   looking the points up in the source label map (nearest voxel, world coordinates);
2. majority: a target voxel goes to the organ covering at least half of it;
3. thin organs: an organ that kept less than half of its partial-volume estimate (the sum of its
   fractions) gets, among the voxels still background, those where it is the largest claimant,
   best-covered first, until it reaches that estimate.

Every organ present in the source therefore stays present, with about its true volume, and no
voxel is claimed twice. The result records, per organ, source and target volumes and whether step
3 was used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from umd_dataset.errors import MaskValueError
from umd_dataset.io.geometry import Geometry, label_boxes
from umd_dataset.schema.organs import LabelSchema

__all__ = ["CarriedLabels", "carry_labels"]


@dataclass
class CarriedLabels:
    labels: np.ndarray
    volumes_ml: dict[str, tuple[float, float]]  # organ -> (source mL, target mL)
    thin: list[str]  # organs that needed the thin-organ step

    def notes(self) -> list[str]:
        lines = ["label map carried in world coordinates: majority of sampled coverage, thin organs kept (see umd_dataset.labels.carry)"]
        for organ in self.thin:
            source, target = self.volumes_ml[organ]
            lines.append(f"{organ}: thin-organ rule used ({source:.1f} mL on the source grid, {target:.1f} mL carried)")
        return lines


def _box(mask_bounds: tuple[np.ndarray, np.ndarray], source: Geometry, target: Geometry) -> tuple[np.ndarray, np.ndarray] | None:
    lo, hi = mask_bounds
    corners = np.array([[x, y, z, 1.0] for x in (lo[0] - 1, hi[0] + 1) for y in (lo[1] - 1, hi[1] + 1) for z in (lo[2] - 1, hi[2] + 1)])
    vox = (np.linalg.inv(target.affine) @ source.affine @ corners.T)[:3]
    start = np.maximum(np.floor(vox.min(axis=1)).astype(int) - 1, 0)
    stop = np.minimum(np.ceil(vox.max(axis=1)).astype(int) + 2, target.shape)
    return None if np.any(stop <= start) else (start, stop)


def _axis_of_each_row(target_to_source: np.ndarray) -> list[int] | None:
    """For each source axis, the one target axis its voxel index depends on, when the grids' axes
    run along each other (the usual PET and CT of one study, also flipped or permuted); None for
    oblique grids."""
    rows = [np.flatnonzero(target_to_source[r, :3]) for r in range(3)]
    if any(len(row) != 1 for row in rows) or len({int(row[0]) for row in rows}) != 3:
        return None
    return [int(row[0]) for row in rows]


def _sample_along_axes(coverage: np.ndarray, labels: np.ndarray, organ_id: int, target_to_source: np.ndarray,
                       along: list[int], axes: tuple[np.ndarray, ...], offsets: list[np.ndarray],
                       found: tuple[slice, slice, slice]) -> None:
    """Add to `coverage` the hits of `organ_id` at every sample offset, as the general loop of
    `carry_labels` does, with each source index computed once per target axis (1D) instead of
    once per voxel (the same sums of the same terms, the others being exact zeros: the same
    indices), and the lookups done as three one-axis takes from the organ's box of the source
    (`found`; outside it no voxel is the organ, as outside the map)."""
    organ = labels[found] == organ_id
    order = sorted(range(3), key=lambda r: along[r])  # source axes in the order of their target axes
    organ = organ.transpose(order)  # now axis n of `organ` hangs on target axis n
    partial: dict[tuple, np.ndarray] = {}  # the takes along the first one or two axes, shared by the offsets
    for offset in offsets:
        picked = organ
        for n, r in enumerate(order):
            key = tuple(offset[:n + 1])
            if key in partial:
                picked = partial[key]
                continue
            rounded = np.rint(target_to_source[r, n] * (axes[n] + offset[n]) + target_to_source[r, 3]).astype(np.int64)
            local = rounded - found[r].start
            valid = (local >= 0) & (local < organ.shape[n])
            picked = picked.take(np.where(valid, local, 0), axis=n)
            if not valid.all():
                shape = [1, 1, 1]
                shape[n] = -1
                picked = picked & valid.reshape(shape)
            if n < 2:
                partial[key] = picked
        coverage += picked


def carry_labels(labels: np.ndarray, source: Geometry, target: Geometry, schema: LabelSchema) -> CarriedLabels:
    """Carry a label map from its grid onto `target` (same frame of reference), keeping thin organs.

    Args:
        labels: the label map on `source` (ids of `schema`).
        source, target: the two grids.
        schema: the label schema of its ids.

    Raises:
        MaskValueError: the label map holds values that are no organ id of `schema`.
    """
    source_voxel_ml = float(np.prod(source.spacing_mm)) / 1000.0
    target_voxel_ml = float(np.prod(target.spacing_mm)) / 1000.0
    counted = schema.count_voxels(labels)
    if counted.invalid:
        raise MaskValueError(f"The label map to carry holds {list(counted.invalid)}, not organ ids of {schema.key}.")
    if source.matches(target):
        volumes = {slug: (n * source_voxel_ml,) * 2 for slug, n in counted.present.items()}
        return CarriedLabels(labels.copy(), volumes, [])
    samples = np.clip(np.ceil(np.asarray(target.spacing_mm) / np.asarray(source.spacing_mm).min()), 1, 5).astype(int)
    offsets = [
        np.array([(a + 0.5) / samples[0] - 0.5, (b + 0.5) / samples[1] - 0.5, (c + 0.5) / samples[2] - 0.5])
        for a in range(samples[0]) for b in range(samples[1]) for c in range(samples[2])
    ]
    target_to_source = np.linalg.inv(source.affine) @ target.affine
    slugs = {o.id: o.slug for o in schema}
    fractions: dict[int, tuple[tuple[slice, ...], np.ndarray]] = {}
    source_ml: dict[int, float] = {}
    bounds = label_boxes(labels, len(schema))  # every organ's box in one pass
    along = _axis_of_each_row(target_to_source)
    for organ_id in (schema.organ(slug).id for slug in counted.present):
        source_ml[organ_id] = counted.by_id[organ_id] * source_voxel_ml
        found = bounds[organ_id - 1]
        box = _box((np.array([b.start for b in found]), np.array([b.stop - 1 for b in found])), source, target)
        if box is None:
            continue
        region = tuple(slice(a, b) for a, b in zip(*box))
        i, j, k = (np.arange(a, b, dtype=np.float64) for a, b in zip(*box))
        coverage = np.zeros(tuple(b - a for a, b in zip(*box)), dtype=np.float32)
        if along is not None:  # grids whose axes run along each other: each source index hangs on one target axis
            _sample_along_axes(coverage, labels, organ_id, target_to_source, along, (i, j, k), offsets, found)
            fractions[organ_id] = (region, coverage / len(offsets))
            continue
        for offset in offsets:
            points = [
                target_to_source[r, 0] * (i[:, None, None] + offset[0])
                + target_to_source[r, 1] * (j[None, :, None] + offset[1])
                + target_to_source[r, 2] * (k[None, None, :] + offset[2])
                + target_to_source[r, 3]
                for r in range(3)
            ]
            index = [np.rint(p).astype(np.int64) for p in np.broadcast_arrays(*points)]
            inside = np.ones(coverage.shape, dtype=bool)
            for axis in range(3):
                inside &= (index[axis] >= 0) & (index[axis] < labels.shape[axis])
            hit = np.zeros(coverage.shape, dtype=bool)
            hit[inside] = labels[index[0][inside], index[1][inside], index[2][inside]] == organ_id
            coverage += hit
        fractions[organ_id] = (region, coverage / len(offsets))
    carried = np.zeros(target.shape, dtype=np.uint8)
    best = np.zeros(target.shape, dtype=np.float32)
    for organ_id, (region, fraction) in fractions.items():  # the largest claimant of each voxel
        better = fraction > best[region]
        best[region][better] = fraction[better]
    for organ_id, (region, fraction) in fractions.items():  # step 2: majority
        carried[region][(fraction >= 0.5) & (fraction >= best[region])] = organ_id
    thin = []
    for organ_id, (region, fraction) in sorted(fractions.items()):  # step 3: thin organs
        estimate = float(fraction.sum())
        kept = int(np.count_nonzero(carried[region] == organ_id))
        if kept >= 0.5 * estimate:
            continue
        candidates = np.flatnonzero((carried[region] == 0).ravel() & (fraction.ravel() > 0) & (fraction.ravel() >= best[region].ravel()))
        order = candidates[np.argsort(-fraction.ravel()[candidates], kind="stable")]
        take = order[: max(0, int(round(estimate)) - kept)]
        view = carried[region]
        flat = view.reshape(-1) if view.flags.c_contiguous else None
        if flat is None:
            block = view.copy()
            block.reshape(-1)[take] = organ_id
            carried[region] = block
        else:
            flat[take] = organ_id
        thin.append(slugs[organ_id])
    counts = schema.count_voxels(carried).by_id
    volumes = {slugs[k]: (source_ml[k], counts[k] * target_voxel_ml) for k in source_ml}
    return CarriedLabels(carried, volumes, thin)
