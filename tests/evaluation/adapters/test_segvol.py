"""SegVol: the adapter's geometry round trip through a prompt echo of ``forward_test``, its preprocessing against
SegVol's own, the way back against ``save_preds``, the box against ``generate_box``, the opt-in and the errors.

SegVol's own preprocessing below is copied from BAAI-DCAI/SegVol at 5768c97 (``data_process/demo_data_process.py``,
MIT License, Copyright (c) 2023 BAAI-DCAI), with two changes: ``LoadImage(image_only=False)``, because MONAI 1.x
returns the image alone by default and the original ``ct, _ = img_loader(path)`` would unpack the array; and the
composition can be passed in. Its own composition starts with ``Orientationd``, which under MONAI 1.x turns the array
into a MetaTensor that ``ForegroundNormalization`` cannot ``.copy()`` (under MONAI 0.9 it returned the array
unchanged: no affine, a no-op), so `github_transform` is that composition without it. The Hugging Face processor
(``model_segvol_single.py``: ``preprocess_ct_gt`` normalises first, then ``transform4test``) runs the same steps
without ``SpatialPadd``; `hf_transform4test` is that composition, from which the crop coordinates come (the padding
moves the GitHub ones).
"""

from __future__ import annotations

import pickle

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from echo import SCANS, assert_centred, assert_on_blob, ball, blob_world, box_prompt, bright_centre, echo_case, point_prompt
from monai import transforms

from umd_dataset.errors import InvalidOptionError, ModelError, ModelUnavailableError, PromptError, UnknownNameError
from umd_dataset.evaluation.adapters import segvol
from umd_dataset.evaluation.adapters.segvol import NAMES, SPATIAL_SIZE, SegVolModel, preprocess
from umd_dataset.evaluation.case import Case
from umd_dataset.evaluation.prompts import Prompt
from umd_dataset.io.geometry import to_world

RADIUS = 2.5  # voxels of the full-resolution crop


# --- SegVol's own preprocessing (data_process/demo_data_process.py, MIT, see the module docstring) -----------------
class MinMaxNormalization(transforms.Transform):
    def __call__(self, data):
        d = dict(data)
        k = "image"
        d[k] = d[k] - d[k].min()
        d[k] = d[k] / np.clip(d[k].max(), a_min=1e-8, a_max=None)
        return d


class DimTranspose(transforms.Transform):
    def __init__(self, keys):
        self.keys = keys

    def __call__(self, data):
        d = dict(data)
        for key in self.keys:
            d[key] = np.swapaxes(d[key], -1, -3)
        return d


class ForegroundNormalization(transforms.Transform):
    def __init__(self, keys):
        self.keys = keys

    def __call__(self, data):
        d = dict(data)

        for key in self.keys:
            d[key] = self.normalize(d[key])
        return d

    def normalize(self, ct_narray):
        ct_voxel_ndarray = ct_narray.copy()
        ct_voxel_ndarray = ct_voxel_ndarray.flatten()
        thred = np.mean(ct_voxel_ndarray)
        voxel_filtered = ct_voxel_ndarray[(ct_voxel_ndarray > thred)]
        upper_bound = np.percentile(voxel_filtered, 99.95)
        lower_bound = np.percentile(voxel_filtered, 00.05)
        mean = np.mean(voxel_filtered)
        std = np.std(voxel_filtered)
        ### transform ###
        ct_narray = np.clip(ct_narray, lower_bound, upper_bound)
        ct_narray = (ct_narray - mean) / max(std, 1e-8)
        return ct_narray


def process_ct_gt(case_path, label_path, category, spatial_size, transform=None):
    img_loader = transforms.LoadImage(image_only=False)  # the one change: MONAI >= 1.0 returns the image alone by default
    transform = transform or transforms.Compose(
        [
            transforms.Orientationd(keys=["image", "label"], axcodes="RAS"),
            ForegroundNormalization(keys=["image"]),
            DimTranspose(keys=["image", "label"]),
            MinMaxNormalization(),
            transforms.SpatialPadd(keys=["image", "label"], spatial_size=spatial_size, mode='constant'),
            transforms.CropForegroundd(keys=["image", "label"], source_key="image"),
            transforms.ToTensord(keys=["image", "label"]),
        ]
    )
    zoom_out_transform = transforms.Resized(keys=["image", "label"], spatial_size=spatial_size, mode='nearest-exact')

    ###
    item = {}
    # generate ct_voxel_ndarray
    ct_voxel_ndarray, _ = img_loader(case_path)
    ct_voxel_ndarray = np.array(ct_voxel_ndarray).squeeze()
    ct_shape = ct_voxel_ndarray.shape
    ct_voxel_ndarray = np.expand_dims(ct_voxel_ndarray, axis=0)
    item['image'] = ct_voxel_ndarray

    # generate gt_voxel_ndarray
    gt_voxel_ndarray, _ = img_loader(label_path)
    gt_voxel_ndarray = np.array(gt_voxel_ndarray)
    present_categories = np.unique(gt_voxel_ndarray)
    gt_masks = []
    for cls_idx in range(len(category)):
        # ignore background
        cls = cls_idx + 1
        if cls not in present_categories:
            gt_voxel_ndarray_category = np.zeros(ct_shape)
            gt_masks.append(gt_voxel_ndarray_category)
        else:
            gt_voxel_ndarray_category = gt_voxel_ndarray.copy()
            gt_voxel_ndarray_category[gt_voxel_ndarray != cls] = 0
            gt_voxel_ndarray_category[gt_voxel_ndarray == cls] = 1
            gt_masks.append(gt_voxel_ndarray_category)
    gt_voxel_ndarray = np.stack(gt_masks, axis=0)
    assert gt_voxel_ndarray.shape[0] == len(category) and gt_voxel_ndarray.shape[1:] == ct_voxel_ndarray.shape[1:]
    item['label'] = gt_voxel_ndarray.astype(np.int32)

    # transform
    item = transform(item)
    item_zoom_out = zoom_out_transform(item)
    item['zoom_out_image'] = item_zoom_out['image']
    item['zoom_out_label'] = item_zoom_out['label']
    return item
# --- end of SegVol's code ----------------------------------------------------------------------------------------


def github_transform(spatial_size=SPATIAL_SIZE):
    """``process_ct_gt``'s composition without its ``Orientationd`` (a no-op under MONAI 0.9, an error under 1.x)."""
    return transforms.Compose([
        ForegroundNormalization(keys=["image"]), DimTranspose(keys=["image", "label"]), MinMaxNormalization(),
        transforms.SpatialPadd(keys=["image", "label"], spatial_size=spatial_size, mode='constant'),
        transforms.CropForegroundd(keys=["image", "label"], source_key="image"), transforms.ToTensord(keys=["image", "label"]),
    ])


def hf_transform4test():
    """``ForegroundNorm`` then the Hugging Face ``SegVolProcessor.transform4test``: the steps above without SpatialPadd."""
    return transforms.Compose([
        ForegroundNormalization(keys=["image"]), DimTranspose(keys=["image", "label"]), MinMaxNormalization(),
        transforms.CropForegroundd(keys=["image", "label"], source_key="image"), transforms.ToTensord(keys=["image", "label"]),
    ])


def save_preds_array(ct_path, logits_mask, start_coord, end_coord):
    """The steps of the Hugging Face ``SegVolProcessor.save_preds`` (``model_segvol_single.py``), returning the array
    it would save: swap the axes back, swap the crop coordinates to match, paste the sigmoid, threshold at 0.5."""
    ct = nib.load(ct_path)
    start_coord, end_coord = list(start_coord), list(end_coord)  # save_preds swaps them in place
    logits_mask = logits_mask.transpose(-1, -3)
    start_coord[-1], start_coord[-3] = start_coord[-3], start_coord[-1]
    end_coord[-1], end_coord[-3] = end_coord[-3], end_coord[-1]
    preds_save = torch.zeros(ct.shape)
    preds_save[start_coord[0]:end_coord[0], start_coord[1]:end_coord[1], start_coord[2]:end_coord[2]] = torch.sigmoid(logits_mask)
    return torch.where(preds_save > 0.5, 1.0, 0.0).numpy()


def written(case: Case, folder, label=None) -> tuple[Case, str, str]:
    """The case written as NIfTI (with a label map), and the case as read back (the header stores a float32 affine)."""
    image_path, label_path = str(folder / "image.nii.gz"), str(folder / "label.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(case.image), case.affine), image_path)
    labels = np.zeros(case.image.shape, np.uint8) if label is None else label.astype(np.uint8)
    nib.save(nib.Nifti1Image(labels, case.affine), label_path)
    back = nib.load(image_path)
    image = np.asarray(back.dataobj)
    image.setflags(write=False)
    return Case(image, back.affine, case.spacing_mm, case.subject, case.study, case.scan, case.domain, case.modality, case.units,
                case.organs), image_path, label_path


class EchoSegVol:
    """``SegVolModel.forward_test``'s contract: image (1, 1, D, H, W) float32, the crop at full resolution;
    zoomed_image its nearest-exact resize to (1, 1, 32, 256, 256); prompts on the zoom-out grid in (D, H, W): points
    ``[(coords (1, N, 3), labels (1, N)), int16 map]``, a box ``[(1, 6) inclusive, map]``, never both; text a list
    of names. It answers with logits (1, 1, D, H, W) on the image's grid: a ball around the first positive point (or
    the box centre) taken back to full resolution, or around the image's bright blob for text alone."""

    def __init__(self, radius: float = RADIUS) -> None:
        self.radius, self.calls = radius, []

    def forward_test(self, image, zoomed_image=None, text_prompt=None, bbox_prompt_group=None, point_prompt_group=None,
                     use_zoom=True):
        assert image.shape[0] == 1 and zoomed_image.shape[0] == 1, "batch size should be 1"
        assert not (text_prompt is None and bbox_prompt_group is None and point_prompt_group is None)
        assert not (bbox_prompt_group is not None and point_prompt_group is not None)
        assert image.ndim == 5 and image.shape[1] == 1 and image.dtype == torch.float32
        assert tuple(zoomed_image.shape) == (1, 1, *SPATIAL_SIZE) and zoomed_image.dtype == torch.float32
        assert torch.equal(zoomed_image, F.interpolate(image, size=SPATIAL_SIZE, mode="nearest-exact"))  # zoom_transform
        assert 0 <= float(image.min()) and float(image.max()) <= 1
        volume, zoom = image[0, 0].numpy(), zoomed_image[0, 0].numpy()
        scale = np.asarray(volume.shape) / np.asarray(SPATIAL_SIZE)
        call = {"text": text_prompt, "use_zoom": use_zoom}
        if point_prompt_group is not None:
            (coords, labels), binary = point_prompt_group
            assert coords.dtype == torch.float32 and coords.ndim == 3 and coords.shape[0] == 1 and coords.shape[2] == 3
            assert tuple(labels.shape) == tuple(coords.shape[:2]) and labels.dtype == torch.float32
            assert tuple(binary.shape) == (1, 1, *SPATIAL_SIZE) and binary.dtype == torch.int16
            positive = coords[0][labels[0] == 1].numpy()
            for point in positive:
                assert_on_blob(zoom, point, "SegVol point on its zoom-out volume")
                assert binary[0, 0][tuple(int(v) for v in np.rint(point))] == 1
            assert int(binary.sum()) == len({tuple(np.rint(p).astype(int)) for p in positive})
            centre = (positive[0] + 0.5) * scale - 0.5  # zoom-out voxel -> full resolution (align_corners=False)
            call.update(coords=coords[0].numpy().copy(), labels=labels[0].numpy().copy())
        elif bbox_prompt_group is not None:
            box, cube = bbox_prompt_group
            assert tuple(box.shape) == (1, 6) and box.dtype == torch.float32
            low, high = box[0, :3].numpy(), box[0, 3:].numpy()
            assert (low <= high).all() and (low >= 0).all() and (high < np.asarray(SPATIAL_SIZE)).all()
            assert tuple(cube.shape) == (1, 1, *SPATIAL_SIZE) and int(cube.sum()) == int(np.prod(high - low + 1))
            assert_on_blob(zoom, (low + high) / 2, "SegVol box centre on its zoom-out volume")
            centre = ((low + high) / 2 + 0.5) * scale - 0.5
            call.update(box=box[0].numpy().astype(int).tolist())
        else:
            centre = bright_centre(volume)
        self.calls.append(call)
        return torch.where(torch.from_numpy(ball(volume.shape, centre, self.radius)), 8.0, -8.0)[None, None].float()


class RandomEcho(EchoSegVol):
    """The echo, drawing from torch's generator as ``select_points`` does in the zoom-in."""

    def forward_test(self, image, zoomed_image=None, **prompts):
        logits = super().forward_test(image, zoomed_image, **prompts)
        self.calls[-1]["draw"] = int(torch.randint(1000, (1,)))
        return logits


@pytest.mark.parametrize("scan", list(SCANS))
def test_point_mask_is_centred_on_the_click_in_world_space(scan):
    case = echo_case(scan)
    echo = EchoSegVol()
    prompt = point_prompt(case)
    mask = SegVolModel(model=echo)(case, prompt)
    assert mask.dtype == bool
    assert_centred(mask, case, to_world(case.affine, prompt.points[0]), f"SegVol point on {scan}")
    assert echo.calls[-1]["text"] == ["liver"]  # with_text: one point plus the organ's name, the paper's protocol
    assert echo.calls[-1]["use_zoom"] is True


@pytest.mark.parametrize("scan", list(SCANS))
def test_text_mask_is_centred_on_the_blob_in_world_space(scan):
    case = echo_case(scan)
    echo = EchoSegVol()
    mask = SegVolModel(model=echo)(case, Prompt("text", "liver", 1, text="Liver"))
    assert_centred(mask, case, blob_world(case), f"SegVol text on {scan}")
    assert echo.calls[-1]["text"] == ["liver"]


@pytest.mark.parametrize("scan", list(SCANS))
def test_box_mask_is_centred_on_the_box_in_world_space(scan):
    case = echo_case(scan)
    echo = EchoSegVol()
    mask = SegVolModel(model=echo, with_text=False)(case, box_prompt(case))
    assert_centred(mask, case, blob_world(case), f"SegVol box on {scan}")
    assert echo.calls[-1]["text"] is None


@pytest.mark.parametrize("scan", ["lps", "anisotropic", "pet"])
def test_preprocessing_equals_segvols_own(scan, tmp_path):
    case, image_path, label_path = written(echo_case(scan), tmp_path)
    data = preprocess(case)
    github = process_ct_gt(image_path, label_path, ["liver"], SPATIAL_SIZE, transform=github_transform())
    hf = process_ct_gt(image_path, label_path, ["liver"], SPATIAL_SIZE, transform=hf_transform4test())
    for own in (github, hf):
        assert tuple(own["image"].shape[1:]) == data.image.shape
        np.testing.assert_allclose(data.image, np.asarray(own["image"][0]), atol=1e-6)
        np.testing.assert_allclose(data.zoom_out, np.asarray(own["zoom_out_image"][0]), atol=1e-6)
    assert data.start == tuple(int(v) for v in hf["foreground_start_coord"])
    assert data.end == tuple(int(v) for v in hf["foreground_end_coord"])
    assert data.image.dtype == data.zoom_out.dtype == np.float32  # what SegVol's float32 weights take
    # the crop is a permutation and a shift of the scan's grid: its first voxel is scan voxel (k, j, i) = start
    np.testing.assert_allclose(to_world(data.crop.affine, [0, 0, 0]), to_world(case.affine, data.start[::-1]), atol=1e-9)


@pytest.mark.parametrize("scan", ["lps", "oblique", "pet"])
def test_the_way_back_equals_save_preds(scan, tmp_path):
    case, image_path, _ = written(echo_case(scan), tmp_path)
    data = preprocess(case)
    logits = torch.from_numpy(np.random.default_rng(3).normal(size=(1, 1, *data.image.shape)).astype(np.float32))

    class Fixed(EchoSegVol):
        def forward_test(self, image, zoomed_image=None, **prompts):
            super().forward_test(image, zoomed_image, **prompts)
            return logits

    mask = SegVolModel(model=Fixed())(case, Prompt("text", "liver", 1, text="Liver"))
    expected = save_preds_array(image_path, logits[0][0], data.start, data.end)
    assert mask.any() and np.array_equal(mask, expected.astype(bool))


@pytest.mark.parametrize("scan", ["lps", "anisotropic", "oblique"])
def test_box_is_generate_box_of_the_zoom_out_label(scan, tmp_path):
    prompt = box_prompt(echo_case(scan))
    low, high = prompt.box
    label = np.zeros(echo_case(scan).image.shape, np.uint8)
    label[low[0] : high[0] + 1, low[1] : high[1] + 1, low[2] : high[2] + 1] = 1
    case, image_path, label_path = written(echo_case(scan), tmp_path, label)
    own = process_ct_gt(image_path, label_path, ["liver"], SPATIAL_SIZE, transform=hf_transform4test())
    where = torch.nonzero(own["zoom_out_label"][0] > 0)  # generate_box: min and max of the label's voxels
    expected = where.min(0).values.tolist() + where.max(0).values.tolist()
    echo = EchoSegVol()
    SegVolModel(model=echo)(case, prompt)
    assert echo.calls[-1]["box"] == expected


def test_points_and_negative_points_reach_the_zoom_out_grid():
    case = echo_case("ras")
    first = point_prompt(case).points[0]
    echo = EchoSegVol()
    prompt = Prompt("points", "liver", 1, (first, (first[0] + 1, first[1], first[2]), (2, 2, 2)), (1, 1, 0))
    with pytest.warns(UserWarning, match="outside its crop"):  # (2, 2, 2) lies in the air, outside SegVol's crop
        SegVolModel(model=echo, with_text=False)(case, prompt)
    call = echo.calls[-1]
    assert call["text"] is None and call["labels"].tolist() == [1.0, 1.0]
    data = preprocess(case)
    np.testing.assert_allclose(call["coords"][0], data.zoom.point_from(case, first), atol=1e-5)
    inside = Prompt("points", "liver", 1, (first, (first[0], first[1] + 1, first[2])), (1, 0))
    SegVolModel(model=echo)(case, inside)
    assert echo.calls[-1]["labels"].tolist() == [1.0, 0.0]


def test_names_and_text_options():
    case = echo_case("lps")
    echo = EchoSegVol()
    SegVolModel(model=echo)(case, Prompt("text", "urinary_bladder", 9, text="Urinary bladder"))
    assert echo.calls[-1]["text"] == ["bladder"]
    SegVolModel(model=echo, names="prompt")(case, Prompt("text", "urinary_bladder", 9, text="vesica urinaria"))
    assert echo.calls[-1]["text"] == ["vesica urinaria"]
    SegVolModel(model=echo, names="prompt")(case, Prompt("point", "urinary_bladder", 9, point_prompt(case).points, (1,)))
    assert echo.calls[-1]["text"] == ["bladder"]
    assert set(NAMES) == {"liver", "spleen", "kidney_left", "kidney_right", "pancreas", "stomach", "esophagus", "colon",
                          "urinary_bladder", "heart", "aorta", "lung", "brain"}
    SegVolModel(model=echo, use_zoom=False)(case, point_prompt(case))
    assert echo.calls[-1]["use_zoom"] is False
    clicked = Prompt("text", "liver", 1, text="Liver").with_click(point_prompt(case).points[0], 1, 1)
    SegVolModel(model=echo)(case, clicked)  # a corrective click after a text prompt: the text and the point
    assert echo.calls[-1]["text"] == ["liver"] and echo.calls[-1]["labels"].tolist() == [1.0]


def test_one_preprocessing_per_scan_and_seeded_calls(monkeypatch):
    case = echo_case("pet", organs=("liver", "spleen"))
    count = []

    def counted(case):
        count.append(1)
        return preprocess(case)

    monkeypatch.setattr(segvol, "preprocess", counted)
    echo = RandomEcho()
    model = SegVolModel(model=echo)
    before = torch.random.get_rng_state()
    model(case, point_prompt(case))
    model(case, point_prompt(case, "spleen", 2))
    assert len(count) == 1
    assert echo.calls[0]["draw"] == echo.calls[1]["draw"]  # each call under its own seeded generator
    assert torch.equal(torch.random.get_rng_state(), before)  # the global generator untouched
    clone = pickle.loads(pickle.dumps(model))
    assert isinstance(clone._model, RandomEcho) and clone._memo._key is None  # an injected model travels; the memo does not
    model._built = True
    assert pickle.loads(pickle.dumps(model))._model is None  # a loaded model is left behind: the worker loads its own


def test_trust_remote_code_is_an_explicit_opt_in(monkeypatch):
    with pytest.raises(ModelUnavailableError, match=r"trust_remote_code=True") as error:
        SegVolModel()
    assert "weights folder" in str(error.value)
    with pytest.raises(ModelUnavailableError, match=r"trust_remote_code=True"):
        SegVolModel("/some/folder", trust_remote_code="yes")
    monkeypatch.delenv("UMD_SEGVOL_WEIGHTS", raising=False)
    model = SegVolModel(trust_remote_code=True)
    case = echo_case("lps")
    with pytest.raises(ModelUnavailableError, match=r"umd-dataset\[segvol\]|UMD_SEGVOL_WEIGHTS"):
        model(case, point_prompt(case))


def test_prompts_it_cannot_take_and_bad_options():
    case = echo_case("lps")
    model = SegVolModel(model=EchoSegVol())
    with pytest.raises(PromptError, match="text, point, points, box"):
        model(case, Prompt("class", "liver", 1))
    with pytest.raises(PromptError, match="box and points"):
        model(case, box_prompt(case).with_click(point_prompt(case).points[0], 1, 1))
    with pytest.raises(PromptError, match="outside SegVol's view"):
        model(case, Prompt("point", "liver", 1, ((0, 0, 0),), (1,)))
    with pytest.raises(PromptError, match="without a positive point"):
        model(case, Prompt("point", "liver", 1, (point_prompt(case).points[0],), (0,)))
    with pytest.raises(UnknownNameError, match="name source"):
        SegVolModel(model=EchoSegVol(), names="clip")
    with pytest.raises(InvalidOptionError, match="device"):
        SegVolModel(model=EchoSegVol(), device="gpu")
    with pytest.raises(InvalidOptionError, match="forward_test"):
        SegVolModel(model=object())
    with pytest.raises(InvalidOptionError, match="seed"):
        SegVolModel(model=EchoSegVol(), seed="x")


def test_wrong_model_outputs_raise_model_errors():
    case = echo_case("lps")

    class Wrong(EchoSegVol):
        def __init__(self, answer):
            super().__init__()
            self.answer = answer

        def forward_test(self, image, zoomed_image=None, **prompts):
            logits = super().forward_test(image, zoomed_image, **prompts)
            return self.answer(logits)

    with pytest.raises(ModelError, match="expected logits of shape"):
        SegVolModel(model=Wrong(lambda x: F.interpolate(x, size=SPATIAL_SIZE)))(case, point_prompt(case))
    with pytest.raises(ModelError, match="NaN"):
        SegVolModel(model=Wrong(lambda x: x * float("nan")))(case, point_prompt(case))
    with pytest.raises(ModelError, match="constant"):
        constant = np.zeros(case.image.shape, np.int16)
        blank = Case(constant, case.affine, case.spacing_mm, "s", "t", "ct", "ct", "CT", "HU")
        SegVolModel(model=EchoSegVol())(blank, point_prompt(case))


def test_echo_catches_a_wrong_axis_order(monkeypatch):
    """The echo's checks fail if the points reach SegVol in the scan's (i, j, k) order instead of (D, H, W)."""
    case = echo_case("lps")
    original = segvol.ModelGrid.point_from

    def reversed_order(self, case, voxel):
        return original(self, case, voxel)[::-1].copy()

    monkeypatch.setattr(segvol.ModelGrid, "point_from", reversed_order)
    with pytest.raises((AssertionError, PromptError)):
        SegVolModel(model=EchoSegVol())(case, point_prompt(case))


REMOTE_CODE = '''
import torch
from transformers import PretrainedConfig, PreTrainedModel


class SegVolConfig(PretrainedConfig):
    model_type = "segvol"

    def __init__(self, test_mode=True, **kwargs):
        self.spatial_size = [32, 256, 256]
        self.test_mode = test_mode
        super().__init__(**kwargs)


class TextEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.tokenizer = None
        self.dim_align = torch.nn.Linear(2, 2)


class SegVol(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.text_encoder = TextEncoder()


class SegVolModel(PreTrainedModel):
    config_class = SegVolConfig

    def __init__(self, config):
        super().__init__(config)
        self.model = SegVol()
        self.post_init()  # transformers 5 needs it (SegVol's own code, written for 4.18, has none)

    def forward_test(self, image, zoomed_image=None, text_prompt=None, bbox_prompt_group=None, point_prompt_group=None,
                     use_zoom=True):
        assert self.config.test_mode is True and not self.training
        self.tokens = self.model.text_encoder.tokenizer(["A computerized tomography of a {}.".format(t) for t in text_prompt])
        return torch.full_like(image, 5.0).cpu()
'''


def test_loading_a_local_folder_with_its_remote_code(tmp_path, monkeypatch):
    """The loading path through transformers (where it is installed): AutoTokenizer and AutoModel from the folder,
    trust_remote_code, local files only, test_mode, the tokenizer handed to SegVol's text encoder."""
    transformers = pytest.importorskip("transformers")
    import importlib.util
    import sys

    from transformers import dynamic_module_utils

    # transformers copies remote code into its modules cache: keep that copy in tmp_path
    monkeypatch.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [k for k in sys.modules if k.split(".")[0] == "transformers_modules"]:
        monkeypatch.delitem(sys.modules, name)

    folder = tmp_path / "SegVol"
    folder.mkdir()
    (folder / "model_segvol_single.py").write_text(REMOTE_CODE)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "liver", "of", "."]
    (folder / "vocab.txt").write_text("".join(f"{token}\n" for token in tokens))
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    spec = importlib.util.spec_from_file_location("model_segvol_single", folder / "model_segvol_single.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.SegVolConfig()
    config.auto_map = {"AutoConfig": "model_segvol_single.SegVolConfig", "AutoModel": "model_segvol_single.SegVolModel"}
    module.SegVolModel(config).save_pretrained(folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("UMD_SEGVOL_WEIGHTS", str(folder))
    case = echo_case("lps")
    model = SegVolModel(trust_remote_code=True)
    mask = model(case, Prompt("text", "liver", 1, text="Liver"))
    loaded = model.model()
    assert loaded.model.text_encoder.tokenizer is not None and loaded.tokens["input_ids"]
    data = preprocess(case)
    assert mask.sum() == np.prod(np.subtract(data.end, data.start))  # all foreground: the crop box, pasted back
    assert pickle.loads(pickle.dumps(model))._model is None
    # SegVol's own class never calls post_init, which transformers 5 needs: the message says which transformers to use
    (folder / "model_segvol_single.py").write_text(REMOTE_CODE.replace("        self.post_init()", "        pass"))
    if int(transformers.__version__.split(".")[0]) >= 5:
        with pytest.raises(ModelUnavailableError, match="transformers<5"):
            SegVolModel(trust_remote_code=True)(case, Prompt("text", "liver", 1, text="Liver"))
