"""SAT-Pro: the adapter's geometry round trip through a prompt echo of SAT's network, its preprocessing against
MONAI's own loading of the NIfTI, the window inference, the prompt rules, the checkpoint loader and the errors.

SAT's code has no licence, so none of it is copied here. Where a checkout of it is at hand (``$UMD_SAT_REPO``, a clone
of zhaoziheng/SAT), `test_equal_to_sats_own_code` imports SAT's own ``load_image``, ``split_3d``, ``compute_gaussian``,
``Inference_Dataset`` and ``inference`` (``data/inference_dataset.py``, ``evaluate/inference_engine.py``) and
compares the adapter with them end to end; without one it is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from echo import SCANS, assert_centred, blob_world, echo_case, point_prompt
from scipy.ndimage import gaussian_filter

from umd_dataset.errors import (
    CheckpointError,
    InvalidOptionError,
    ModelError,
    ModelUnavailableError,
    PromptError,
    UnknownNameError,
)
from umd_dataset.evaluation.adapters import sat
from umd_dataset.evaluation.adapters.base import ModelGrid
from umd_dataset.evaluation.adapters.sat import (
    MODALITY_CODES,
    NAMES,
    PATCH_SIZE,
    TRAINED,
    SATModel,
    SATNetwork,
    compute_gaussian,
    load_state,
    normalization,
    preprocess,
    split_3d,
)
from umd_dataset.evaluation.case import Case
from umd_dataset.evaluation.prompts import Prompt

SMALL = (32, 32, 8)  # windows for the echo scans (a few dozen per scan)


def text_prompt(organ: str = "liver", organ_id: int = 1, text: str | None = None) -> Prompt:
    return Prompt("text", organ, organ_id, text=text or organ.replace("_", " ").capitalize())


def bright_level(case: Case) -> float:
    """Half-way between the body and the blob's peak on SAT's normalised volume."""
    image = preprocess(case).image
    return float((np.median(image) + image.max()) / 2)


class EchoNetwork:
    """SAT's boundary, ``network(patches, names, modality_code)``: patches (B, 3, *window) float32, three identical
    channels (``repeat`` of one), zero padding at the end; a list of lower-case names; an int code. It answers for
    every name with logits (B, N, *window): +10 on the voxels of its patch brighter than `level` (the blob's core, a
    ball in world space), -10 elsewhere, so each window marks the part of the ball it sees."""

    def __init__(self, level: float, window=SMALL) -> None:
        self.level, self.window, self.calls = level, tuple(window), []

    def __call__(self, patches, names, modality_code):
        assert isinstance(patches, torch.Tensor) and patches.dtype == torch.float32 and patches.ndim == 5
        assert tuple(patches.shape[1:]) == (3, *self.window)
        assert torch.equal(patches[:, 0], patches[:, 1]) and torch.equal(patches[:, 0], patches[:, 2])
        assert isinstance(names, list) and names and all(isinstance(n, str) and n == n.lower() for n in names)
        assert isinstance(modality_code, int) and modality_code in MODALITY_CODES.values()
        self.calls.append({"batch": patches.shape[0], "names": list(names), "code": modality_code})
        bright = torch.where(patches[:, :1] >= self.level, 10.0, -10.0)
        return bright.repeat(1, len(names), 1, 1, 1)


@pytest.mark.parametrize("scan", list(SCANS))
def test_text_mask_is_centred_on_the_blob_in_world_space(scan):
    case = echo_case(scan)
    echo = EchoNetwork(bright_level(case))
    mask = SATModel(network=echo, patch_size=SMALL)(case, text_prompt())
    assert mask.dtype == bool
    assert_centred(mask, case, blob_world(case), f"SAT text on {scan}")
    assert len(echo.calls) > 1 and {c["code"] for c in echo.calls} == {MODALITY_CODES[case.scan]}
    assert echo.calls[0]["names"] == ["liver"]


@pytest.mark.parametrize("scan", ["oblique"])
def test_sats_own_window_on_a_small_volume_is_padded_and_centred(scan):
    case = echo_case(scan)
    echo = EchoNetwork(bright_level(case), PATCH_SIZE)
    mask = SATModel(network=echo)(case, text_prompt())  # one 288 x 288 x 96 window, zero-padded at the end
    assert len(echo.calls) == 1 and echo.calls[0]["batch"] == 1
    assert_centred(mask, case, blob_world(case), f"SAT 288x288x96 on {scan}")


def test_sats_own_output_grid_would_fail_the_round_trip(monkeypatch):
    """SAT saves its masks on the preprocessed grid with an identity affine: mapped back that way, the echo's mask
    lands elsewhere, so the round trip catches a wrong way back."""
    case = echo_case("lps")
    original = sat.preprocess

    def identity_grid(case, **options):
        data = original(case, **options)
        return replace(data, grid=ModelGrid(data.grid.shape, np.eye(4)))

    monkeypatch.setattr(sat, "preprocess", identity_grid)
    mask = SATModel(network=EchoNetwork(bright_level(case)), patch_size=SMALL)(case, text_prompt())
    with pytest.raises(AssertionError):
        assert_centred(mask, case, blob_world(case), "identity affine")


@pytest.mark.parametrize("scan", ["lps", "anisotropic", "oblique", "pet"])
def test_preprocessing_equals_monai_loading_the_nifti(scan, tmp_path):
    """SAT's load_image chain (LoadImaged, EnsureChannelFirstd, Orientationd RAS, Spacingd 1x1x3 bilinear,
    CropForegroundd) on the NIfTI gives the adapter's volume and grid, before SAT's Normalization."""
    from monai import transforms

    written = echo_case(scan)
    path = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(written.image), written.affine), path)
    back = nib.load(path)  # the header stores a float32 affine: compare on the file's own grid
    case = replace(written, image=np.asarray(back.dataobj), affine=back.affine)
    loaded = transforms.Compose([
        transforms.LoadImaged(keys=["image"]), transforms.EnsureChannelFirstd(keys=["image"]),
        transforms.Orientationd(axcodes="RAS", keys=["image"]),
        transforms.Spacingd(keys=["image"], pixdim=(1, 1, 3), mode="bilinear"),
        transforms.CropForegroundd(keys=["image"], source_key="image"), transforms.ToTensord(keys=["image"]),
    ])({"image": str(path)})["image"]
    data = preprocess(case)
    modality = {"ct": "ct", "mri": "mri", "pet": "pet"}[case.scan]
    assert data.image.shape == tuple(loaded.shape[1:]) and data.modality == modality
    np.testing.assert_allclose(data.image, normalization(loaded.numpy()[0], modality), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.grid.affine, np.asarray(loaded.affine), atol=1e-6)
    spacing = np.linalg.norm(data.grid.affine[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, (1, 1, 3), atol=1e-6)
    if scan != "oblique":  # RAS: the axes run toward +x, +y, +z
        assert (np.diag(data.grid.affine)[:3] > 0).all()


def test_normalization_follows_sat():
    ct = np.array([-1000, -500, 0, 400, 1000, 3000], dtype=np.float32)
    clipped = np.clip(ct, -500, 1000)
    np.testing.assert_allclose(normalization(ct, "ct"), (clipped - clipped.mean()) / clipped.std(), rtol=1e-6)
    mr = np.arange(1000, dtype=np.float32)
    low, high = np.percentile(mr, 0.5), np.percentile(mr, 99.5)
    clipped = np.clip(mr, low, high)
    np.testing.assert_allclose(normalization(mr, "mri"), (clipped - clipped.mean()) / clipped.std(), rtol=1e-5)
    assert normalization(mr, "pet").dtype == np.float32
    with pytest.raises(ModelError, match="constant"):
        normalization(np.full(10, 2000, np.float32), "ct")


def test_windows_and_weights_follow_split_3d_and_compute_gaussian():
    assert split_3d((10, 10, 10), (288, 288, 96)) == [(0, 10, 0, 10, 0, 10)]  # smaller than a window: one, padded later
    windows = split_3d((300, 288, 100), (288, 288, 96))
    assert windows == [(0, 288, 0, 288, 0, 96), (0, 288, 0, 288, 4, 100), (12, 300, 0, 288, 0, 96), (12, 300, 0, 288, 4, 100)]
    assert split_3d((70, 10, 9), (32, 32, 8), (16, 16, 4)) == [
        (h, h + 32, 0, 10, d, d + 8) if h + 32 <= 70 else (38, 70, 0, 10, d, d + 8)
        for h in (0, 16, 32, 48) for d in (0, 1)
    ]  # ceil(70/16)-1 = 4 windows (the last moved back to 38..70), ceil(9/4)-1 = 2 (the last moved back to 1..9)
    weights = compute_gaussian(SMALL)
    assert weights.dtype == np.float16 and weights.shape == SMALL and (weights > 0).all()
    assert weights[16, 16, 4] == weights.max() == np.float16(10)
    for tile in [SMALL, (33, 17, 9), (64, 48, 16)]:  # SAT's own way: a 3D delta through gaussian_filter
        delta = np.zeros(tile)
        delta[tuple(n // 2 for n in tile)] = 1
        filtered = gaussian_filter(delta, [n / 8 for n in tile], 0, mode="constant", cval=0)
        expected = (filtered / np.max(filtered) * 10).astype(np.float16)
        expected[expected == 0] = np.min(expected[expected != 0])
        assert np.array_equal(compute_gaussian(tile), expected)


def test_one_pass_per_scan_for_its_organs_and_the_name_rules():
    case = echo_case("lps", organs=("liver", "spleen", "urinary_bladder", "lung"))
    echo = EchoNetwork(bright_level(case))
    model = SATModel(network=echo, patch_size=SMALL)
    first = model(case, text_prompt())
    windows = len(echo.calls)
    assert {tuple(c["names"]) for c in echo.calls} == {("liver", "spleen", "urinary bladder", "lung")}
    again = model(case, text_prompt("urinary_bladder", 9))
    assert len(echo.calls) == windows and np.array_equal(first, again)  # from the pass, kept
    one = EchoNetwork(bright_level(case))
    SATModel(network=one, patch_size=SMALL, queries="prompt")(case, text_prompt("spleen", 2))
    assert {tuple(c["names"]) for c in one.calls} == {("spleen",)} and len(one.calls) == windows
    by_text = EchoNetwork(bright_level(case))
    SATModel(network=by_text, patch_size=SMALL, names="prompt", queries="prompt")(case, text_prompt(text="Hepar"))
    assert by_text.calls[0]["names"] == ["hepar"]
    batched = EchoNetwork(bright_level(case))
    mask = SATModel(network=batched, patch_size=SMALL, batch_size=4)(case, text_prompt())
    assert np.array_equal(mask, first) and max(c["batch"] for c in batched.calls) == 4
    assert NAMES["urinary_bladder"] == "urinary bladder" and set(NAMES) == set(sat.NAMES)


def test_names_sat_has_not_seen_in_a_modality():
    mri = echo_case("anisotropic", organs=("liver", "lung"))
    echo = EchoNetwork(bright_level(mri))
    SATModel(network=echo, patch_size=SMALL)(mri, text_prompt("lung", 12))  # unseen="scan": the scan's own code
    assert {c["code"] for c in echo.calls} == {MODALITY_CODES["mri"]} and echo.calls[0]["names"] == ["lung", "liver"]
    as_ct = EchoNetwork(bright_level(mri))
    SATModel(network=as_ct, patch_size=SMALL, unseen="ct")(mri, text_prompt("lung", 12))
    assert {c["code"] for c in as_ct.calls} == {MODALITY_CODES["ct"]} and as_ct.calls[0]["names"] == ["lung"]  # liver stays MRI
    with pytest.raises(PromptError, match="not trained on 'lung' in MRI"):
        SATModel(network=as_ct, patch_size=SMALL, unseen="error")(mri, text_prompt("lung", 12))
    pet = echo_case("pet")
    with pytest.raises(PromptError, match="none of the UMD organs"):
        SATModel(network=EchoNetwork(0.0), patch_size=SMALL, unseen="error")(pet, text_prompt())
    assert TRAINED["ct"] == set(NAMES.values()) and not TRAINED["pet"]


def test_prompts_it_cannot_take_and_bad_options():
    case = echo_case("lps")
    model = SATModel(network=EchoNetwork(0.0), patch_size=SMALL)
    with pytest.raises(PromptError, match="takes text prompts"):
        model(case, point_prompt(case))
    with pytest.raises(PromptError, match="corrective clicks"):
        model(case, text_prompt().with_click((1, 2, 3), 1, 1))
    bad = [({"patch_size": (0, 32, 8)}, InvalidOptionError), ({"patch_size": "abc"}, InvalidOptionError),
           ({"stride": (64, 16, 4), "patch_size": SMALL}, InvalidOptionError), ({"orientation": "RAX"}, InvalidOptionError),
           ({"batch_size": 0}, InvalidOptionError), ({"device": "gpu"}, InvalidOptionError),
           ({"network": "net"}, InvalidOptionError),
           ({"unseen": "skip"}, UnknownNameError), ({"names": "clip"}, UnknownNameError), ({"queries": "all"}, UnknownNameError),
           ({"backbone": "UNET-XL"}, UnknownNameError)]
    for options, error in bad:
        with pytest.raises(error):
            SATModel(**options)
    assert SATModel(orientation="ASR", patch_size=[32, 32, 8]).stride == (16, 16, 4)


def test_wrong_network_outputs_and_images_raise_model_errors():
    case = echo_case("lps")
    level = bright_level(case)

    def cut(patches, names, code):
        return EchoNetwork(level)(patches, names, code)[..., :-1]

    def nan(patches, names, code):
        return EchoNetwork(level)(patches, names, code) * float("nan")

    with pytest.raises(ModelError, match="expected"):
        SATModel(network=cut, patch_size=SMALL)(case, text_prompt())
    with pytest.raises(ModelError, match="NaN"):
        SATModel(network=nan, patch_size=SMALL)(case, text_prompt())
    air = replace(case, image=np.full(case.image.shape, -1000, np.int16))
    with pytest.raises(ModelError, match="above 0"):
        SATModel(network=EchoNetwork(level), patch_size=SMALL)(air, text_prompt())
    with pytest.raises(ModelError, match="modalities"):
        SATModel(network=EchoNetwork(level), patch_size=SMALL)(replace(case, scan="us"), text_prompt())


def test_state_travels_without_a_built_network():
    case = echo_case("pet")
    model = SATModel(network=EchoNetwork(bright_level(case)), patch_size=SMALL)
    model(case, text_prompt())
    clone = pickle.loads(pickle.dumps(model))
    assert isinstance(clone._network, EchoNetwork) and clone._memo._key is None
    model._built = True
    assert pickle.loads(pickle.dumps(model))._network is None


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 3)
        self.register_buffer("position_ids", torch.arange(3), persistent=False)


def test_checkpoints_load_strictly_without_the_ddp_prefix(tmp_path):
    source = Tiny()
    saved = {"module." + k: v for k, v in source.state_dict().items()}
    path = tmp_path / "sat.pth"
    extra = {"module.text_tower.biolord.embeddings.position_ids": torch.arange(3), "module.atlas_tower.x": torch.zeros(1),
             "module.temperature": torch.ones(())}
    torch.save({"model_state_dict": {**saved, **extra}, "step": 3}, path)
    target = Tiny()
    load_state(target, path, drop=("atlas_tower", "temperature"))
    assert torch.equal(target.layer.weight, source.layer.weight)
    with pytest.raises(CheckpointError, match="atlas_tower"):  # SAT's model checkpoint keeps no such keys: strict
        load_state(Tiny(), path)
    torch.save({"model_state_dict": {"module.layer.weight": source.layer.weight}}, path)
    with pytest.raises(CheckpointError, match="layer.bias"):
        load_state(Tiny(), path)
    torch.save({"weights": 1}, path)
    with pytest.raises(CheckpointError, match="model_state_dict"):
        load_state(Tiny(), path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_state(Tiny(), path)


def test_sat_network_computes_knowledge_encoder_queries():
    class Tokenizer:
        def tokenize(self, texts):
            ids = torch.tensor([[1, len(t), 2, 0] for t in texts])
            return {"input_ids": ids, "attention_mask": torch.where(ids > 0, 1, 0)}

    class Tower:
        tokenizer = Tokenizer()

        def biolord(self, input_ids, attention_mask):
            return (input_ids[..., None].float().repeat(1, 1, 768),)

        def mean_pooling(self, output, attention_mask):  # SAT's Text_Tower.mean_pooling
            mask = attention_mask.unsqueeze(-1).expand(output[0].size()).float()
            return torch.sum(output[0] * mask, 1) / torch.clamp(mask.sum(1), min=1e-9)

    class Encoder:
        text_tower = Tower()
        projection_layer = torch.nn.Identity()
        modality_embed = torch.nn.Embedding(4, 768)

    seen = {}

    def maskformer(queries, image_input):
        seen["queries"] = queries
        return torch.zeros(image_input.shape[0], queries[0].shape[0], *image_input.shape[2:])

    network = SATNetwork(maskformer, Encoder())
    logits = network(torch.zeros(1, 3, *SMALL), ["liver", "left kidney"], 1)
    assert tuple(logits.shape) == (1, 2, *SMALL) and isinstance(seen["queries"], list)
    expected = torch.tensor([[(1 + 5 + 2) / 3], [(1 + 11 + 2) / 3]]) + Encoder.modality_embed(torch.tensor([1, 1]))
    assert torch.allclose(seen["queries"][0], expected)


def test_missing_weights_repo_files_and_packages_say_what_to_do(monkeypatch, tmp_path):
    case = echo_case("lps")
    monkeypatch.delenv("UMD_SAT_WEIGHTS", raising=False)
    monkeypatch.delenv("UMD_SAT_REPO", raising=False)
    with pytest.raises(ModelUnavailableError, match="UMD_SAT_WEIGHTS"):
        SATModel(patch_size=SMALL)(case, text_prompt())
    weights = tmp_path / "weights"
    weights.mkdir()
    with pytest.raises(ModelUnavailableError, match="UMD_SAT_REPO"):
        SATModel(weights, patch_size=SMALL)(case, text_prompt())
    repo = tmp_path / "SAT"
    (repo / "model").mkdir(parents=True)
    (repo / "model" / "__init__.py").write_text("")
    (repo / "model" / "maskformer.py").write_text("import positional_encodings_not_installed_here\n")
    (repo / "model" / "knowledge_encoder.py").write_text("")
    with pytest.raises(ModelUnavailableError, match="checkpoint .*SAT_Pro.pth"):
        SATModel(weights, sat_repo=repo, patch_size=SMALL)(case, text_prompt())
    (weights / "Pro").mkdir()
    (weights / "Pro" / "SAT_Pro.pth").write_bytes(b"")
    (weights / "Pro" / "text_encoder.pth").write_bytes(b"")
    (weights / "BioLORD-2023-C").mkdir()
    monkeypatch.setenv("UMD_SAT_REPO", str(repo))
    with pytest.raises(ModelUnavailableError, match=r"umd-dataset\[sat\]"):
        SATModel(weights, patch_size=SMALL)(case, text_prompt())


def _sat_module(repo: Path, relative: str, name: str):
    spec = importlib.util.spec_from_file_location(name, repo / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not os.environ.get("UMD_SAT_REPO"), reason="needs a checkout of zhaoziheng/SAT in $UMD_SAT_REPO")
@pytest.mark.parametrize("scan", ["lps", "anisotropic", "pet"])
def test_equal_to_sats_own_code(scan, tmp_path, monkeypatch):
    """SAT's own load_image, split_3d, compute_gaussian, Inference_Dataset and inference, run on the same NIfTI with
    the same echo behind SAT's model and text encoder: the same volume, windows, weights and masks."""
    repo = Path(os.environ["UMD_SAT_REPO"])
    monkeypatch.syspath_prepend(str(repo))  # for SAT's `from train.dist import is_master`
    monkeypatch.setenv("RANK", "0")
    dataset = _sat_module(repo, "data/inference_dataset.py", "_sat_inference_dataset")
    engine = _sat_module(repo, "evaluate/inference_engine.py", "_sat_inference_engine")
    written = echo_case(scan, organs=("liver", "spleen"))
    path = tmp_path / f"{scan}.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(written.image), written.affine), path)
    back = nib.load(path)
    case = replace(written, image=np.asarray(back.dataobj), affine=back.affine)
    modality = {"ct": "ct", "mri": "mri", "pet": "pet"}[case.scan]
    datum = {"image": str(path), "label": ["liver", "spleen"], "modality": modality, "dataset": "echo"}

    own, _, _, _ = dataset.load_image(datum)
    data = preprocess(case)
    np.testing.assert_allclose(data.image, own.numpy()[0], rtol=1e-5, atol=1e-5)
    for shape in [(300, 288, 100), (100, 500, 250), tuple(data.image.shape)]:
        windows = dataset.split_3d(torch.zeros(1, 1, 1, 1).expand(1, *shape), crop_size=list(PATCH_SIZE))[1]
        assert [tuple(w) for w in windows] == split_3d(shape)
    assert np.array_equal(engine.compute_gaussian(PATCH_SIZE), compute_gaussian(PATCH_SIZE))

    jsonl = tmp_path / "demo.jsonl"
    jsonl.write_text(json.dumps(datum) + "\n")
    testset = dataset.Inference_Dataset(str(jsonl), max_queries=256, batch_size=2)
    level = bright_level(case)

    class Model(torch.nn.Module):  # SAT's Maskformer contract on the list path: model(queries=[...], image_input=...)
        def forward(self, queries, image_input):
            assert isinstance(queries, list)
            return EchoNetwork(level, PATCH_SIZE)(image_input.float(), queries[0], MODALITY_CODES[modality])

    class TextEncoder(torch.nn.Module):  # Text_Encoder(labels, modality): here the names themselves
        def forward(self, labels, modality_name):
            assert modality_name == modality
            return list(labels)

    out = tmp_path / "sat"
    out.mkdir()
    engine.inference(Model(), TextEncoder(), torch.device("cpu"), testset, [testset[0]], str(out))
    ours = SATModel(network=EchoNetwork(level, PATCH_SIZE))
    ours(case, text_prompt())
    for name in ("liver", "spleen"):
        theirs = np.asarray(nib.load(out / "echo" / f"seg_{scan}" / f"{name}.nii.gz").dataobj).astype(bool)
        assert theirs.any() and np.array_equal(theirs, ours._memo._value.masks[(name, MODALITY_CODES[modality])])
