"""The exception tree of umd_dataset: every error the package raises derives from `UMDError`.

Errors also derive from the matching built-in class (`ReleaseNotFoundError` is a
`FileNotFoundError`), so code that catches the built-in keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "UMDError",
    "ReleaseNotFoundError",
    "IncompleteReleaseError",
    "ReleaseFormatError",
    "ReleaseVersionError",
    "UnsafePathError",
    "VerificationError",
    "UnknownNameError",
    "UnknownLabelError",
    "GridMismatchError",
    "MaskValueError",
    "LabelOverlapError",
    "LossyLabelError",
    "ModelOutputError",
    "did_you_mean",
]


class UMDError(Exception):
    """Base class of every error raised by umd_dataset."""


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


class VerificationError(UMDError):
    """`Release.verify` found problems; `.report` holds all of them."""

    def __init__(self, report: object) -> None:
        self.report = report
        super().__init__(str(report))


class UnknownNameError(UMDError, ValueError):
    """A name (organ, study, scan, split, option) that is not one of the allowed values."""


class UnknownLabelError(UnknownNameError):
    """A source label (name or id) that maps to no organ of the schema and is not a known structure."""


class GridMismatchError(UMDError, ValueError):
    """A mask or label map that does not lie on the grid it must lie on."""


class MaskValueError(UMDError, ValueError):
    """A binary mask with values other than 0 and 1, or a label map with non-integer values."""


class LabelOverlapError(UMDError, ValueError):
    """Two source labels of different organs claim the same voxels, and the policy says to stop."""


class LossyLabelError(UMDError, ValueError):
    """A source label that merges organs the schema keeps apart (e.g. both kidneys in one label)."""


class ModelOutputError(UMDError, ValueError):
    """A model returned something that is not a valid prediction for the case (the message says what)."""


def did_you_mean(value: str, options: Iterable[str], what: str) -> str:
    """A message for an unknown `value`, with the closest options and the full list.

    Example:
        >>> did_you_mean("livr", ["liver", "spleen"], "organ")
        "Unknown organ 'livr'. Did you mean 'liver'? Available: 'liver', 'spleen'."
    """
    options = list(options)
    close = difflib.get_close_matches(str(value), options, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(repr(o) for o in options)
    return f"Unknown {what} {value!r}.{hint} Available: {listing}."
