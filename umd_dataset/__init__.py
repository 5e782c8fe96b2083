"""umd_dataset: the UMD whole-body PET/CT and PET/MRI organ segmentation dataset, made usable.

The face of the package: the public API, resolved lazily. Importing it reads no file, creates no
folder, touches no network, and imports neither torch, torchio, nibabel, pandas nor datasets.
Nothing inside the package imports this module: each part imports the module that owns a name.

Functions:
    open_release, load_dataset, split_by_node, export_hf, evaluate, synthesize, harmonize, coverage, load_schema,
    modalities, load_source, list_sources

Classes:
    Release, Subject, Study, ScanRecord, ReleaseInfo, ReleaseCounts, ReleaseSummary,
    VerificationReport, LabelSchema, Organ, SynthConfig, HarmonizeOptions, Harmonized, EvalConfig,
    EvalResult

Errors:
    UMDError, InvalidOptionError, UnknownNameError, UnknownLabelError, SourceVersionError,
    SchemaError, ConversionError, InputNotFoundError, UnreadableFileError, ReleaseNotFoundError,
    IncompleteReleaseError, ReleaseFormatError, ReleaseVersionError, UnsafePathError,
    CorruptFileError, ReleaseDataError, OutputExistsError, JobMismatchError, FolderBusyError,
    VerificationError, StaleCacheError, LabelError, GridMismatchError, MaskValueError,
    LabelOverlapError, LossyLabelError, EmptyOrganError, LabelInputError, DicomError,
    SeriesGeometryError, SUVError, SegmentationError, IngestInputError, IngestError, ModelError,
    ModelOutputError, PredictionNotFoundError, CheckpointError, ModelUnavailableError,
    PromptError, ResultsError

Constants:
    __version__

Example:
    >>> import umd_dataset
    >>> release = umd_dataset.synthesize("umd-mini")          # doctest: +SKIP
    >>> release = umd_dataset.open_release("umd-mini")        # doctest: +SKIP
    >>> release.select(study="petct", scan="pet", split="test")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from umd_dataset._version import __version__
from umd_dataset.errors import *  # noqa: F403 - the exception tree is light and always at hand
from umd_dataset.errors import __all__ as _error_names

#: Public name -> the module that owns it.
_LAZY = {
    "open_release": "umd_dataset.release.index",
    "Release": "umd_dataset.release.index",
    "Subject": "umd_dataset.release.index",
    "Study": "umd_dataset.release.index",
    "ReleaseSummary": "umd_dataset.release.index",
    "ScanRecord": "umd_dataset.release.format",
    "ReleaseInfo": "umd_dataset.release.format",
    "ReleaseCounts": "umd_dataset.release.format",
    "VerificationReport": "umd_dataset.release.verify",
    "coverage": "umd_dataset.release.organ_coverage",
    "load_schema": "umd_dataset.schema.organs",
    "LabelSchema": "umd_dataset.schema.organs",
    "Organ": "umd_dataset.schema.organs",
    "modalities": "umd_dataset.schema.studies",
    "load_source": "umd_dataset.schema.sources",
    "list_sources": "umd_dataset.schema.sources",
    "synthesize": "umd_dataset.synthetic.release",
    "SynthConfig": "umd_dataset.synthetic.release",
    "harmonize": "umd_dataset.labels.harmonize",
    "HarmonizeOptions": "umd_dataset.labels.harmonize",
    "Harmonized": "umd_dataset.labels.harmonize",
    "load_dataset": "umd_dataset.views.hf",
    "split_by_node": "umd_dataset.views.hf",
    "export_hf": "umd_dataset.views.export",
    "evaluate": "umd_dataset.evaluation.runner",
    "EvalConfig": "umd_dataset.evaluation.runner",
    "EvalResult": "umd_dataset.evaluation.runner",
}

__all__ = ["__version__", *_LAZY, *_error_names]


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
    from umd_dataset.evaluation.runner import EvalConfig, EvalResult, evaluate
    from umd_dataset.labels.harmonize import Harmonized, HarmonizeOptions, harmonize
    from umd_dataset.release.format import ReleaseCounts, ReleaseInfo, ScanRecord
    from umd_dataset.release.index import Release, ReleaseSummary, Study, Subject, open_release
    from umd_dataset.release.organ_coverage import coverage
    from umd_dataset.release.verify import VerificationReport
    from umd_dataset.schema.organs import LabelSchema, Organ, load_schema
    from umd_dataset.schema.sources import list_sources, load_source
    from umd_dataset.schema.studies import modalities
    from umd_dataset.synthetic.release import SynthConfig, synthesize
    from umd_dataset.views.export import export_hf
    from umd_dataset.views.hf import load_dataset, split_by_node
