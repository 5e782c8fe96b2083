"""The learned baseline: a small 3D U-Net, the intensity normalization it was trained with, and its checkpoints.

The baseline of the training example (``scripts/train_baseline.py``) and of the evaluation. A
checkpoint holds the weights and everything needed to run the model on a new scan: the label
schema, the scan kind, the normalization and the patch size.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from umd_dataset._version import __version__
from umd_dataset.errors import CheckpointError, InputNotFoundError
from umd_dataset.io.files import atomic_path

__all__ = ["UNet3D", "Normalization", "NORMALIZATIONS", "save_checkpoint", "load_checkpoint"]


@dataclass(frozen=True)
class Normalization:
    """Intensities -> network input: clip to [low, high], then (x - center) / scale; or, with
    `zscore`, per volume over voxels above `low`."""

    low: float
    high: float
    center: float = 0.0
    scale: float = 1.0
    log: bool = False
    zscore: bool = False

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        values = values.float().clamp(self.low, self.high)
        if self.log:
            values = torch.log1p(values)
        if self.zscore:
            body = values[values > self.low]
            mean, std = (body.mean(), body.std()) if body.numel() > 1 else (values.mean(), values.std())
            return (values - mean) / std.clamp_min(1e-6)
        return (values - self.center) / self.scale


#: Defaults per scan kind: CT in HU, PET in SUV (log), MRI per-volume z-score.
NORMALIZATIONS = {
    "ct": Normalization(low=-1000.0, high=1000.0, center=0.0, scale=500.0),
    "pet": Normalization(low=0.0, high=50.0, log=True, center=0.5, scale=1.0),
    "mri": Normalization(low=0.0, high=32767.0, zscore=True),
}


def _block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(channels_in, channels_out, 3, padding=1, bias=False),
        nn.InstanceNorm3d(channels_out, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
        nn.Conv3d(channels_out, channels_out, 3, padding=1, bias=False),
        nn.InstanceNorm3d(channels_out, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class UNet3D(nn.Module):
    """A plain 3D U-Net: `depth` resolutions, `width` channels at the top, doubling below.

    Input (N, 1, X, Y, Z) with X, Y, Z divisible by 2**(depth-1); output logits (N, classes, X, Y, Z).
    """

    def __init__(self, classes: int = 14, width: int = 8, depth: int = 3, in_channels: int = 1) -> None:
        super().__init__()
        self.config = {"classes": classes, "width": width, "depth": depth, "in_channels": in_channels}
        channels = [width * 2**i for i in range(depth)]
        self.down = nn.ModuleList([_block(in_channels if i == 0 else channels[i - 1], c) for i, c in enumerate(channels)])
        self.up = nn.ModuleList([nn.ConvTranspose3d(channels[i], channels[i - 1], 2, stride=2) for i in range(depth - 1, 0, -1)])
        self.merge = nn.ModuleList([_block(2 * channels[i - 1], channels[i - 1]) for i in range(depth - 1, 0, -1)])
        self.head = nn.Conv3d(channels[0], classes, 1)

    @property
    def divisor(self) -> int:
        return 2 ** (self.config["depth"] - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nn.functional.max_pool3d(x, 2))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def save_checkpoint(path: str | os.PathLike, model: UNet3D, *, scan: str, schema: str, patch_size, normalization: Normalization,
                    step: int = 0, optimizer_state: dict | None = None, extra: dict | None = None) -> None:
    """Write a checkpoint atomically (a killed save leaves the previous one intact)."""

    payload = {
        "format": "umd-unet3d", "version": 1, "umd_dataset": __version__, "model": model.config, "state_dict": model.state_dict(),
        "scan": scan, "schema": schema, "patch_size": [int(p) for p in np.broadcast_to(patch_size, (3,))],
        "normalization": asdict(normalization), "step": step, "optimizer": optimizer_state, "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[UNet3D, dict]:
    """(model in eval mode on `device`, the checkpoint's metadata).

    Raises:
        InputNotFoundError: the file does not exist.
        CheckpointError: the file is not a umd_dataset U-Net checkpoint.
    """
    if not os.path.isfile(path):
        raise InputNotFoundError(f"The checkpoint {path} does not exist (scripts/train_baseline.py writes one).")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)  # never unpickle code from a checkpoint
    except Exception as error:  # torch raises several types for files that are no checkpoint
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({type(error).__name__}: {str(error)[:200]}).") from error
    if not isinstance(payload, dict) or payload.get("format") != "umd-unet3d":
        raise CheckpointError(f"{path} is not a umd_dataset U-Net checkpoint (written by scripts/train_baseline.py).")
    model = UNet3D(**payload["model"]).to(device)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    payload["normalization"] = Normalization(**payload["normalization"])
    return model, payload
