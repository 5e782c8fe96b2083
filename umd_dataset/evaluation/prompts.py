"""Simulated prompts, seeded: the same subject, organ and seed give the same prompt on every run
and machine (the seed is derived with SHA-256, not Python's hash).

Point rules (`PromptConfig.point`):

- ``center``: the centre of the largest inscribed sphere (the voxel farthest from the organ's
  boundary, in mm; the first in index order on ties) - the protocol of the UMD paper's one-point
  evaluation;
- ``centroid``: the centroid, rounded, if it lies inside the organ; otherwise the ``center`` rule
  (recorded in the prompt);
- ``random``: a uniformly drawn interior voxel.

``points`` adds k-1 random interior points to the first; ``box`` is the tight bounding box, or
one whose faces are moved by a Gaussian of `box_jitter_mm`; ``class`` gives the organ id;
``text`` its name (or, with `text_synonyms`, a drawn synonym). Iterative clicks (`correction_click`)
are placed at the centre of the largest error region of the previous prediction: positive in a
missed region, negative in a false-positive one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from umd_dataset.errors import InvalidOptionError, PromptError, check_choice
from umd_dataset.schema.organs import LabelSchema

__all__ = ["PromptConfig", "Prompt", "KINDS", "POINT_RULES", "prompt_rng", "make_prompt", "correction_click"]

KINDS = ("point", "points", "box", "class", "text")
POINT_RULES = ("center", "centroid", "random")


@dataclass(frozen=True)
class PromptConfig:
    """How prompts are simulated.

    Attributes:
        kind: ``point``, ``points``, ``box``, ``class`` or ``text``.
        point: ``center``, ``centroid`` or ``random`` (for point, points and clicks).
        k: number of points for ``points``.
        box_jitter_mm: standard deviation of each box face's displacement (0: tight box).
        text_synonyms: draw the text among the organ's name and synonyms.
        iterations: corrective clicks after the first prediction (0: one round).
        seed: the seed every prompt is derived from.
    """

    kind: str = "point"
    point: str = "center"
    k: int = 1
    box_jitter_mm: float = 0.0
    text_synonyms: bool = False
    iterations: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        """Every value is checked when the config is made.

        Raises:
            UnknownNameError: an unknown prompt kind or point rule (with the closest one).
            InvalidOptionError: a count or a jitter out of range.
        """
        check_choice(self.kind, KINDS, "prompt kind")
        check_choice(self.point, POINT_RULES, "point rule")
        if int(self.k) < 1:
            raise InvalidOptionError(f"k (points per prompt) must be at least 1, got {self.k}")
        if int(self.iterations) < 0:
            raise InvalidOptionError(f"iterations (corrective clicks) must be 0 or more, got {self.iterations}")
        if not self.box_jitter_mm >= 0:
            raise InvalidOptionError(f"box_jitter_mm must be 0 or more, got {self.box_jitter_mm}")


@dataclass(frozen=True)
class Prompt:
    """One prompt for one organ: points (voxel indices, with labels 1 positive / 0 negative), a box
    (inclusive low and high voxel corners), a class id or a text."""

    kind: str
    organ: str
    organ_id: int
    points: tuple[tuple[int, int, int], ...] = ()
    point_labels: tuple[int, ...] = ()
    box: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
    text: str | None = None
    iteration: int = 0
    note: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def with_click(self, point: tuple[int, int, int], label: int, iteration: int) -> Prompt:
        return Prompt(self.kind, self.organ, self.organ_id, self.points + (point,), self.point_labels + (label,), self.box, self.text, iteration, self.note)


def prompt_rng(seed: int, *parts) -> np.random.Generator:
    """A generator seeded from `seed` and the case (subject, study, scan, organ, ...), the same everywhere."""
    digest = hashlib.sha256(json.dumps([seed, *[str(p) for p in parts]]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _center(mask: np.ndarray, spacing_mm) -> tuple[int, int, int]:
    from scipy import ndimage

    where = np.nonzero(mask)
    lo = [max(int(w.min()) - 1, 0) for w in where]
    hi = [min(int(w.max()) + 2, s) for w, s in zip(where, mask.shape)]
    crop = np.pad(mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], 1)
    distance = ndimage.distance_transform_edt(crop, sampling=spacing_mm)
    index = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return tuple(int(i - 1 + l) for i, l in zip(index, lo))


def _point(mask: np.ndarray, rule: str, spacing_mm, rng: np.random.Generator) -> tuple[tuple[int, int, int], str]:
    if rule == "random":
        where = np.argwhere(mask)
        return tuple(int(v) for v in where[rng.integers(len(where))]), ""
    if rule == "centroid":
        centroid = tuple(int(round(float(v))) for v in np.argwhere(mask).mean(axis=0))
        if mask[centroid]:
            return centroid, ""
        return _center(mask, spacing_mm), "centroid outside the organ: centre of the largest inscribed sphere used"
    return _center(mask, spacing_mm), ""


def make_prompt(mask: np.ndarray, organ: str, organ_id: int, config: PromptConfig, spacing_mm, schema: LabelSchema, rng: np.random.Generator) -> Prompt:
    """The first prompt of an organ (its reference mask must not be empty)."""
    if not mask.any():
        raise PromptError(f"no prompt for {organ}: its reference mask is empty")
    if config.kind in ("point", "points"):
        first, note = _point(mask, config.point, spacing_mm, rng)
        points = [first]
        if config.kind == "points":
            where = np.argwhere(mask)
            while len(points) < min(config.k, len(where)):
                candidate = tuple(int(v) for v in where[rng.integers(len(where))])
                if candidate not in points:
                    points.append(candidate)
        return Prompt(config.kind, organ, organ_id, tuple(points), (1,) * len(points), note=note)
    if config.kind == "box":
        where = np.argwhere(mask)
        lo, hi = where.min(axis=0), where.max(axis=0)
        if config.box_jitter_mm > 0:
            spacing = np.asarray(spacing_mm, dtype=float)
            lo = lo + np.rint(rng.normal(0, config.box_jitter_mm, 3) / spacing).astype(int)
            hi = hi + np.rint(rng.normal(0, config.box_jitter_mm, 3) / spacing).astype(int)
            lo, hi = np.clip(np.minimum(lo, hi), 0, np.asarray(mask.shape) - 1), np.clip(np.maximum(lo, hi), 0, np.asarray(mask.shape) - 1)
        return Prompt("box", organ, organ_id, box=(tuple(int(v) for v in lo), tuple(int(v) for v in hi)))
    if config.kind == "class":
        return Prompt("class", organ, organ_id)
    names = [schema.organ(organ).name, *schema.organ(organ).synonyms]
    text = names[int(rng.integers(len(names)))] if config.text_synonyms else names[0]
    return Prompt("text", organ, organ_id, text=text)


def correction_click(reference: np.ndarray, prediction: np.ndarray, spacing_mm) -> tuple[tuple[int, int, int], int] | None:
    """(voxel, label) of the next corrective click, or None if the prediction is perfect."""
    from scipy import ndimage

    missed, extra = reference & ~prediction, prediction & ~reference
    best = None
    for region, label in ((missed, 1), (extra, 0)):
        if not region.any():
            continue
        components, count = ndimage.label(region)
        sizes = np.bincount(components.ravel())[1:]
        largest = components == (int(np.argmax(sizes)) + 1)
        if best is None or sizes.max() > best[0]:
            best = (int(sizes.max()), largest, label)
    if best is None:
        return None
    return _center(best[1], spacing_mm), best[2]
