"""The MOOSE adapter: the three MOOSE CT models that cover the 13 organs, through moosez's Python API,
their labels mapped onto the schema.

Each step follows moosez 3.2.2 (``moosez/moosez.py``, function ``moose``):

- the scan goes in as a NIfTI file path, the one input form for which MOOSE reorients to RAS itself
  (the form its models were trained on, ``image_processing.image_reorient(image, "RAS")``), and
  whose segmentations it writes back on the input grid as
  ``<output_dir>/<model.multilabel_prefix>segmentation_<stem>.nii.gz``; ``moose`` returns those
  paths and the models used (``(segmentations, models)``), in its own order;
- the label ids of each model come from that model's own ``dataset.json`` (``Model.organ_indices``,
  ``moosez/models.py``): with moosez 3.x they are resolved by name onto the schema; with 2.x, whose
  ids changed between releases, through the versioned alias tables
  (``umd_dataset/schema/sources/moose_*.json``), checked against the model's names;
- which model gives which organ: ``clin_ct_organs`` the liver, spleen, kidneys, pancreas, stomach,
  urinary bladder, brain and lungs (the union of its five lobes); ``clin_ct_cardiac`` the heart (the
  union of myocardium, atria and ventricles: MOOSE has no single heart label) and the aorta;
  ``clin_ct_digestive`` the colon and esophagus (its urinary bladder is not used: the organ model's
  is). A voxel two models claim for different organs keeps the organ of the model listed first
  (`MODELS` order), and the adapter counts such voxels in ``last_overlap_voxels``.
- ``accelerator``: MOOSE passes it to ``torch.device`` (``cpu``, ``cuda``, ``cuda:N``, ``mps``).

moosez keeps its models inside its installed package (``system.MODELS_DIRECTORY_PATH``; the
API has no way to name another folder) and downloads missing ones: the adapter checks that the
three are there before anything runs, so nothing downloads. moosez needs a
``if __name__ == "__main__":`` guard in scripts (it starts processes with spawn).
The call boundary is moosez's ``moose`` function: `api` replaces it (tests pass an echo).
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from pathlib import Path

import numpy as np

from umd_dataset.errors import InvalidOptionError, ModelOutputError, ModelUnavailableError, check_choice
from umd_dataset.evaluation.adapters.base import require
from umd_dataset.evaluation.case import Case
from umd_dataset.io.geometry import Geometry
from umd_dataset.io.nifti import load_nifti, write_nifti

__all__ = ["MOOSEModel", "MODELS", "ORGANS_OF_MODEL"]

KEY = "moose"
#: the models, in priority order, and the organs each one gives
ORGANS_OF_MODEL = {
    "clin_ct_organs": ("liver", "spleen", "kidney_left", "kidney_right", "pancreas", "stomach", "urinary_bladder", "brain", "lung"),
    "clin_ct_cardiac": ("heart", "aorta"),
    "clin_ct_digestive": ("colon", "esophagus"),
}
MODELS = tuple(ORGANS_OF_MODEL)


class MOOSEModel:
    """MOOSE's CT models as one automatic model.

    Args:
        weights: must be None: moosez reads its models from its own package folder.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        api, version: moosez's ``moose`` function and the moosez version (tests).
    """

    kind = "automatic"
    name = KEY

    def __init__(self, weights=None, *, device: str = "cpu", api=None, version: str | None = None) -> None:
        check_choice(str(device).partition(":")[0], ("cpu", "cuda", "mps"), "device")
        if weights is not None:
            raise InvalidOptionError(f"MOOSE takes no weights path ({weights}): moosez reads its models from its own package folder.")
        self.weights, self.device, self.api, self._version = weights, device, api, version
        self.last_overlap_voxels = 0

    def version(self) -> str:
        if self._version is None:
            try:
                self._version = importlib.metadata.version("moosez")
            except importlib.metadata.PackageNotFoundError:
                require(KEY, "moosez")  # raises with the install extra
        return self._version

    def _function(self):
        if self.api is None:
            moosez = require(KEY, "moosez")
            from moosez import models, system

            folder = Path(system.MODELS_DIRECTORY_PATH)
            missing = [m for m in MODELS if not (folder / models.MODEL_METADATA[m]["folder_name"]).is_dir()]
            if missing:
                raise ModelUnavailableError(
                    f"MOOSE's models folder {folder} lacks {', '.join(missing)}; moosez would download them (run "
                    f"`moosez` once on a machine with network access, or copy the model folders there)."
                )
            self.api = moosez.moose
        return self.api

    def _labels(self, path: Path, model, case: Case) -> np.ndarray:
        """One model's segmentation, harmonized onto the schema, on the case's grid."""
        from umd_dataset.labels.harmonize import harmonize_label_map

        image = load_nifti(path)
        given, expected = Geometry(image.shape, image.affine), Geometry(case.image.shape, case.affine)
        if not given.matches(expected):
            raise ModelOutputError(f"MOOSE {model.model_identifier} wrote {path.name} on another grid: expected "
                                   f"{expected.describe()}, given {given.describe()}")
        names = {int(k): str(v) for k, v in model.organ_indices.items() if int(k) != 0}
        version = self.version()
        source = f"moose_{model.model_identifier}" if int(version.split(".")[0]) < 3 else None
        where = f"MOOSE {model.model_identifier} on {case.subject}/{case.study}/{case.scan}"
        return harmonize_label_map(np.asanyarray(image.dataobj), image.affine, source, source_version=version if source else None,
                                   names=names, where=where).labels

    def __call__(self, case: Case, prompt=None) -> np.ndarray:
        from umd_dataset.schema.organs import load_schema

        function = self._function()
        schema = load_schema()
        with tempfile.TemporaryDirectory(prefix="umd-moose-") as tmp:
            source = Path(tmp) / "image.nii.gz"
            write_nifti(source, np.asarray(case.image), case.affine)
            outputs, models = function(str(source), list(MODELS), str(tmp), self.device)
            by_model = {m.model_identifier: (Path(p), m) for p, m in zip(outputs, models)}
            missing = [m for m in MODELS if m not in by_model]
            if missing:
                raise ModelOutputError(f"MOOSE returned no segmentation of {', '.join(missing)}")
            result = np.zeros(case.image.shape, dtype=np.uint8)
            overlap = 0
            for model_name in MODELS:
                path, model = by_model[model_name]
                labels = self._labels(path, model, case)
                for organ in ORGANS_OF_MODEL[model_name]:
                    mask = labels == schema.organ(organ).id
                    overlap += int(np.count_nonzero(mask & (result != 0)))
                    result[mask & (result == 0)] = schema.organ(organ).id
        self.last_overlap_voxels = overlap
        return result
