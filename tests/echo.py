"""The prompt echo: scans for the geometry round trip of every model adapter, and the checks.

A model adapter is tested without weights by replacing the network at its exact call boundary
with an *echo* that answers in the model's own input space: a ball around the prompted point, or
around the bright blob of its input for a class or text prompt (and for automatic models). The
scans (`echo_case`) are stored LPS and RAS, with anisotropic spacing, with an oblique affine, and on
a PET grid; each holds a body and one bright blob, off centre, at a known world point. The mask the
adapter returns must lie on the scan's grid and be centred on the prompt (or the blob) in world
coordinates within half a voxel of the scan along each of its axes (`assert_centred`).
"""

from __future__ import annotations

import numpy as np

from umd_dataset.evaluation.case import Case
from umd_dataset.evaluation.prompts import Prompt
from umd_dataset.io.geometry import to_voxel, to_world

#: name -> (shape, spacing mm, rotation degrees about (x, y, z), LPS storage, scan kind)
SCANS = {
    "lps": ((44, 40, 30), (1.6, 1.6, 2.0), (0, 0, 0), True, "ct"),
    "ras": ((40, 44, 32), (1.5, 1.7, 1.9), (0, 0, 0), False, "ct"),
    "anisotropic": ((72, 64, 10), (0.9, 0.9, 5.0), (0, 0, 0), True, "mri"),
    "oblique": ((40, 40, 32), (1.8, 1.8, 2.2), (12, -8, 20), False, "mri"),
    "pet": ((26, 24, 30), (4.0, 4.0, 3.0), (0, 0, 0), True, "pet"),
}
#: body and blob intensities per scan kind (HU, SUV, scanner units)
INTENSITY = {"ct": (-1000.0, 40.0, 800.0), "pet": (0.0, 1.0, 9.0), "mri": (0.0, 300.0, 1500.0)}
DOMAIN = {"ct": ("petct", "ct", "CT", "HU"), "pet": ("petct", "petct_pet", "PT", "SUV"), "mri": ("petmri", "mri", "MR", "a.u.")}
BLOB_SIGMA_MM = 6.0
ORGAN_RADIUS_MM = 9.0


def _rotation(degrees) -> np.ndarray:
    x, y, z = np.radians(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def scan_affine(name: str) -> np.ndarray:
    shape, spacing, rotation, lps, _ = SCANS[name]
    affine = np.eye(4)
    signs = np.array([-1.0, -1.0, 1.0]) if lps else np.ones(3)
    affine[:3, :3] = _rotation(rotation) @ np.diag(signs * np.asarray(spacing))
    affine[:3, 3] = np.array([12.0, -30.0, 85.0]) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine


def blob_voxel(name: str) -> tuple[int, int, int]:
    """The voxel the blob is centred on: off centre along every axis (a flip moves it far)."""
    shape = np.asarray(SCANS[name][0])
    return tuple(int(v) for v in np.rint(shape * np.array([0.3, 0.62, 0.36])))


def echo_case(name: str, organs=("liver",)) -> Case:
    """A scan with a body, and a bright blob centred on `blob_voxel` (organ id 1's reference)."""
    shape, spacing, _, _, kind = SCANS[name]
    affine = scan_affine(name)
    world = to_world(affine, np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1))
    centre = to_world(affine, np.mean([[0, 0, 0], np.asarray(shape) - 1], axis=0))
    half = np.abs(affine[:3, :3]) @ (np.asarray(shape) - 1) / 2
    body = (((world - centre) / (0.92 * half)) ** 2).sum(-1) < 1
    blob = to_world(affine, blob_voxel(name))
    distance2 = ((world - blob) ** 2).sum(-1)
    outside, inside, peak = INTENSITY[kind]
    image = np.where(body, inside, outside) + (peak - inside) * np.exp(-distance2 / (2 * BLOB_SIGMA_MM**2)) * body
    dtype = np.float32 if kind == "pet" else np.int16
    image = image.astype(dtype)
    image.setflags(write=False)
    study, domain, modality, units = DOMAIN[kind]
    return Case(image, affine, tuple(spacing), "echo-subject", study, kind, domain, modality, units, tuple(organs))


def reference(case: Case) -> np.ndarray:
    """The reference mask of organ 1: a ball around the blob."""
    world = to_world(case.affine, np.stack(np.meshgrid(*[np.arange(n) for n in case.image.shape], indexing="ij"), -1))
    return ((world - blob_world(case)) ** 2).sum(-1) <= ORGAN_RADIUS_MM**2


def blob_world(case: Case) -> np.ndarray:
    name = next(n for n in SCANS if SCANS[n][0] == case.image.shape)
    return to_world(case.affine, blob_voxel(name))


def point_prompt(case: Case, organ: str = "liver", organ_id: int = 1) -> Prompt:
    """One positive click on the blob's voxel."""
    name = next(n for n in SCANS if SCANS[n][0] == case.image.shape)
    return Prompt("point", organ, organ_id, (blob_voxel(name),), (1,))


def box_prompt(case: Case, organ: str = "liver", organ_id: int = 1) -> Prompt:
    where = np.argwhere(reference(case))
    return Prompt("box", organ, organ_id, box=(tuple(int(v) for v in where.min(0)), tuple(int(v) for v in where.max(0))))


def ball(shape, centre, radius) -> np.ndarray:
    """Voxels whose centres lie within `radius` (voxels, per axis a scalar or three) of the fractional `centre`."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    radius = np.broadcast_to(np.asarray(radius, dtype=np.float64), (3,))
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radius)) <= 1.0


def bright_centre(array) -> np.ndarray:
    """The fractional voxel centre of the bright blob of a model's input: the weighted centroid of the
    voxels above the half-way level between the body and the peak."""
    values = np.asarray(array, dtype=np.float64)
    body, peak = np.median(values[values > values.min()]) if (values > values.min()).any() else values.min(), values.max()
    weights = np.clip(values - (body + 0.5 * (peak - body)), 0, None)
    where = np.argwhere(weights > 0)
    return (where * weights[tuple(where.T)][:, None]).sum(0) / weights[tuple(where.T)].sum()


def assert_on_blob(array, point, what: str) -> None:
    """The point a model received lies on the blob of the input it received (its axis order agrees)."""
    values = np.asarray(array, dtype=np.float64)
    index = tuple(int(round(float(p))) for p in point)
    assert all(0 <= i < n for i, n in zip(index, values.shape)), f"{what}: point {point} outside the input of shape {values.shape}"
    body, peak = np.median(values), values.max()
    assert values[index] >= body + 0.7 * (peak - body), f"{what}: point {point} is not on the blob (value {values[index]:.3g}, peak {peak:.3g})"


def assert_centred(mask, case: Case, world_point, what: str) -> None:
    """`mask` lies on the case's grid and is centred on `world_point` within half a voxel along each axis."""
    mask = np.asarray(mask)
    assert mask.shape == case.image.shape, f"{what}: mask shape {mask.shape}, scan {case.image.shape}"
    assert mask.any(), f"{what}: empty mask"
    centroid = np.argwhere(mask).mean(axis=0)
    expected = to_voxel(case.affine, world_point)
    error = np.abs(centroid - expected)
    assert (error <= 0.5).all(), f"{what}: centred at voxel {centroid.round(2)}, expected {expected.round(2)} (error {error.round(2)} voxels)"
