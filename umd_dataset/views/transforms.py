"""Intensity normalisation per modality for the loaders' items: the CT HU window, PET SUV scaling, the MR
percentile z-score, and `ModalityNormalize`, which gives each scan of an item the one of its modality.

Array transforms (`HUWindow`, `SUVScale`, `PercentileZScore`): a tensor, a MONAI `MetaTensor` (its
metadata kept) or a numpy array in, the same kind out, float32 (float64 stays float64); the input is
never changed. Use them on a tensor, in ``tio.Lambda(HUWindow(), types_to_apply=[tio.INTENSITY])`` or
in MONAI's ``Lambdad``.

Item transform (`ModalityNormalize`): an item of `umd_dataset.views.pytorch` (any ``item_format``,
nested or flat paired) in, a copy with each image normalised out; label maps, affines and
metadata untouched. Give it as ``transform=`` of `ScanDataset`/`PairedDataset`, or put it in a MONAI
``Compose`` or a ``tio.Compose``. It finds the scan kind of ``image`` in the item's ``scan`` key, and
that of ``<domain>_image`` (flat paired items) in its domain, and looks up the scan's DICOM modality
in the schema's ``modalities.json`` (CT, PT, MR): a contrast of MRI added there is normalised as MRI.

The values of a release: CT in HU, PET in SUVbw (g/ml; the release stores SUV, converted at ingest),
MRI in the scanner's arbitrary units. The defaults follow the training example's normalisation
(`umd_dataset.evaluation.baselines.unet.NORMALIZATIONS`: CT clipped to [-1000, 1000] HU, PET
clipped to [0, 50] SUV then log1p, MRI z-scored per scan) with CT and PET mapped onto [0, 1] here;
this module does not import it (views never import evaluation).
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from umd_dataset.errors import InvalidOptionError, UnknownNameError
from umd_dataset.schema.studies import modalities

__all__ = ["HUWindow", "SUVScale", "PercentileZScore", "ModalityNormalize"]


def _floating_copy(values):
    """A float32 (float64 stays float64) copy of a tensor, MetaTensor or numpy array."""
    if isinstance(values, torch.Tensor):
        return values.to(torch.float64 if values.dtype == torch.float64 else torch.float32, copy=True)
    if isinstance(values, np.ndarray):
        return values.astype(np.float64 if values.dtype == np.float64 else np.float32, copy=True)
    raise InvalidOptionError(f"Intensity transforms take a torch tensor or a numpy array, got {type(values).__name__}.")


def _clip_(values, low: float, high: float):
    if isinstance(values, torch.Tensor):
        return values.clamp_(low, high)
    return np.clip(values, low, high, out=values)


def _numpy(values) -> np.ndarray:
    """The voxels as a numpy array, without a copy where possible (a CPU tensor)."""
    if isinstance(values, np.ndarray):
        return values
    module = sys.modules.get("monai.data.meta_tensor")
    if module is not None and isinstance(values, module.MetaTensor):
        values = values.as_tensor()
    return values.detach().cpu().numpy()


def _finite(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidOptionError(f"{what}={value!r} must be a finite number.")
    return float(value)


@dataclass(frozen=True)
class HUWindow:
    """CT: clip to the window [`low`, `high`] HU, then map it linearly onto [0, 1].

    ``out = (clip(x, low, high) - low) / (high - low)``. The default window, [-1000, 1000] HU, keeps
    air to bone; an abdominal soft-tissue window is ``HUWindow(-160, 240)``.

    Raises:
        InvalidOptionError: a bound that is not a finite number, or ``low >= high``.
    """

    low: float = -1000.0
    high: float = 1000.0

    def __post_init__(self) -> None:
        low, high = _finite(self.low, "HUWindow low"), _finite(self.high, "HUWindow high")
        if low >= high:
            raise InvalidOptionError(f"HUWindow(low={self.low}, high={self.high}): low must be below high.")

    def __call__(self, values):
        out = _clip_(_floating_copy(values), self.low, self.high)
        out -= self.low
        out /= self.high - self.low
        return out


@dataclass(frozen=True)
class SUVScale:
    """PET (voxels in SUV): clip to [0, `suv_max`], then map onto [0, 1], logarithmically by default.

    ``log=True``: ``out = log1p(clip(x, 0, suv_max)) / log1p(suv_max)`` (the log spreads the low
    uptake of most organs, below SUV 5, over half the range with ``suv_max=50``); ``log=False``:
    ``out = clip(x, 0, suv_max) / suv_max``. Negative SUV (reconstruction noise) becomes 0.

    Raises:
        InvalidOptionError: `suv_max` not a finite positive number.
    """

    suv_max: float = 50.0
    log: bool = True

    def __post_init__(self) -> None:
        if _finite(self.suv_max, "SUVScale suv_max") <= 0:
            raise InvalidOptionError(f"SUVScale(suv_max={self.suv_max}): the largest SUV kept must be above 0.")

    def __call__(self, values):
        out = _clip_(_floating_copy(values), 0.0, self.suv_max)
        if self.log:
            out = out.log1p_() if isinstance(out, torch.Tensor) else np.log1p(out, out=out)
            out /= math.log1p(self.suv_max)
        else:
            out /= self.suv_max
        return out


@dataclass(frozen=True)
class PercentileZScore:
    """MRI (arbitrary units): per scan, clip to its [`lower`, `upper`] percentiles, then z-score.

    With ``p_lo, p_hi`` the `lower` and `upper` percentiles (numpy's linear interpolation) of the
    selected voxels, and ``mean``, ``std`` (population, ddof=0) of those voxels clipped to
    [p_lo, p_hi]: ``out = (clip(x, p_lo, p_hi) - mean) / std``, over all voxels.

    Edge cases:

    ======================================== ==============================================
    ``nonzero=False`` (default)              every voxel is selected
    ``nonzero=True``                         the voxels above 0 (the body of an MRI whose
                                             background is 0); none above 0: every voxel
    ``std == 0`` (a constant scan)           ``out = x - mean`` (zeros): nothing to scale
    ======================================== ==============================================

    Raises:
        InvalidOptionError: percentiles outside [0, 100], or ``lower >= upper``.
    """

    lower: float = 0.5
    upper: float = 99.5
    nonzero: bool = False

    def __post_init__(self) -> None:
        lower, upper = _finite(self.lower, "PercentileZScore lower"), _finite(self.upper, "PercentileZScore upper")
        if not 0.0 <= lower < upper <= 100.0:
            raise InvalidOptionError(
                f"PercentileZScore(lower={self.lower}, upper={self.upper}): percentiles must satisfy 0 <= lower < upper <= 100."
            )

    def statistics(self, values) -> tuple[float, float, float, float]:
        """``(p_lo, p_hi, mean, std)`` of a scan, as `__call__` uses them."""
        array = _numpy(values).ravel()
        if self.nonzero and (array > 0).any():
            array = array[array > 0]
        low, high = (float(p) for p in np.percentile(array, [self.lower, self.upper]))
        clipped = np.clip(array, low, high, dtype=np.float64)
        return low, high, float(clipped.mean()), float(clipped.std())

    def __call__(self, values):
        low, high, mean, std = self.statistics(values)
        out = _clip_(_floating_copy(values), low, high)
        out -= mean
        if std > 0:
            out /= std
        return out


#: Which parameter of `ModalityNormalize` serves which DICOM modality of ``modalities.json``.
_PARAMETER_OF_MODALITY = {"CT": "ct", "PT": "pet", "MR": "mri"}


class ModalityNormalize:
    """The intensity normalisation of each scan's modality, applied to every image of an item.

    ``ModalityNormalize()`` maps CT through `HUWindow` ([-1000, 1000] HU -> [0, 1]), PET through
    `SUVScale` ([0, 50] SUV, log -> [0, 1]) and MRI through `PercentileZScore` (0.5/99.5
    percentiles, z-score). Pass another callable for a modality to change it, or None to leave
    that modality's images as they are.

    The images of an item: ``image`` (the scan kind from the item's ``scan`` key), ``<domain>_image``
    in a flat paired item (the scan kind of the domain), and those of nested paired items; in a
    `tio.Subject`, its images of those names. The item is not changed: a copy is returned, whose
    MetaTensors keep their metadata and whose torchio images keep their affine.

    Args:
        ct, pet, mri: array transforms for CT, PET and MRI images (or None).

    Raises:
        InvalidOptionError: an item without an image, or without the ``scan`` key of its ``image``;
            a normaliser that is not callable.
        UnknownNameError: a scan kind that ``modalities.json`` does not know, or a modality no
            parameter here serves.

    Example:
        >>> ScanDataset("umd-mini", transform=ModalityNormalize(ct=HUWindow(-160, 240)))  # doctest: +SKIP
    """

    def __init__(
        self, ct: Callable | None = HUWindow(), pet: Callable | None = SUVScale(), mri: Callable | None = PercentileZScore()
    ) -> None:
        for name, value in (("ct", ct), ("pet", pet), ("mri", mri)):
            if value is not None and not callable(value):
                raise InvalidOptionError(f"ModalityNormalize({name}={value!r}): pass a callable on an array (e.g. HUWindow()), or None.")
        self.normalisers = {"ct": ct, "pet": pet, "mri": mri}

    def __repr__(self) -> str:
        return "ModalityNormalize(" + ", ".join(f"{k}={v!r}" for k, v in self.normalisers.items()) + ")"

    def normaliser(self, scan: str) -> Callable | None:
        """The normaliser of a scan kind (``ct``, ``pet``, ``mri``, or any kind of ``modalities.json``)."""
        modality = modalities().scan(scan).modality
        if modality not in _PARAMETER_OF_MODALITY:
            raise UnknownNameError(
                f"ModalityNormalize: no normalisation for scan {scan!r} of modality {modality!r}; it serves "
                f"{', '.join(sorted(_PARAMETER_OF_MODALITY))}."
            )
        return self.normalisers[_PARAMETER_OF_MODALITY[modality]]

    def __call__(self, item):
        if not isinstance(item, Mapping):
            raise InvalidOptionError(
                f"ModalityNormalize takes an item (a dict or a tio.Subject), got {type(item).__name__}: for one array, call "
                "HUWindow(), SUVScale() or PercentileZScore() on it."
            )
        out, found = self._normalised(item)
        if not found:
            raise InvalidOptionError(
                f"ModalityNormalize found no image in an item with keys {sorted(map(str, item))}: it normalises 'image' (with a "
                "'scan' key) and '<domain>_image' (ct_image, petct_pet_image, mri_image, petmri_pet_image)."
            )
        return out

    def _normalised(self, item: Mapping) -> tuple[Mapping, int]:
        changes: dict = {}
        found = 0
        domains = modalities().domain_keys
        for key, value in item.items():
            if key == "image":
                scan = item.get("scan")
                if not isinstance(scan, str):
                    raise InvalidOptionError(
                        "ModalityNormalize: the item has an 'image' but no 'scan' key (ct, pet, mri) to choose its normalisation: "
                        "normalise items of the umd_dataset views, or call the array transform yourself."
                    )
            elif isinstance(key, str) and key.endswith("_image") and key[: -len("_image")] in domains:
                scan = modalities().domain(key[: -len("_image")]).scan
            elif type(value) is dict and "image" in value:  # a nested paired item
                changes[key], count = self._normalised(value)
                found += count
                continue
            else:
                continue
            found += 1
            normalise = self.normaliser(scan)
            if normalise is not None:
                changes[key] = _apply(normalise, value)
        return _with(item, changes), found


def _apply(normalise: Callable, value):
    tio = sys.modules.get("torchio")
    if tio is not None and isinstance(value, tio.Image):
        image = copy.copy(value)
        image.set_data(normalise(value.data))
        return image
    return normalise(value)


def _with(item: Mapping, changes: dict) -> Mapping:
    """A copy of `item` (a dict, or a tio.Subject) with `changes`."""
    tio = sys.modules.get("torchio")
    if tio is not None and isinstance(item, tio.Subject):
        subject = copy.copy(item)
        subject.applied_transforms = list(item.applied_transforms)
        for key, value in changes.items():
            subject[key] = value
        subject.update_attributes()
        return subject
    return {**item, **changes}
