"""Classical baselines that ship: `RegionGrowing` (promptable, no training) and `NoisyOracle`
(automatic, the reference degraded alike on every scan: a check of the evaluation pipeline, not a model).
"""

from __future__ import annotations

import numpy as np

from umd_dataset.errors import PromptError
from umd_dataset.evaluation.case import Case
from umd_dataset.evaluation.prompts import prompt_rng

__all__ = ["RegionGrowing", "NoisyOracle"]


class RegionGrowing:
    """A classical promptable baseline: on the image smoothed by a Gaussian of `smoothing_mm`, grow
    from the prompt's positive points (or the box centre) the connected region whose intensities
    lie within `tolerance` standard deviations of the seed neighbourhood's mean, inside the box if
    one is given. Negative clicks cut their region out."""

    kind = "promptable"
    name = "region-growing"

    def __init__(self, tolerance: float = 2.5, radius: int = 2, smoothing_mm: float = 4.0) -> None:
        self.tolerance, self.radius, self.smoothing_mm = tolerance, radius, smoothing_mm
        self._smoothed: tuple[tuple, np.ndarray] | None = None  # the last scan's smoothed image: one filter per scan, not per organ

    def _image(self, case: Case) -> np.ndarray:
        from scipy import ndimage

        key = (case.subject, case.study, case.scan, case.image.shape)  # not id(): a freed array's id is reused
        if self._smoothed is None or self._smoothed[0] != key:
            image = np.asarray(case.image, dtype=np.float32)
            if self.smoothing_mm > 0:
                image = ndimage.gaussian_filter(image, self.smoothing_mm / np.asarray(case.spacing_mm))
            self._smoothed = (key, image)
        return self._smoothed[1]

    def __call__(self, case: Case, prompt) -> np.ndarray:
        from scipy import ndimage

        image = self._image(case)
        if prompt.points:
            seeds = [p for p, label in zip(prompt.points, prompt.point_labels) if label == 1] or [prompt.points[0]]
        elif prompt.box is not None:
            seeds = [tuple((np.asarray(prompt.box[0]) + np.asarray(prompt.box[1])) // 2)]
        else:
            raise PromptError("region growing needs a point or a box prompt")
        mask = np.zeros(image.shape, dtype=bool)
        for seed in seeds:
            region = tuple(slice(max(0, c - self.radius), c + self.radius + 1) for c in seed)
            values = image[region]
            mean, std = float(values.mean()), float(values.std()) + 1e-3 * (abs(float(values.mean())) + 1)
            inside = np.abs(image - mean) <= self.tolerance * std
            if prompt.box is not None:
                box = np.zeros(image.shape, dtype=bool)
                box[tuple(slice(lo, hi + 1) for lo, hi in zip(*prompt.box))] = True
                inside &= box
            components, _ = ndimage.label(inside)
            if components[seed]:
                mask |= components == components[seed]
        for point, label in zip(prompt.points, prompt.point_labels):
            if label == 0:
                components, _ = ndimage.label(mask)
                if components[point]:
                    mask &= components != components[point]
        return mask


class NoisyOracle:
    """A check of the evaluation pipeline, not a model: the reference label map, degraded the same
    way on every scan (each organ's boundary moved by a random erosion or dilation of up to one
    voxel, organs dropped with `drop_probability`), seeded per case. Its scores show what the
    metrics and the report do with near-perfect predictions; any gap between its domains comes
    from the organs' sizes in voxels on each grid, never from the model."""

    kind = "automatic"
    needs_reference = True
    name = "noisy-oracle"
    about = "a check of the evaluation pipeline, not a model: the reference label map, degraded alike on every scan"

    def __init__(self, seed: int = 0, drop_probability: float = 0.05) -> None:
        self.seed, self.drop_probability = seed, drop_probability

    def __call__(self, case: Case, prompt=None) -> np.ndarray:
        from scipy import ndimage

        rng = prompt_rng(self.seed, case.subject, case.study, case.scan, "oracle")
        reference = case.reference
        out = np.zeros_like(reference)
        boxes = ndimage.find_objects(reference)
        for organ, box in enumerate(boxes, start=1):
            if box is None or rng.random() < self.drop_probability:
                continue
            steps = int(rng.integers(0, 2))
            # work in the organ's box, grown by the dilation: whole-body volumes stay fast
            region = tuple(slice(max(0, b.start - steps - 1), min(n, b.stop + steps + 1)) for b, n in zip(box, reference.shape))
            mask = reference[region] == organ
            if steps and rng.random() < 0.5:
                mask = ndimage.binary_erosion(mask, iterations=steps) if mask.sum() > 50 else mask
            elif steps:
                mask = ndimage.binary_dilation(mask, iterations=steps)
            view = out[region]
            view[mask & (view == 0)] = organ
        return out
