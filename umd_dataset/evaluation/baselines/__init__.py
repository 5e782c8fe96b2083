"""Baselines that ship with the package.

- `classical`: `RegionGrowing` (promptable) and `NoisyOracle` (a check of the pipeline);
- `voxel`: the voxel classifier the demo trains on CT only (needs torch);
- `unet`: the small 3D U-Net of the training example, its normalization and checkpoints (needs torch).
"""

from __future__ import annotations

from umd_dataset.evaluation.baselines.classical import NoisyOracle, RegionGrowing

__all__ = ["RegionGrowing", "NoisyOracle"]
