"""Model adapters: each wraps one kind of model so that `umd_dataset.evaluate` can run it.

- `generic`: a function, a torch `nn.Module` (sliding window), a folder of predictions, a command;
- `base`: the registry of model adapters (``models.json``), the paper's reported scores
  (``reported.json``), finding a model's package and weights, the grid a model works on;
- one module per model of the registry (`umd models` lists them): `vista3d`, `nninteractive`,
  `sam_med3d`, `segvol`, `sat`, `totalsegmentator`, `moose`, `nnunet`. Each imports its model's
  package only when the model runs, and says which extra installs it when it is missing.

Example:
    >>> from umd_dataset.evaluation.adapters import make_adapter
    >>> model = make_adapter("sam-med3d", "sam_med3d_turbo.pth", device="cuda")   # doctest: +SKIP
"""

from __future__ import annotations

from umd_dataset.evaluation.adapters.base import adapter_specs, availability, make_adapter
from umd_dataset.evaluation.adapters.generic import CommandModel, FolderModel, FunctionModel, TorchModel

__all__ = ["FunctionModel", "TorchModel", "FolderModel", "CommandModel", "make_adapter", "adapter_specs", "availability"]
