"""Synthetic UMD: a seeded phantom generator that writes valid releases in the real format.

Each subject is one anatomy, built from smooth implicit shapes in world space (RAS, mm): the 13
organs of the schema, a body outline with subcutaneous fat, and bones. Each study of the subject
sees that anatomy under its own small pose change (patient repositioned between the PET/CT and the
PET/MRI). Each scan samples the posed anatomy on its own grid:

- CT in Hounsfield units (int16), organ-specific values, partial-volume blur and noise;
- PET in SUV (float32) on a coarser grid, organ uptake (brain, heart, bladder high; liver
  moderate), blurred by a scanner PSF, with noise;
- MRI (int16) with its own T1/Dixon-like contrast, a smooth bias field and Rician noise.

Label maps are sampled from the same shapes on each scan's own grid, so organs never overlap and
the CT (or MRI) and PET label maps of one study agree in world coordinates. Generation is
deterministic: the same seed gives the same bytes, whatever the order or the interruptions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from umd_dataset.errors import UnknownNameError, did_you_mean
from umd_dataset.labels import LabelSchema, load_schema
from umd_dataset.modalities import modalities

__all__ = ["Grid", "PRESETS", "SynthConfig", "Anatomy", "make_anatomy", "render_scan", "synthesize", "plan"]

CITATION = "arXiv:2602.07643"


@dataclass(frozen=True)
class Grid:
    """The voxel grid of one kind of scan.

    Attributes:
        shape: voxels along the array axes.
        spacing_mm: voxel size along the array axes.
        lps_order: array axes 0 and 1 run toward the patient's left and posterior (the order of
            DICOM slices, kept by most converters); False: toward right and anterior (RAS order).
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    lps_order: bool = True

    def affine(self, center_mm: tuple[float, float, float]) -> np.ndarray:
        """Voxel-to-world (RAS) affine whose grid is centred on `center_mm`."""
        signs = np.array([-1.0, -1.0, 1.0]) if self.lps_order else np.ones(3)
        linear = np.diag(signs * np.asarray(self.spacing_mm, dtype=np.float64))
        affine = np.eye(4)
        affine[:3, :3] = linear
        affine[:3, 3] = np.asarray(center_mm) - linear @ ((np.asarray(self.shape) - 1) / 2.0)
        return affine


#: Grids per evaluation domain. ``mini`` is small for tests; ``full`` has real whole-body sizes.
PRESETS: dict[str, dict[str, Grid]] = {
    "mini": {
        "ct": Grid((80, 80, 100), (6.25, 6.25, 10.0)),
        "petct_pet": Grid((50, 50, 100), (10.0, 10.0, 10.0)),
        "mri": Grid((72, 60, 90), (6.5, 6.5, 11.0), lps_order=False),
        "petmri_pet": Grid((48, 48, 96), (10.4, 10.4, 10.4)),
    },
    "full": {
        "ct": Grid((512, 512, 400), (0.9765625, 0.9765625, 2.5)),
        "petct_pet": Grid((200, 200, 334), (3.0, 3.0, 3.0)),
        "mri": Grid((384, 312, 330), (1.3, 1.3, 3.0), lps_order=False),
        "petmri_pet": Grid((172, 172, 356), (2.8, 2.8, 2.8)),
    },
}
_FOV_CENTER_MM = (0.0, 0.0, 400.0)


@dataclass(frozen=True)
class SynthConfig:
    """Settings of a synthetic release. The same settings give the same release, byte for byte.

    Attributes:
        subjects: number of subjects.
        preset: grid sizes, ``"mini"`` (tests) or ``"full"`` (whole-body sizes, benchmarks).
        seed: random seed.
        petct_only_fraction, petmri_only_fraction: share of subjects with one study only (the
            real UMD has 490 PET/CT and 464 PET/MRI studies, many of the same people).
        split_fractions: train / validation / test shares, assigned per subject within each
            group (paired, PET/CT only, PET/MRI only).
        name, version: recorded in the release descriptor.
    """

    subjects: int = 12
    preset: str = "mini"
    seed: int = 0
    petct_only_fraction: float = 1 / 6
    petmri_only_fraction: float = 1 / 6
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    name: str = "UMD-mini"
    version: str = "1.0.0"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise UnknownNameError(did_you_mean(self.preset, PRESETS, "synthetic preset"))
        if self.subjects < 1:
            raise ValueError(f"subjects must be at least 1, got {self.subjects}")
        if not 0 <= self.petct_only_fraction + self.petmri_only_fraction <= 1:
            raise ValueError("petct_only_fraction + petmri_only_fraction must lie in [0, 1]")
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be three shares summing to 1, got {self.split_fractions}")


# ----------------------------------------------------------------------------------------------
# Anatomy: implicit shapes in the subject's own frame (RAS mm, z up; x > 0 is the patient's right)


@dataclass(frozen=True)
class Shape:
    """An implicit shape: `field(q) < 1` inside. An ellipsoid, or a tube along a polyline."""

    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radii: tuple[float, float, float] = (1.0, 1.0, 1.0)
    points: tuple[tuple[float, float, float], ...] = ()
    radius: float = 0.0
    waves: tuple[tuple[float, float, float, float], ...] = ()  # (kx, ky, kz, phase), a wobble
    wobble: float = 0.0

    def field(self, q: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        x, y, z = q
        if self.points:
            value = _polyline_distance(x, y, z, np.asarray(self.points, dtype=np.float32)) / np.float32(self.radius)
        else:
            cx, cy, cz = self.center
            rx, ry, rz = self.radii
            value = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2)
        for kx, ky, kz, phase in self.waves:
            value = value * (1 + self.wobble * np.sin(kx * x + ky * y + kz * z + phase))
        return value.astype(np.float32, copy=False)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper corners of a box holding the shape (with room for the wobble)."""
        grow = 1.0 / (1.0 - self.wobble * len(self.waves)) if self.waves else 1.0
        if self.points:
            pts = np.asarray(self.points)
            r = self.radius * grow
            return pts.min(axis=0) - r, pts.max(axis=0) + r
        c, r = np.asarray(self.center), np.asarray(self.radii) * grow
        return c - r, c + r


def _polyline_distance(x, y, z, points: np.ndarray) -> np.ndarray:
    best = None
    for a, b in zip(points[:-1], points[1:]):
        ab = b - a
        t = ((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / float(ab @ ab)
        t = np.clip(t, 0.0, 1.0)
        d2 = (x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (z - a[2] - t * ab[2]) ** 2
        best = d2 if best is None else np.minimum(best, d2)
    return np.sqrt(best)


# The organ template of an average adult (mm): ellipsoids by centre and radii, tubes by polyline and
# radius. A subject scales and jitters it. Lung and colon are several parts of one organ.
_TEMPLATE: dict[str, list[dict]] = {
    "liver": [{"center": (70, 10, 330), "radii": (92, 76, 66)}],
    "spleen": [{"center": (-105, -45, 320), "radii": (28, 42, 50)}],
    "kidney_left": [{"center": (-75, -55, 245), "radii": (30, 28, 52)}],
    "kidney_right": [{"center": (75, -55, 228), "radii": (30, 28, 52)}],
    "pancreas": [{"points": ((45, 0, 265), (-10, -5, 275), (-75, -25, 290)), "radius": 15}],
    "stomach": [{"center": (-60, 25, 330), "radii": (55, 42, 62)}],
    "esophagus": [{"points": ((0, -25, 660), (-3, -40, 520), (-12, -35, 420), (-40, 5, 365)), "radius": 10}],
    "colon": [
        {"points": ((85, 5, 110), (85, 10, 215), (60, 45, 235), (-60, 45, 245), (-95, 5, 225), (-90, 0, 110),
                    (-40, 10, 75), (0, 0, 65)), "radius": 21}
    ],
    "urinary_bladder": [{"center": (0, 35, 45), "radii": (42, 36, 32)}],
    "heart": [{"center": (-25, 30, 440), "radii": (62, 50, 58)}],
    "aorta": [{"points": ((-5, 30, 470), (-10, 15, 535), (-25, -35, 530), (-25, -55, 440), (-15, -58, 260),
                          (-8, -52, 120)), "radius": 13}],
    "lung": [
        {"center": (-88, -5, 480), "radii": (62, 82, 125)},
        {"center": (92, -5, 485), "radii": (68, 85, 120)},
    ],
    "brain": [{"center": (0, 10, 815), "radii": (68, 85, 58)}],
}


@dataclass(frozen=True)
class Anatomy:
    """One subject's anatomy: organ shapes (by slug) and body proportions."""

    organs: dict[str, tuple[Shape, ...]]
    scale: float
    width: float  # torso half-width (mm)
    depth: float  # torso half-depth (mm)
    uptake: dict[str, float] = field(default_factory=dict)  # subject-specific SUV factors per organ


def make_anatomy(rng: np.random.Generator, schema: LabelSchema) -> Anatomy:
    """A random adult anatomy: the template scaled, each organ moved, resized and wobbled a little."""
    scale = float(rng.uniform(0.9, 1.1))
    pivot = np.array(_FOV_CENTER_MM)
    organs = {}
    for organ in schema:
        parts = []
        shift = rng.normal(0, 5, 3)
        grow = rng.uniform(0.9, 1.1)
        for spec in _TEMPLATE[organ.slug]:
            waves = tuple(
                tuple(float(v) for v in (*(rng.normal(0, 1, 3) / 40.0), rng.uniform(0, 2 * np.pi))) for _ in range(2)
            )
            if "points" in spec:
                pts = tuple(tuple(float(v) for v in pivot + (np.asarray(p) - pivot) * scale + shift) for p in spec["points"])
                parts.append(Shape(points=pts, radius=float(spec["radius"] * scale * grow), waves=waves, wobble=0.05))
            else:
                center = tuple(float(v) for v in pivot + (np.asarray(spec["center"]) - pivot) * scale + shift)
                radii = tuple(float(v) for v in np.asarray(spec["radii"]) * scale * grow)
                parts.append(Shape(center=center, radii=radii, waves=waves, wobble=0.06))
        organs[organ.slug] = tuple(parts)
    uptake = {slug: float(rng.uniform(0.75, 1.3)) for slug in _PET_SUV}
    return Anatomy(organs, scale, width=float(160 * scale * rng.uniform(0.9, 1.1)), depth=float(105 * scale * rng.uniform(0.9, 1.1)), uptake=uptake)


# ----------------------------------------------------------------------------------------------
# Tissues and intensities

AIR, FAT, SOFT, BONE, MARROW = 0, 1, 2, 3, 4
_ORGAN_BASE = 10  # tissue code of organ id k is _ORGAN_BASE + k

_CT_HU = {AIR: -1000, FAT: -100, SOFT: 45, BONE: 700, MARROW: 250}
_CT_ORGAN_HU = {"liver": 60, "spleen": 48, "kidney_left": 33, "kidney_right": 33, "pancreas": 40, "stomach": 22,
                "esophagus": 38, "colon": 5, "urinary_bladder": 8, "heart": 42, "aorta": 46, "lung": -850, "brain": 32}
_PET_SUV = {"liver": 2.3, "spleen": 1.8, "kidney_left": 3.5, "kidney_right": 3.5, "pancreas": 1.4, "stomach": 1.7,
            "esophagus": 1.6, "colon": 1.3, "urinary_bladder": 14.0, "heart": 4.0, "aorta": 1.7, "lung": 0.4, "brain": 8.5}
_PET_TISSUE = {AIR: 0.0, FAT: 0.35, SOFT: 0.7, BONE: 0.9, MARROW: 1.2}
_MR = {AIR: 0, FAT: 900, SOFT: 300, BONE: 60, MARROW: 650}
_MR_ORGAN = {"liver": 430, "spleen": 320, "kidney_left": 360, "kidney_right": 360, "pancreas": 470, "stomach": 240,
             "esophagus": 280, "colon": 250, "urinary_bladder": 70, "heart": 260, "aorta": 140, "lung": 35, "brain": 520}


def _pose(rng: np.random.Generator) -> np.ndarray:
    """A small rigid repositioning: a few degrees of rotation, a few mm of shift (4x4, anatomy -> world)."""
    rz, rx = np.deg2rad(rng.uniform(-4, 4)), np.deg2rad(rng.uniform(-3, 3))
    cz, sz, cx, sx = np.cos(rz), np.sin(rz), np.cos(rx), np.sin(rx)
    rot = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    pivot = np.array(_FOV_CENTER_MM)
    pose = np.eye(4)
    pose[:3, :3] = rot
    pose[:3, 3] = pivot - rot @ pivot + rng.uniform(-12, 12, 3)
    return pose


def _anatomy_coords(voxel_to_anatomy: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Anatomy coordinates (x, y, z arrays, broadcast) of the voxels in the block [lo, hi)."""
    i, j, k = (np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi))
    grids = (i[:, None, None], j[None, :, None], k[None, None, :])
    m = voxel_to_anatomy.astype(np.float32)
    return tuple(m[r, 0] * grids[0] + m[r, 1] * grids[1] + m[r, 2] * grids[2] + m[r, 3] for r in range(3))


def _voxel_box(shape_bounds, anatomy_to_voxel: np.ndarray, grid_shape) -> tuple[np.ndarray, np.ndarray] | None:
    lo, hi = shape_bounds
    corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    vox = (anatomy_to_voxel @ corners.T)[:3]
    start = np.maximum(np.floor(vox.min(axis=1)).astype(int), 0)
    stop = np.minimum(np.ceil(vox.max(axis=1)).astype(int) + 1, grid_shape)
    return None if np.any(stop <= start) else (start, stop)


def rasterize_labels(anatomy: Anatomy, schema: LabelSchema, shape, affine: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """The label map of a posed anatomy on a grid: each voxel goes to the organ whose shape field is
    smallest below 1 (so organs never overlap), else background. One pass per organ, in its box."""
    voxel_to_anatomy = np.linalg.inv(pose) @ affine
    anatomy_to_voxel = np.linalg.inv(voxel_to_anatomy)
    labels = np.zeros(shape, dtype=np.uint8)
    best = np.ones(shape, dtype=np.float32)
    for organ in schema:
        for part in anatomy.organs[organ.slug]:
            box = _voxel_box(part.bounds(), anatomy_to_voxel, shape)
            if box is None:
                continue
            region = tuple(slice(a, b) for a, b in zip(*box))
            value = part.field(_anatomy_coords(voxel_to_anatomy, *box))
            inside = value < best[region]
            best[region][inside] = value[inside]
            labels[region][inside] = organ.id
    return labels


def _tissues(anatomy: Anatomy, shape, affine: np.ndarray, pose: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Tissue codes per voxel: air, fat, soft tissue, bone, marrow; organs as `_ORGAN_BASE + id`."""
    voxel_to_anatomy = np.linalg.inv(pose) @ affine
    tissues = np.zeros(shape, dtype=np.uint8)
    s, w, d = anatomy.scale, anatomy.width, anatomy.depth
    step = max(1, int(2**22 // (shape[0] * shape[1])))  # slabs of about 4 M voxels
    for k0 in range(0, shape[2], step):
        lo, hi = np.array([0, 0, k0]), np.array([shape[0], shape[1], min(shape[2], k0 + step)])
        x, y, z = np.broadcast_arrays(*_anatomy_coords(voxel_to_anatomy, lo, hi))
        zc = z - _FOV_CENTER_MM[2]
        # torso: elliptic cylinder, wider at the shoulders; legs below the pelvis; neck; head
        shoulders = 1 + 0.15 / (1 + np.exp(-(z - 540 * s - zc * (1 - s) * 0) / 15))
        torso = ((x / (w * shoulders)) ** 2 + (y / d) ** 2) ** 0.5
        torso = np.where((z > 40) & (z < 615), torso, np.inf)
        legs = np.minimum(np.hypot(x - 95 * s, y) / (75 * s), np.hypot(x + 95 * s, y) / (75 * s))
        legs = np.where(z <= 60, legs, np.inf)
        neck = np.where((z >= 590) & (z < 720), np.hypot(x, y + 10) / (55 * s), np.inf)
        head = np.sqrt((x / (80 * s)) ** 2 + ((y - 5) / (100 * s)) ** 2 + ((z - 790 * s - 400 * (1 - s)) / (118 * s)) ** 2)
        body = np.minimum(np.minimum(torso, legs), np.minimum(neck, head))
        fat_depth = 14 * s
        inner = np.minimum(
            np.minimum(
                np.where((z > 40) & (z < 615), ((x / (w * shoulders - fat_depth)) ** 2 + (y / (d - fat_depth)) ** 2) ** 0.5, np.inf),
                np.where(z <= 60, np.minimum(np.hypot(x - 95 * s, y), np.hypot(x + 95 * s, y)) / (75 * s - fat_depth), np.inf),
            ),
            np.minimum(np.where((z >= 590) & (z < 720), np.hypot(x, y + 10) / (55 * s - 6), np.inf), head * 1.06),
        )
        slab = np.full(x.shape, AIR, dtype=np.uint8)
        slab[body < 1] = FAT
        slab[inner < 1] = SOFT
        spine = (np.hypot(x, y + 78 * s) < 17 * s) & (z > 60) & (z < 700)
        slab[spine] = BONE
        slab[(np.hypot(x, y + 78 * s) < 10 * s) & spine] = MARROW
        skull = (head < 1) & (head > 0.93)
        slab[skull] = BONE
        femur = (z <= 60) & (np.minimum(np.hypot(x - 95 * s, y), np.hypot(x + 95 * s, y)) < 15 * s)
        slab[femur] = BONE
        tissues[:, :, lo[2] : hi[2]] = slab
    organ_voxels = labels > 0
    tissues[organ_voxels] = _ORGAN_BASE + labels[organ_voxels]
    return tissues


def _lut(tissue_values: dict[int, float], organ_values: dict[str, float], schema: LabelSchema, factors=None) -> np.ndarray:
    lut = np.zeros(256, dtype=np.float32)
    for code, value in tissue_values.items():
        lut[code] = value
    for organ in schema:
        lut[_ORGAN_BASE + organ.id] = organ_values[organ.slug] * (factors or {}).get(organ.slug, 1.0)
    return lut


def render_scan(
    anatomy: Anatomy,
    schema: LabelSchema,
    domain: str,
    grid: Grid,
    pose: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, label map and affine of one scan of a posed anatomy.

    Args:
        domain: ``ct``, ``petct_pet``, ``mri`` or ``petmri_pet``.

    Returns:
        (image, label map (uint8), 4x4 RAS affine). CT is int16 HU, PET float32 SUV, MRI int16.
    """
    from scipy import ndimage

    affine = grid.affine(_FOV_CENTER_MM)
    labels = rasterize_labels(anatomy, schema, grid.shape, affine, pose)
    tissues = _tissues(anatomy, grid.shape, affine, pose, labels)
    spacing = np.asarray(grid.spacing_mm)
    if domain == "ct":
        volume = _lut(_CT_HU, _CT_ORGAN_HU, schema)[tissues]
        volume = ndimage.gaussian_filter(volume, 0.5, output=np.float32)
        volume += rng.standard_normal(volume.shape, dtype=np.float32) * np.float32(12.0)
        return np.clip(np.rint(volume), -1024, 3071).astype(np.int16), labels, affine
    if domain.endswith("_pet"):
        factors = dict(anatomy.uptake)
        # the functional state changes between studies: bladder filling and myocardial uptake
        factors["urinary_bladder"] *= float(rng.uniform(0.4, 1.6))
        factors["heart"] *= float(rng.uniform(0.4, 1.8))
        activity = _lut(_PET_TISSUE, _PET_SUV, schema, factors)[tissues]
        fwhm_mm = 6.5 if domain == "petct_pet" else 5.5
        activity = ndimage.gaussian_filter(activity, fwhm_mm / 2.355 / spacing, output=np.float32)
        noise = ndimage.gaussian_filter(rng.standard_normal(activity.shape, dtype=np.float32), 0.7, output=np.float32)
        noise /= np.float32(max(float(noise.std()), 1e-6))
        volume = activity + np.sqrt(activity) * noise * np.float32(0.25)
        return np.maximum(volume, 0).astype(np.float32), labels, affine
    if domain == "mri":
        volume = _lut(_MR, _MR_ORGAN, schema)[tissues]
        volume = ndimage.gaussian_filter(volume, 0.6, output=np.float32)
        axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in grid.shape]
        a = rng.uniform(-0.25, 0.25, 4).astype(np.float32)
        bias = np.exp(
            a[0] * axes[0][:, None, None] + a[1] * axes[1][None, :, None] + a[2] * axes[2][None, None, :]
            + a[3] * axes[0][:, None, None] * axes[2][None, None, :]
        )
        volume *= bias
        sigma = np.float32(18.0)
        real = volume + rng.standard_normal(volume.shape, dtype=np.float32) * sigma
        imag = rng.standard_normal(volume.shape, dtype=np.float32) * sigma
        volume = np.sqrt(real * real + imag * imag)
        return np.clip(np.rint(volume), 0, 32767).astype(np.int16), labels, affine
    raise UnknownNameError(did_you_mean(domain, [d.key for d in modalities().domains], "domain"))


# ----------------------------------------------------------------------------------------------
# The release


@dataclass(frozen=True)
class SubjectPlan:
    index: int
    id: str
    studies: tuple[str, ...]
    split: str


def plan(config: SynthConfig) -> list[SubjectPlan]:
    """Which subjects exist, which studies each has, and its split: a pure function of the config."""
    rng = np.random.default_rng([config.seed, 1_000_003])
    n = config.subjects
    n_ct = int(round(n * config.petct_only_fraction))
    n_mr = int(round(n * config.petmri_only_fraction))
    groups = [("petct", "petmri")] * (n - n_ct - n_mr) + [("petct",)] * n_ct + [("petmri",)] * n_mr
    order = rng.permutation(n)
    studies_of = {int(order[i]): groups[i] for i in range(n)}
    split_of: dict[int, str] = {}
    names = modalities().splits
    for group in sorted(set(groups)):
        members = [i for i in range(n) if studies_of[i] == group]
        members = [members[i] for i in rng.permutation(len(members))]
        n_test = int(round(len(members) * config.split_fractions[2]))
        n_val = int(round(len(members) * config.split_fractions[1]))
        for rank, i in enumerate(members):
            split_of[i] = names[2] if rank < n_test else names[1] if rank < n_test + n_val else names[0]
    width = max(4, len(str(n)))
    return [SubjectPlan(i, f"UMD{i + 1:0{width}d}", studies_of[i], split_of[i]) for i in range(n)]


def _study_index(study: str) -> int:
    return list(modalities().studies).index(study)


def write_study(root: str | os.PathLike, config: SynthConfig, subject: SubjectPlan, study: str) -> list:
    """Generate and write the scans of one study; returns their manifest rows.

    A pure function of (config, subject, study): it can run in any process, in any order.
    """
    from umd_dataset.release import write_scan

    schema = load_schema()
    anatomy = make_anatomy(np.random.default_rng([config.seed, subject.index, 0]), schema)
    pose = _pose(np.random.default_rng([config.seed, subject.index, 1 + _study_index(study)]))
    records = []
    for scan in modalities().study(study).scans:
        domain = modalities().domain_of(study, scan)
        rng = np.random.default_rng([config.seed, subject.index, 10 + [d.key for d in modalities().domains].index(domain.key)])
        image, labels, affine = render_scan(anatomy, schema, domain.key, PRESETS[config.preset][domain.key], pose, rng)
        records.append(write_scan(Path(root), subject.id, study, scan, image, labels, affine, schema))
    return records


def synthesize(
    root: str | os.PathLike,
    config: SynthConfig | None = None,
    *,
    overwrite: bool = False,
    workers: int = 1,
    progress: bool = False,
    on_study: Callable[[str, str], None] | None = None,
):
    """Write a synthetic release (the embedded default, UMD-mini) and open it.

    Resumable: if an earlier call with the same config was interrupted, finished studies are
    kept and the rest is written. The descriptor is written last, so an interrupted folder never
    opens as a release.

    Args:
        root: output folder (created; must be new, empty, or an interrupted job of the same config).
        config: what to generate (default: `SynthConfig()`, 12 subjects on the ``mini`` grids).
        overwrite: replace an existing release or an interrupted job with other settings.
        workers: processes generating studies in parallel.
        progress: show a progress bar.
        on_study: called with (subject, study) after each study is written.

    Returns:
        The opened `Release`.

    Example:
        >>> release = synthesize("umd-mini", SynthConfig(subjects=4))  # doctest: +SKIP
    """
    from umd_dataset.index import open_release
    from umd_dataset.release import ReleaseWriter

    config = config or SynthConfig()
    schema = load_schema()
    job = {"generator": "umd_dataset.synthetic", **asdict(config)}
    writer = ReleaseWriter(root, job=job, schema=schema, overwrite=overwrite)
    subjects = plan(config)
    finished = writer.finished  # read once: it lists the job folder
    todo = [(s, study) for s in subjects for study in s.studies if (s.id, study) not in finished]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum(len(s.studies) for s in subjects)
        bar = tqdm(total=total, initial=total - len(todo), desc=f"synth {config.name}", unit="study")

    def done(subject: SubjectPlan, study: str, records: list) -> None:
        writer.record_study(records)
        if bar is not None:
            bar.update(1)
        if on_study is not None:
            on_study(subject.id, study)

    if workers <= 1:
        for subject, study in todo:
            done(subject, study, write_study(root, config, subject, study))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(write_study, root, config, s, st): (s, st) for s, st in todo}
            for future in as_completed(futures):
                done(*futures[future], future.result())
    if bar is not None:
        bar.close()
    splits: dict[str, list[str]] = {name: [] for name in modalities().splits}
    for subject in subjects:
        splits[subject.split].append(subject.id)
    writer.finalize(
        name=config.name,
        version=config.version,
        splits=splits,
        expected=[(s.id, study) for s in subjects for study in s.studies],
        license="CC-BY-4.0",
        citation=CITATION,
        description="Synthetic phantoms in the exact format of the UMD release (not real patients).",
        synthetic=job,
    )
    return open_release(root)
