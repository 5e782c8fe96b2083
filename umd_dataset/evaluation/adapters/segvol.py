"""The SegVol adapter: text, point and box prompts (and a point or box together with the organ's name) through
SegVol's own ``SegVolModel.forward_test``, loaded from a local copy of the Hugging Face repo BAAI/SegVol.

Each step follows SegVol's own code: the Hugging Face model code ``model_segvol_single.py`` of BAAI/SegVol
(``SegVolProcessor.preprocess_ct_gt``, ``ForegroundNorm``, ``zoom_transform``, ``point_prompt_b``, ``bbox_prompt_b``,
``save_preds``; ``SegVolModel.forward_test``; ``select_points``, ``generate_box``), the model card's test script, and
the GitHub repo BAAI-DCAI/SegVol at 5768c97 (``data_process/demo_data_process.py``, ``network/model.py``,
``utils/monai_inferers_utils.py``: ``build_binary_cube``, ``build_binary_points``):

- the voxels as ``preprocess_ct_gt`` reads them: ``transforms.LoadImage()`` of the NIfTI, i.e. the scan's stored
  voxel order (i, j, k) as float32, with a channel axis. SegVol never reorients nor resamples (the GitHub demo's
  ``Orientationd("RAS")`` sees no affine and is a no-op; the Hugging Face processor has none), so neither does the
  adapter;
- ``ForegroundNorm``: threshold = the mean of all voxels; the 0.05 and 99.95 percentiles and the mean and standard
  deviation of the voxels above it; clip, then z-score (`foreground_norm`). The arithmetic is float32, as under the
  numpy 1.x that SegVol pins (numpy 2 would promote to float64, which SegVol's float32 weights refuse);
- ``transform4test`` (``zoom_transform``): ``DimTranspose`` (``np.swapaxes(-1, -3)``: the array becomes (k, j, i),
  SegVol's (D, H, W)), ``MinMaxNormalization`` (to [0, 1], image only; `min_max`), then MONAI's own
  ``CropForegroundd(keys=["image"], source_key="image")`` (voxels > 0, margin 0), whose ``foreground_start_coord`` /
  ``foreground_end_coord`` (half-open, in (D, H, W)) place the crop; then MONAI's own
  ``Resized(spatial_size=(32, 256, 256), mode="nearest-exact")``: the zoom-out volume. Both MONAI transforms are
  called as SegVol calls them (monai 1.6.1 keeps their behaviour; SegVol pins 0.9.0). Every step is an affine: the
  swap is `permuted`, the crop `shifted`, the zoom-out `zoomed` (nearest-exact takes the source voxel nearest to each
  output centre, the ``align_corners=False`` grid);
- prompts live on the zoom-out grid, in (D, H, W), as ``point_prompt_b`` / ``bbox_prompt_b`` build them: points are
  ``(coords (1, N, 3) float, labels (1, N) float)`` with labels 1 positive / 0 negative (the prompt encoder adds half
  a voxel and its own padding point), plus ``build_binary_points`` (an int16 map of the positive points); a box is
  ``[d0, h0, w0, d1, h1, w1]`` (inclusive maxima, ``generate_box``) as a float (1, 6), plus ``build_binary_cube``.
  Points go case voxel -> world -> zoom-out fractional voxel coordinates; the box is the set of zoom-out voxels whose
  nearest source voxel lies in the prompt's box (what ``generate_box`` gives on the zoom-out label of that box);
- text: the bare organ name in a list (``text_prompt=[name]``); SegVol's ``TextEncoder.organ2tokens`` wraps it in
  "A computerized tomography of a {}." itself. The names come from SegVol's own category lists (`NAMES`);
- ``forward_test(image, zoomed_image, text_prompt, bbox_prompt_group, point_prompt_group, use_zoom)``: the zoom-out
  pass, then (``use_zoom=True``, the model card's setting) the zoom-in sliding window on the full-resolution crop. It
  returns logits (1, 1, D, H, W) on the cropped, swapped grid at the scan's own resolution; no AMP (SegVol uses none);
- ``save_preds``: ``sigmoid > 0.5``, swap back, paste into the crop box of the scan's grid. Here the mask goes back
  through world coordinates (`ModelGrid.onto_case`, nearest neighbour), which is the same paste: the crop's grid is a
  permutation and a shift of the scan's.

Choices where SegVol's code leaves one open:

- ``with_text`` (default True): a point or box prompt is sent together with the organ's name, as the UMD paper
  prompted SegVol (one point plus the name); ``forward_test`` takes both at once. With False, points or a box alone.
- ``names="segvol"`` (default): the name of `NAMES` for the organ; ``"prompt"``: a text prompt's own text (e.g. a
  synonym drawn with ``text_synonyms``); point and box prompts carry no text and always use `NAMES`.
- a box and points together (corrective clicks after a box) raise `PromptError`: ``forward_test`` refuses them.
  Corrective clicks after a text prompt go in as points together with the text.
- a positive point outside SegVol's foreground crop cannot reach the model: `PromptError`. A negative point there is
  left out (with a warning): everything outside the crop is background in SegVol's output anyway.
- the zoom-in resamples point prompts at random (``select_points`` draws 5 points from the upsampled point map); with
  ``seed`` (default 0) each call runs under its own seeded torch generator, so results repeat.

Loading: SegVol's model class is Python code inside the weights folder (``trust_remote_code``). It runs only with the
explicit ``trust_remote_code=True``; then ``AutoTokenizer.from_pretrained(folder)`` and ``AutoModel.from_pretrained(
folder, trust_remote_code=True, test_mode=True)``, both ``local_files_only``, and ``model.model.text_encoder.tokenizer
= tokenizer``, as the model card does. The network sits behind `model`: any object with SegVol's ``forward_test``
(tests pass a prompt echo).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np

from umd_dataset.errors import CheckpointError, InvalidOptionError, ModelError, ModelUnavailableError, PromptError, check_choice
from umd_dataset.evaluation.adapters.base import ModelGrid, ScanMemo, adapter_spec, check_prompt, find_weights, require
from umd_dataset.evaluation.case import Case
from umd_dataset.io.geometry import permuted, shifted, to_voxel, to_world, zoomed

__all__ = [
    "NAMES", "SPATIAL_SIZE", "TEMPLATE", "SegVolInput", "SegVolModel", "foreground_norm", "min_max",
    "preprocess", "zoom_box",
]

KEY = "segvol"
#: the zoom-out volume (``SegVolConfig.spatial_size``): the ViT's fixed input
SPATIAL_SIZE = (32, 256, 256)
#: ``DimTranspose``: the scan's (i, j, k) axes become SegVol's (D, H, W) = (k, j, i)
AXES = (2, 1, 0)
#: what SegVol's ``TextEncoder.organ2tokens`` makes of a name (it applies the template itself)
TEMPLATE = "A computerized tomography of a {}."
#: SegVol's names of the UMD organs. Free text for its CLIP text tower; the eight abdominal ones are the exact names of
#: SegVol's own category list (GitHub ``data_process/train_data_process.py``, default ``-category``); "bladder", "lung",
#: "brain", "colon" and "heart" are the names of its training datasets (AMOS22, CT-ORG, WORD), not checked against
#: the M3D-Seg category list.
NAMES = {
    "liver": "liver", "spleen": "spleen", "kidney_left": "left kidney", "kidney_right": "right kidney",
    "pancreas": "pancreas", "stomach": "stomach", "esophagus": "esophagus", "colon": "colon",
    "urinary_bladder": "bladder", "heart": "heart", "aorta": "aorta", "lung": "lung", "brain": "brain",
}
NAME_SOURCES = ("segvol", "prompt")
_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def foreground_norm(image: np.ndarray) -> np.ndarray:
    """``SegVolProcessor.ForegroundNorm``: clip to the 0.05 / 99.95 percentiles of the voxels above the mean of all
    voxels, then z-score with those voxels' mean and standard deviation (float32 arithmetic, as under numpy 1.x).

    Raises:
        ModelError: no voxel is above the mean (a constant image).
    """
    image = np.asarray(image, dtype=np.float32)
    values = image.ravel()
    threshold = np.mean(values)
    above = values[values > threshold]
    if not above.size:
        raise ModelError("SegVol normalises with the voxels above the image's mean, and this image has none (it is constant)")
    upper, lower = np.percentile(above, 99.95), np.percentile(above, 00.05)
    mean, std = np.mean(above), np.std(above)
    clipped = np.clip(image, np.float32(lower), np.float32(upper))
    return ((clipped - mean) / max(std, np.float32(1e-8))).astype(np.float32, copy=False)


def min_max(image: np.ndarray) -> np.ndarray:
    """``MinMaxNormalization``: ``x - min``, divided by the new maximum (at least 1e-8)."""
    image = image - image.min()
    return (image / np.clip(image.max(), a_min=np.float32(1e-8), a_max=None)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class SegVolInput:
    """One scan as SegVol sees it.

    Attributes:
        image: the normalised, swapped, foreground-cropped volume at the scan's resolution (D, H, W), float32.
        zoom_out: its ``nearest-exact`` resize to `SPATIAL_SIZE`, float32.
        crop: the grid of `image` (the grid ``forward_test`` returns its logits on).
        zoom: the grid of `zoom_out` (the grid of the prompts).
        start, end: ``foreground_start_coord`` / ``foreground_end_coord`` (half-open, (D, H, W)).
    """

    image: np.ndarray
    zoom_out: np.ndarray
    crop: ModelGrid
    zoom: ModelGrid
    start: tuple[int, int, int]
    end: tuple[int, int, int]


def preprocess(case: Case, spatial_size=SPATIAL_SIZE) -> SegVolInput:
    """SegVol's preprocessing of the case's image (``preprocess_ct_gt`` + ``zoom_transform``), with its grids.

    Raises:
        ModelUnavailableError: MONAI is not installed.
        ModelError: a constant image (no foreground).
    """
    transforms = require(KEY, "monai.transforms")
    image = np.asarray(case.image, dtype=np.float32)[None]  # LoadImage's float32, then expand_dims(0)
    image = min_max(np.swapaxes(foreground_norm(image), -1, -3))  # ForegroundNorm, DimTranspose, MinMaxNormalization
    item = transforms.CropForegroundd(keys=["image"], source_key="image")({"image": image})
    start = tuple(int(v) for v in item["foreground_start_coord"])
    end = tuple(int(v) for v in item["foreground_end_coord"])
    if any(e <= s for s, e in zip(start, end)):
        raise ModelError("SegVol crops the image to its voxels above the minimum, and this image has none (it is constant)")
    zoom_out = transforms.Resized(keys=["image"], spatial_size=tuple(spatial_size), mode="nearest-exact")(item)["image"]
    cropped = np.asarray(item["image"], dtype=np.float32)[0]
    crop_affine = shifted(permuted(case.affine, AXES), start)
    zoom_affine = zoomed(crop_affine, cropped.shape, spatial_size)
    return SegVolInput(
        np.ascontiguousarray(cropped), np.ascontiguousarray(np.asarray(zoom_out, dtype=np.float32)[0]),
        ModelGrid(tuple(cropped.shape), crop_affine), ModelGrid(tuple(int(s) for s in spatial_size), zoom_affine), start, end,
    )


def zoom_box(case: Case, grid: ModelGrid, box) -> tuple[int, int, int, int, int, int] | None:
    """The prompt's inclusive voxel box on `grid` (the zoom-out grid): the voxels whose nearest source voxel lies in
    it, found through world coordinates; a box thinner than one zoom-out voxel keeps the voxel nearest its centre.
    None if the box lies outside the grid."""
    low, high = np.asarray(box[0], dtype=np.float64), np.asarray(box[1], dtype=np.float64)
    corners = np.array([[(low - 0.5, high + 0.5)[b][axis] for axis, b in enumerate(bits)] for bits in np.ndindex(2, 2, 2)])
    inside = to_voxel(grid.affine, to_world(case.affine, corners))  # the box's outer voxel faces on the zoom-out grid
    first, last = inside.min(axis=0), inside.max(axis=0)
    lo = np.ceil(first - 1e-6).astype(int)
    hi = np.ceil(last - 1e-6).astype(int) - 1
    thin = hi < lo
    centre = np.rint((first + last) / 2).astype(int)
    lo, hi = np.where(thin, centre, lo), np.where(thin, centre, hi)
    size = np.asarray(grid.shape)
    if (hi < 0).any() or (lo > size - 1).any():
        return None
    lo, hi = np.clip(lo, 0, size - 1), np.clip(hi, 0, size - 1)
    return tuple(int(v) for v in lo) + tuple(int(v) for v in hi)


class SegVolModel:
    """SegVol as a promptable model.

    Args:
        weights: a local copy of the Hugging Face repo BAAI/SegVol (default: ``$UMD_SEGVOL_WEIGHTS``).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        trust_remote_code: must be True to load the weights folder: SegVol's model is Python code in that folder,
            which runs on load (read it first). Not needed with `model`.
        with_text: send the organ's name with point and box prompts (the UMD paper's protocol).
        names: ``segvol`` (`NAMES`) or ``prompt`` (a text prompt's own text).
        use_zoom: ``forward_test``'s zoom-in (the model card's default, True).
        seed: the seed of the torch generator each call runs under (None: the global one).
        model: an object with SegVol's ``forward_test``, used instead of loading one (tests).

    Raises:
        ModelUnavailableError: no `model` and no ``trust_remote_code=True``.
        InvalidOptionError, UnknownNameError: bad option values.
    """

    kind = "promptable"
    name = KEY

    def __init__(self, weights=None, *, device: str = "cpu", trust_remote_code: bool = False, with_text: bool = True,
                 names: str = "segvol", use_zoom: bool = True, seed: int | None = 0, model=None) -> None:
        if not isinstance(device, str) or not _DEVICE.match(device):
            raise InvalidOptionError(f"device must be cpu, cuda or cuda:N, got {device!r}")
        if model is not None and not callable(getattr(model, "forward_test", None)):
            raise InvalidOptionError(f"model must have SegVol's forward_test method; {type(model).__name__} has none")
        if model is None and trust_remote_code is not True:
            raise ModelUnavailableError(
                f"{adapter_spec(KEY).title}'s model is Python code inside its weights folder (a copy of the Hugging Face "
                "repo BAAI/SegVol), which transformers runs when it loads the weights. Read that code, then opt in with "
                "trust_remote_code=True: SegVolModel(PATH, trust_remote_code=True), or "
                "make_adapter('segvol', PATH, trust_remote_code=True)."
            )
        if seed is not None and not isinstance(seed, int):
            raise InvalidOptionError(f"seed must be an integer or None, got {seed!r}")
        self.weights, self.device, self.trust_remote_code = weights, device, trust_remote_code
        self.with_text, self.use_zoom, self.seed = bool(with_text), bool(use_zoom), seed
        self.names = check_choice(names, NAME_SOURCES, "name source")
        self._model, self._built, self._memo = model, False, ScanMemo()

    def __getstate__(self):  # a loaded model holds GPU memory: a process worker loads its own
        state = dict(self.__dict__)
        if self._built:
            state["_model"], state["_built"] = None, False
        state["_memo"] = ScanMemo()
        return state

    def model(self):
        """SegVol's ``SegVolModel`` (test mode), loaded from the weights folder on first use."""
        if self._model is None:
            torch = require(KEY, "torch")
            transformers = require(KEY, "transformers")
            require(KEY, "monai")  # SegVol's model code imports it
            folder = find_weights(KEY, self.weights, folder=True)
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                model = transformers.AutoModel.from_pretrained(str(folder), trust_remote_code=True, local_files_only=True,
                                                               test_mode=True)
            except ImportError as error:
                raise ModelUnavailableError(
                    f"SegVol's model code in {folder} needs a package that is not installed here ({error}). "
                    f"Install it with: {adapter_spec(KEY).install}"
                ) from error
            except (OSError, ValueError, KeyError) as error:
                raise CheckpointError(f"{folder} is not a loadable copy of the Hugging Face repo BAAI/SegVol: {error}") from error
            except AttributeError as error:
                if "all_tied_weights_keys" not in str(error):
                    raise
                raise ModelUnavailableError(
                    f"SegVol's model code in {folder} was written for transformers 4 (its model never calls post_init), and "
                    f"transformers {transformers.__version__} cannot load it: install transformers<5 (SegVol pins 4.18.0)"
                ) from error
            if not callable(getattr(model, "forward_test", None)) or not hasattr(getattr(model, "model", None), "text_encoder"):
                raise CheckpointError(f"{folder} holds a {type(model).__name__}, not SegVol's SegVolModel (no forward_test)")
            model.model.text_encoder.tokenizer = tokenizer  # the model card's step: its TextEncoder has no tokenizer
            model.eval()
            self._model, self._built = model.to(torch.device(self.device)), True
        return self._model

    def _text(self, prompt) -> list[str] | None:
        if prompt.kind == "text":
            if self.names == "prompt":
                if not prompt.text:
                    raise PromptError(f"a text prompt for {prompt.organ} without text")
                return [prompt.text]
        elif not self.with_text:
            return None
        if prompt.organ not in NAMES:
            raise PromptError(f"SegVol has no name for the organ {prompt.organ!r} here (known: {', '.join(NAMES)})")
        return [NAMES[prompt.organ]]

    def _points(self, case: Case, data: SegVolInput, prompt, torch, device):
        coords, labels, outside = [], [], []
        for point, label in zip(prompt.points, prompt.point_labels):
            where = data.zoom.point_from(case, point)  # (d, h, w) on the zoom-out grid, fractional
            if ((where < -0.5) | (where >= np.asarray(data.zoom.shape) - 0.5)).any():
                if label:
                    raise PromptError(
                        f"the point {tuple(point)} of {prompt.organ} lies outside SegVol's view of the scan (its crop to the "
                        "voxels above the image's minimum after normalisation)"
                    )
                outside.append(tuple(point))
                continue
            coords.append(where)
            labels.append(float(label))
        if outside:
            warnings.warn(f"SegVol: negative points {outside} of {prompt.organ} lie outside its crop (all background "
                          "there): left out", stacklevel=3)
        if prompt.kind != "text" and not any(labels):
            raise PromptError(f"a {prompt.kind} prompt for {prompt.organ} without a positive point")
        if not coords:
            return None
        coords = np.asarray(coords, dtype=np.float32)  # what the model receives; the map marks the voxels of these values
        binary = torch.zeros(data.zoom.shape, dtype=torch.int16)  # build_binary_points: 1 at the positive points
        for where, label in zip(coords, labels):
            if label == 1:
                index = np.clip(np.rint(where).astype(int), 0, np.asarray(data.zoom.shape) - 1)
                binary[tuple(int(v) for v in index)] = 1
        points = (torch.from_numpy(coords)[None].to(device), torch.tensor(labels, dtype=torch.float32)[None].to(device))
        return [points, binary[None, None]]

    def _box(self, case: Case, data: SegVolInput, prompt, torch, device):
        if prompt.box is None:
            raise PromptError(f"a box prompt for {prompt.organ} without a box")
        box = zoom_box(case, data.zoom, prompt.box)
        if box is None:
            raise PromptError(f"the box of {prompt.organ} lies outside SegVol's view of the scan (its foreground crop)")
        cube = torch.zeros(data.zoom.shape)  # build_binary_cube: 1 inside the inclusive box
        cube[box[0] : box[3] + 1, box[1] : box[4] + 1, box[2] : box[5] + 1] = 1
        return [torch.tensor(box, dtype=torch.float32)[None].to(device), cube[None, None]]

    def __call__(self, case: Case, prompt) -> np.ndarray:
        check_prompt(KEY, prompt)
        if prompt.kind == "box" and prompt.points:
            raise PromptError("SegVol cannot take a box and points together (its forward_test refuses them): "
                              "no corrective clicks after a box")
        data = self._memo.get(case, preprocess)
        model = self.model()
        torch = require(KEY, "torch")
        device = torch.device(self.device)
        text = self._text(prompt)
        boxes = self._box(case, data, prompt, torch, device) if prompt.kind == "box" else None
        points = self._points(case, data, prompt, torch, device) if prompt.kind != "box" and prompt.points else None
        image = torch.from_numpy(data.image)[None, None].to(device)
        zoom_out = torch.from_numpy(data.zoom_out)[None, None].to(device)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            if self.seed is not None:
                torch.manual_seed(self.seed)
            logits = model.forward_test(image=image, zoomed_image=zoom_out, text_prompt=text, bbox_prompt_group=boxes,
                                        point_prompt_group=points, use_zoom=self.use_zoom)
        if not hasattr(logits, "detach") or tuple(logits.shape) != (1, 1, *data.image.shape):
            shape = tuple(logits.shape) if hasattr(logits, "shape") else type(logits).__name__
            expected = (1, 1, *data.image.shape)
            raise ModelError(f"SegVol's forward_test returned {shape}; expected logits of shape {expected} (its input image)")
        logits = logits.detach().float().cpu()
        if torch.isnan(logits).any():
            raise ModelError("SegVol's forward_test returned NaN logits")
        mask = (torch.sigmoid(logits) > 0.5)[0, 0].numpy()  # save_preds: sigmoid > 0.5
        return data.crop.onto_case(np.asarray(mask, dtype=bool), case).astype(bool)
