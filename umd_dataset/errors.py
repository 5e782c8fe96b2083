"""The exception tree of umd_dataset: every error the package raises derives from `UMDError`.

Errors also derive from the matching built-in class (`ReleaseNotFoundError` is a
`FileNotFoundError`, `UnknownNameError` a `ValueError`), so code that catches the built-in keeps
working. Each condition a caller may want to handle has its own class::

    UMDError
    ├── InvalidOptionError (ValueError)        an option out of range or of the wrong kind
    │   └── UnknownNameError                   a name that is none of the allowed values
    │       ├── UnknownLabelError              a source label that maps to no organ nor known structure
    │       └── SourceVersionError             a tool version whose label ids were never checked
    ├── SchemaError (ValueError)               malformed or inconsistent label schema / alias table data
    │   └── ConversionError                    no explicit conversion between two schema versions
    ├── InputNotFoundError (FileNotFoundError) an input file or folder that does not exist
    ├── UnreadableFileError (ValueError)       a file that cannot be read as what it should be (broken gzip, truncated NIfTI)
    ├── ReleaseNotFoundError (FileNotFoundError)
    │   └── IncompleteReleaseError             a release whose writing was interrupted
    ├── ReleaseFormatError (ValueError)        a release file that breaks the format
    │   ├── ReleaseVersionError
    │   ├── UnsafePathError
    │   ├── CorruptFileError                   a file whose bytes are not the ones its manifest row names
    │   └── ReleaseDataError                   a scan or label map whose content is invalid (ids, grid, NaN)
    ├── OutputExistsError (FileExistsError)    refusing to write over a release, an export or a foreign folder
    ├── JobMismatchError                       a folder holds an interrupted job with other settings
    ├── FolderBusyError                        another process is writing the folder
    ├── VerificationError                      `Release.verify` found problems
    ├── StaleCacheError                        a patch cache that does not match its release
    ├── LabelError (ValueError)                harmonization refused a label input
    │   ├── GridMismatchError, MaskValueError, LabelOverlapError, LossyLabelError
    │   ├── EmptyOrganError                    an empty organ under ``empty="error"``
    │   └── LabelInputError                    a label file or folder that cannot be read as labels
    ├── DicomError (ValueError)
    │   ├── SeriesGeometryError, SUVError
    │   └── SegmentationError                  a DICOM SEG that cannot be placed or read
    ├── IngestInputError (ValueError)          an ingest input (mapping, nnU-Net folder, study) that cannot be used
    ├── IngestError                            studies failed during ingest; ``.report`` says which
    ├── ModelError                             a model or its adapter failed (recorded per case by `evaluate`)
    │   ├── ModelOutputError (ValueError)      what the model returned is not a valid prediction
    │   ├── PredictionNotFoundError (FileNotFoundError)
    │   ├── CheckpointError                    a file that is not a checkpoint of the expected kind
    │   └── ModelUnavailableError (ImportError) a model's package or weights are missing here
    ├── PromptError (ValueError)               a prompt that cannot be made or used
    └── ResultsError                           an evaluation folder without results to merge
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

#: The exception classes (the helpers `did_you_mean`, `check_choice` and `spell` are imported by name).
__all__ = [
    "UMDError",
    "InvalidOptionError",
    "UnknownNameError",
    "UnknownLabelError",
    "SourceVersionError",
    "SchemaError",
    "ConversionError",
    "InputNotFoundError",
    "UnreadableFileError",
    "ReleaseNotFoundError",
    "IncompleteReleaseError",
    "ReleaseFormatError",
    "ReleaseVersionError",
    "UnsafePathError",
    "CorruptFileError",
    "ReleaseDataError",
    "OutputExistsError",
    "JobMismatchError",
    "FolderBusyError",
    "VerificationError",
    "StaleCacheError",
    "LabelError",
    "GridMismatchError",
    "MaskValueError",
    "LabelOverlapError",
    "LossyLabelError",
    "EmptyOrganError",
    "LabelInputError",
    "DicomError",
    "SeriesGeometryError",
    "SUVError",
    "SegmentationError",
    "IngestInputError",
    "IngestError",
    "ModelError",
    "ModelOutputError",
    "PredictionNotFoundError",
    "CheckpointError",
    "ModelUnavailableError",
    "PromptError",
    "ResultsError",
]


_SPELLING = re.compile("\x00(.*?)\x01(.*?)\x00", re.S)


def spell(python: str, cli: str) -> str:
    """An option as a message names it: `python` (an argument, ``overwrite=True``) when the Python API
    raised, `cli` (a flag, ``--overwrite``) when the command line shows it. Messages embed the
    result; ``str(error)`` gives the Python wording and `UMDError.for_cli` the flags."""
    return f"\x00{python}\x01{cli}\x00"


def spelled(text: str, cli: bool) -> str:
    """`text` with each `spell` marker replaced by its Python (``cli=False``) or command-line wording."""
    return _SPELLING.sub(lambda m: m.group(2 if cli else 1), text)


def marked_message(error: BaseException) -> str:
    """The message of `error` with its `spell` markers kept, to embed in a report or another
    message that is spelled for its own reader later."""
    return Exception.__str__(error) if isinstance(error, UMDError) else str(error)


class UMDError(Exception):
    """Base class of every error raised by umd_dataset. Its message names options as the Python
    API spells them (`spell`); `for_cli` gives the same message with command-line flags."""

    def __str__(self) -> str:
        return spelled(super().__str__(), cli=False)

    def for_cli(self) -> str:
        return spelled(super().__str__(), cli=True)


class InvalidOptionError(UMDError, ValueError):
    """An option (argument or setting) with a value out of its range or of the wrong kind."""


class UnknownNameError(InvalidOptionError):
    """A name (organ, study, scan, split, option value) that is not one of the allowed values."""


class UnknownLabelError(UnknownNameError):
    """A source label (name or id) that maps to no organ of the schema and is not a known structure."""


class SourceVersionError(UnknownNameError):
    """An annotation source whose label ids depend on the tool version: none given, or one nobody
    checked (the message lists the checked versions)."""


class SchemaError(UMDError, ValueError):
    """Label schema, alias table or conversion data that is malformed or inconsistent."""


class ConversionError(SchemaError):
    """Two label schema versions without a complete, explicit conversion between them."""


class InputNotFoundError(UMDError, FileNotFoundError):
    """An input file or folder (a label file, a DICOM tree, a mapping) that does not exist."""


class UnreadableFileError(UMDError, ValueError):
    """A file that cannot be read as what it should be: a broken gzip stream, a truncated or
    malformed NIfTI header."""


class ReleaseNotFoundError(UMDError, FileNotFoundError):
    """A folder that should hold a release does not, or a file of a release is missing."""


class IncompleteReleaseError(ReleaseNotFoundError):
    """A release whose writing was interrupted: it has no descriptor yet."""


class ReleaseFormatError(UMDError, ValueError):
    """A release file does not follow the release format."""


class ReleaseVersionError(ReleaseFormatError):
    """A release written in a format version this package cannot read."""


class UnsafePathError(ReleaseFormatError):
    """A path in a release that points outside the release root."""


class CorruptFileError(ReleaseFormatError):
    """A file of a release whose bytes differ from what its manifest row names (size, sha256, or a
    broken gzip stream): corrupt or changed. `umd verify` lists every such file."""


class ReleaseDataError(ReleaseFormatError):
    """A scan or label map of a release whose content is invalid although its checksum is right:
    label values that are no organ id, a label map on another grid than its scan, NaN or infinite
    image voxels. A fault of the release, never of a model."""


class OutputExistsError(UMDError, FileExistsError):
    """An output that exists (a release, an export) or a foreign non-empty folder: nothing is overwritten."""


class JobMismatchError(UMDError):
    """A folder holds an interrupted job whose settings differ from this one's; `.differences` names them."""

    def __init__(self, message: str, differences: tuple[str, ...] = ()) -> None:
        self.differences = differences
        super().__init__(message)


class FolderBusyError(UMDError):
    """Another process holds the folder (it is writing a release, a cache or an evaluation there)."""


class VerificationError(UMDError):
    """`Release.verify` found problems; `.report` holds all of them."""

    def __init__(self, report: object) -> None:
        self.report = report
        super().__init__(str(report))


class StaleCacheError(UMDError):
    """A patch cache that does not match its release (or was never finished)."""


class LabelError(UMDError, ValueError):
    """Harmonization refused a label input (the subclass says why)."""


class GridMismatchError(LabelError):
    """A mask or label map that does not lie on the grid it must lie on."""


class MaskValueError(LabelError):
    """A binary mask with values other than 0 and 1, or a label map with non-integer values."""


class LabelOverlapError(LabelError):
    """Two source labels of different organs claim the same voxels, and the policy says to stop."""


class LossyLabelError(LabelError):
    """A source label that merges organs the schema keeps apart (e.g. both kidneys in one label)."""


class EmptyOrganError(LabelError):
    """An organ mask that is empty, or an organ absent, where ``empty="error"`` asks to stop."""


class LabelInputError(LabelError):
    """A file or folder that cannot be read as labels (no mask in a folder, an unreadable file, a
    label map without the names or the source that give its ids a meaning)."""


class DicomError(UMDError, ValueError):
    """A DICOM input that cannot be used (the subclass says why)."""


class SeriesGeometryError(DicomError):
    """A series whose slices do not form a regular volume (the message says where and why)."""


class SUVError(DicomError):
    """A PET header that does not allow an SUV conversion; the message names the tag and the fix."""


class SegmentationError(DicomError):
    """A DICOM Segmentation that is not readable or whose frames cannot be placed."""


class IngestInputError(UMDError, ValueError):
    """An ingest input that cannot be used: a mapping file, an nnU-Net folder, or a study's files."""


class IngestError(UMDError):
    """Some studies could not be ingested; `.report` says which and why."""

    def __init__(self, message: str, report: object) -> None:
        self.report = report
        super().__init__(message)


class ModelError(UMDError):
    """A model, or its adapter, failed on a case."""


class ModelOutputError(ModelError, ValueError):
    """A model returned something that is not a valid prediction for the case (the message says what)."""


class PredictionNotFoundError(ModelError, FileNotFoundError):
    """A folder of predictions lacks the file of a case."""


class CheckpointError(ModelError):
    """A file that is not a checkpoint of the expected kind."""


class ModelUnavailableError(ModelError, ImportError):
    """A model's package or weights are not on this machine (the message says how to get them)."""


class PromptError(UMDError, ValueError):
    """A prompt that cannot be made (an empty organ) or that a model cannot use."""


class ResultsError(UMDError):
    """An evaluation folder whose results cannot be merged (none written yet)."""


def did_you_mean(value: object, options: Iterable[object], what: str) -> str:
    """A message for an unknown `value`, with the closest options and the full list.

    Example:
        >>> did_you_mean("livr", ["liver", "spleen"], "organ")
        "Unknown organ 'livr'. Did you mean 'liver'? Available: 'liver', 'spleen'."
    """
    options = list(options)
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(repr(o) for o in options)
    return f"Unknown {what} {value!r}.{hint} Available: {listing}."


def check_choice(value: str, options: Iterable[str], what: str) -> str:
    """`value` if it is one of `options`.

    Raises:
        UnknownNameError: it is not; the message suggests the closest options and lists them all.
    """
    options = list(options)
    if value not in options:
        raise UnknownNameError(did_you_mean(value, options, what))
    return value
