"""The synthetic phantom: a seeded anatomy and the CT, PET and MRI scans of it, on any grid.

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
deterministic: the same seed gives the same voxels.

The organ shapes and intensities are data (``phantom.json``), keyed by concept (SNOMED CT code and
laterality, `Organ.concept`): a schema version that names an organ the phantom lacks is refused by
name, never a `KeyError`. The grids of each evaluation domain are data too (`presets`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np

from umd_dataset.errors import SchemaError, check_choice
from umd_dataset.schema.organs import LabelSchema
from umd_dataset.schema.studies import modalities

__all__ = [
    "Grid", "presets", "grid_of", "OrganPhantom", "phantom_organs", "Anatomy", "make_anatomy", "pose",
    "rasterize_labels", "render_scan", "FOV_CENTER_MM",
]


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


@lru_cache(maxsize=None)
def _data() -> dict:
    return json.loads(resources.files("umd_dataset.synthetic").joinpath("phantom.json").read_text("utf-8"))


@lru_cache(maxsize=None)
def presets() -> dict[str, dict[str, Grid]]:
    """Preset name -> evaluation domain -> `Grid`. ``mini`` is small for tests; ``full`` has real
    whole-body sizes (CT 512x512x400, PET 200x200x334 at 3 mm).

    Raises:
        SchemaError: a preset does not cover exactly the evaluation domains of the schema.
    """
    result = {}
    for name, grids in _data()["presets"].items():
        if sorted(grids) != sorted(modalities().domain_keys):
            raise SchemaError(f"phantom.json: preset {name!r} has grids for {sorted(grids)}, not the domains {list(modalities().domain_keys)}.")
        result[name] = {d: Grid(tuple(g["shape"]), tuple(g["spacing_mm"]), g.get("lps_order", True)) for d, g in grids.items()}
    return result


def grid_of(preset: str, domain: str) -> Grid:
    """The grid of one domain in a preset (names checked, with suggestions)."""
    check_choice(preset, presets(), "synthetic preset")
    return presets()[preset][modalities().domain(domain).key]


#: The centre of every field of view (RAS, mm): the middle of the body.
FOV_CENTER_MM = (0.0, 0.0, 400.0)


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


@dataclass(frozen=True)
class OrganPhantom:
    """The phantom of one organ: its template shapes (mm, an average adult) and intensities."""

    shapes: tuple[dict, ...]
    ct_hu: float
    pet_suv: float
    mr: float
    pet_variability: tuple[float, float] | None = None  # per-study factor range of its PET uptake


@lru_cache(maxsize=None)
def phantom_organs(schema: LabelSchema) -> dict[str, OrganPhantom]:
    """Organ slug -> its phantom, for every organ of `schema`, found by concept.

    Raises:
        SchemaError: the phantom has no data for some organs of the schema (named).
    """
    data = _data()
    missing = [f"{o.slug} ({o.concept})" for o in schema if o.concept not in data["organs"]]
    if missing:
        raise SchemaError(
            f"The synthetic phantom has no shape or intensities for organs of {schema.key}: {', '.join(missing)}. "
            "Add them to umd_dataset/synthetic/phantom.json (keyed by SNOMED CT code and laterality)."
        )
    result = {}
    for organ in schema:
        entry = data["organs"][organ.concept]
        variability = data["pet_variability"].get(organ.concept)
        result[organ.slug] = OrganPhantom(
            tuple(entry["shapes"]), float(entry["ct_hu"]), float(entry["pet_suv"]), float(entry["mr"]),
            tuple(variability) if variability else None,
        )
    return result


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
    pivot = np.array(FOV_CENTER_MM)
    organs = {}
    phantom = phantom_organs(schema)
    for organ in schema:
        parts = []
        shift = rng.normal(0, 5, 3)
        grow = rng.uniform(0.9, 1.1)
        for spec in phantom[organ.slug].shapes:
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
    uptake = {organ.slug: float(rng.uniform(0.75, 1.3)) for organ in schema}
    return Anatomy(organs, scale, width=float(160 * scale * rng.uniform(0.9, 1.1)), depth=float(105 * scale * rng.uniform(0.9, 1.1)), uptake=uptake)


# ----------------------------------------------------------------------------------------------
# Tissues and intensities

AIR, FAT, SOFT, BONE, MARROW = 0, 1, 2, 3, 4
_ORGAN_BASE = 10  # tissue code of organ id k is _ORGAN_BASE + k

_TISSUE_CODES = {"air": AIR, "fat": FAT, "soft": SOFT, "bone": BONE, "marrow": MARROW}


def _tissue_values(which: str) -> dict[int, float]:
    return {_TISSUE_CODES[name]: float(v) for name, v in _data()["tissues"][which].items()}


def pose(rng: np.random.Generator) -> np.ndarray:
    """A small rigid repositioning: a few degrees of rotation, a few mm of shift (4x4, anatomy -> world)."""
    rz, rx = np.deg2rad(rng.uniform(-4, 4)), np.deg2rad(rng.uniform(-3, 3))
    cz, sz, cx, sx = np.cos(rz), np.sin(rz), np.cos(rx), np.sin(rx)
    rot = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    pivot = np.array(FOV_CENTER_MM)
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
        zc = z - FOV_CENTER_MM[2]
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


def _lut(tissue: str, organ_value, schema: LabelSchema, factors=None) -> np.ndarray:
    """Tissue code -> intensity: background tissues from ``phantom.json``, organs by `organ_value`."""
    lut = np.zeros(256, dtype=np.float32)
    for code, value in _tissue_values(tissue).items():
        lut[code] = value
    phantom = phantom_organs(schema)
    for organ in schema:
        lut[_ORGAN_BASE + organ.id] = organ_value(phantom[organ.slug]) * (factors or {}).get(organ.slug, 1.0)
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
        domain: an evaluation domain key (its scan's DICOM modality decides the contrast).

    Returns:
        (image, label map (uint8), 4x4 RAS affine). CT is int16 HU, PET float32 SUV, MRI int16.
    """
    from scipy import ndimage

    spec = modalities().scan(modalities().domain(domain).scan)
    affine = grid.affine(FOV_CENTER_MM)
    labels = rasterize_labels(anatomy, schema, grid.shape, affine, pose)
    tissues = _tissues(anatomy, grid.shape, affine, pose, labels)
    spacing = np.asarray(grid.spacing_mm)
    if spec.modality == "CT":
        volume = _lut("ct_hu", lambda o: o.ct_hu, schema)[tissues]
        volume = ndimage.gaussian_filter(volume, 0.5, output=np.float32)
        volume += rng.standard_normal(volume.shape, dtype=np.float32) * np.float32(12.0)
        return np.clip(np.rint(volume), -1024, 3071).astype(np.int16), labels, affine
    if spec.functional:
        factors = dict(anatomy.uptake)
        # the functional state changes between studies: bladder filling and myocardial uptake
        for slug, organ in phantom_organs(schema).items():
            if organ.pet_variability is not None:
                factors[slug] *= float(rng.uniform(*organ.pet_variability))
        activity = _lut("pet_suv", lambda o: o.pet_suv, schema, factors)[tissues]
        fwhm_mm = float(_data()["pet_psf_fwhm_mm"][domain])
        activity = ndimage.gaussian_filter(activity, fwhm_mm / 2.355 / spacing, output=np.float32)
        noise = ndimage.gaussian_filter(rng.standard_normal(activity.shape, dtype=np.float32), 0.7, output=np.float32)
        noise /= np.float32(max(float(noise.std()), 1e-6))
        volume = activity + np.sqrt(activity) * noise * np.float32(0.25)
        return np.maximum(volume, 0).astype(np.float32), labels, affine
    if spec.modality == "MR":
        volume = _lut("mr", lambda o: o.mr, schema)[tissues]
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
    raise SchemaError(f"The synthetic phantom cannot render scans of modality {spec.modality!r} (domain {domain!r}).")


