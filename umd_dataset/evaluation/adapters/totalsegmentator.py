"""The TotalSegmentator adapter: tasks ``total`` and ``total_mr`` through TotalSegmentator's Python API,
their labels mapped onto the schema through the versioned alias tables.

Each step follows TotalSegmentator 2.18.0:

- the scan goes in as a nibabel image with its own affine (``totalsegmentator/python_api.py``,
  ``totalsegmentator(input=Nifti1Image, ...)``); TotalSegmentator reorients it to the closest
  canonical orientation, resamples it to the task's spacing and undoes both, so it returns a
  multi-label uint8 image on the input grid (checked here: another grid is a `ModelOutputError`);
- label names come from the image's header extension (``nifti_ext_header.py``) and are checked
  against the alias table of the installed TotalSegmentator version
  (``umd_dataset/schema/sources/totalsegmentator_*.json``, read from ``map_to_binary.py`` of every
  release); a version the tables do not cover raises `SourceVersionError`, never a guess;
- usage statistics: TotalSegmentator posts one to its server after every prediction unless its
  ``config.json`` (in ``TOTALSEG_HOME_DIR``, ``totalsegmentator/config.py``) says
  ``"send_usage_stats": false``; no argument or variable turns it off, so the adapter writes that
  key (atomically, keeping the others) before the first call;
- ``device``: TotalSegmentator takes ``gpu``, ``gpu:N``, ``cpu`` or ``mps`` (``cuda`` raises in
  its ``validate_device_type_api``): ``cuda[:N]`` is translated.

Which task for which scan (``tasks``): ``total`` for CT, ``total_mr`` for MRI, and ``total`` for
PET, for which TotalSegmentator has no task (change it with ``tasks={"pet": "total_mr"}``).
The call boundary is TotalSegmentator's function: `api` replaces it (tests pass an echo).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

import numpy as np

from umd_dataset.errors import ModelOutputError, check_choice
from umd_dataset.evaluation.adapters.base import find_weights, require
from umd_dataset.evaluation.case import Case
from umd_dataset.io.files import write_json
from umd_dataset.io.geometry import Geometry
from umd_dataset.io.nifti import nifti_label_names
from umd_dataset.schema.studies import modalities

__all__ = ["TotalSegmentatorModel", "TASKS", "usage_statistics_off"]

KEY = "totalsegmentator"
TASKS = ("total", "total_mr")
DEFAULT_TASKS = {"ct": "total", "mri": "total_mr", "pet": "total"}


def usage_statistics_off(home: str | os.PathLike) -> Path:
    """Set ``"send_usage_stats": false`` in TotalSegmentator's ``config.json`` under `home` (written
    atomically; the file's other keys are kept, and those TotalSegmentator needs are added)."""
    path = Path(home) / "config.json"
    config = {}
    if path.is_file():
        try:
            config = json.loads(path.read_text("utf-8"))
        except ValueError:
            config = {}  # TotalSegmentator itself rewrites a config it cannot read
    if config.get("send_usage_stats") is False and "prediction_counter" in config:
        return path
    config.setdefault("totalseg_id", "umd_dataset")
    config.setdefault("prediction_counter", 0)
    config["send_usage_stats"] = False
    write_json(path, config)
    return path


def _device(device: str) -> str:
    """TotalSegmentator's name of a torch device: ``cuda:1`` -> ``gpu:1``."""
    kind, _, index = str(device).partition(":")
    kind = check_choice({"cuda": "gpu"}.get(kind, kind), ("cpu", "gpu", "mps"), "device")
    return f"{kind}:{index}" if index else kind


class TotalSegmentatorModel:
    """TotalSegmentator as an automatic model.

    Args:
        weights: TotalSegmentator's home folder (``config.json``, ``nnunet/results``); default
            ``$TOTALSEG_HOME_DIR``. It is set as ``TOTALSEG_HOME_DIR`` for TotalSegmentator.
        tasks: scan kind -> task (``total`` or ``total_mr``), over the defaults above.
        fast: TotalSegmentator's 3 mm models.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        roi_subset: predict only the 13 organs (TotalSegmentator first finds them with its 6 mm
            model): faster, but not the full task the published figures come from.
        api, version: TotalSegmentator's ``totalsegmentator`` function and its version (tests).
    """

    kind = "automatic"
    name = KEY

    def __init__(self, weights=None, *, tasks: dict | None = None, fast: bool = False, device: str = "cpu",
                 roi_subset: bool = False, api=None, version: str | None = None) -> None:
        self.weights, self.fast, self.roi_subset, self.api, self._version = weights, fast, roi_subset, api, version
        kinds = set(modalities().scans)
        self.tasks = dict(DEFAULT_TASKS)
        for scan, task in (tasks or {}).items():
            check_choice(scan, kinds, "scan kind")
            self.tasks[scan] = check_choice(task, TASKS, "TotalSegmentator task")
        self.device, self._ts_device = device, _device(device)
        self._home: Path | None = None

    def version(self) -> str:
        if self._version is None:
            try:
                self._version = importlib.metadata.version("TotalSegmentator")
            except importlib.metadata.PackageNotFoundError:
                require(KEY, "totalsegmentator")  # raises with the install extra
        return self._version

    def _function(self):
        if self._home is None:
            self._home = find_weights(KEY, self.weights, folder=True)
            os.environ["TOTALSEG_HOME_DIR"] = str(self._home)  # TotalSegmentator reads it on every call
            usage_statistics_off(self._home)
        if self.api is None:
            self.api = require(KEY, "totalsegmentator.python_api").totalsegmentator
        return self.api

    def __call__(self, case: Case, prompt=None) -> np.ndarray:
        import nibabel as nib

        from umd_dataset.labels.harmonize import harmonize_label_map
        from umd_dataset.schema.sources import load_source

        task = self.tasks[case.scan]
        source = load_source(f"totalsegmentator_{task}", version=self.version())
        function = self._function()
        image = nib.Nifti1Image(np.asarray(case.image), np.asarray(case.affine, dtype=np.float64))
        options = {"roi_subset": sorted({n for names in source.organs.values() for n in names})} if self.roi_subset else {}
        output = function(input=image, task=task, fast=self.fast, device=self._ts_device, quiet=True, ml=True, **options)
        if isinstance(output, tuple):  # (image, statistics) when statistics were asked for
            output = output[0]
        if not hasattr(output, "affine"):
            raise ModelOutputError(f"TotalSegmentator returned a {type(output).__name__}, not a NIfTI image")
        given, expected = Geometry(output.shape, output.affine), Geometry(case.image.shape, case.affine)
        if not given.matches(expected):
            raise ModelOutputError(f"TotalSegmentator returned another grid: expected {expected.describe()}, given {given.describe()}")
        where = f"TotalSegmentator {task} on {case.subject}/{case.study}/{case.scan}"
        harmonized = harmonize_label_map(np.asanyarray(output.dataobj), case.affine, source, names=nifti_label_names(output), where=where)
        return harmonized.labels
