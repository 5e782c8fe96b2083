"""What every model adapter shares: the registry of adapters (``models.json``: prompt kinds, install
extra, weights, licence, the paper's prompt), the scores the UMD paper reported (``reported.json``),
finding a model's package and weights, and the grid a model works on.

An adapter turns a `Case` (the scan as the release holds it) into the input the model's own code
expects, calls the model at one replaceable boundary (its network, session or function, an
argument of the adapter), and maps what the model returns back onto the scan's grid. Every step
that moves voxels is tracked as a `ModelGrid` (shape + world affine), so that points go into the
model's space and masks come back through world coordinates (`umd_dataset.io.geometry`), whatever
the scan's orientation, spacing or obliquity.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from umd_dataset.errors import InputNotFoundError, ModelError, ModelUnavailableError, PromptError, UnknownNameError, did_you_mean
from umd_dataset.evaluation.case import Case
from umd_dataset.io.geometry import resample_onto, to_voxel, to_world

__all__ = [
    "AdapterSpec", "adapter_specs", "adapter_spec", "reported_scores", "reported_source",
    "require", "find_weights", "availability", "make_adapter", "ModelGrid", "ScanMemo", "check_prompt",
]


@dataclass(frozen=True)
class AdapterSpec:
    """One adapter of the registry.

    Attributes:
        key: its name on the command line (``--model KEY[:WEIGHTS]``).
        title: display name.
        module, factory: where the adapter class lives.
        kind: ``automatic`` or ``promptable``.
        prompts: the prompt kinds it takes.
        extra: ``pip install "umd-dataset[EXTRA]"`` installs its packages.
        packages: the import names it needs.
        weights_env: the environment variable naming the weights, when no path is given.
        weights: what the weights are and where they come from.
        licence: the licences of the code and the weights.
        paper: the UMD paper's protocol for it (``row`` of the reported table, ``prompt``, ``point``
            rule, ``why``), or None if the paper did not evaluate it.
    """

    key: str
    title: str
    module: str
    factory: str
    kind: str
    prompts: tuple[str, ...]
    extra: str
    packages: tuple[str, ...]
    weights_env: str
    weights: str
    licence: str
    paper: dict | None

    @property
    def install(self) -> str:
        return f'pip install "umd-dataset[{self.extra}]"'


def _data(name: str) -> dict:
    return json.loads(resources.files("umd_dataset.evaluation.adapters").joinpath(name).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def adapter_specs() -> dict[str, AdapterSpec]:
    """Every adapter of the registry, by key."""
    specs = {}
    for entry in _data("models.json")["adapters"]:
        entry = {**entry, "prompts": tuple(entry["prompts"]), "packages": tuple(entry["packages"])}
        specs[entry["key"]] = AdapterSpec(**entry)
    return specs


def adapter_spec(key: str) -> AdapterSpec:
    """The registry entry of `key` (unknown keys raise `UnknownNameError` with the closest)."""
    specs = adapter_specs()
    if key not in specs:
        raise UnknownNameError(did_you_mean(key, specs, "model adapter"))
    return specs[key]


@lru_cache(maxsize=1)
def _reported() -> dict:
    return _data("reported.json")


def reported_source() -> str:
    """Where the reported scores come from (shown next to them wherever they appear)."""
    data = _reported()
    return f"{data['metric']}, as reported by {data['reported_by']}; source: {data['source']}"


def reported_scores(row: str) -> dict[str, float]:
    """The paper's reported mean Dice of one row (``sam-med3d-turbo``, ``vista3d``, ...) per domain key."""
    rows = _reported()["rows"]
    if row not in rows:
        raise UnknownNameError(did_you_mean(row, rows, "row of the paper's reported table"))
    return {k: float(v) for k, v in rows[row].items() if k not in ("model", "prompt")}


def require(key: str, module: str):
    """Import `module` for the adapter `key`, or raise `ModelUnavailableError` naming the install extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        spec = adapter_spec(key)
        raise ModelUnavailableError(
            f"The {spec.title} adapter needs the package {module.split('.')[0]!r}, which is not installed here ({error}). "
            f"Install it with: {spec.install}"
        ) from error


def find_weights(key: str, weights: str | os.PathLike | None, *, folder: bool = False) -> Path:
    """The model's weights: the path given, else the one its environment variable names.

    Raises:
        ModelUnavailableError: neither is set, or the path does not exist (the message says what the
            weights are and where they come from).
    """
    spec = adapter_spec(key)
    given = weights if weights is not None else os.environ.get(spec.weights_env)
    what = "folder" if folder else "file"
    if not given:
        raise ModelUnavailableError(
            f"No weights for {spec.title}: pass weights=PATH (on the command line --model {key}:PATH) or set {spec.weights_env}. "
            f"They are {spec.weights}."
        )
    path = Path(given).expanduser()
    if not path.exists() or (folder and not path.is_dir()) or (not folder and not path.is_file()):
        source = "the argument weights" if weights is not None else f"${spec.weights_env}"
        raise ModelUnavailableError(f"The weights {what} {path} of {spec.title} (from {source}) does not exist. They are {spec.weights}.")
    return path


def availability(key: str) -> dict:
    """Whether an adapter can run here now: its packages importable (not imported) and its weights found."""
    spec = adapter_spec(key)
    missing = [p for p in spec.packages if importlib.util.find_spec(p) is None]
    weights = os.environ.get(spec.weights_env)
    found = bool(weights) and Path(weights).expanduser().exists()
    return {"installed": not missing, "missing": missing, "weights": weights if found else None, "ready": not missing and found}


def make_adapter(key: str, weights: str | os.PathLike | None = None, **options):
    """The adapter `key` of the registry, built with `weights` and its options (``device=...``)."""
    spec = adapter_spec(key)
    factory = getattr(importlib.import_module(spec.module), spec.factory)
    return factory(weights, **options)


def check_prompt(key: str, prompt) -> None:
    """Raise `PromptError` if the adapter `key` cannot take `prompt`'s kind."""
    spec = adapter_spec(key)
    if prompt is None or prompt.kind not in spec.prompts:
        kind = None if prompt is None else prompt.kind
        raise PromptError(f"{spec.title} takes {', '.join(spec.prompts)} prompts, not {kind!r}: choose one with --prompt")


@dataclass(frozen=True)
class ModelGrid:
    """The grid of an array a model works on: its shape and voxel-to-world (RAS mm) affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @classmethod
    def of_case(cls, case: Case) -> ModelGrid:
        return cls(tuple(int(s) for s in case.image.shape[:3]), np.asarray(case.affine, dtype=np.float64))

    def point_from(self, case: Case, voxel) -> np.ndarray:
        """A voxel of the case (integer index) in this grid's fractional voxel coordinates."""
        return to_voxel(self.affine, to_world(case.affine, np.asarray(voxel, dtype=np.float64)))

    def onto_case(self, values: np.ndarray, case: Case, *, order: int = 0) -> np.ndarray:
        """`values` on this grid sampled onto the case's grid (nearest neighbour, or linear with order=1)."""
        if tuple(values.shape[:3]) != self.shape:
            raise ModelError(f"the model returned an array of shape {values.shape} for an input grid of shape {self.shape}")
        return resample_onto(values, self.affine, case.image.shape, case.affine, order=order)


class ScanMemo:
    """One scan's preprocessing, kept while the runner asks for its organs one by one."""

    def __init__(self) -> None:
        self._key, self._value = None, None

    def get(self, case: Case, make):
        key = (case.subject, case.study, case.scan, case.image.shape)
        if self._key != key:
            self._key, self._value = None, None  # free the previous scan before making the next
            self._value = make(case)
            self._key = key
        return self._value


def existing(path: str | os.PathLike, what: str) -> Path:
    """`path`, which must exist (else `InputNotFoundError` naming `what`)."""
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{what} {path} does not exist")
    return path
