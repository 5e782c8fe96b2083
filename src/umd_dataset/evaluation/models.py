"""The model protocol, adapters, and the baselines that ship.

A model is any callable. An *automatic* model takes a `Case` and returns a label map with canonical
organ ids on the case's grid (or ``{organ slug: bool mask}``); a *promptable* model takes a `Case`
and a `Prompt` and returns one bool mask. The case holds the image exactly as a user would give it:
intensities in HU (CT), SUV (PET) or scanner units (MRI), with spacing and affine.

Adapters: `FunctionModel` (a plain function), `TorchModel` (an `nn.Module`, sliding-window
inference, optional mixed precision; `TorchModel.from_checkpoint` loads the training example's
U-Net), `FolderModel` (a folder of prediction files, nnU-Net style) and `CommandModel` (a program
that reads and writes NIfTI). Baselines: `RegionGrowing` (promptable, classical) and `NoisyOracle`
(automatic, a sanity check built from the reference).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from umd_dataset.errors import UMDError

__all__ = ["Case", "FunctionModel", "TorchModel", "FolderModel", "CommandModel", "RegionGrowing", "NoisyOracle", "model_kind"]


@dataclass
class Case:
    """What a model sees of one scan."""

    image: np.ndarray
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]
    subject: str
    study: str
    scan: str
    domain: str
    modality: str
    units: str
    organs: tuple[str, ...] = ()
    reference: np.ndarray | None = field(default=None, repr=False)  # only for models that declare needs_reference


def model_kind(model) -> str:
    """``automatic`` or ``promptable`` (a model's ``kind`` attribute; plain functions are automatic)."""
    kind = getattr(model, "kind", "automatic")
    if kind not in ("automatic", "promptable"):
        raise UMDError(f"model kind must be 'automatic' or 'promptable', got {kind!r}")
    return kind


class FunctionModel:
    """Wrap a function as a model: ``f(case) -> label map`` or ``f(case, prompt) -> mask``."""

    def __init__(self, function: Callable, kind: str = "automatic", name: str | None = None) -> None:
        self.function, self.kind, self.name = function, kind, name or getattr(function, "__name__", "function")
        self.needs_reference = getattr(function, "needs_reference", False)

    def __call__(self, case: Case, prompt=None):
        return self.function(case) if self.kind == "automatic" else self.function(case, prompt)


class TorchModel:
    """An `nn.Module` that maps a normalized (N, 1, X, Y, Z) patch to (N, classes, X, Y, Z) logits,
    run by sliding window over the whole scan (windows overlapping by `overlap`, logits averaged).

    Args:
        module: the network.
        normalization: intensities -> network input (e.g. `umd_dataset.models.NORMALIZATIONS["ct"]`).
        patch_size: window size in voxels.
        device, amp: where to run; `amp` uses bfloat16 autocast (CPU) or float16 (CUDA).
    """

    kind = "automatic"

    def __init__(self, module, normalization, patch_size, *, device: str = "cpu", amp: bool = False, overlap: float = 0.5, name: str = "torch") -> None:
        self.module, self.normalization, self.device, self.amp, self.overlap, self.name = module, normalization, device, amp, overlap, name
        self.patch_size = np.broadcast_to(np.asarray(patch_size, int), (3,)).copy()

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: str = "cpu", amp: bool = False) -> TorchModel:
        from umd_dataset.models import load_checkpoint

        module, meta = load_checkpoint(path, device)
        return cls(module, meta["normalization"], meta["patch_size"], device=device, amp=amp, name=f"unet:{Path(path).name}")

    def __call__(self, case: Case, prompt=None) -> np.ndarray:
        import torch

        image = torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32))
        image = self.normalization(image)
        shape = np.asarray(image.shape)
        size = np.minimum(self.patch_size, shape)
        divisor = getattr(self.module, "divisor", 1)
        size = np.maximum((size // divisor) * divisor, divisor)
        pad = np.maximum(size - shape, 0)
        if pad.any():
            image = torch.nn.functional.pad(image, (0, int(pad[2]), 0, int(pad[1]), 0, int(pad[0])))
        padded = np.asarray(image.shape)
        step = np.maximum((size * (1 - self.overlap)).astype(int), 1)
        starts = [sorted(set(list(range(0, p - s + 1, st)) + [p - s])) for p, s, st in zip(padded, size, step)]
        logits = None
        counts = torch.zeros(tuple(padded), dtype=torch.float32)
        dtype = torch.bfloat16 if self.device == "cpu" else torch.float16
        with torch.no_grad(), torch.autocast(device_type=str(self.device).split(":")[0], dtype=dtype, enabled=self.amp):
            for x in starts[0]:
                for y in starts[1]:
                    for z in starts[2]:
                        window = image[x : x + size[0], y : y + size[1], z : z + size[2]][None, None].to(self.device)
                        out = self.module(window).float().cpu()[0]
                        if logits is None:
                            logits = torch.zeros((out.shape[0], *padded), dtype=torch.float32)
                        logits[:, x : x + size[0], y : y + size[1], z : z + size[2]] += out
                        counts[x : x + size[0], y : y + size[1], z : z + size[2]] += 1
        labels = (logits / counts).argmax(dim=0).numpy().astype(np.uint8)
        return labels[: shape[0], : shape[1], : shape[2]]


class FolderModel:
    """Predictions already on disk: ``<folder>/<pattern>`` per scan (default nnU-Net style
    ``{subject}_{study}_{scan}.nii.gz``), label maps with canonical ids. The file's affine must be
    the scan's, or the case fails with both grids named."""

    kind = "automatic"

    def __init__(self, folder: str | os.PathLike, pattern: str = "{subject}_{study}_{scan}.nii.gz", name: str | None = None) -> None:
        self.folder, self.pattern, self.name = Path(folder), pattern, name or f"folder:{Path(folder).name}"

    def __call__(self, case: Case, prompt=None):
        from umd_dataset.io import load_nifti

        path = self.folder / self.pattern.format(subject=case.subject, study=case.study, scan=case.scan, domain=case.domain)
        if not path.is_file():
            raise FileNotFoundError(f"no prediction file {path}")
        image = load_nifti(path)
        return image  # a nibabel image: the runner checks its grid against the scan's


class CommandModel:
    """A program that reads a NIfTI scan and writes a NIfTI label map: ``command`` holds ``{input}``
    and ``{output}`` placeholders, e.g. ``"mymodel --in {input} --out {output}"``. It gets
    `timeout_s` seconds per scan."""

    kind = "automatic"

    def __init__(self, command: str, timeout_s: float = 600.0, name: str | None = None) -> None:
        self.command, self.timeout_s, self.name = command, timeout_s, name or f"command:{shlex.split(command)[0]}"

    def __call__(self, case: Case, prompt=None):
        from umd_dataset.io import load_nifti, write_nifti

        with tempfile.TemporaryDirectory() as tmp:
            source, target = Path(tmp) / "image.nii.gz", Path(tmp) / "labels.nii.gz"
            write_nifti(source, case.image, case.affine)
            words = [w.format(input=source, output=target) for w in shlex.split(self.command)]
            result = subprocess.run(words, capture_output=True, text=True, timeout=self.timeout_s)
            if result.returncode != 0:
                raise UMDError(f"{words[0]} exited with {result.returncode}: {result.stderr.strip()[-500:]}")
            image = load_nifti(target)
            return type(image)(np.asanyarray(image.dataobj).copy(), image.affine)


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
            raise UMDError("region growing needs a point or a box prompt")
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
    """A sanity model: the reference label map, degraded. Each organ's boundary is moved by a random
    erosion or dilation, and organs are dropped at random; PET scans are degraded more (`pet_noise`),
    so that a report shows a structural-vs-functional gap by construction. Seeded per case."""

    kind = "automatic"
    needs_reference = True
    name = "noisy-oracle"

    def __init__(self, seed: int = 0, drop_probability: float = 0.05, pet_noise: float = 2.0) -> None:
        self.seed, self.drop_probability, self.pet_noise = seed, drop_probability, pet_noise

    def __call__(self, case: Case, prompt=None) -> np.ndarray:
        from scipy import ndimage

        from umd_dataset.evaluation.prompts import prompt_rng

        rng = prompt_rng(self.seed, case.subject, case.study, case.scan, "oracle")
        reference = case.reference
        out = np.zeros_like(reference)
        strength = self.pet_noise if case.scan == "pet" else 1.0
        boxes = ndimage.find_objects(reference)
        for organ, box in enumerate(boxes, start=1):
            if box is None or rng.random() < self.drop_probability * strength:
                continue
            steps = int(rng.integers(0, 1 + int(strength)))
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
