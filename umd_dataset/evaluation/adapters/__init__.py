"""Model adapters: each wraps one kind of model so that `umd_dataset.evaluate` can run it.

- `generic`: a function, a torch `nn.Module` (sliding window), a folder of predictions, a command.
"""

from __future__ import annotations

from umd_dataset.evaluation.adapters.generic import CommandModel, FolderModel, FunctionModel, TorchModel

__all__ = ["FunctionModel", "TorchModel", "FolderModel", "CommandModel"]
