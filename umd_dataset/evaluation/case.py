"""The model protocol: what a model is given (`Case`), the two kinds of model, and the checks that
turn what a model returns into a label map or a mask on the case's grid, or a `ModelOutputError`.

An *automatic* model takes a `Case` and returns a label map with canonical organ ids on the
case's grid (or ``{organ slug: bool mask}``); a *promptable* model takes a `Case` and a `Prompt`
and returns one bool mask. The case holds the image exactly as a user would give it: intensities
in HU (CT), SUV (PET) or scanner units (MRI), with spacing and affine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from umd_dataset.errors import ModelOutputError, check_choice
from umd_dataset.io.geometry import Geometry

__all__ = ["Case", "MODEL_KINDS", "model_kind", "as_label_map", "as_mask"]

#: The kinds of model `evaluate` runs.
MODEL_KINDS = ("automatic", "promptable")


@dataclass
class Case:
    """What a model sees of one scan. Its arrays are read-only: a model that needs to change them
    copies them first (`evaluate` scores against a reference the model never holds)."""

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
    timeout_s: float | None = None  # the time limit of each call, for adapters that start programs


def model_kind(model) -> str:
    """``automatic`` or ``promptable`` (a model's ``kind`` attribute; plain functions are automatic)."""
    return check_choice(getattr(model, "kind", "automatic"), MODEL_KINDS, "model kind")


def _as_array(output, case: Case, what: str) -> np.ndarray:
    """The model output as an array on the case's grid; raises `ModelOutputError` naming the problem."""
    if hasattr(output, "affine") and hasattr(output, "dataobj"):  # a nibabel image: check its grid
        given, expected = Geometry(output.shape, output.affine), Geometry(case.image.shape, case.affine)
        if not given.matches(expected):
            raise ModelOutputError(f"{what} is on another grid: expected {expected.describe()}, given {given.describe()}")
        output = np.asanyarray(output.dataobj)
    if hasattr(output, "detach"):  # a torch tensor
        output = output.detach().cpu().numpy()
    if not isinstance(output, np.ndarray):
        raise ModelOutputError(f"{what} is a {type(output).__name__}, not an array")
    if output.shape != case.image.shape:
        spacing = ", ".join(f"{s:.4g}" for s in case.spacing_mm)
        raise ModelOutputError(
            f"{what} has shape {output.shape}; expected shape {case.image.shape} (spacing ({spacing}) mm), the scan's own grid. "
            "Resample predictions back onto the scan before returning them."
        )
    if output.dtype.kind == "f":
        if not np.isfinite(output).all():
            raise ModelOutputError(f"{what} contains NaN or infinite values")
        if not np.array_equal(output, np.rint(output)):
            raise ModelOutputError(f"{what} has non-integer values (probabilities?); return labels")
    elif output.dtype.kind not in "biu":
        raise ModelOutputError(f"{what} has dtype {output.dtype}; return integer labels or a bool mask")
    return output


def as_label_map(output, case: Case, schema) -> np.ndarray:
    """What an automatic model returned, as a uint8 label map of `schema` ids on the case's grid.

    Raises:
        ModelOutputError: another grid or shape, NaN, non-integer values, ids outside the schema,
            or overlapping organ masks.
    """
    if isinstance(output, Mapping):
        labels = np.zeros(case.image.shape, dtype=np.uint8)
        for slug, mask in output.items():
            if slug not in schema.slugs:
                raise ModelOutputError(f"the model returned a mask for {slug!r}, which is no organ of {schema.key}")
            mask = as_mask(mask, case, slug)
            if (labels[mask] != 0).any():
                raise ModelOutputError(f"the masks of {slug} and another organ overlap")
            labels[mask] = schema.organ(slug).id
        return labels
    labels = _as_array(output, case, "the label map")
    if labels.dtype.kind == "f":  # integral values, checked by _as_array
        labels = labels.astype(np.int64)
    invalid = schema.count_voxels(labels).invalid
    if invalid:
        raise ModelOutputError(f"the label map holds {list(invalid)}, not organ ids of {schema.key} (0..{len(schema)})")
    return labels.astype(np.uint8)


def as_mask(output, case: Case, organ: str) -> np.ndarray:
    """What a promptable model returned for `organ`, as a bool mask on the case's grid.

    Raises:
        ModelOutputError: another grid or shape, NaN, or values other than 0 and 1.
    """
    mask = _as_array(output, case, f"the mask of {organ}")
    values = set(np.unique(mask).tolist())
    if not values <= {0, 1, True, False}:
        raise ModelOutputError(f"the mask of {organ} holds values {sorted(values)[:5]}, not 0/1")
    return mask.astype(bool)
