"""The SAM-Med3D adapter: SAM-Med3D and SAM-Med3D-turbo (one architecture, two weight files) through medim, with
SAM-Med3D's own preprocessing in torchio.

Each step follows uni-medical/SAM-Med3D at commit f3de1fa (``utils/infer_utils.py``: ``data_preprocess``,
``get_roi_from_subject``, ``sam_model_infer``, ``data_postprocess``; ``medim_val_single.py`` builds the model with
medim) and medim 0.1.2 (``medim/models/sam_med3d.py``):

- the scan becomes a torchio subject, ``tio.ScalarImage`` of the case's voxels in their own dtype with the case's
  RAS affine, as ``get_subject_and_meta_info`` reads a NIfTI with torchio (SimpleITK keeps an int16 CT int16, so the
  linear resample below rounds to int16, as in the published script);
- once per scan: ``tio.Resample(target=(1.5, 1.5, 1.5))`` (image linear, label map nearest), then
  ``tio.ToCanonical()`` (RAS+) (``data_preprocess`` steps 1 and 2);
- ``tio.CropOrPad(target_shape=(128, 128, 128), mask_name="label")`` (step 3): a 128³ crop (192 mm) centred on the
  bounding box of the label, by torchio's rule (``transforms/preprocessing/spatial/crop_or_pad.py``,
  ``_compute_mask_center_crop_or_pad``: centre ``(min + max + 1) / 2``, minus half a voxel when fractional); what lies
  outside the scan is padded with 0 in raw intensities. Which label centres the crop is the option `crop`:

  * ``crop="prompt"`` (the default): the voxel of the resampled canonical grid nearest to the prompt's first positive
    point, so that point lies at crop index 64 (within half a voxel) along every axis. It uses nothing but the prompt.
  * ``crop="reference"``: the organ's reference mask, as the published script does (it crops around the ground
    truth). **Warning: this crop leaks the answer** (where the organ is, and its extent through the crop's padding),
    which a user never has; use it only to reproduce the published numbers. Only in this mode does the adapter declare
    ``needs_reference = True``, so that `evaluate` hands it ``case.reference``, and its name ends in
    ``:reference-crop``.

  ``get_roi_from_subject`` also calls torchio's private ``CropOrPad._compute_center_crop_or_pad``, whose signature
  changed in torchio 1.2 (it raises ``TypeError`` there); its results are only stored in ``meta_info`` and never used,
  so the adapter does not call it;
- ``tio.ZNormalization(masking_method=lambda x: x > 0)`` of the crop: mean and standard deviation over the voxels
  whose raw value (HU, SUV, scanner units) is above 0, the padding excluded;
- the points: case voxel -> world -> the crop's fractional voxel coordinates, in the axis order of the tensor
  ``[1, 1, 128, 128, 128]`` (the order of ``torch.argwhere`` in ``random_sample_next_click``), as
  ``points=[coords (1, N, 3) float, labels (1, N)]`` with labels 1 positive / 0 negative (``PromptEncoder3D._embed_points``
  adds half a voxel and appends the padding point itself);
- ``sam_model_infer``: ``image_encoder(crop)`` (an embedding ``[1, 384, 8, 8, 8]``), ``prompt_encoder(points=...,
  boxes=None, masks=...)`` with ``masks`` the previous round's low-resolution logits, zeros ``[1, 1, 32, 32, 32]`` in
  the first round, then ``mask_decoder(image_embeddings, image_pe=prompt_encoder.get_dense_pe(), sparse, dense,
  multimask_output=False)`` -> low-resolution logits ``[1, 1, 32, 32, 32]`` -> ``F.interpolate(size=128³,
  mode="trilinear", align_corners=False)`` -> ``sigmoid > 0.5``. No AMP: ``sam_model_infer`` uses none;
- ``data_postprocess``: the crop's mask goes back onto the case's grid by nearest neighbour through world coordinates
  (from the crop's affine, torchio's ``roi_subject_affine``), which undoes the crop, the reorientation and the
  resampling in one step; everything outside the crop is background.

Corrective clicks: like a round of ``sam_model_infer``, each call of the same organ with the points of the previous
call plus new ones passes all points so far, with the previous round's low-resolution mask as ``masks``; the crop stays
where it is, and its image embedding is kept per (scan, crop), so clicks do not re-encode.
A point outside the crop (a corrective click, or a further point of a ``points`` prompt, more than 96 mm away) cannot
reach the model; SAM-Med3D's own clicks are drawn inside the crop. With ``outside_crop="ignore"`` (the default) such
points are left out with a warning naming them; with ``"error"`` they raise `PromptError`.

Weights: ``medim.create_model("SAM-Med3D", pretrained=False)`` builds the architecture; the adapter loads the file
itself (`read_checkpoint`: ``torch.load(weights_only=True)`` allowing the argparse and numpy values that SAM-Med3D's
``train.py`` saves beside the weights, then ``["model_state_dict"]`` with ``strict=True``). medim's own loader
(``medim/models/_pretrain.py``, ``load_pretrained_weights``) loads with ``strict=False``, so a partial or foreign file
would load silently; here a mismatch is a `CheckpointError` naming the missing and unexpected keys. SAM-Med3D and
SAM-Med3D-turbo differ only in the file: the adapter's `name` reports it (``sam_med3d_turbo.pth`` ->
``sam-med3d:sam_med3d_turbo``; the registry key before the colon, as ``nnunet:<folder>``).

The network sits behind `model`: any object with SAM-Med3D's ``image_encoder``, ``prompt_encoder`` and
``mask_decoder`` (tests pass a prompt echo).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from umd_dataset.errors import CheckpointError, InvalidOptionError, ModelError, PromptError, check_choice
from umd_dataset.evaluation.adapters.base import ModelGrid, ScanMemo, adapter_spec, check_prompt, find_weights, require
from umd_dataset.evaluation.case import Case
from umd_dataset.io.geometry import to_voxel, to_world

__all__ = ["CROPS", "SAMMed3DInput", "SAMMed3DModel", "load_weights", "read_checkpoint"]

KEY = "sam-med3d"
#: the side of the crop SAM-Med3D takes (``validate_paired_img_gt(crop_size=128)``; the encoder's ``img_size``)
CROP_SIZE = 128
#: the spacing everything is resampled to (``validate_paired_img_gt(target_spacing=(1.5, 1.5, 1.5))``)
SPACING_MM = (1.5, 1.5, 1.5)
#: what the crop is centred on: the prompt's first positive point, or (published, leaks the answer) the reference
CROPS = ("prompt", "reference")
OUTSIDE_CROP = ("ignore", "error")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def _positive(values):
    """``ZNormalization``'s mask in ``data_preprocess``: ``lambda x: x > 0`` (a function, so the adapter pickles)."""
    return values > 0


@dataclass(frozen=True)
class SAMMed3DInput:
    """What SAM-Med3D is given for one prompt.

    Attributes:
        image: the z-normalised crop, a float32 tensor ``[1, 1, 128, 128, 128]`` (on the CPU).
        grid: the crop's shape and RAS affine (torchio's ``roi_subject_affine``).
        points: ``(N, 3)`` fractional crop voxel coordinates, in the tensor's axis order, of the prompt's points
            inside the crop.
        labels: ``(N,)`` their labels, 1 positive / 0 negative.
        ignored: the prompt's points (case voxels) outside the crop, left out.
        key: the scan and the crop's centre: the image embedding is kept under it.
    """

    image: object
    grid: ModelGrid
    points: np.ndarray
    labels: np.ndarray
    ignored: tuple[tuple[int, int, int], ...]
    key: tuple


def _model_name(weights, crop: str) -> str:
    """``sam-med3d:<the weights file's stem>`` (``sam-med3d:sam_med3d_turbo``), as ``nnunet:<folder>``: the registry
    key before the first colon; ``:reference-crop`` is appended in the published (leaking) crop mode."""
    given = weights if weights is not None else os.environ.get(adapter_spec(KEY).weights_env)
    name = f"{KEY}:{Path(str(given)).stem}" if given else KEY
    return f"{name}:reference-crop" if crop == "reference" else name


def _safe_globals() -> list:
    """What SAM-Med3D's ``train.py`` (``save_checkpoint``) stores beside the weights, besides tensors and plain
    values: its ``argparse.Namespace`` of arguments, and numpy scalars in its loss and Dice lists."""
    allowed: list = [argparse.Namespace, np.dtype]
    core = getattr(np, "_core", None)
    if core is None:  # numpy < 2
        core = np.core
    scalar = getattr(core.multiarray, "scalar", None)
    if scalar is not None:
        allowed += [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [value for value in vars(dtypes).values() if isinstance(value, type) and issubclass(value, np.dtype)]
    return allowed


def _first_line(error: Exception) -> str:
    """The informative line of a torch.load error (its weights-only errors begin with a page of advice)."""
    text = str(error).split("WeightsUnpickler error:")[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def read_checkpoint(path: str | os.PathLike, *, device: str = "cpu", trust: bool = False) -> dict:
    """The ``model_state_dict`` of a SAM-Med3D checkpoint (``sam_med3d_turbo.pth``, ``sam_med3d.pth``).

    The file is read with ``torch.load(weights_only=True)``, which runs no code from the file; the argparse and numpy
    values SAM-Med3D's ``train.py`` saves beside the weights are allowed. ``trust=True`` reads it with
    ``weights_only=False`` (only for a file you trust: unpickling can run code).

    Raises:
        CheckpointError: the file is no PyTorch checkpoint, holds other Python objects (and `trust` is off), or has no
            ``model_state_dict`` of tensors.
    """
    torch = require(KEY, "torch")
    path = Path(path)
    try:
        if trust:
            checkpoint = torch.load(path, map_location=device, weights_only=False)
        else:
            with torch.serialization.safe_globals(_safe_globals()):
                checkpoint = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if trust or refused is None:
            raise CheckpointError(f"{path} is not a PyTorch checkpoint that torch.load can read ({_first_line(error)})") from error
        raise CheckpointError(
            f"{path} holds Python objects other than tensors and the argparse/numpy values SAM-Med3D's train.py saves "
            f"({refused.group(1)}), so torch.load(weights_only=True) does not read it. If you trust the file (the "
            "official one comes from the Hugging Face repo blueyo0/SAM-Med3D), pass trust_checkpoint=True (on the command line "
            "--model-option trust_checkpoint=true)."
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint that torch.load can read ({_first_line(error)})") from error
    if not isinstance(checkpoint, dict) or "model_state_dict" not in checkpoint:
        found = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path} is not a SAM-Med3D checkpoint: it has no 'model_state_dict' (found {found})")
    state = checkpoint["model_state_dict"]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise CheckpointError(f"{path}: its 'model_state_dict' is not a dictionary of tensors")
    return state


def _listing(names) -> str:
    names = sorted(names)
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def load_weights(network, state: dict, path) -> None:
    """Load `state` into `network` with ``strict=True``; any mismatch is a `CheckpointError` naming the keys."""
    expected = network.state_dict()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})" for k in sorted(set(expected) & set(state))
              if tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys ({_listing(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys ({_listing(unexpected)})")
        if shapes:
            problems.append(f"{len(shapes)} tensors of another shape ({_listing(shapes)})")
        raise CheckpointError(
            f"{path} does not hold the weights of medim's SAM-Med3D (ViT-B, 128³): {'; '.join(problems)}. "
            "SAM-Med3D's weights are sam_med3d_turbo.pth or sam_med3d.pth of the Hugging Face repo blueyo0/SAM-Med3D."
        )
    network.load_state_dict(state, strict=True)


class SAMMed3DModel:
    """SAM-Med3D (or SAM-Med3D-turbo: the weights decide) as a promptable model.

    Args:
        weights: the checkpoint file (default: ``$UMD_SAM_MED3D_WEIGHTS``); ``sam_med3d_turbo.pth`` or
            ``sam_med3d.pth`` of the Hugging Face repo blueyo0/SAM-Med3D.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        crop: ``prompt`` (default: the 128³ crop is centred on the prompt's first positive point) or ``reference``
            (centred on the organ's reference mask, as SAM-Med3D's published script does: **this leaks the answer**
            and is only for reproducing published numbers; the model then declares ``needs_reference``).
        outside_crop: what happens to points outside the crop: ``ignore`` (left out, with a warning) or ``error``
            (`PromptError`).
        trust_checkpoint: read the checkpoint with ``torch.load(weights_only=False)`` (only for a file you trust).
        model: an object with SAM-Med3D's ``image_encoder``, ``prompt_encoder`` and ``mask_decoder``, used instead of
            building one from the weights (tests); a ``torch.nn.Module`` is put in eval mode on `device`.

    Raises:
        UnknownNameError: an unknown `crop` or `outside_crop`.
        InvalidOptionError: a `device` that is none of the above.
    """

    kind = "promptable"
    name = KEY

    def __init__(self, weights=None, *, device: str = "cpu", crop: str = "prompt", outside_crop: str = "ignore",
                 trust_checkpoint: bool = False, model=None) -> None:
        if not isinstance(device, str) or not _DEVICE.match(device):
            raise InvalidOptionError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
        self.weights, self.device, self.trust_checkpoint = weights, device, bool(trust_checkpoint)
        self.crop = check_choice(crop, CROPS, "SAM-Med3D crop centre")
        self.outside_crop = check_choice(outside_crop, OUTSIDE_CROP, "rule for points outside the crop")
        self.needs_reference = self.crop == "reference"
        self.name = _model_name(weights, self.crop)
        self._given, self._network, self._placed = model, model, False
        self._memo = ScanMemo()
        self._crop_cache: tuple | None = None  # (key, image, grid) of the last crop
        self._embedded: tuple | None = None  # (key, image embedding) of the last crop
        self._running: tuple | None = None  # (crop key, organ, points, labels, low-res logits) of the last round

    def __getstate__(self):  # a built network (and CUDA tensors) stays here: a process worker builds its own
        state = dict(self.__dict__)
        state["_network"], state["_placed"], state["_memo"] = self._given, False, ScanMemo()
        state["_crop_cache"], state["_embedded"], state["_running"] = None, None, None
        return state

    def network(self):
        """The network: the one given, or medim's SAM-Med3D with the weights loaded (built once)."""
        if self._network is None:
            torch = require(KEY, "torch")
            medim = require(KEY, "medim")
            path = find_weights(KEY, self.weights)
            state = read_checkpoint(path, device=self.device, trust=self.trust_checkpoint)
            network = medim.create_model("SAM-Med3D", pretrained=False)
            load_weights(network, state, path)
            self._network, self._placed = network.to(torch.device(self.device)).eval(), True
        elif not self._placed:  # a given module goes where sam_model_infer puts it: model.eval(); model.to(device)
            torch = require(KEY, "torch")
            if isinstance(self._network, torch.nn.Module):
                self._network = self._network.to(torch.device(self.device)).eval()
            self._placed = True
        return self._network

    # -- preprocessing ---------------------------------------------------------------------------------------------

    def _canonical(self, case: Case):
        """The scan (and, in the reference mode, its label map) resampled to 1.5 mm and made RAS+: a torchio subject."""
        tio = require(KEY, "torchio")
        torch = require(KEY, "torch")
        from torchio.data.io import check_uint_to_int  # what torchio does to the voxels it reads from a file

        affine = np.asarray(case.affine, dtype=np.float64)
        images = {"image": tio.ScalarImage(tensor=torch.from_numpy(check_uint_to_int(np.array(case.image)))[None], affine=affine)}
        if self.crop == "reference":
            images["label"] = tio.LabelMap(tensor=torch.from_numpy(check_uint_to_int(np.array(self._reference(case))))[None], affine=affine)
        subject = tio.Resample(target=SPACING_MM)(tio.Subject(**images))
        return tio.ToCanonical()(subject)

    @staticmethod
    def _reference(case: Case) -> np.ndarray:
        if case.reference is None:
            raise ModelError(
                "SAM-Med3D with crop='reference' centres its crop on the reference mask, but the case holds none: "
                "run it through evaluate (which hands the reference to models with needs_reference) or use crop='prompt'"
            )
        if tuple(case.reference.shape) != tuple(case.image.shape):
            raise ModelError(f"the case's reference has shape {case.reference.shape}, its image {case.image.shape}")
        return np.asarray(case.reference)

    def _crop(self, case: Case, prompt, canonical, first_world: np.ndarray):
        """(key, z-normalised crop [1, 1, 128, 128, 128], its grid), kept for the corrective clicks of an organ."""
        tio = require(KEY, "torchio")
        torch = require(KEY, "torch")
        scan = (case.subject, case.study, case.scan, tuple(case.image.shape))
        image = canonical["image"]
        shape = tuple(int(s) for s in image.spatial_shape)
        if self.crop == "prompt":
            centre = np.rint(to_voxel(image.affine, first_world)).astype(int)
            centre = tuple(int(v) for v in np.clip(centre, 0, np.asarray(shape) - 1))
            key = (scan, "prompt", centre)
        else:
            if not (self._reference(case) == prompt.organ_id).any():
                raise PromptError(f"SAM-Med3D's reference crop: the reference holds no voxel of {prompt.organ} (id {prompt.organ_id})")
            key = (scan, "reference", int(prompt.organ_id))
        if self._crop_cache is not None and self._crop_cache[0] == key:
            return self._crop_cache
        if self.crop == "prompt":
            label = torch.zeros((1, *shape), dtype=torch.uint8)
            label[(0, *centre)] = 1  # a one-voxel mask: torchio's rule centres the crop on it
        else:
            labels = canonical["label"].data
            label = torch.zeros_like(labels)
            label[labels == int(prompt.organ_id)] = 1  # data_preprocess: the category as a binary label
        subject = tio.Subject(image=image, label=tio.LabelMap(tensor=label, affine=image.affine))
        cropped = tio.CropOrPad(mask_name="label", target_shape=(CROP_SIZE,) * 3)(subject)
        raw = cropped["image"].data.clone().detach()
        inside = raw[raw > 0].double()
        if inside.numel() < 2 or not float(inside.std()) > 0:
            raise ModelError(
                f"SAM-Med3D z-normalises its crop over the voxels above 0, and the 128³ crop for {prompt.organ} holds "
                f"{inside.numel()} such voxels{'' if inside.numel() < 2 else ' of one value'}: nothing to normalise by"
            )
        normalised = tio.ZNormalization(masking_method=_positive)(raw)  # get_roi_from_subject
        grid = ModelGrid(tuple(int(s) for s in cropped["image"].spatial_shape), np.asarray(cropped["image"].affine, dtype=np.float64))
        self._crop_cache = (key, normalised.unsqueeze(1), grid)
        return self._crop_cache

    def model_input(self, case: Case, prompt) -> SAMMed3DInput:
        """The crop, its grid and the prompt's points in it, as SAM-Med3D is given them (see the module's docstring).

        Raises:
            PromptError: no point or no positive point; a point outside the crop with ``outside_crop="error"``; in
                the reference mode, an organ absent from the reference.
            ModelError: a crop without two distinct values above 0 to z-normalise by; the reference mode without a
                reference.
        """
        check_prompt(KEY, prompt)
        if not prompt.points or len(prompt.points) != len(prompt.point_labels):
            raise PromptError(f"a {prompt.kind} prompt for {prompt.organ} needs points with one label each")
        if 1 not in prompt.point_labels:
            raise PromptError(f"SAM-Med3D's crop is centred on the first positive point, and the prompt for {prompt.organ} has none")
        canonical = self._memo.get(case, self._canonical)
        world = to_world(case.affine, np.asarray(prompt.points, dtype=np.float64))
        first = world[list(prompt.point_labels).index(1)]
        key, image, grid = self._crop(case, prompt, canonical, first)
        coords = to_voxel(grid.affine, world)
        inside = np.all((coords >= -0.5) & (coords < np.asarray(grid.shape) - 0.5), axis=1)
        ignored = tuple(tuple(int(v) for v in p) for p, keep in zip(prompt.points, inside) if not keep)
        if ignored:
            message = (f"SAM-Med3D sees a 128³ crop (192 mm) and the points {list(ignored)} of the prompt for {prompt.organ} "
                       "lie outside it")
            if self.outside_crop == "error" or not inside.any():
                raise PromptError(message + ("" if inside.any() else ": no point is left"))
            warnings.warn(message + ": left out", stacklevel=3)
        labels = np.asarray(prompt.point_labels, dtype=np.int64)[inside]
        return SAMMed3DInput(image, grid, coords[inside], labels, ignored, key)

    # -- the model ----------------------------------------------------------------------------------------------------

    def _embedding(self, network, given: SAMMed3DInput, device):
        if self._embedded is None or self._embedded[0] != given.key:
            self._embedded = None  # free the previous crop's embedding first
            embedding = network.image_encoder(given.image.to(device))
            if not hasattr(embedding, "shape") or embedding.shape[0] != 1:
                raise ModelError(f"SAM-Med3D's image encoder returned {getattr(embedding, 'shape', type(embedding).__name__)}, not one embedding")
            self._embedded = (given.key, embedding)
        return self._embedded[1]

    def __call__(self, case: Case, prompt) -> np.ndarray:
        check_prompt(KEY, prompt)
        given = self.model_input(case, prompt)
        network = self.network()
        torch = require(KEY, "torch")
        functional = require(KEY, "torch.nn.functional")
        device = torch.device(self.device)
        points, labels = tuple(prompt.points), tuple(prompt.point_labels)
        running = self._running
        continues = (running is not None and running[:2] == (given.key, prompt.organ) and len(points) > len(running[2])
                     and points[: len(running[2])] == running[2] and labels[: len(running[3])] == running[3])
        expected = (1, 1, *(s // 4 for s in given.grid.shape))  # sam_model_infer: roi_image.shape[2] // 4, ...
        with torch.no_grad():
            embedding = self._embedding(network, given, device)
            previous = running[4] if continues else torch.zeros(expected, dtype=torch.float32, device=device)
            coords = torch.as_tensor(given.points[None], dtype=torch.float32, device=device)  # [1, N, 3]
            point_labels = torch.as_tensor(given.labels[None], dtype=torch.float32, device=device)  # [1, N]
            sparse, dense = network.prompt_encoder(points=[coords, point_labels], boxes=None, masks=previous)
            output = network.mask_decoder(image_embeddings=embedding, image_pe=network.prompt_encoder.get_dense_pe(),
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
            low_res = output[0] if isinstance(output, (tuple, list)) and len(output) == 2 else output
            if not hasattr(low_res, "shape") or tuple(low_res.shape) != expected:
                raise ModelError(f"SAM-Med3D's mask decoder returned {getattr(low_res, 'shape', type(low_res).__name__)}, "
                                 f"not low-resolution masks of shape {expected}")
            if not bool(torch.isfinite(low_res).all()):
                raise ModelError("SAM-Med3D's mask decoder returned NaN or infinite logits")
            high = functional.interpolate(low_res.float(), size=given.grid.shape, mode="trilinear", align_corners=False)
            mask = (torch.sigmoid(high) > 0.5)[0, 0].cpu().numpy()
        self._running = (given.key, prompt.organ, points, labels, low_res.detach())
        return given.grid.onto_case(mask, case).astype(bool)
