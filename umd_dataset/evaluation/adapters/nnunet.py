"""The nnU-Net v2 adapter: a trained model folder run by nnU-Net's own predictor, its labels mapped
onto the schema through the folder's ``dataset.json``.

Each step follows nnunetv2 2.8.1:

- the predictor: ``nnunetv2/inference/predict_from_raw_data.py``, ``nnUNetPredictor(...)``,
  ``initialize_from_trained_model_folder(folder, use_folds, checkpoint_name)``, then
  ``predict_single_npy_array(image[c, ...], {"spacing": [...]})``, which preprocesses (crop to
  non-zero, the plans' normalisation, resampling to the plans' spacing), predicts by sliding
  window and returns the segmentation on the input's grid, in its axis order;
- the array given is the one the model's own reader would give for the scan's NIfTI file
  (``plans.json`` ``image_reader_writer``, from ``nnunetv2/imageio``): ``SimpleITKIO`` (the default
  for ``.nii.gz``) and ``NibabelIO`` give the voxels in (z, y, x) order with spacing (sz, sy, sx);
  ``NibabelIOWithReorient`` first reorients to RAS. The docstring of
  ``predict_single_npy_array`` says the same ("transpose your axes AND your spacing");
- channels: the model's ``dataset.json`` must name one input channel (UMD scans are single images);
- labels: ``dataset.json`` ``labels`` (name -> id), resolved by name onto the schema
  (`umd_dataset.schema.names.table_from_dataset_json`); an id the table does not know raises.

The call boundary is the predictor: `predictor` replaces it (tests pass an echo, and a real
predictor over a randomly initialised ``PlainConvUNet`` folder).
"""

from __future__ import annotations

import json

import numpy as np

from umd_dataset.errors import CheckpointError, ModelError, ModelOutputError
from umd_dataset.evaluation.adapters.base import find_weights, require
from umd_dataset.evaluation.case import Case
from umd_dataset.io.geometry import reorient, resample_onto, spacing_from_affine

__all__ = ["NNUNetModel", "READERS", "model_input"]

KEY = "nnunet"
#: nnU-Net's image readers whose arrays this adapter reproduces, and whether each reorients to RAS
READERS = {"SimpleITKIO": False, "NibabelIO": False, "NibabelIOWithReorient": True}


def model_input(case: Case, reader: str) -> tuple[np.ndarray, list[float], np.ndarray]:
    """(image (1, z, y, x) float32, spacing [sz, sy, sx], affine of the (x, y, z) grid) as nnU-Net's
    `reader` would read the scan's NIfTI file."""
    if reader not in READERS:
        raise ModelError(f"the model was planned with the image reader {reader!r}; this adapter reproduces {', '.join(READERS)}")
    image, affine = np.asarray(case.image), np.asarray(case.affine, dtype=np.float64)
    if READERS[reader]:
        image, affine = reorient(image, affine, "RAS")
    spacing = [float(s) for s in spacing_from_affine(affine)[::-1]]
    return np.ascontiguousarray(image.transpose(2, 1, 0)[None], dtype=np.float32), spacing, affine


class NNUNetModel:
    """An nnU-Net v2 trained model folder as an automatic model.

    Args:
        weights: the trained model folder (``dataset.json``, ``plans.json``, ``fold_N/``);
            default ``$UMD_NNUNET_MODEL``.
        folds: the folds to ensemble (nnU-Net's ``use_folds``; None: every ``fold_*``).
        checkpoint: the checkpoint file name in each fold.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        tile_step_size, use_mirroring: nnU-Net's sliding-window settings (its defaults).
        predictor: an object with nnU-Net's ``predict_single_npy_array``, used instead of building
            one (tests).
    """

    kind = "automatic"
    name = KEY

    def __init__(self, weights=None, *, folds=(0,), checkpoint: str = "checkpoint_final.pth", device: str = "cpu",
                 tile_step_size: float = 0.5, use_mirroring: bool = True, predictor=None) -> None:
        self.folder = find_weights(KEY, weights, folder=True)
        self.folds, self.checkpoint, self.device = (None if folds is None else tuple(folds)), checkpoint, device
        self.tile_step_size, self.use_mirroring, self._predictor = tile_step_size, use_mirroring, predictor
        for name in ("dataset.json", "plans.json"):
            if not (self.folder / name).is_file():
                raise CheckpointError(f"{self.folder} is not an nnU-Net trained model folder: it has no {name}")
        dataset = json.loads((self.folder / "dataset.json").read_text("utf-8"))
        channels = dataset.get("channel_names") or dataset.get("modality") or {}
        if len(channels) != 1:
            raise CheckpointError(f"{self.folder}: the model takes {len(channels)} input channels ({channels}); UMD scans are one image")
        plans = json.loads((self.folder / "plans.json").read_text("utf-8"))
        self.reader = dataset.get("overwrite_image_reader_writer") or plans.get("image_reader_writer", "SimpleITKIO")
        from umd_dataset.schema.names import table_from_dataset_json

        self.table = table_from_dataset_json(self.folder / "dataset.json")
        self.name = f"nnunet:{self.folder.name}"

    def __getstate__(self):  # a built predictor holds the network: a process worker builds its own
        state = dict(self.__dict__)
        state["_predictor"] = None
        return state

    def predictor(self):
        if self._predictor is None:
            import torch

            module = require(KEY, "nnunetv2.inference.predict_from_raw_data")
            device = torch.device(self.device)
            predictor = module.nnUNetPredictor(
                tile_step_size=self.tile_step_size, use_gaussian=True, use_mirroring=self.use_mirroring,
                perform_everything_on_device=device.type == "cuda", device=device, verbose=False, allow_tqdm=False,
            )
            predictor.initialize_from_trained_model_folder(str(self.folder), use_folds=self.folds, checkpoint_name=self.checkpoint)
            self._predictor = predictor
        return self._predictor

    def __call__(self, case: Case, prompt=None) -> np.ndarray:
        from umd_dataset.labels.harmonize import harmonize_label_map

        image, spacing, affine = model_input(case, self.reader)
        segmentation = self.predictor().predict_single_npy_array(image, {"spacing": spacing}, None, None, False)
        segmentation = np.asarray(segmentation)
        if segmentation.shape != image.shape[1:]:
            raise ModelOutputError(f"nnU-Net returned a segmentation of shape {segmentation.shape} for an input of shape {image.shape[1:]}")
        labels = segmentation.transpose(2, 1, 0)
        if READERS[self.reader]:  # back from RAS onto the scan's own axes (a permutation: exact)
            labels = resample_onto(labels, affine, case.image.shape, case.affine, order=0, support=False)
        where = f"nnU-Net {self.folder.name} on {case.subject}/{case.study}/{case.scan}"
        return harmonize_label_map(labels, case.affine, self.table, where=where).labels
