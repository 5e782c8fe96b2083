"""A learned baseline that trains in seconds on the CPU: a voxel classifier (a small MLP on multi-scale
intensity and body-relative position features), the model the embedded demo trains on CT only.

Every scan is first put on a working grid: reoriented to RAS (exact, `umd_dataset.io.geometry.reorient`)
and resampled to `VoxelFeatures.spacing_mm` (linear; a scan coarser than that keeps its own spacing),
so that whole-body CT (512 x 512 x 1000) becomes a few million voxels and the position features mean
the same on a CT stored LPS and an MRI stored RAS. Per voxel of that grid, the features are the
image z-scored over its voxels above the 5th percentile, the same smoothed by Gaussians of
`scales_mm`, and the voxel's position in the body's bounding box (the body: the smoothed image above
-0.5). The prediction (the argmax of the classes) goes back onto the scan's grid by nearest neighbour.

Nothing here knows which scan kind it sees: trained on CT, it is applied to PET and MRI with the same
features, and what it loses there is what the evaluation measures.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from umd_dataset._version import __version__
from umd_dataset.errors import CheckpointError, InputNotFoundError, InvalidOptionError
from umd_dataset.evaluation.case import Case
from umd_dataset.io.files import atomic_path
from umd_dataset.io.geometry import reorient, resample_onto, resampled_grid, spacing_from_affine
from umd_dataset.io.jobs import Progress

__all__ = ["VoxelFeatures", "VoxelClassifier"]


@dataclass(frozen=True)
class VoxelFeatures:
    """The working grid and the features of the voxel classifier."""

    spacing_mm: float = 4.0
    scales_mm: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0)

    @property
    def count(self) -> int:
        return 1 + len(self.scales_mm) + 3

    def working(self, image: np.ndarray, affine: np.ndarray, order: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """`image` on the working grid (RAS, `spacing_mm` or coarser) and that grid's affine."""
        ras, ras_affine = reorient(np.asarray(image), affine, "RAS")
        spacing = np.maximum(np.asarray(spacing_from_affine(ras_affine)), self.spacing_mm)
        shape, work_affine = resampled_grid(ras.shape, ras_affine, spacing)
        if order == 1:
            ras = ras.astype(np.float32, copy=False)
        return resample_onto(ras, ras_affine, shape, work_affine, order=order, support=False), work_affine

    def compute(self, image: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """Features (voxels of the working grid, `count`) of an image on that grid, float32."""
        from scipy import ndimage

        values = np.asarray(image, dtype=np.float32)
        spacing = np.asarray(spacing_from_affine(affine))
        body = values[values > np.percentile(values, 5)]
        body = body if body.size > 1 else values.ravel()
        values = (values - float(body.mean())) / max(float(body.std()), 1e-6)
        channels = [values] + [ndimage.gaussian_filter(values, scale / spacing) for scale in self.scales_mm]
        inside = ndimage.gaussian_filter(values, 10.0 / spacing) > -0.5
        where = np.argwhere(inside) if inside.any() else np.argwhere(np.ones_like(inside))
        low, high = where.min(axis=0), where.max(axis=0)
        grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in values.shape], indexing="ij")
        channels += [(g - lo) / max(float(hi - lo), 1.0) for g, lo, hi in zip(grids, low, high)]
        return np.stack(channels, axis=-1).reshape(-1, self.count).astype(np.float32, copy=False)


def _network(inputs: int, classes: int, width: int = 64) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, classes))


class VoxelClassifier:
    """The voxel classifier as an automatic model (see the module docstring). Make one with `train`
    or `load`; `name` says what it was trained on."""

    kind = "automatic"

    def __init__(self, network: nn.Module, features: VoxelFeatures, classes: int, trained_on: dict) -> None:
        self.network, self.features, self.classes, self.trained_on = network.eval(), features, classes, dict(trained_on)
        self.name = f"voxel-classifier-{trained_on.get('scan', 'any')}"

    @classmethod
    def train(cls, release, *, scan: str = "ct", split: str = "train", features: VoxelFeatures | None = None, epochs: int = 15,
              organ_samples: int = 4000, background_samples: int = 20000, seed: int = 0, progress: bool = True) -> VoxelClassifier:
        """Train on every scan of kind `scan` in `split` of `release` (verified reads), seeded.

        Raises:
            InvalidOptionError: the split holds no scan of that kind.
        """
        features = features or VoxelFeatures()
        records = list(release.select(split=split, scan=scan))
        if not records:
            raise InvalidOptionError(f"{release.root}: the {split} split holds no {scan} scan to train on")
        rng = np.random.default_rng([seed, 7])
        torch.manual_seed(seed)
        inputs, targets = [], []
        with Progress(len(records), desc=f"features of {len(records)} {scan} scans", unit="scan", enabled=progress) as bar:
            for record in records:
                image, affine = release.read(record, "image")
                labels, _ = release.read(record, "label")
                work, work_affine = features.working(image, affine)
                truth, _ = features.working(np.asarray(labels), affine, order=0)
                table = features.compute(work, work_affine)
                truth = truth.ravel()
                for organ in range(len(release.schema) + 1):
                    where = np.flatnonzero(truth == organ)
                    if where.size:
                        picked = where[rng.integers(where.size, size=organ_samples if organ else background_samples)]
                        inputs.append(table[picked])
                        targets.append(truth[picked])
                bar.update()
        x = torch.from_numpy(np.concatenate(inputs))
        y = torch.from_numpy(np.concatenate(targets).astype(np.int64))
        classes = len(release.schema) + 1
        network = _network(features.count, classes)
        optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(seed)
        with Progress(epochs, desc=f"train on {len(y)} voxels", unit="epoch", enabled=progress) as bar:
            for _ in range(epochs):
                order = torch.randperm(len(y), generator=generator)
                for start in range(0, len(y), 1024):
                    batch = order[start : start + 1024]
                    loss = nn.functional.cross_entropy(network(x[batch]), y[batch])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                bar.update()
        trained_on = {"release": f"{release.info.name} {release.info.version}", "scan": scan, "split": split,
                      "scans": [f"{r.subject}/{r.study}/{r.scan}" for r in records], "seed": seed, "epochs": epochs}
        return cls(network, features, classes, trained_on)

    @property
    def about(self) -> str:
        on = self.trained_on
        return (f"a voxel classifier trained on the {on.get('scan', '?').upper()} scans of the {on.get('split', '?')} split of "
                f"{on.get('release', '?')} only ({len(on.get('scans', []))} scans, seed {on.get('seed', '?')})")

    def __call__(self, case: Case, prompt=None) -> np.ndarray:
        work, work_affine = self.features.working(case.image, case.affine)
        table = torch.from_numpy(self.features.compute(work, work_affine))
        predicted = np.empty(len(table), dtype=np.uint8)
        with torch.no_grad():
            for start in range(0, len(table), 1 << 18):
                predicted[start : start + (1 << 18)] = self.network(table[start : start + (1 << 18)]).argmax(dim=1).numpy()
        return resample_onto(predicted.reshape(work.shape), work_affine, case.image.shape, case.affine, order=0, support=False)

    def save(self, path: str | os.PathLike) -> None:
        """Write the classifier atomically (weights and settings; loads with ``weights_only``)."""
        payload = {"format": "umd-voxel-classifier", "version": 1, "umd_dataset": __version__, "state_dict": self.network.state_dict(),
                   "features": asdict(self.features), "classes": self.classes, "trained_on": self.trained_on}
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike) -> VoxelClassifier:
        """Read a classifier written by `save`.

        Raises:
            InputNotFoundError: no such file. CheckpointError: not a voxel classifier.
        """
        if not os.path.isfile(path):
            raise InputNotFoundError(f"The voxel classifier {path} does not exist.")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for files that are no checkpoint
            raise CheckpointError(f"{path} is not a readable torch file ({type(error).__name__}).") from error
        if not isinstance(payload, dict) or payload.get("format") != "umd-voxel-classifier":
            raise CheckpointError(f"{path} is not a voxel classifier written by VoxelClassifier.save.")
        features = VoxelFeatures(payload["features"]["spacing_mm"], tuple(payload["features"]["scales_mm"]))
        network = _network(features.count, payload["classes"])
        network.load_state_dict(payload["state_dict"])
        return cls(network, features, payload["classes"], payload["trained_on"])
