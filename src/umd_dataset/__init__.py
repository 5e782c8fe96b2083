"""umd_dataset: the UMD whole-body PET/CT and PET/MRI organ segmentation dataset.

The public API. Importing the package reads no file, creates no folder, touches no network, and
imports neither torch, torchio, nibabel nor datasets.

Example:
    >>> import umd_dataset
    >>> release = umd_dataset.synthesize("umd-mini")          # doctest: +SKIP
    >>> release = umd_dataset.open_release("umd-mini")        # doctest: +SKIP
    >>> release.select(study="petct", scan="pet", split="test")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "open_release",
    "Release",
    "Subject",
    "Study",
    "ScanRecord",
    "ReleaseInfo",
    "VerificationReport",
    "load_schema",
    "LabelSchema",
    "Organ",
    "modalities",
    "synthesize",
    "SynthConfig",
    "harmonize",
    "HarmonizeOptions",
    "load_source",
    "list_sources",
    "coverage",
    "load_dataset",
    "export_hf",
    "evaluate",
    "UMDError",
    "ReleaseNotFoundError",
    "IncompleteReleaseError",
    "ReleaseFormatError",
    "ReleaseVersionError",
    "UnsafePathError",
    "VerificationError",
    "UnknownNameError",
]

_LAZY = {
    "open_release": "umd_dataset.index",
    "Release": "umd_dataset.index",
    "Subject": "umd_dataset.index",
    "Study": "umd_dataset.index",
    "ScanRecord": "umd_dataset.release",
    "ReleaseInfo": "umd_dataset.release",
    "VerificationReport": "umd_dataset.verify",
    "load_schema": "umd_dataset.labels",
    "LabelSchema": "umd_dataset.labels",
    "Organ": "umd_dataset.labels",
    "modalities": "umd_dataset.modalities",
    "synthesize": "umd_dataset.synthetic",
    "SynthConfig": "umd_dataset.synthetic",
    "harmonize": "umd_dataset.harmonize",
    "HarmonizeOptions": "umd_dataset.harmonize",
    "load_source": "umd_dataset.sources",
    "list_sources": "umd_dataset.sources",
    "coverage": "umd_dataset.coverage",
    "load_dataset": "umd_dataset.hf",
    "export_hf": "umd_dataset.hf",
    "evaluate": "umd_dataset.evaluation.runner",
    "UMDError": "umd_dataset.errors",
    "ReleaseNotFoundError": "umd_dataset.errors",
    "IncompleteReleaseError": "umd_dataset.errors",
    "ReleaseFormatError": "umd_dataset.errors",
    "ReleaseVersionError": "umd_dataset.errors",
    "UnsafePathError": "umd_dataset.errors",
    "VerificationError": "umd_dataset.errors",
    "UnknownNameError": "umd_dataset.errors",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'umd_dataset' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from umd_dataset.coverage import coverage
    from umd_dataset.errors import (
        IncompleteReleaseError,
        ReleaseFormatError,
        ReleaseNotFoundError,
        ReleaseVersionError,
        UMDError,
        UnknownNameError,
        UnsafePathError,
        VerificationError,
    )
    from umd_dataset.evaluation.runner import evaluate
    from umd_dataset.harmonize import HarmonizeOptions, harmonize
    from umd_dataset.hf import export_hf, load_dataset
    from umd_dataset.index import Release, Study, Subject, open_release
    from umd_dataset.labels import LabelSchema, Organ, load_schema
    from umd_dataset.modalities import modalities
    from umd_dataset.release import ReleaseInfo, ScanRecord
    from umd_dataset.sources import list_sources, load_source
    from umd_dataset.synthetic import SynthConfig, synthesize
    from umd_dataset.verify import VerificationReport
