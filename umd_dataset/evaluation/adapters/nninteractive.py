"""The nnInteractive adapter: points and boxes through nnInteractive's own inference session.

Each step follows nnInteractive 2.6.0 (``nnInteractive/inference/inference_session.py``, class
``nnInteractiveInferenceSession``, and the README's "Getting started"):

- the image goes in as nnInteractive's own tools read it, ``sitk.GetArrayFromImage(image)[None]``:
  the scan's voxels in (z, y, x) order, raw intensities (HU, SUV, scanner units). The session
  z-scores inside the non-zero box itself and neither resamples nor reorients (``set_image``
  ignores spacing), so the adapter does not either;
- ``set_image`` deletes the target buffer: ``set_target_buffer`` (uint8, the image's spatial
  shape) follows every ``set_image``;
- points are voxel indices in the axis order of the array given (z, y, x here), positive with
  ``include_interaction=True``; boxes are half-open ``[[lo, hi], ...]`` in the same order. The
  official v1 weights take 2D boxes only (a box one voxel thick along an axis): with
  ``box="2d"`` (the default) a 3D box prompt becomes its middle axial slice;
- the result is the target buffer, written in place; ``reset_interactions`` clears it before
  each organ. Corrective clicks are added to the organ's running session (as a user would click),
  not replayed from scratch.

The network sits behind the session: `session` replaces it (tests pass a prompt echo).
"""

from __future__ import annotations

import numpy as np

from umd_dataset.errors import PromptError, check_choice
from umd_dataset.evaluation.adapters.base import ScanMemo, check_prompt, find_weights, require
from umd_dataset.evaluation.case import Case

__all__ = ["NNInteractiveModel"]

KEY = "nninteractive"
#: the scan's (i, j, k) array axes in the order of the array nnInteractive is given: (k, j, i)
AXES = (2, 1, 0)


class NNInteractiveModel:
    """nnInteractive as a promptable model.

    Args:
        weights: the trained model folder (default: ``$UMD_NNINTERACTIVE_WEIGHTS``).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        fold, checkpoint: which fold and checkpoint file of the folder.
        box: ``2d`` (a 3D box becomes its middle axial slice: the official v1 weights take 2D
            boxes only) or ``3d`` (passed as is, for checkpoints that take 3D boxes).
        do_autozoom: nnInteractive's AutoZoom.
        session: an object with the session's methods, used instead of building one (tests).
    """

    kind = "promptable"
    name = KEY

    def __init__(self, weights=None, *, device: str = "cpu", fold: int | None = None, checkpoint: str = "checkpoint_final.pth",
                 box: str = "2d", do_autozoom: bool = True, torch_threads: int | None = None, session=None) -> None:
        self.weights, self.device, self.fold, self.checkpoint = weights, device, fold, checkpoint
        self.box, self.do_autozoom, self.torch_threads = check_choice(box, ("2d", "3d"), "box mode"), do_autozoom, torch_threads
        self._session, self._memo = session, ScanMemo()
        self._running: tuple | None = None  # (scan, organ, points, labels) of the interactions in the session now

    def __getstate__(self):  # a built session holds CUDA state: a process worker builds its own
        state = dict(self.__dict__)
        state["_session"], state["_memo"], state["_running"] = None, ScanMemo(), None
        return state

    def session(self):
        if self._session is None:
            import os

            import torch

            module = require(KEY, "nnInteractive.inference.inference_session")
            folder = find_weights(KEY, self.weights, folder=True)
            session = module.nnInteractiveInferenceSession(
                device=torch.device(self.device), use_torch_compile=False, verbose=False,
                torch_n_threads=self.torch_threads or os.cpu_count() or 1, do_autozoom=self.do_autozoom,
            )
            session.initialize_from_trained_model_folder(str(folder), use_fold=self.fold, checkpoint_name=self.checkpoint)
            self._session = session
        return self._session

    def _set_image(self, case: Case):
        session = self.session()
        image = np.asarray(case.image).transpose(AXES)[None]  # nnInteractive copies it to float32 and never writes into it
        session.set_image(image)
        buffer = np.zeros(image.shape[1:], dtype=np.uint8)
        session.set_target_buffer(buffer)  # after set_image, which deletes the previous buffer
        self._running = None
        return buffer

    def _box(self, case: Case, prompt) -> list[list[int]]:
        low, high = np.asarray(prompt.box[0])[list(AXES)], np.asarray(prompt.box[1])[list(AXES)]
        bounds = [[int(lo), int(hi) + 1] for lo, hi in zip(low, high)]  # inclusive corners -> half-open
        if self.box == "2d":
            axial = int(np.argmax(np.abs(np.asarray(case.affine)[2, :3])[list(AXES)]))  # the axis closest to head-feet
            middle = (bounds[axial][0] + bounds[axial][1] - 1) // 2
            bounds[axial] = [middle, middle + 1]
        return bounds

    def __call__(self, case: Case, prompt) -> np.ndarray:
        check_prompt(KEY, prompt)
        buffer = self._memo.get(case, self._set_image)
        session = self.session()
        scan = (case.subject, case.study, case.scan)
        points = [tuple(int(v) for v in np.asarray(p)[list(AXES)]) for p in prompt.points]
        labels = list(prompt.point_labels)
        running = self._running
        if prompt.kind == "box":
            if prompt.box is None:
                raise PromptError("a box prompt without a box")
            session.reset_interactions()
            session.add_bbox_interaction(self._box(case, prompt), include_interaction=True, run_prediction=not points)
            new = list(zip(points, labels))  # corrective clicks after the box
        elif running and running[:2] == (scan, prompt.organ) and running[2] == points[: len(running[2])] and len(points) > len(running[2]):
            new = list(zip(points[len(running[2]) :], labels[len(running[2]) :]))  # corrective clicks on the running session
        else:
            if not points:
                raise PromptError(f"a {prompt.kind} prompt without points")
            session.reset_interactions()
            new = list(zip(points, labels))
        for position, (point, label) in enumerate(new):
            session.add_point_interaction(point, include_interaction=bool(label), run_prediction=position == len(new) - 1)
        self._running = (scan, prompt.organ, points, labels)
        return np.asarray(buffer).transpose(np.argsort(AXES)).astype(bool)
