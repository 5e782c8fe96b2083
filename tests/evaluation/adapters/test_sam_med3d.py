"""SAM-Med3D: the adapter's geometry round trip through a prompt echo of its three sub-modules, its preprocessing
against SAM-Med3D's own ``data_preprocess``, one forward pass through medim's random-weight model, and its errors."""

from __future__ import annotations

import argparse
import pickle
import sys
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from echo import SCANS, assert_centred, assert_on_blob, blob_voxel, echo_case, point_prompt, reference

from umd_dataset.errors import (
    CheckpointError,
    InvalidOptionError,
    ModelError,
    ModelUnavailableError,
    PromptError,
    UnknownNameError,
)
from umd_dataset.evaluation.adapters.sam_med3d import SAMMed3DModel, read_checkpoint
from umd_dataset.evaluation.case import Case
from umd_dataset.evaluation.prompts import Prompt
from umd_dataset.io.geometry import to_voxel, to_world

EMBEDDING = (1, 384, 8, 8, 8)  # medim's ImageEncoderViT3D at 128³ (out_chans=384, patch 16)
LOW_RES = (1, 1, 32, 32, 32)  # MaskDecoder3D's masks for a 128³ crop
BALL_RADIUS_LOW_RES = 2.0  # 8 crop voxels: 12 mm


class EchoPromptEncoder:
    """PromptEncoder3D's contract: points=[coords (1, N, 3) float, labels (1, N)] in crop voxel indices (tensor axis
    order), boxes=None, masks (1, 1, 32, 32, 32); it embeds N points plus the padding point."""

    def __init__(self, echo) -> None:
        self.echo = echo

    def __call__(self, points, boxes, masks):
        coords, labels = points
        assert boxes is None
        assert coords.dtype.is_floating_point and coords.ndim == 3 and coords.shape[0] == 1 and coords.shape[2] == 3
        assert tuple(labels.shape) == tuple(coords.shape[:2])
        assert tuple(masks.shape) == LOW_RES
        crop = self.echo.crop[0, 0].numpy()
        assert_on_blob(crop, coords[0, 0].tolist(), "SAM-Med3D's first point in its 128³ crop")
        self.echo.calls.append({"coords": coords[0].numpy().copy(), "labels": labels[0].numpy().copy(), "masks": masks.clone()})
        return torch.zeros(1, coords.shape[1] + 1, 384), torch.zeros(EMBEDDING)

    def get_dense_pe(self):
        return torch.zeros(EMBEDDING)


class EchoSAMMed3D:
    """SAM-Med3D's three sub-modules as sam_model_infer calls them, answering with logits on the 32³ grid whose
    trilinear upsampling to 128³ (align_corners=False) is a ball around the newest positive point."""

    def __init__(self) -> None:
        self.crop, self.encoded, self.calls, self.returned = None, 0, [], []
        self.prompt_encoder = EchoPromptEncoder(self)

    def image_encoder(self, image):
        assert tuple(image.shape) == (1, 1, 128, 128, 128) and image.dtype == torch.float32
        assert torch.isfinite(image).all()
        self.crop, self.encoded = image.clone(), self.encoded + 1
        return torch.zeros(EMBEDDING)

    def logits(self, point) -> torch.Tensor:
        centre = (np.asarray(point, dtype=np.float64) + 0.5) / 4 - 0.5  # a crop voxel on the 32³ grid (align_corners=False)
        grid = np.stack(np.meshgrid(*[np.arange(32.0)] * 3, indexing="ij"), -1)
        distance = np.linalg.norm(grid - centre, axis=-1)
        return torch.tensor(BALL_RADIUS_LOW_RES - distance, dtype=torch.float32)[None, None]

    def mask_decoder(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output):
        assert tuple(image_embeddings.shape) == EMBEDDING and tuple(image_pe.shape) == EMBEDDING
        assert tuple(dense_prompt_embeddings.shape) == EMBEDDING and multimask_output is False
        call = self.calls[-1]
        newest = call["coords"][np.flatnonzero(call["labels"] == 1)[-1]]
        low_res = self.logits(newest)
        self.returned.append(low_res)
        return low_res, torch.zeros(1, 1)


def off_centre_click(case: Case) -> tuple[int, int, int]:
    """A voxel 14, 8 and 4 mm from the blob along the scan's axes, toward the scan's centre (a different distance
    along each axis, so that swapped axes move it)."""
    name = next(n for n in SCANS if SCANS[n][0] == case.image.shape)
    shape, spacing = np.asarray(SCANS[name][0]), np.asarray(SCANS[name][1])
    blob = np.asarray(blob_voxel(name))
    step = np.sign((shape - 1) / 2 - blob) * np.rint(np.array([14.0, 8.0, 4.0]) / spacing)
    return tuple(int(v) for v in blob + step)


def with_reference(case: Case) -> Case:
    return replace(case, reference=reference(case).astype(np.uint8))


@pytest.mark.parametrize("scan", list(SCANS))
def test_point_mask_is_centred_on_the_click_in_world_space(scan):
    case = echo_case(scan)
    echo = EchoSAMMed3D()
    prompt = point_prompt(case)
    model = SAMMed3DModel(model=echo)
    mask = model(case, prompt)
    assert mask.dtype == bool
    assert_centred(mask, case, to_world(case.affine, prompt.points[0]), f"SAM-Med3D on {scan}")
    call = echo.calls[-1]
    assert np.all(np.abs(call["coords"][0] - 64) <= 0.5)  # the crop is centred on the prompt
    assert call["labels"].tolist() == [1] and not call["masks"].any()  # the first round's masks are zeros
    assert model.needs_reference is False


@pytest.mark.parametrize("scan", list(SCANS))
def test_an_off_centre_corrective_click_goes_in_and_comes_back_through_world_coordinates(scan):
    case = echo_case(scan)
    echo = EchoSAMMed3D()
    model = SAMMed3DModel(model=echo)
    first = point_prompt(case)
    model(case, first)
    click = off_centre_click(case)
    mask = model(case, first.with_click(click, 1, 1))
    assert_centred(mask, case, to_world(case.affine, click), f"SAM-Med3D's corrective click on {scan}")
    assert echo.encoded == 1  # the crop stays where the first point put it, and its embedding is kept
    assert len(echo.calls[-1]["coords"]) == 2  # all clicks so far, as sam_model_infer passes them
    assert torch.equal(echo.calls[-1]["masks"], echo.returned[0])  # with the previous round's low-res mask


@pytest.mark.parametrize("scan", list(SCANS))
def test_reference_crop_is_the_published_one_and_only_it_needs_the_reference(scan):
    case = with_reference(echo_case(scan))
    echo = EchoSAMMed3D()
    model = SAMMed3DModel("sam_med3d_turbo.pth", crop="reference", model=echo)
    assert model.needs_reference is True and model.name == "sam-med3d:sam_med3d_turbo:reference-crop"
    prompt = point_prompt(case)
    mask = model(case, prompt)
    assert_centred(mask, case, to_world(case.affine, prompt.points[0]), f"SAM-Med3D (reference crop) on {scan}")
    given = model.model_input(case, prompt)
    centre = to_voxel(given.grid.affine, to_world(case.affine, np.argwhere(case.reference).mean(0)))
    assert np.all(np.abs(centre - 63.5) <= 1.5)  # torchio's rule: the 128³ crop centred on the mask's bounding box


# -- SAM-Med3D's own preprocessing: uni-medical/SAM-Med3D f3de1fa, utils/infer_utils.py -----------------------------
# read_arr_from_nifti, get_roi_from_subject, get_subject_and_meta_info and data_preprocess, copied verbatim except that
# get_roi_from_subject's call of torchio's private CropOrPad._compute_center_crop_or_pad (a TypeError on torchio >= 1.2)
# and the two lines storing its unused results are left out (marked below).

def read_arr_from_nifti(nii_path, get_meta_info=False):
    import SimpleITK as sitk

    sitk_image = sitk.ReadImage(nii_path)
    arr = sitk.GetArrayFromImage(sitk_image) # Z, Y, X

    if not get_meta_info:
        return arr

    meta_info = {
        "sitk_image_object": sitk_image, # Store the object for easy access to all props
        "sitk_origin": sitk_image.GetOrigin(),
        "sitk_direction": sitk_image.GetDirection(),
        "sitk_spacing": sitk_image.GetSpacing(),
        "original_numpy_shape": arr.shape, # Store ZYX shape
    }
    return arr, meta_info


def get_roi_from_subject(subject_canonical, meta_info, crop_transform, norm_transform):
    """
    Applies CropOrPad and ZNormalization to the canonical subject.
    `subject_canonical` is assumed to be after tio.ToCanonical().
    """
    meta_info["canonical_subject_shape"] = subject_canonical.spatial_shape # D, H, W
    meta_info["canonical_subject_affine"] = subject_canonical.image.affine.copy()

    # left out: padding_params, cropping_params = crop_transform._compute_center_crop_or_pad(subject_canonical)
    subject_cropped = crop_transform(subject_canonical)

    # left out: meta_info["padding_params_functional"] = padding_params
    # left out: meta_info["cropping_params_functional"] = cropping_params
    meta_info["roi_subject_affine"] = subject_cropped.image.affine.copy()

    img3D_roi = subject_cropped.image.data.clone().detach()
    img3D_roi = norm_transform(img3D_roi.squeeze(dim=1)) # (N, C, W, H, D)
    img3D_roi = img3D_roi.unsqueeze(dim=1)

    gt3D_roi = subject_cropped.label.data.clone().detach()

    # make the roi image/label 5D tensor for torch inference
    def correct_roi_dim(roi_tensor):
        if roi_tensor.ndim == 3:
            roi_tensor = roi_tensor.unsqueeze(0).unsqueeze(0)
        if roi_tensor.ndim == 4:
            roi_tensor = roi_tensor.unsqueeze(0)
        if img3D_roi.shape[0] != 1: # Ensure channel is 1
            roi_tensor = roi_tensor[:, 0:1,...]
        return roi_tensor

    img3D_roi = correct_roi_dim(img3D_roi)
    gt3D_roi = correct_roi_dim(gt3D_roi)

    return img3D_roi, gt3D_roi, meta_info

def get_subject_and_meta_info(img_path, gt_path):
    import torchio as tio

    _, meta_info = read_arr_from_nifti(img_path, get_meta_info=True)
    subject = tio.Subject(
        image=tio.ScalarImage(img_path),
        label=tio.LabelMap(gt_path)
    )
    return subject, meta_info


def data_preprocess(subject, meta_info, category_index, target_spacing, crop_size=128):
    import torchio as tio

    # Make the label category-specific IN THE TIO SUBJECT
    # Ensure label data is integer for category comparison
    label_data_for_cat = subject.label.data.clone()
    new_label_data = torch.zeros_like(label_data_for_cat)
    new_label_data[label_data_for_cat == category_index] = 1
    subject.label.set_data(new_label_data) # Update label map data

    meta_info["original_subject_affine"] = subject.image.affine.copy()
    meta_info["original_subject_spatial_shape"] = subject.image.spatial_shape # D, H, W

    # step-1: resample online
    resampler = tio.Resample(target=target_spacing)
    subject_resampled = resampler(subject)

    # step-2: canonicalize
    transform_canonical = tio.ToCanonical()
    subject_canonical = transform_canonical(subject_resampled)

    # step-3: try to crop or pad roi region (with normalization)
    crop_transform = tio.CropOrPad(mask_name='label', target_shape=(crop_size, crop_size, crop_size))
    norm_transform = tio.ZNormalization(masking_method=lambda x: x > 0)
    roi_image, roi_label, meta_info = get_roi_from_subject(
        subject_canonical, meta_info, crop_transform, norm_transform
    )
    # roi image/label is (1, 1, D, H, W) after normalization
    return roi_image, roi_label, meta_info


@pytest.mark.parametrize("scan", list(SCANS))
def test_reference_crop_equals_sam_med3d_data_preprocess_on_the_same_nifti(scan, tmp_path):
    import torchio as tio

    echo = echo_case(scan)
    labels = reference(echo).astype(np.uint8) * 3  # organ id 3, so the category is picked, not just any label
    image_path, label_path = tmp_path / "image.nii.gz", tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(echo.image), echo.affine), image_path)
    nib.save(nib.Nifti1Image(labels, echo.affine), label_path)
    subject, meta_info = get_subject_and_meta_info(str(image_path), str(label_path))
    roi_image, _, meta_info = data_preprocess(subject, meta_info, category_index=3, target_spacing=(1.5, 1.5, 1.5))

    # the case as the release would hold it: the file's voxels, and the affine torchio reads from its header
    case = replace(echo, affine=tio.ScalarImage(image_path).affine, reference=labels)
    prompt = Prompt("point", "liver", 3, (blob_voxel(scan),), (1,))
    given = SAMMed3DModel(crop="reference", model=EchoSAMMed3D()).model_input(case, prompt)
    assert tuple(roi_image.shape) == (1, 1, 128, 128, 128) and given.grid.shape == (128, 128, 128)
    assert given.image.dtype == roi_image.dtype and torch.equal(given.image, roi_image)
    np.testing.assert_allclose(given.grid.affine, meta_info["roi_subject_affine"], atol=1e-9)


def test_one_resample_per_scan_and_one_encoding_per_crop(monkeypatch):
    import torchio as tio

    resamples = []
    original = tio.Resample.__call__
    monkeypatch.setattr(tio.Resample, "__call__", lambda self, *a, **k: resamples.append(1) or original(self, *a, **k))
    case = echo_case("lps", organs=("liver", "spleen"))
    echo = EchoSAMMed3D()
    model = SAMMed3DModel(model=echo)
    first = point_prompt(case)
    model(case, first)
    model(case, first.with_click(off_centre_click(case), 1, 1))
    model(case, Prompt("point", "spleen", 2, (tuple(v + 1 for v in first.points[0]),), (1,)))
    assert len(resamples) == 1  # the scan is resampled once, for all its organs
    assert echo.encoded == 2  # the corrective click re-uses the liver's embedding; the spleen's crop is new
    assert not echo.calls[-1]["masks"].any()  # a new organ starts from an empty mask


class ModuleEcho(torch.nn.Module):
    """The echo as a torch module, as medim's SAM_Med3D is one."""

    def __init__(self) -> None:
        super().__init__()
        self.echo = EchoSAMMed3D()
        self.prompt_encoder = self.echo.prompt_encoder

    def image_encoder(self, image):
        return self.echo.image_encoder(image)

    def mask_decoder(self, **kwargs):
        return self.echo.mask_decoder(**kwargs)


def test_a_given_module_is_put_in_eval_mode_as_sam_model_infer_does():
    case = echo_case("pet")
    module = ModuleEcho().train()
    assert SAMMed3DModel(model=module)(case, point_prompt(case)).any()
    assert module.training is False and module.echo.encoded == 1


def long_case() -> Case:
    """A 300 mm long MR scan with a blob near one end: points near the other end fall outside the 192 mm crop."""
    shape, affine = (150, 12, 12), np.diag([2.0, 2.0, 2.0, 1.0])
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1) * 2.0
    image = 300.0 + 1200.0 * np.exp(-((grid - np.array([40.0, 12.0, 12.0])) ** 2).sum(-1) / (2 * 6.0**2))
    return Case(image.astype(np.int16), affine, (2.0, 2.0, 2.0), "long", "petmri", "mri", "petmri", "MR", "a.u.", ("liver",))


def test_points_outside_the_crop_are_left_out_with_a_warning_or_refused():
    case = long_case()
    prompt = Prompt("points", "liver", 1, ((20, 6, 6), (140, 6, 6)), (1, 1))
    echo = EchoSAMMed3D()
    with pytest.warns(UserWarning, match=r"\(140, 6, 6\).*outside"):
        mask = SAMMed3DModel(model=echo)(case, prompt)
    assert len(echo.calls[-1]["coords"]) == 1 and mask[20, 6, 6] and not mask[140, 6, 6]
    with pytest.raises(PromptError, match="outside"):
        SAMMed3DModel(model=EchoSAMMed3D(), outside_crop="error")(case, prompt)


def test_the_name_reports_the_weights_and_the_crop_after_the_registry_key(monkeypatch):
    monkeypatch.delenv("UMD_SAM_MED3D_WEIGHTS", raising=False)
    assert SAMMed3DModel().name == "sam-med3d"
    assert SAMMed3DModel("/w/sam_med3d_turbo.pth").name == "sam-med3d:sam_med3d_turbo"
    assert SAMMed3DModel("/w/sam_med3d.pth").name == "sam-med3d:sam_med3d"
    assert SAMMed3DModel("/w/My_Finetune.pt", crop="reference").name == "sam-med3d:My_Finetune:reference-crop"
    monkeypatch.setenv("UMD_SAM_MED3D_WEIGHTS", "/w/sam_med3d_turbo.pth")
    model = SAMMed3DModel()
    assert model.name == "sam-med3d:sam_med3d_turbo" and model.name.partition(":")[0] == "sam-med3d"  # what --protocol reads


def test_pickling_drops_what_was_built_and_keeps_the_options():
    case = echo_case("ras")
    model = SAMMed3DModel("sam_med3d_turbo.pth", crop="reference", outside_crop="error")
    model._network = object()  # as if built from the weights
    copy = pickle.loads(pickle.dumps(model))
    assert copy._network is None and copy._running is None and copy._embedded is None
    assert (copy.crop, copy.outside_crop, copy.needs_reference, copy.name) == ("reference", "error", True, "sam-med3d:sam_med3d_turbo:reference-crop")
    given = SAMMed3DModel(model=EchoSAMMed3D())
    given(case, point_prompt(case))
    again = pickle.loads(pickle.dumps(given))
    assert again._crop_cache is None and isinstance(again._network, EchoSAMMed3D)
    assert again(case, point_prompt(case)).any()


# -- errors ---------------------------------------------------------------------------------------------------------

def test_prompts_it_cannot_take_and_bad_options():
    case = echo_case("lps")
    model = SAMMed3DModel(model=EchoSAMMed3D())
    with pytest.raises(PromptError, match="point, points"):
        model(case, Prompt("box", "liver", 1, box=((1, 1, 1), (5, 5, 5))))
    with pytest.raises(PromptError, match="point, points"):
        model(case, Prompt("text", "liver", 1, text="liver"))
    with pytest.raises(PromptError, match="no"):
        model(case, Prompt("point", "liver", 1, (blob_voxel("lps"),), (0,)))
    with pytest.raises(UnknownNameError, match="reference"):
        SAMMed3DModel(crop="referense")
    with pytest.raises(UnknownNameError, match="ignore"):
        SAMMed3DModel(outside_crop="drop")
    with pytest.raises(InvalidOptionError, match="cuda"):
        SAMMed3DModel(device="gpu")


def test_missing_weights_or_package_say_what_to_do(monkeypatch, tmp_path):
    case = echo_case("lps")
    monkeypatch.delenv("UMD_SAM_MED3D_WEIGHTS", raising=False)
    with pytest.raises(ModelUnavailableError, match="UMD_SAM_MED3D_WEIGHTS"):
        SAMMed3DModel()(case, point_prompt(case))
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        SAMMed3DModel(tmp_path / "sam_med3d_turbo.pth")(case, point_prompt(case))
    monkeypatch.setitem(sys.modules, "medim", None)  # as if not installed
    with pytest.raises(ModelUnavailableError, match=r"umd-dataset\[sam-med3d\]"):
        SAMMed3DModel(tmp_path / "sam_med3d_turbo.pth")(case, point_prompt(case))


def test_the_reference_mode_without_a_reference_and_a_crop_with_nothing_above_zero():
    case = echo_case("lps")
    with pytest.raises(ModelError, match="needs_reference"):
        SAMMed3DModel(crop="reference", model=EchoSAMMed3D())(case, point_prompt(case))
    with pytest.raises(PromptError, match="no voxel of spleen"):
        SAMMed3DModel(crop="reference", model=EchoSAMMed3D())(with_reference(case), Prompt("point", "spleen", 2, (blob_voxel("lps"),), (1,)))
    negative = replace(case, image=(np.asarray(case.image) - 2000).astype(np.int16))
    with pytest.raises(ModelError, match="above 0"):
        SAMMed3DModel(model=EchoSAMMed3D())(negative, point_prompt(negative))


class WrongShape(EchoSAMMed3D):
    def mask_decoder(self, **kwargs):
        return torch.zeros(1, 1, 16, 16, 16), torch.zeros(1, 1)


class NaNLogits(EchoSAMMed3D):
    def mask_decoder(self, **kwargs):
        return torch.full(LOW_RES, float("nan")), torch.zeros(1, 1)


def test_what_the_decoder_returns_is_checked():
    case = echo_case("ras")
    with pytest.raises(ModelError, match=r"shape \(1, 1, 32, 32, 32\)"):
        SAMMed3DModel(model=WrongShape())(case, point_prompt(case))
    with pytest.raises(ModelError, match="NaN"):
        SAMMed3DModel(model=NaNLogits())(case, point_prompt(case))


# -- checkpoints ----------------------------------------------------------------------------------------------------

class Tiny(torch.nn.Module):
    """Stands for medim's SAM-Med3D in the loader's tests (same loader, no 100M parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = torch.nn.Linear(3, 2)


class NotAllowed:
    """A class torch.load(weights_only=True) refuses to build."""


def save(path, state, **extra):
    torch.save({"epoch": 3, "model_state_dict": state, "args": argparse.Namespace(device="cuda", img_size=128),
                "dices": [np.float64(0.5)], "best_loss": np.inf, **extra}, path)
    return path


def test_checkpoints_load_strictly_and_safely(monkeypatch, tmp_path):
    import medim

    monkeypatch.setattr(medim, "create_model", lambda name, pretrained: Tiny())
    case = echo_case("lps")
    good = Tiny().state_dict()
    path = save(tmp_path / "sam_med3d_turbo.pth", good)
    network = SAMMed3DModel(path).network()  # the argparse and numpy values SAM-Med3D's train.py saves are allowed
    assert torch.equal(network.image_encoder.weight, good["image_encoder.weight"]) and not network.training

    wrong = save(tmp_path / "wrong.pth", {**good, "image_encoder.weight": torch.zeros(5, 3), "extra.bias": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"1 unexpected keys \(extra.bias\).*1 tensors of another shape \(image_encoder.weight"):
        SAMMed3DModel(wrong)(case, point_prompt(case))
    missing = save(tmp_path / "missing.pth", {"image_encoder.weight": good["image_encoder.weight"]})
    with pytest.raises(CheckpointError, match=r"1 missing keys \(image_encoder.bias\)"):
        SAMMed3DModel(missing).network()
    torch.save({"state_dict": good}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no 'model_state_dict'"):
        SAMMed3DModel(tmp_path / "other.pth").network()
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        SAMMed3DModel(tmp_path / "garbage.pth").network()
    unsafe = save(tmp_path / "unsafe.pth", good, extra=NotAllowed())
    with pytest.raises(CheckpointError, match="trust_checkpoint=True"):
        SAMMed3DModel(unsafe).network()
    assert set(read_checkpoint(unsafe, trust=True)) == set(good)  # a file you trust


def test_a_checkpoint_with_other_keys_is_refused_by_medim_s_architecture(tmp_path):
    torch.save({"model_state_dict": {"image_encoder.pos_embed": torch.zeros(1), "decoder.head": torch.zeros(1)}}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \(.*unexpected keys \(decoder.head\).*another shape \(image_encoder.pos_embed"):
        SAMMed3DModel(tmp_path / "x.pth").network()


@pytest.mark.slow
def test_one_forward_pass_through_medim_s_random_weight_sam_med3d(tmp_path):
    import medim

    torch.manual_seed(0)
    random = medim.create_model("SAM-Med3D", pretrained=False)
    path = save(tmp_path / "sam_med3d_turbo.pth", random.state_dict())
    del random
    case = echo_case("lps")
    model = SAMMed3DModel(path)
    assert model.name == "sam-med3d:sam_med3d_turbo"
    prompt = point_prompt(case)
    mask = model(case, prompt)
    assert mask.dtype == bool and mask.shape == case.image.shape
    # by hand, as sam_model_infer: the adapter's crop through the same network gives the same mask in the crop
    network, given = model.network(), model.model_input(case, prompt)
    with torch.no_grad():
        sparse, dense = network.prompt_encoder(points=[torch.tensor(given.points[None], dtype=torch.float32),
                                                       torch.tensor(given.labels[None], dtype=torch.float32)],
                                               boxes=None, masks=torch.zeros(LOW_RES))
        low_res, _ = network.mask_decoder(image_embeddings=model._embedded[1], image_pe=network.prompt_encoder.get_dense_pe(),
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
        expected = (torch.sigmoid(F.interpolate(low_res, size=(128,) * 3, mode="trilinear", align_corners=False)) > 0.5)[0, 0].numpy()
    assert np.array_equal(mask, given.grid.onto_case(expected, case))
    assert tuple(model._running[4].shape) == LOW_RES and torch.isfinite(model._running[4]).all()
