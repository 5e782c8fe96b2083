"""The SAT-Pro adapter: text prompts (an organ's name and the scan's modality) through SAT's window inference, with
SAT's own preprocessing in MONAI, and the masks mapped back onto the scan's grid.

Each step follows zhaoziheng/SAT at 5676be5 (``data/inference_dataset.py``: ``load_image``, ``Normalization``,
``split_3d``, ``Inference_Dataset._merge_modality`` / ``_pad_if_necessary`` / ``__getitem__``;
``evaluate/inference_engine.py``: ``compute_gaussian``, ``inference``; ``model/text_encoder.py``,
``model/knowledge_encoder.py``, ``model/text_tower.py``, ``model/maskformer.py``, ``model/build_model.py``;
``inference.py``):

- ``load_image``: MONAI's own ``Orientationd(axcodes="RAS")``, ``Spacingd(pixdim=(1, 1, 3), mode="bilinear")``,
  ``CropForegroundd(source_key="image")`` (the box of the voxels whose raw value is > 0, e.g. HU > 0; margin 0) and
  ``ToTensord``, called as SAT calls them, on a MetaTensor of the case's voxels (float32, as ``LoadImaged`` reads them)
  with the case's RAS affine (what ``LoadImaged`` + ``EnsureChannelFirstd`` make of the NIfTI). The MetaTensor's
  affine after the crop is the preprocessed grid (SAT's ``Normalization`` turns the tensor into numpy and loses it,
  so the adapter keeps it first). The layout is (x, y, z) = SAT's (H, W, D). SAT pins monai 1.1.0; this runs the
  installed MONAI (1.6.1 here), checked against MONAI's own loading of the NIfTI and, with a checkout, SAT's
  ``load_image`` itself;
- ``Normalization``: CT: clip to [-500, 1000], then z-score over the whole cropped volume; any other modality: clip
  to the 0.5 / 99.5 percentiles, then z-score. In float32, as under the numpy 1.21 SAT pins;
- the modality: SAT's ``_merge_modality`` of the scan kind (``ct`` -> ``ct``, ``mri`` -> ``mri``, ``pet`` -> ``pet``),
  whose ``Text_Encoder`` code is ``{"ct": 0, "mri": 1, "us": 2, "pet": 3}``;
- ``split_3d``: windows of 288 x 288 x 96 voxels at half that stride, ``max(ceil(size / stride) - 1, 1)`` per axis,
  the last moved back to end at the border (at 0 if the volume is smaller); ``_pad_if_necessary`` pads a batch at the
  end with zeros to the window size; a one-channel image is repeated to 3 channels;
- ``inference``: per batch of windows, the network's logits (B, N, 288, 288, 96) for N names; ``sigmoid``; each
  window's probabilities (its unpadded part) weighted by ``compute_gaussian((288, 288, 96))`` (sigma 1/8 of the
  window, peak 10, float16, zeros replaced by the smallest value) and summed, divided by the summed weights,
  thresholded at 0.5. Under ``torch.cuda.amp.autocast()`` on a GPU, as SAT runs it. The summed probabilities stay
  on the CPU, one volume per name, as in SAT's script (13 names of a whole-body scan: a few GB);
- SAT saves that mask on the preprocessed grid with an identity affine. The adapter maps it back onto the scan's grid
  through world coordinates instead (`ModelGrid.onto_case`: nearest neighbour, from the kept affine), which undoes the
  crop, the resampling and the reorientation in one step; everything outside the crop is background.

The names: SAT takes bare lower-case names (``[label.lower() for label in ...]``, no template) from its vocabulary
(SAT-DS ``data/terminology_list.json``, read at 492df0e): `NAMES`. With ``names="prompt"`` a text prompt's own text
(lower-cased) is sent instead. `TRAINED` lists, per modality, the names SAT was trained on: "lung", "colon" and
"heart" exist only for CT, and SAT has no organ class at all for PET. What the adapter does with a name SAT has not
seen in the scan's modality is the option ``unseen``:

- ``"scan"`` (the default): ask anyway with the scan's own modality code, as SAT's ``inference.py`` does with
  whatever labels and modality a jsonl line gives (and as the UMD paper prompted SAT-Pro: the name and the modality);
- ``"ct"``: ask with the CT code (the modality the name was learned in);
- ``"error"``: raise `PromptError`, so that the runner records a failure for that organ.

SAT's queries do not interact (its ``TransformerDecoderLayer`` has no self-attention among queries; the logits of
each query are its own einsum), so with ``queries="scan"`` (the default) the first call on a scan asks for every
organ of ``case.organs`` in one pass, as SAT's script asks for all labels of a sample, and keeps the masks for the
next calls; ``queries="prompt"`` asks for one name per call.

SAT takes no clicks: a text prompt with corrective clicks raises `PromptError`.

The network sits behind `network`: any callable ``network(patches, names, modality_code)`` taking patches
(B, 3, *patch_size) float32 on the device, a list of names and an int code, and returning logits
(B, len(names), *patch_size) (tests pass a prompt echo). The default, `SATNetwork`, is SAT's own ``Maskformer``
(``UNET-L`` for SAT-Pro) and ``Knowledge_Encoder`` from a checkout of the code (`load_network`); it cannot run here
(SAT-Pro needs about 34 GB of GPU memory at one window per batch). `load_network` imports ``model/maskformer.py``
and ``model/knowledge_encoder.py`` as a private package, with SAT's own copy of ``dynamic_network_architectures``
(``model/dynamic-network-architectures-main``: its ``PlainConvUNet`` differs from the one on PyPI) standing in for
an installed one while they import. It follows ``build_maskformer`` /
``Text_Encoder`` / ``load_checkpoint`` without DDP: the ``module.`` prefix of the saved keys is stripped, the text
encoder's ``atlas_tower`` and ``temperature`` keys are dropped as SAT drops them, and both load with ``strict=True``
(SAT's default ``partial_load`` silently skips what does not match; here a mismatch is a `CheckpointError`). The text
features are ``Knowledge_Encoder.forward``'s lines with the tokens moved to the network's device (SAT's
``Text_Tower`` moves them to ``torch.cuda.current_device()``, which fails on a CPU).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from umd_dataset.errors import CheckpointError, InvalidOptionError, ModelError, ModelUnavailableError, PromptError, check_choice
from umd_dataset.evaluation.adapters.base import ModelGrid, ScanMemo, adapter_spec, check_prompt, find_weights, require
from umd_dataset.evaluation.case import Case

__all__ = [
    "MODALITY_CODES", "NAMES", "PATCH_SIZE", "SPACING_MM", "TRAINED", "SATInput", "SATModel", "SATNetwork", "compute_gaussian",
    "load_network", "load_state", "normalization", "preprocess", "split_3d",
]

KEY = "sat-pro"
#: SAT's window (``crop_size``): the Maskformer's positional embedding is fixed to it
PATCH_SIZE = (288, 288, 96)
#: ``Spacingd(pixdim=(1, 1, 3))`` on the RAS axes
SPACING_MM = (1.0, 1.0, 3.0)
#: ``Text_Encoder.forward``'s ``modality_code_dict``
MODALITY_CODES = {"ct": 0, "mri": 1, "us": 2, "pet": 3}
#: the scan kinds of a release, as SAT's ``_merge_modality`` names them
MODALITIES = {"ct": "ct", "mri": "mri", "pet": "pet"}
#: SAT's names of the UMD organs (SAT-DS ``terminology_list.json``: there is no "bladder" nor "lungs")
NAMES = {
    "liver": "liver", "spleen": "spleen", "kidney_left": "left kidney", "kidney_right": "right kidney",
    "pancreas": "pancreas", "stomach": "stomach", "esophagus": "esophagus", "colon": "colon",
    "urinary_bladder": "urinary bladder", "heart": "heart", "aorta": "aorta", "lung": "lung", "brain": "brain",
}
#: the names SAT was trained on per modality (``ct_*`` / ``mri_*`` / ``pet_*`` entries of ``terminology_list.json``)
TRAINED = {
    "ct": frozenset(NAMES.values()),
    "mri": frozenset(NAMES.values()) - {"lung", "colon", "heart"},
    "pet": frozenset(),  # SAT's PET classes are tumours and lymph nodes only
}
UNSEEN = ("scan", "ct", "error")
NAME_SOURCES = ("sat", "prompt")
QUERIES = ("scan", "prompt")
BACKBONES = ("UNET-L", "UNET")  # SAT-Pro; SAT-Nano with its own checkpoints
_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
_AXCODES = re.compile(r"^(?=.*[LR])(?=.*[AP])(?=.*[IS])[LRAPIS]{3}$")


def normalization(image: np.ndarray, modality: str) -> np.ndarray:
    """SAT's ``Normalization``: CT clipped to [-500, 1000], other modalities to their 0.5 / 99.5 percentiles, then a
    z-score over the whole volume (float32).

    Raises:
        ModelError: a constant volume (no standard deviation).
    """
    image = np.asarray(image, dtype=np.float32)
    if modality.lower() == "ct":
        lower, upper = np.float32(-500), np.float32(1000)
    else:
        lower, upper = np.float32(np.percentile(image, 0.5)), np.float32(np.percentile(image, 99.5))
    image = np.clip(image, lower, upper)
    std = np.std(image)
    if not std > 0:
        raise ModelError("SAT z-scores the cropped volume, and this one is constant after clipping (no standard deviation)")
    return ((image - np.mean(image)) / std).astype(np.float32, copy=False)


@dataclass
class SATInput:
    """One scan as SAT sees it, and the masks asked for so far.

    Attributes:
        image: the reoriented, resampled, cropped, normalised volume (x, y, z), float32.
        grid: its grid (the affine MONAI's transforms leave on the MetaTensor).
        modality: SAT's modality name (``ct``, ``mri``, ``pet``).
        masks: the masks on `grid` per (name, modality code), kept for the scan's next organs.
    """

    image: np.ndarray
    grid: ModelGrid
    modality: str
    masks: dict = field(default_factory=dict)


def sat_modality(case: Case) -> str:
    """SAT's modality of the case's scan (``_merge_modality``)."""
    if case.scan not in MODALITIES:
        raise ModelError(f"SAT knows the modalities {', '.join(MODALITIES)}; the scan {case.scan!r} is none of them")
    return MODALITIES[case.scan]


def preprocess(case: Case, *, orientation: str = "RAS", spacing_mm=SPACING_MM) -> SATInput:
    """SAT's ``load_image`` of the case, and the grid of the result.

    Raises:
        ModelUnavailableError: MONAI is not installed.
        ModelError: no voxel > 0 to crop to, or a constant volume.
    """
    torch = require(KEY, "torch")
    transforms = require(KEY, "monai.transforms")
    meta = require(KEY, "monai.data")
    modality = sat_modality(case)
    image = meta.MetaTensor(torch.from_numpy(np.asarray(case.image, dtype=np.float32).copy())[None],
                            affine=torch.as_tensor(np.asarray(case.affine, dtype=np.float64)))
    loader = transforms.Compose([
        transforms.Orientationd(axcodes=orientation, keys=["image"]),
        transforms.Spacingd(keys=["image"], pixdim=tuple(spacing_mm), mode=("bilinear")),
        transforms.CropForegroundd(keys=["image"], source_key="image"),
        transforms.ToTensord(keys=["image"]),
    ])
    result = loader({"image": image})["image"]
    affine = np.asarray(result.affine, dtype=np.float64)  # before Normalization, which drops it
    array = np.asarray(result.detach().cpu().numpy(), dtype=np.float32)[0]
    if min(array.shape) == 0:
        raise ModelError("SAT crops the image to its voxels above 0 (raw values), and this image has none")
    return SATInput(np.ascontiguousarray(normalization(array, modality)), ModelGrid(tuple(array.shape), affine), modality)


def split_3d(shape, patch_size=PATCH_SIZE, stride=None) -> list[tuple[int, int, int, int, int, int]]:
    """``split_3d``'s windows ``(h_s, h_e, w_s, w_e, d_s, d_e)`` over a volume of `shape` (stride: half the window)."""
    stride = [p // 2 for p in patch_size] if stride is None else list(stride)
    ranges = []
    for size, patch, step in zip(shape, patch_size, stride):
        axis = []
        for i in range(max(math.ceil(size / step) - 1, 1)):
            start = i * step
            end = start + patch
            if end > size:
                start, end = max(size - patch, 0), size
            axis.append((start, end))
        ranges.append(axis)
    return [h + w + d for h in ranges[0] for w in ranges[1] for d in ranges[2]]


def compute_gaussian(tile_size, sigma_scale: float = 1.0 / 8, value_scaling_factor: float = 10, dtype=np.float16) -> np.ndarray:
    """``compute_gaussian``: the window's weights (a Gaussian peaked at its centre voxel, no zeros), read-only.

    SAT filters a 3D delta with ``scipy.ndimage.gaussian_filter``; that filter is separable and every sum over the
    delta has one non-zero term, so the outer product of the three 1D filtered deltas, multiplied in the same order,
    is the same array bit for bit (tested), ten times faster."""
    return _gaussian(tuple(int(n) for n in tile_size), float(sigma_scale), float(value_scaling_factor), np.dtype(dtype))


@lru_cache(maxsize=4)
def _gaussian(tile_size, sigma_scale, value_scaling_factor, dtype) -> np.ndarray:
    from scipy.ndimage import gaussian_filter1d

    kernels = []
    for size in tile_size:
        delta = np.zeros(size)
        delta[size // 2] = 1
        kernels.append(gaussian_filter1d(delta, size * sigma_scale, 0, mode="constant", cval=0))
    weights = (kernels[0][:, None] * kernels[1][None, :])[:, :, None] * kernels[2][None, None, :]
    weights = (weights / np.max(weights) * value_scaling_factor).astype(dtype)
    weights[weights == 0] = np.min(weights[weights != 0])
    weights.setflags(write=False)
    return weights


def load_state(module, path: Path, *, drop=()) -> None:
    """Load ``checkpoint["model_state_dict"]`` of a (DDP-saved) SAT checkpoint into `module`, strictly.

    Keys lose their ``module.`` prefix; keys containing any of `drop` are left out (as SAT's ``Text_Encoder`` leaves
    out ``atlas_tower`` and ``temperature``); a ``position_ids`` buffer that older transformers saved and the current
    one no longer keeps is left out too.

    Raises:
        CheckpointError: not a SAT checkpoint, or keys or shapes that do not match.
    """
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path} cannot be read as a SAT checkpoint (torch.load, weights_only=True): {error}") from error
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model_state_dict"), dict):
        raise CheckpointError(f"{path} is not a SAT checkpoint: it has no 'model_state_dict'")
    expected = module.state_dict()
    state = {}
    for key, value in checkpoint["model_state_dict"].items():
        key = key.removeprefix("module.")
        if any(d in key for d in drop) or (key.endswith("position_ids") and key not in expected):
            continue
        state[key] = value
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not match SAT's {type(module).__name__}: {error}") from error


class SATNetwork:
    """SAT's ``Maskformer`` and ``Knowledge_Encoder`` as the adapter's boundary: ``network(patches, names, code)``."""

    def __init__(self, model, encoder) -> None:
        self.model, self.encoder, self._queries = model, encoder, {}

    def queries(self, names, modality_code: int, device):
        """``Knowledge_Encoder.forward``: projected BioLORD features of the names plus the modality embedding (N, 768)."""
        import torch

        key = (tuple(names), int(modality_code), str(device))
        if key not in self._queries:
            tower = self.encoder.text_tower
            tokens = {k: v.to(device) for k, v in tower.tokenizer.tokenize(list(names)).items()}
            feature = tower.mean_pooling(tower.biolord(**tokens), tokens["attention_mask"])
            codes = torch.full((len(names),), int(modality_code), dtype=torch.long, device=device)
            self._queries[key] = self.encoder.projection_layer(feature) + self.encoder.modality_embed(codes)
        return self._queries[key]

    def __call__(self, patches, names, modality_code: int):
        return self.model(queries=[self.queries(names, modality_code, patches.device)], image_input=patches)


def _import_sat(repo: Path):
    """SAT's ``model/maskformer.py`` and ``model/knowledge_encoder.py`` from a checkout, as a private package, with
    the U-Net code SAT vendors (``model/dynamic-network-architectures-main``, its own version of that package)."""
    name = "_umd_sat_model"
    for module in ("einops", "positional_encodings", "transformers", "scipy"):
        require(KEY, module)
    vendored = repo / "model" / "dynamic-network-architectures-main"
    saved = {}
    if vendored.is_dir():  # SAT's own version of the package stands in for an installed one while SAT's code imports
        saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] == "dynamic_network_architectures"}
    if vendored.is_dir():
        sys.path.insert(0, str(vendored))
    try:
        folder = repo / "model"
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
        return importlib.import_module(f"{name}.maskformer"), importlib.import_module(f"{name}.knowledge_encoder")
    except ImportError as error:
        raise ModelUnavailableError(
            f"SAT's code in {repo} needs a package that is not installed here ({error}). "
            f"Install it with: {adapter_spec(KEY).install}"
        ) from error
    finally:
        if vendored.is_dir():
            sys.path.remove(str(vendored))
            for k in [k for k in sys.modules if k.split(".")[0] == "dynamic_network_architectures"]:
                del sys.modules[k]
            sys.modules.update(saved)


def load_network(repo: Path, folder: Path, *, device: str = "cpu", backbone: str = "UNET-L", patch_size=PATCH_SIZE,
                 checkpoint: str = "Pro/SAT_Pro.pth", text_encoder_checkpoint: str = "Pro/text_encoder.pth",
                 biolord: str = "BioLORD-2023-C") -> SATNetwork:
    """SAT's network from a checkout of zhaoziheng/SAT (`repo`) and a folder of its weights (`folder`: the checkpoints
    of the Hugging Face repo zzh99/SAT and the BioLORD-2023-C model; relative paths are inside it).

    Raises:
        ModelUnavailableError: a missing file or package.
        CheckpointError: a checkpoint that does not match.
    """
    import torch

    given = {"checkpoint": checkpoint, "text_encoder_checkpoint": text_encoder_checkpoint, "biolord": biolord}
    paths = {what: Path(p) if Path(p).is_absolute() else folder / p for what, p in given.items()}
    for what, path in paths.items():
        if not path.exists():
            raise ModelUnavailableError(
                f"SAT's {what} {path} does not exist (pass {what}=PATH). They are {adapter_spec(KEY).weights}."
            )
    maskformer, knowledge = _import_sat(repo)
    model = maskformer.Maskformer(backbone, list(patch_size), [32, 32, 32], False)  # build_maskformer, without DDP
    load_state(model, paths["checkpoint"])
    encoder = knowledge.Knowledge_Encoder(biolord_checkpoint=str(paths["biolord"]))  # Text_Encoder(text_encoder="ours")
    load_state(encoder, paths["text_encoder_checkpoint"], drop=("atlas_tower", "temperature"))
    device = torch.device(device)
    return SATNetwork(model.to(device).eval(), encoder.to(device).eval())


class SATModel:
    """SAT-Pro as a promptable model (text prompts).

    Args:
        weights: the folder of SAT's weights (default: ``$UMD_SAT_WEIGHTS``; see `load_network`).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        sat_repo: a checkout of zhaoziheng/SAT (default: ``$UMD_SAT_REPO``, else ``SAT`` inside the weights folder).
        checkpoint, text_encoder_checkpoint, biolord: SAT's two checkpoints and the BioLORD-2023-C model folder,
            relative to the weights folder or absolute.
        backbone: ``UNET-L`` (SAT-Pro) or ``UNET`` (SAT-Nano, with its checkpoints).
        patch_size, stride: the windows (SAT's 288 x 288 x 96 at half stride; the trained network takes no other).
        orientation: the axis codes of ``Orientationd`` (SAT's README: ``ASR`` for sagittal images).
        batch_size: windows per network call (SAT's ``batchsize_3d``).
        unseen: ``scan``, ``ct`` or ``error``: a name SAT has not seen in the scan's modality (module docstring).
        names: ``sat`` (`NAMES`) or ``prompt`` (the prompt's own text).
        queries: ``scan`` (every organ of the case in one pass, kept) or ``prompt`` (one name per call).
        network: ``network(patches, names, modality_code) -> logits``, used instead of SAT's own (tests).

    Raises:
        InvalidOptionError, UnknownNameError: bad option values.
    """

    kind = "promptable"
    name = KEY

    def __init__(self, weights=None, *, device: str = "cpu", sat_repo=None, checkpoint: str = "Pro/SAT_Pro.pth",
                 text_encoder_checkpoint: str = "Pro/text_encoder.pth", biolord: str = "BioLORD-2023-C", backbone: str = "UNET-L",
                 patch_size=PATCH_SIZE, stride=None, orientation: str = "RAS", batch_size: int = 1, unseen: str = "scan",
                 names: str = "sat", queries: str = "scan", network=None) -> None:
        if not isinstance(device, str) or not _DEVICE.match(device):
            raise InvalidOptionError(f"device must be cpu, cuda or cuda:N, got {device!r}")
        self.patch_size = _triple(patch_size, "patch_size")
        self.stride = tuple(p // 2 for p in self.patch_size) if stride is None else _triple(stride, "stride")
        if any(s > p for s, p in zip(self.stride, self.patch_size)):
            raise InvalidOptionError(f"stride {self.stride} must not exceed patch_size {self.patch_size} (gaps)")
        if not isinstance(orientation, str) or not _AXCODES.match(orientation):
            raise InvalidOptionError(f"orientation must be three axis codes such as RAS or ASR, got {orientation!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidOptionError(f"batch_size must be a positive integer, got {batch_size!r}")
        if network is not None and not callable(network):
            raise InvalidOptionError(f"network must be callable as network(patches, names, code), got {type(network).__name__}")
        self.weights, self.device, self.sat_repo = weights, device, sat_repo
        self.checkpoint, self.text_encoder_checkpoint, self.biolord = checkpoint, text_encoder_checkpoint, biolord
        self.backbone = check_choice(backbone, BACKBONES, "SAT backbone")
        self.orientation, self.batch_size = orientation, batch_size
        self.unseen = check_choice(unseen, UNSEEN, "rule for names SAT has not seen in a modality")
        self.names, self.queries = check_choice(names, NAME_SOURCES, "name source"), check_choice(queries, QUERIES, "query mode")
        self._network, self._built, self._memo = network, False, ScanMemo()

    def __getstate__(self):  # a built network holds GPU memory: a process worker builds its own
        state = dict(self.__dict__)
        if self._built:
            state["_network"], state["_built"] = None, False
        state["_memo"] = ScanMemo()
        return state

    def _repo(self, folder: Path) -> Path:
        given = self.sat_repo or os.environ.get("UMD_SAT_REPO") or folder / "SAT"
        repo = Path(given).expanduser()
        if not (repo / "model" / "maskformer.py").is_file():
            raise ModelUnavailableError(
                f"{repo} is not a checkout of SAT's code (no model/maskformer.py): clone https://github.com/zhaoziheng/SAT "
                "and pass sat_repo=PATH or set UMD_SAT_REPO"
            )
        return repo

    def network(self):
        """The network (SAT's own, built on first use, unless one was given)."""
        if self._network is None:
            require(KEY, "torch")
            folder = find_weights(KEY, self.weights, folder=True)
            self._network = load_network(
                self._repo(folder), folder, device=self.device, backbone=self.backbone, patch_size=self.patch_size,
                checkpoint=self.checkpoint, text_encoder_checkpoint=self.text_encoder_checkpoint, biolord=self.biolord,
            )
            self._built = True
        return self._network

    def _preprocess(self, case: Case) -> SATInput:
        return preprocess(case, orientation=self.orientation)

    def query(self, organ: str, text: str | None, modality: str) -> tuple[str, int]:
        """(name, modality code) SAT is asked for `organ` on a scan of `modality`.

        Raises:
            PromptError: no name, or (``unseen="error"``) a name SAT has not seen in that modality.
        """
        if self.names == "prompt" and text:
            name = text.lower()
        elif organ in NAMES:
            name = NAMES[organ]
        else:
            raise PromptError(f"SAT has no name for the organ {organ!r} here (known: {', '.join(NAMES)})")
        if name in TRAINED[modality] or self.unseen == "scan":
            return name, MODALITY_CODES[modality]
        if self.unseen == "ct":
            return name, MODALITY_CODES["ct"]
        raise PromptError(
            f"SAT was not trained on {name!r} in {modality.upper()} (its {modality} classes: "
            f"{', '.join(sorted(TRAINED[modality])) or 'none of the UMD organs'}); unseen='scan' or 'ct' asks anyway"
        )

    def infer(self, data: SATInput, names: list[str], modality_code: int) -> np.ndarray:
        """SAT's window inference of `names` on the preprocessed volume: bool masks (len(names), x, y, z) on `data.grid`."""
        torch = require(KEY, "torch")
        network, device = self.network(), torch.device(self.device)
        image = torch.from_numpy(data.image)[None]  # C, H, W, D
        _, h, w, d = image.shape
        windows = split_3d((h, w, d), self.patch_size, self.stride)
        gaussian = torch.tensor(np.array(compute_gaussian(self.patch_size))).to(device)
        prediction = torch.zeros((len(names), h, w, d))
        accumulation = torch.zeros((h, w, d))  # SAT keeps one per name; the weights are the same for every name
        on_gpu = device.type == "cuda"
        with torch.no_grad(), torch.autocast(device_type="cuda", enabled=on_gpu):
            for first in range(0, len(windows), self.batch_size):
                batch = windows[first : first + self.batch_size]
                patches = torch.stack([image[:, y1:y2, x1:x2, z1:z2] for y1, y2, x1, x2, z1, z2 in batch], dim=0)
                pad = [p - s for p, s in zip(self.patch_size, patches.shape[2:])]
                if sum(pad) > 0:  # _pad_if_necessary
                    patches = torch.nn.functional.pad(patches, (0, pad[2], 0, pad[1], 0, pad[0]), "constant", 0)
                patches = patches.repeat(1, 3, 1, 1, 1)  # repeat(patch, 'b c h w d -> b (c r) h w d', r=3)
                logits = network(patches.to(device), list(names), int(modality_code))
                expected = (len(batch), len(names), *self.patch_size)
                if not hasattr(logits, "detach") or tuple(logits.shape) != expected:
                    shape = tuple(logits.shape) if hasattr(logits, "shape") else type(logits).__name__
                    raise ModelError(
                        f"SAT's network returned {shape} for {len(batch)} windows and {len(names)} names; expected {expected}"
                    )
                if torch.isnan(logits).any():
                    raise ModelError("SAT's network returned NaN logits")
                probabilities = torch.sigmoid(logits).detach()
                for b, (y1, y2, x1, x2, z1, z2) in enumerate(batch):
                    weights = gaussian[: y2 - y1, : x2 - x1, : z2 - z1]
                    prediction[:, y1:y2, x1:x2, z1:z2] += (probabilities[b, :, : y2 - y1, : x2 - x1, : z2 - z1] * weights).cpu()
                    accumulation[y1:y2, x1:x2, z1:z2] += weights.cpu()
        return (prediction / accumulation > 0.5).numpy()

    def __call__(self, case: Case, prompt) -> np.ndarray:
        check_prompt(KEY, prompt)
        if prompt.points:
            raise PromptError("SAT takes an organ's name only: it cannot take corrective clicks (run it with iterations=0)")
        data = self._memo.get(case, self._preprocess)
        key = self.query(prompt.organ, prompt.text, data.modality)
        if key not in data.masks:
            wanted = [key]
            if self.queries == "scan":  # the scan's other organs asked with the same modality code, in the same pass
                for organ in case.organs:
                    try:
                        other = self.query(organ, None, data.modality)
                    except PromptError:
                        continue
                    if other[1] == key[1] and other not in data.masks and other not in wanted:
                        wanted.append(other)
            masks = self.infer(data, [name for name, _ in wanted], key[1])
            data.masks.update(zip(wanted, masks))
        return data.grid.onto_case(np.asarray(data.masks[key], dtype=bool), case).astype(bool)


def _triple(value, what: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or min(values) < 1 or any(float(v) != int(v) for v in value):
        raise InvalidOptionError(f"{what} must be three positive integers (x, y, z voxels), got {value!r}")
    return values
