"""The VISTA3D adapter: class ids and points through MONAI's VISTA3D bundle pipeline (``vista3d132``).

Each step follows the bundle ``vista3d`` of Project-MONAI/model-zoo (``models/vista3d``, bundle 0.5.4 at
commit dfae206d, and the ``padding_mode`` of bundle 0.5.7's ``scripts/inferer.py``) and monai 1.6.1:

- the scan becomes the MetaTensor that ``LoadImaged`` + ``EnsureChannelFirstd`` make of its NIfTI
  file (``monai/data/image_reader.py``, ``NibabelReader``: float32 voxels in the array's own axis order,
  the RAS affine as ``affine`` and ``original_affine``). The affine is rounded to float32, as a NIfTI
  header stores it: MONAI's ``Spacing`` chooses the resampled grid's origin with a 1e-8 tolerance test
  (``monai/data/utils.py``, ``compute_shape_offset``) that the rounding of an oblique affine can flip,
  so this is what makes the adapter's input equal to the bundle's on the scan's NIfTI;
- preprocessing is ``configs/inference.json`` ``preprocessing_transforms``, with MONAI's own
  transforms, once per scan: ``EnsureTyped`` (the device) -> ``Spacingd`` 1.5 mm bilinear ->
  ``CropForegroundd`` (voxels > 0 of the raw intensities, margin 10, ``allow_smaller``) ->
  ``ScaleIntensityRanged`` (-963.8..1053.7 -> 0..1, clipped) -> ``Orientationd`` RAS -> float32.
  ``VistaPreTransformd`` only rewrites prompts, which the adapter builds itself (below). The same CT
  pipeline runs on MRI and PET, as it did in the UMD paper;
- class ids are the bundle's label dict (``configs/metadata.json``, ``channel_def``): the lung (20) is
  its five lobes (``subclass`` of inference.json), scored as their union, as ``VistaPostTransformd``
  (``monai/apps/vista3d/transforms.py``) makes of a multi-object prediction;
- a class prompt runs like ``scripts/inferer.py`` (``Vista3dInferer``) without points:
  ``SlidingWindowInfererAdapt(roi_size, sw_batch_size=1, with_coord=True, padding_mode="replicate")``
  (MONAI's default overlap 0.25 and constant blending: the config's overlap 0.3 never reaches this
  path), ``transpose=True``, ``class_vector`` = ``prompt_class`` = ids ``[B, 1]`` as
  ``scripts/evaluator.py`` makes them; foreground is logit > 0. The network's class head is
  independent per id, so the first class prompt of a scan runs every organ the case lists, in
  batches of `class_batch` ids, and keeps each mask as a bounding box and its crop;
- points are mapped as ``scripts/evaluator.py`` (``Vista3dEvaluator._iteration``) maps them,
  ``inv(preprocessed affine) @ original_affine`` (fractional, float64, tensor axis order), and run
  through ``point_based_window_inferer`` (``monai/apps/vista3d/inferer.py``) with the arguments
  ``Vista3dInferer`` passes: one window centred on each point, overlapping windows summed, NaN
  (not computed) outside every window, which is background here (the bundle writes 255 there).
  Without a class id, ``VistaPostTransformd`` keeps only the connected components (26-connected) of
  logit > 0 that hold a positive point (``keep_components_with_positive_points``, scikit-image);
- point prompts go in *without* the organ's class id by default (``point_class=False``): the bundle's
  own point evaluation (``scripts/evaluator.py`` with ``val_head="point"``) runs the point head alone;
  with the class id, the point windows return the class head's answer cut at the window's edge, which
  class prompts already score; and the bundle takes no points with the lung's class
  (``docs/README.md``: "points together with label_prompts for Kidney, Lung, Bone ... are not
  allowed"). ``point_class=True`` gives the bundle's ``label_prompt`` + ``points`` form (the lung
  refused). Point labels are 0/1: none of the 13 organs is a "special" class (2/3 labels);
- corrective clicks on a class prompt (``Prompt.with_click``) go in with the class id, and
  ``prev_mask`` holds the class prompt's mask, so that voxels outside the clicked windows keep it
  (``docs/README.md``, ``use_point_window``: NaN outside the windows "unless prev_mask is passed");
- with ``device="cuda"`` the inferers run under ``torch.autocast("cuda")``, as the bundle's evaluator
  does with ``amp: true``;
- weights: ``models/model.pt`` loaded as the bundle's ``CheckpointLoader`` (``monai/handlers/checkpoint_loader.py``)
  does with ``load_dict={"model": network}``: ``torch.load(weights_only=True, map_location=device)``, the
  state dict itself or a dict holding it under ``"model"``, loaded strictly into ``vista3d132(in_channels=1)``;
- the mask goes back onto the scan's grid through world coordinates (`resample_onto`, nearest) from
  the preprocessed grid's affine, not through ``Invertd``. It agrees with the bundle's ``Invertd``
  (nearest) voxel for voxel, except where a scan voxel lies exactly half-way between two
  preprocessed voxels (either is nearest): ``Invertd`` undoes the crop by padding with 0 and
  ``Spacingd`` by sampling with ``padding_mode="border"``, so each mask is padded by one background
  voxel, and by its own edge values on the faces of the resampled grid, before it goes back.

The network sits behind one call, ``VISTA3D.forward`` (``monai/networks/nets/vista3d.py``): `network`
replaces it (tests pass a prompt echo with its signature).
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from umd_dataset.errors import CheckpointError, InvalidOptionError, ModelError, PromptError
from umd_dataset.evaluation.adapters.base import ModelGrid, ScanMemo, check_prompt, find_weights, require
from umd_dataset.evaluation.case import Case
from umd_dataset.io.geometry import resample_onto, shifted, to_voxel, to_world

__all__ = ["CLASS_IDS", "VISTA3DModel", "load_checkpoint"]

KEY = "vista3d"
#: organ slug -> VISTA3D class ids (bundle configs/metadata.json channel_def; lung 20 -> lobes 28-32 by inference.json's subclass)
CLASS_IDS: dict[str, tuple[int, ...]] = {
    "liver": (1,), "spleen": (3,), "kidney_left": (14,), "kidney_right": (5,), "pancreas": (4,), "stomach": (12,),
    "esophagus": (11,), "colon": (62,), "urinary_bladder": (15,), "heart": (115,), "aorta": (6,),
    "lung": (28, 29, 30, 31, 32), "brain": (22,),
}
#: configs/inference.json: resample_spacing, and ScaleIntensityRanged's a_min / a_max
SPACING_MM = (1.5, 1.5, 1.5)
A_MIN, A_MAX = -963.8247715525971, 1053.678477684517
FOREGROUND_MARGIN = 10
#: SegResNetDS2 (the image encoder) takes spatial sizes divisible by 2 ** (5 - 1)
SHAPE_FACTOR = 16


@dataclass
class _Scan:
    """One scan's model input, kept while the runner asks for its organs."""

    image: object  # torch.Tensor [1, 1, H, W, D] float32 on the device: the preprocessed scan
    grid: ModelGrid  # its shape and RAS affine
    original_affine: np.ndarray  # the scan's affine as the NIfTI header holds it (float32 values)
    edges: tuple[tuple[int, int], ...]  # per axis: voxels of edge values added below / above a mask going back (0: one of background)
    masks: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # organ -> (first voxel, crop) of its class mask


def load_checkpoint(network, path, device="cpu") -> None:
    """Load `path` into `network` as the bundle's ``CheckpointLoader(load_dict={"model": network})`` does:
    ``torch.load(weights_only=True, map_location=device)``; a dict with a ``"model"`` entry is a saved
    load_dict, anything else the state dict itself; strict.

    Raises:
        CheckpointError: torch.load cannot read the file with weights_only=True, or what it holds is not
            the network's state dict (keys missing or unexpected, shapes that differ).
    """
    import torch

    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError... for files it cannot read
        raise CheckpointError(f"{path} is no checkpoint torch.load can read with weights_only=True: {error}") from error
    state = checkpoint["model"] if isinstance(checkpoint, Mapping) and "model" in checkpoint else checkpoint
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict of tensors (nor one under 'model')")
    expected, given = set(network.state_dict()), set(state)
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} is not a checkpoint of {type(network).__name__}: {len(missing)} of its {len(expected)} weights missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). Expected the bundle's models/model.pt."
        )
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:  # shapes that do not match
        raise CheckpointError(f"{path} does not fit {type(network).__name__}: {error}") from error


class VISTA3DModel:
    """VISTA3D as a promptable model (class ids, points).

    Args:
        weights: the bundle's ``models/model.pt`` (default: ``$UMD_VISTA3D_WEIGHTS``); unused with `network`.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        roi_size: the window edge in voxels (the bundle's 128), a multiple of 16.
        class_batch: class ids run together on a scan's first class prompt; each holds one float32
            channel of the whole preprocessed scan (about 0.44 GB for a whole-body CT at 1.5 mm).
        point_class: give point prompts the organ's class id too (the bundle's label_prompt + points).
        amp: autocast on CUDA, as the bundle's evaluator (ignored on CPU).
        network: a callable with ``VISTA3D.forward``'s signature, used instead of vista3d132 (tests).

    Example:
        >>> model = VISTA3DModel("model.pt", device="cuda")  # doctest: +SKIP
        >>> mask = model(case, Prompt("class", "liver", 1))  # doctest: +SKIP
    """

    kind = "promptable"
    name = KEY

    def __init__(self, weights=None, *, device: str = "cpu", roi_size: int = 128, class_batch: int = 6,
                 point_class: bool = False, amp: bool = True, network=None) -> None:
        device = str(device)
        if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
            raise InvalidOptionError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        if isinstance(roi_size, bool) or not isinstance(roi_size, (int, np.integer)) or roi_size < SHAPE_FACTOR or roi_size % SHAPE_FACTOR:
            raise InvalidOptionError(f"roi_size must be a multiple of {SHAPE_FACTOR} (VISTA3D's encoder halves it four times), got {roi_size!r}")
        if isinstance(class_batch, bool) or not isinstance(class_batch, (int, np.integer)) or class_batch < 1:
            raise InvalidOptionError(f"class_batch must be a whole number of at least 1, got {class_batch!r}")
        self.weights, self.device, self.roi_size, self.class_batch = weights, device, int(roi_size), int(class_batch)
        self.point_class, self.amp = bool(point_class), bool(amp)
        self._given, self._network, self._memo = network, None, ScanMemo()

    def __getstate__(self):  # a built network holds (CUDA) weights: a process worker builds its own
        state = dict(self.__dict__)
        state["_network"], state["_memo"] = None, ScanMemo()
        return state

    def network(self):
        """The network (built and loaded on first use, or the one given)."""
        if self._network is None:
            import torch

            if self._given is not None:
                network = self._given
            else:
                nets = require(KEY, "monai.networks.nets")
                path = find_weights(KEY, self.weights)
                network = nets.vista3d132(in_channels=1)
                load_checkpoint(network, path, self.device)
            if isinstance(network, torch.nn.Module):
                network = network.to(self.device).eval()
            self._network = network
        return self._network

    # -- the scan --------------------------------------------------------------------------------

    def preprocess(self, case: Case):
        """The scan as VISTA3D sees it (memoised per scan): the input tensor ``[1, 1, H, W, D]`` and its grid."""
        scan = self._memo.get(case, self._prepare)
        return scan.image, scan.grid

    def _prepare(self, case: Case) -> _Scan:
        import torch

        transforms = require(KEY, "monai.transforms")
        data = require(KEY, "monai.data")
        if case.image.ndim != 3:
            raise ModelError(f"VISTA3D takes a 3D scan; this one has shape {case.image.shape}")
        affine = np.asarray(case.affine, dtype=np.float64).astype(np.float32).astype(np.float64)  # as a NIfTI header holds it
        voxels = torch.from_numpy(np.array(case.image, dtype=np.float32))[None]  # LoadImaged's float32, EnsureChannelFirstd's channel
        meta = {"original_affine": affine.copy(), "spatial_shape": np.asarray(case.image.shape), "space": "RAS",
                "original_channel_dim": "no_channel", "filename_or_obj": f"{case.subject}/{case.study}/{case.scan}"}
        image = data.MetaTensor(voxels, affine=torch.as_tensor(affine), meta=meta)
        keys = "image"
        resample = transforms.Compose([
            transforms.EnsureTyped(keys=keys, device=torch.device(self.device), track_meta=True),
            transforms.Spacingd(keys=keys, pixdim=list(SPACING_MM), mode="bilinear"),
        ])
        rest = transforms.Compose([
            transforms.CropForegroundd(keys=keys, source_key=keys, margin=FOREGROUND_MARGIN, allow_smaller=True),
            transforms.ScaleIntensityRanged(keys=keys, a_min=A_MIN, a_max=A_MAX, b_min=0, b_max=1, clip=True),
            transforms.Orientationd(keys=keys, axcodes="RAS"),
            transforms.CastToTyped(keys=keys, dtype=torch.float32),
        ])
        resampled = resample({keys: image})[keys]
        resampled_grid = ModelGrid(tuple(int(s) for s in resampled.shape[1:]), resampled.affine.cpu().numpy().astype(np.float64))
        out = rest({keys: resampled})[keys]
        del image, resampled
        shape = tuple(int(s) for s in out.shape[1:])
        if min(shape) < 1:
            raise ModelError(
                f"VISTA3D's foreground crop found no voxel above 0 in {case.subject}/{case.study}/{case.scan} "
                "(it keeps voxels > 0 of the raw intensities, HU for CT): nothing to segment"
            )
        grid = ModelGrid(shape, out.affine.cpu().numpy().astype(np.float64))
        return _Scan(out.as_tensor()[None], grid, affine, _edges(grid, resampled_grid, case.image.shape, affine))

    # -- the network boundary --------------------------------------------------------------------

    def _boundary(self, objects: int):
        """The network, with a check of what each window returns (``[1, objects, *window]``, finite)."""
        import torch

        network = self.network()

        def call(*args, **kwargs):
            window = args[0]
            out = network(*args, **kwargs)
            expected = (1, objects, *window.shape[2:])
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
                what = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ModelError(f"VISTA3D returned {what} for a window of shape {tuple(window.shape)}; expected logits of shape {expected}")
            if not torch.isfinite(out).all():
                raise ModelError(f"VISTA3D returned NaN or infinite logits for a window of shape {tuple(window.shape)}")
            return out

        return call

    def _autocast(self):
        import torch

        if self.amp and self.device.startswith("cuda"):
            return torch.autocast("cuda")
        return contextlib.nullcontext()

    # -- prompts ---------------------------------------------------------------------------------

    def __call__(self, case: Case, prompt) -> np.ndarray:
        """The organ's mask on the case's grid.

        Returns:
            A bool array of the scan's shape.

        Raises:
            PromptError: a box or text prompt, an organ VISTA3D has no class for, point labels other
                than 0/1, a point outside VISTA3D's input, or points with the lung's class.
            ModelUnavailableError: monai (or scikit-image, for points) is missing, or the weights are.
            CheckpointError: the weights are not vista3d132's.
            ModelError: the network returned logits of the wrong shape or NaN, or the scan has no voxel above 0.
        """
        check_prompt(KEY, prompt)
        if prompt.organ not in CLASS_IDS:
            raise PromptError(f"VISTA3D has no class for the organ {prompt.organ!r}; it knows {', '.join(CLASS_IDS)}")
        scan = self._memo.get(case, self._prepare)
        if prompt.kind == "class":
            mask = self._class_mask(scan, case, prompt.organ)
            if prompt.points:  # corrective clicks: the class id with the clicks, the class mask outside their windows
                mask = self._point_mask(scan, prompt, self._single_id(prompt.organ, "corrective clicks on a class prompt"), mask)
        else:
            class_id = self._single_id(prompt.organ, "point prompts with point_class=True") if self.point_class else None
            mask = self._point_mask(scan, prompt, class_id, None)
        return self._onto_case(scan, mask, case)

    @staticmethod
    def _single_id(organ: str, what: str) -> int:
        ids = CLASS_IDS[organ]
        if len(ids) != 1:
            raise PromptError(
                f"VISTA3D takes no class id together with points for the {organ} (its class expands to the ids {list(ids)}; "
                f"the bundle's docs/README.md does not allow it): {what} are not possible for it; use point prompts with point_class=False"
            )
        return ids[0]

    def _class_mask(self, scan: _Scan, case: Case, organ: str) -> tuple[np.ndarray, np.ndarray]:
        """The organ's class-prompt mask (compact), with those of every organ the case lists made on the first call."""
        if organ in scan.masks:
            return scan.masks[organ]
        import torch

        inferers = require(KEY, "monai.inferers")
        organs = [organ] + [o for o in dict.fromkeys(case.organs) if o in CLASS_IDS and o != organ and o not in scan.masks]
        channels = [(o, class_id) for o in organs for class_id in CLASS_IDS[o]]
        parts: dict[str, list] = {o: [] for o in organs}
        inferer = inferers.SlidingWindowInfererAdapt(roi_size=[self.roi_size] * 3, sw_batch_size=1, with_coord=True, padding_mode="replicate")
        for start in range(0, len(channels), self.class_batch):
            batch = channels[start : start + self.class_batch]
            class_vector = torch.as_tensor([[class_id] for _, class_id in batch], device=self.device)  # [B, 1]
            with torch.no_grad(), self._autocast():
                logits = inferer(scan.image, self._boundary(len(batch)), transpose=True, point_coords=None, point_labels=None,
                                 class_vector=class_vector, prompt_class=copy.deepcopy(class_vector), prev_mask=None, labels=None, label_set=None)
            _check_output(logits, (1, len(batch), *scan.grid.shape))
            for index, (o, _) in enumerate(batch):
                parts[o].append(_compact(logits[0, index] > 0))
            del logits
        for o in organs:
            scan.masks[o] = _union(parts[o])
        return scan.masks[organ]

    def _point_mask(self, scan: _Scan, prompt, class_id: int | None, previous) -> tuple[np.ndarray, np.ndarray]:
        """The mask of a point prompt (with `class_id`, and the `previous` mask outside the windows, if given)."""
        import torch

        vista = require(KEY, "monai.apps.vista3d.inferer")
        points = np.asarray(prompt.points, dtype=np.float64).reshape(-1, 3)
        labels = [int(v) for v in prompt.point_labels]
        if not len(points) or len(labels) != len(points):
            raise PromptError(f"a {prompt.kind} prompt for {prompt.organ} with {len(points)} points and {len(labels)} labels")
        if not set(labels) <= {0, 1}:
            raise PromptError(f"point labels must be 1 (positive) or 0 (negative), got {sorted(set(labels))}")
        mapped = to_voxel(scan.grid.affine, to_world(scan.original_affine, points))  # evaluator.py: inv(A_pre) @ original_affine
        index = np.rint(mapped)
        if ((index < 0) | (index > np.asarray(scan.grid.shape) - 1)).any():
            raise PromptError(
                f"a point of {prompt.organ} lies outside VISTA3D's input (the scan cropped to its voxels > 0, margin {FOREGROUND_MARGIN}): "
                f"{[tuple(int(v) for v in p) for p in points]} -> {[tuple(round(float(v), 1) for v in p) for p in mapped]} on a grid of {scan.grid.shape}"
            )
        point_coords = torch.from_numpy(mapped[None]).to(self.device)  # [1, N, 3] float64, as the evaluator's
        point_labels = torch.as_tensor([labels], device=self.device)  # [1, N]
        class_vector = None if class_id is None else torch.as_tensor([[class_id]], device=self.device)
        prev_mask = None if previous is None else _as_logits(previous, scan.grid.shape)
        with torch.no_grad(), self._autocast():
            logits = vista.point_based_window_inferer(
                inputs=scan.image, roi_size=[self.roi_size] * 3, sw_batch_size=1, transpose=True, with_coord=True,
                predictor=self._boundary(1), mode="gaussian", sw_device=scan.image.device, device=scan.image.device, overlap=0.3,
                point_coords=point_coords, point_labels=point_labels, class_vector=class_vector,
                prompt_class=copy.deepcopy(class_vector), prev_mask=prev_mask, labels=None, label_set=None,
            )
        _check_output(logits, (1, 1, *scan.grid.shape))
        logits = logits.as_tensor() if hasattr(logits, "as_tensor") else logits
        if class_id is not None:
            return _compact(logits[0, 0] > 0)
        require(KEY, "skimage.measure")
        utils = require(KEY, "monai.transforms.utils")
        computed = ~torch.isnan(logits[0, 0])  # the windows; the components lie inside them
        low, high = _box(computed)
        if low is None:  # no window: nothing computed
            return np.zeros(3, dtype=int), np.zeros((0, 0, 0), dtype=bool)
        box = (slice(None), slice(None), *[slice(int(a), int(b)) for a, b in zip(low, high)])
        kept = utils.keep_components_with_positive_points(
            logits[box].clone(), point_coords=point_coords.cpu() - torch.as_tensor(low, dtype=torch.float64), point_labels=point_labels.cpu(),
        )
        low_crop, crop = _compact(kept[0, 0] > 0)
        return low_crop + low, crop

    # -- back onto the scan ----------------------------------------------------------------------

    def _onto_case(self, scan: _Scan, mask: tuple[np.ndarray, np.ndarray], case: Case) -> np.ndarray:
        """A compact mask on the preprocessed grid sampled onto the case's grid (nearest, through world coordinates).

        Each face gets one voxel of background (``Invertd`` pads the crop with 0, and a scan voxel up to
        half a voxel beyond the crop takes its nearest crop voxel), or, where it is a face of the
        resampled grid, as many voxels of its edge values as the scan reaches beyond it (``Invertd``
        samples ``Spacingd``'s grid with padding_mode="border").
        """
        low, crop = mask
        if not crop.any():
            return np.zeros(case.image.shape, dtype=bool)
        low = np.asarray(low, dtype=int).copy()
        for axis, (below, above) in enumerate(scan.edges):
            pad = [(0, 0)] * 3
            if below and low[axis] == 0:
                pad[axis] = (below, 0)
                crop = np.pad(crop, pad, mode="edge")
            else:
                pad[axis] = (1, 0)
                crop = np.pad(crop, pad)
            low[axis] -= pad[axis][0]
            pad = [(0, 0)] * 3
            if above and low[axis] + crop.shape[axis] == scan.grid.shape[axis]:
                pad[axis] = (0, above)
                crop = np.pad(crop, pad, mode="edge")
            else:
                pad[axis] = (0, 1)
                crop = np.pad(crop, pad)
        return resample_onto(crop, shifted(scan.grid.affine, low), case.image.shape, scan.original_affine, order=0)


def _check_output(logits, expected: tuple[int, ...]) -> None:
    if tuple(logits.shape) != expected:
        raise ModelError(f"VISTA3D's window inferer returned logits of shape {tuple(logits.shape)} for an input grid of {expected[2:]}; expected {expected}")


def _box(mask):
    """(first, last + 1) voxel of a 3D bool tensor's support, or (None, None)."""
    import torch

    planes = mask.any(dim=2)  # two passes over the volume, not three
    profiles = (planes.any(dim=1), planes.any(dim=0), mask.any(dim=0).any(dim=0))
    if not bool(profiles[0].any()):
        return None, None
    where = [torch.nonzero(p).flatten() for p in profiles]
    return np.asarray([int(w[0]) for w in where]), np.asarray([int(w[-1]) + 1 for w in where])


def _compact(mask) -> tuple[np.ndarray, np.ndarray]:
    """(first voxel, crop) of a 3D bool tensor: its bounding box, as numpy."""
    low, high = _box(mask)
    if low is None:
        return np.zeros(3, dtype=int), np.zeros((0, 0, 0), dtype=bool)
    crop = mask[tuple(slice(int(a), int(b)) for a, b in zip(low, high))]
    return low, crop.cpu().numpy().astype(bool)


def _union(parts) -> tuple[np.ndarray, np.ndarray]:
    """The union of compact masks (the lung's lobes)."""
    parts = [(low, crop) for low, crop in parts if crop.any()]
    if not parts:
        return np.zeros(3, dtype=int), np.zeros((0, 0, 0), dtype=bool)
    if len(parts) == 1:
        return parts[0]
    low = np.min([p[0] for p in parts], axis=0)
    high = np.max([p[0] + np.asarray(p[1].shape) for p in parts], axis=0)
    out = np.zeros(tuple(high - low), dtype=bool)
    for start, crop in parts:
        at = start - low
        out[at[0] : at[0] + crop.shape[0], at[1] : at[1] + crop.shape[1], at[2] : at[2] + crop.shape[2]] |= crop
    return low, out


def _as_logits(mask: tuple[np.ndarray, np.ndarray], shape):
    """A compact mask as ``prev_mask`` logits ``[1, 1, *shape]`` (1 inside, -1 outside): only their sign is read back."""
    import torch

    logits = torch.full((1, 1, *shape), -1.0)
    low, crop = mask
    if crop.any():
        box = tuple(slice(int(a), int(a) + n) for a, n in zip(low, crop.shape))
        logits[(0, 0, *box)] = torch.where(torch.from_numpy(crop), 1.0, -1.0)
    return logits


def _edges(grid: ModelGrid, resampled: ModelGrid, case_shape, case_affine: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Per axis of the preprocessed grid, (below, above): how many voxels of edge values a mask gets on
    that face going back, where the face is one of the resampled grid (0 where CropForeground cut).

    The preprocessed grid is the resampled one cropped and reoriented: its axes are the resampled
    grid's, permuted and flipped, and its voxels some of the resampled grid's.
    """
    steps = np.linalg.inv(resampled.affine) @ grid.affine
    corners = np.array([[(0, n - 1)[b] for b, n in zip(bits, case_shape)] for bits in np.ndindex(2, 2, 2)], dtype=np.float64)
    reach = to_voxel(grid.affine, to_world(case_affine, corners))  # the scan's corners on the preprocessed grid
    edges = []
    for axis in range(3):
        other = int(np.argmax(np.abs(steps[:3, axis])))
        step, size, first = np.sign(steps[other, axis]), resampled.shape[other], steps[other, 3]
        last = first + step * (grid.shape[axis] - 1)
        at_low = abs(first - (0 if step > 0 else size - 1)) < 1e-3
        at_high = abs(last - (size - 1 if step > 0 else 0)) < 1e-3
        below = max(1, int(np.ceil(-reach[:, axis].min())) + 1) if at_low else 0
        above = max(1, int(np.ceil(reach[:, axis].max() - (grid.shape[axis] - 1))) + 1) if at_high else 0
        edges.append((below, above))
    return tuple(edges)
