"""VISTA3D: the geometry round trip through a prompt echo with VISTA3D.forward's contract, the
preprocessing and the masks against the bundle's own chain (LoadImaged ... Invertd) on the scan's
NIfTI, class batches and windows, and the errors; one slow pass with random-weight vista3d132."""

from __future__ import annotations

import copy
import pickle
import sys
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
from echo import SCANS, assert_centred, assert_on_blob, ball, blob_voxel, blob_world, bright_centre, echo_case, point_prompt

from umd_dataset.errors import CheckpointError, InvalidOptionError, ModelError, ModelUnavailableError, PromptError
from umd_dataset.evaluation.adapters.vista3d import CLASS_IDS, VISTA3DModel, load_checkpoint
from umd_dataset.evaluation.prompts import Prompt
from umd_dataset.io.geometry import to_world

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

#: the 13 organs, as a case lists them
ORGANS = tuple(CLASS_IDS)
#: configs/inference.json's subclass (the part that touches our organs) and ScaleIntensityRanged
SUBCLASS = {"2": [14, 5], "20": [28, 29, 30, 31, 32]}
A_MIN, A_MAX = -963.8247715525971, 1053.678477684517


def contract(input_images, patch_coords, point_coords, point_labels, class_vector, prompt_class, labels, label_set, transpose):
    """What VISTA3D.forward receives from the bundle's inferers; returns (window, objects, positive points in the window)."""
    assert isinstance(input_images, torch.Tensor) and input_images.dtype == torch.float32
    assert input_images.ndim == 5 and tuple(input_images.shape[:2]) == (1, 1), f"input {tuple(input_images.shape)}, not [1, 1, H, W, D]"
    assert all(s % 16 == 0 for s in input_images.shape[2:]), f"window {tuple(input_images.shape[2:])} not divisible by 16"
    assert transpose is True, "the inferers need [1, B, H, W, D] logits"
    assert labels is None and label_set is None, "no ground truth goes in"
    window = tuple(patch_coords[0][-3:])  # with_coord=True: the window's slices of the (padded) input
    assert [s.stop - s.start for s in window] == list(input_images.shape[2:])
    if class_vector is not None:
        assert class_vector.ndim == 2 and class_vector.shape[1] == 1 and class_vector.dtype == torch.int64, "class_vector must be [B, 1] ids"
        assert prompt_class is not None and torch.equal(prompt_class, class_vector)
    else:
        assert prompt_class is None
    positives = np.zeros((0, 3))
    if point_coords is not None:
        assert point_coords.ndim == 3 and point_coords.shape[0] == 1 and point_coords.shape[2] == 3, f"point_coords {tuple(point_coords.shape)}"
        assert point_coords.is_floating_point(), "points are fractional voxel coordinates"
        assert tuple(point_labels.shape) == tuple(point_coords.shape[:2]), "point_labels must be [1, N]"
        assert set(point_labels.flatten().tolist()) <= {0, 1}
        assert class_vector is None or class_vector.shape[0] == 1, "B must be 1 with points"
        local = point_coords[0].cpu().numpy() - [s.start for s in window]  # as VISTA3D.update_point_to_patch
        inside = ((local > 0) & (local < np.asarray(input_images.shape[2:]))).all(1)
        positives = local[inside & (point_labels[0].cpu().numpy() == 1)]
    else:
        assert point_labels is None and class_vector is not None, "a class prompt needs class ids"
    objects = 1 if class_vector is None else class_vector.shape[0]
    return input_images[0, 0].cpu().numpy(), objects, positives


def answer(masks, like):
    """[1, B, H, W, D] logits: 5 inside each mask, -5 outside."""
    return torch.from_numpy(np.stack([np.where(m, 5.0, -5.0) for m in masks])[None].astype(np.float32)).to(like.device)


class EchoVISTA3D(torch.nn.Module):
    """VISTA3D.forward's signature and contract, answering with a ball around the first positive point
    (window coordinates), or, for class ids, around the bright blob of the window."""

    def __init__(self, radius: float = 3.0) -> None:
        super().__init__()
        self.radius, self.calls = radius, []

    def forward(self, input_images, patch_coords=None, point_coords=None, point_labels=None, class_vector=None, prompt_class=None,
                labels=None, label_set=None, prev_mask=None, radius=None, val_point_sampler=None, transpose=False, **kwargs):
        window, objects, positives = contract(input_images, patch_coords, point_coords, point_labels, class_vector, prompt_class,
                                              labels, label_set, transpose)
        self.calls.append({"shape": window.shape, "class_vector": None if class_vector is None else class_vector[:, 0].tolist(),
                           "points": None if point_coords is None else point_coords[0].tolist()})
        if point_coords is not None:
            for point in positives:
                assert_on_blob(window, point, "VISTA3D point")
            mask = ball(window.shape, positives[0], self.radius) if len(positives) else np.zeros(window.shape, bool)
        else:
            mask = ball(window.shape, bright_centre(window), self.radius)
        return answer([mask] * objects, input_images)


class NoiseEcho(torch.nn.Module):
    """A dense random-looking mask per class id, a hash of each voxel's value (and, with `positional`, of
    its index in the padded input, for scans of few distinct values), and a ball around a positive point.
    Without `positional` nothing but the voxel's value counts: windows, padding and stitching must not
    change the masks."""

    def __init__(self, positional: bool = True) -> None:
        super().__init__()
        self.positional = positional

    def forward(self, input_images, patch_coords=None, point_coords=None, point_labels=None, class_vector=None, prompt_class=None,
                labels=None, label_set=None, prev_mask=None, radius=None, val_point_sampler=None, transpose=False, **kwargs):
        window, _, positives = contract(input_images, patch_coords, point_coords, point_labels, class_vector, prompt_class,
                                        labels, label_set, transpose)
        seed = window.astype(np.float64) * 7919.0
        if self.positional:  # a Weyl sequence over the index in the padded input
            start = [s.start for s in patch_coords[0][-3:]]
            i, j, k = (np.arange(n, dtype=np.float64).reshape([-1 if a == b else 1 for b in range(3)]) + start[a]
                       for a, n in enumerate(window.shape))
            seed = seed + 0.7548776662 * i + 0.5698402910 * j + 0.4301597090 * k
        ids = [0] if class_vector is None else class_vector[:, 0].tolist()
        masks = [np.modf(seed + 0.6180339887 * c)[0] > 0.5 for c in ids]
        if len(positives):
            masks = [m | ball(window.shape, positives[0], 3.0) for m in masks]
        return answer(masks, input_images)


class ThresholdEcho(torch.nn.Module):
    """Class ids: the voxels above `level` (the blob, whatever the windows); points: a ball around the first positive one."""

    def __init__(self, level: float = 0.7) -> None:
        super().__init__()
        self.level, self.calls = level, []

    def forward(self, input_images, patch_coords=None, point_coords=None, point_labels=None, class_vector=None, prompt_class=None,
                labels=None, label_set=None, prev_mask=None, radius=None, val_point_sampler=None, transpose=False, **kwargs):
        window, objects, positives = contract(input_images, patch_coords, point_coords, point_labels, class_vector, prompt_class,
                                              labels, label_set, transpose)
        self.calls.append({"class_vector": None if class_vector is None else class_vector[:, 0].tolist(), "points": point_coords is not None})
        if point_coords is not None:
            mask = ball(window.shape, positives[0], 3.0) if len(positives) else np.zeros(window.shape, bool)
            return answer([mask] * objects, input_images)
        return answer([window > self.level] * objects, input_images)


def cropped_case():
    """The oblique scan with its body cut to a box touching two faces: CropForeground cuts the other four."""
    case = echo_case("oblique")
    image = np.zeros_like(case.image)
    image[5:25, 0:30, 4:32] = case.image[5:25, 0:30, 4:32]
    image.setflags(write=False)
    return replace(case, image=image)


#: the scans of the comparisons with the bundle's chain, listing the liver and the lung
CASES = {**{name: (lambda name=name: echo_case(name, organs=("liver", "lung"))) for name in SCANS},
         "cropped": lambda: replace(cropped_case(), organs=("liver", "lung"))}


# -- the bundle's own chain, from its configs and scripts ---------------------------------------------------

def bundle_preprocessing():
    """configs/inference.json preprocessing_transforms (on the CPU)."""
    from monai.apps.vista3d.transforms import VistaPreTransformd
    from monai.transforms import (
        CastToTyped,
        Compose,
        CropForegroundd,
        EnsureChannelFirstd,
        EnsureTyped,
        LoadImaged,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )

    return Compose([
        LoadImaged(keys="image", image_only=True),
        EnsureChannelFirstd(keys="image"),
        EnsureTyped(keys="image", device="cpu", track_meta=True),
        Spacingd(keys="image", pixdim=[1.5, 1.5, 1.5], mode="bilinear"),
        CropForegroundd(keys="image", allow_smaller=True, margin=10, source_key="image"),
        VistaPreTransformd(keys="image", subclass=SUBCLASS, labels_dict=None),
        ScaleIntensityRanged(keys="image", a_min=A_MIN, a_max=A_MAX, b_min=0, b_max=1, clip=True),
        Orientationd(keys="image", axcodes="RAS"),
        CastToTyped(keys="image", dtype=torch.float32),
    ])


def write_nifti(case, folder):
    path = folder / f"{case.scan}-{case.image.shape[0]}.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(case.image), case.affine), path)
    return path


def bundle_mask(path, network, roi, label_prompt=None, points=None, point_labels=None):
    """The bundle's inference on a NIfTI (scripts/evaluator.py with user_prompt, scripts/inferer.py,
    inference.json's postprocessing) as a bool mask on the file's grid (255, not computed, is background)."""
    from monai.apps.vista3d.inferer import point_based_window_inferer
    from monai.apps.vista3d.transforms import VistaPostTransformd
    from monai.data import decollate_batch, list_data_collate
    from monai.inferers import SlidingWindowInfererAdapt
    from monai.transforms import Compose, Invertd, Lambdad, reset_ops_id

    preprocessing = bundle_preprocessing()
    item = {"image": str(path), "label_prompt": label_prompt, "point_labels": point_labels}
    data = preprocessing(item)
    inputs = list_data_collate([{"image": data["image"]}])["image"]
    label_prompt = data["label_prompt"]
    class_vector = torch.as_tensor([label_prompt])[0].unsqueeze(-1) if label_prompt is not None else None
    point_coords = None
    if points is not None:  # Vista3dEvaluator.transform_points
        affine = np.linalg.inv(inputs.affine[0].numpy()) @ inputs.meta["original_affine"][0].numpy()
        homogeneous = np.concatenate([np.asarray(points, dtype=np.float64), np.ones((len(points), 1))], axis=1)
        point_coords = torch.from_numpy((homogeneous @ affine.T)[None, :, :3])
    labels = torch.as_tensor([data["point_labels"]]) if points is not None else None
    prompt_class = copy.deepcopy(class_vector)
    with torch.no_grad():
        if point_coords is not None:
            pred = point_based_window_inferer(inputs=inputs, roi_size=[roi] * 3, sw_batch_size=1, transpose=True, with_coord=True,
                                              predictor=network, mode="gaussian", sw_device=inputs.device, device=inputs.device, overlap=0.3,
                                              point_coords=point_coords, point_labels=labels, class_vector=class_vector,
                                              prompt_class=prompt_class, prev_mask=None, labels=None, label_set=None)
        else:
            pred = SlidingWindowInfererAdapt(roi_size=[roi] * 3, sw_batch_size=1, with_coord=True, padding_mode="replicate")(
                inputs, network, transpose=True, point_coords=None, point_labels=None, class_vector=class_vector,
                prompt_class=prompt_class, prev_mask=None, labels=None, label_set=None)
    inputs = reset_ops_id(inputs)
    output = decollate_batch({"image": inputs, "pred": pred})[0]
    output.update(label_prompt=class_vector, points=None if point_coords is None else point_coords,
                  point_labels=labels)
    post = Compose([
        VistaPostTransformd(keys="pred"),
        Invertd(keys="pred", transform=copy.deepcopy(preprocessing), orig_keys="image", nearest_interp=True, to_tensor=True),
        Lambdad(keys="pred", func=lambda x: torch.nan_to_num(x, nan=255)),
    ])
    pred = post(output)["pred"][0].numpy()
    return (pred > 0) & (pred != 255)


# -- 1. geometry round trip ---------------------------------------------------------------------------------

@pytest.mark.parametrize("scan", list(SCANS))
def test_class_mask_is_centred_on_the_blob_in_world_space(scan):
    case = echo_case(scan)
    network = EchoVISTA3D()
    mask = VISTA3DModel(network=network)(case, Prompt("class", "liver", 1))
    assert mask.dtype == bool
    assert_centred(mask, case, blob_world(case), f"VISTA3D class on {scan}")
    assert network.calls[0]["class_vector"] == [1] and network.calls[0]["shape"] == (128, 128, 128)


@pytest.mark.parametrize("roi", [128, 32])
@pytest.mark.parametrize("scan", list(SCANS))
def test_point_mask_is_centred_on_the_click_in_world_space(scan, roi):
    case = echo_case(scan)
    network = EchoVISTA3D()
    prompt = point_prompt(case)
    mask = VISTA3DModel(network=network, roi_size=roi)(case, prompt)
    assert_centred(mask, case, to_world(case.affine, prompt.points[0]), f"VISTA3D point on {scan}, roi {roi}")
    assert network.calls[-1]["class_vector"] is None and network.calls[-1]["shape"] == (roi,) * 3


def test_point_class_sends_the_organs_id_with_the_points():
    case = echo_case("oblique")
    network = EchoVISTA3D()
    prompt = Prompt("point", "kidney_left", 3, point_prompt(case).points, (1,))
    mask = VISTA3DModel(network=network, point_class=True)(case, prompt)
    assert network.calls[-1]["class_vector"] == [14]
    assert_centred(mask, case, to_world(case.affine, prompt.points[0]), "VISTA3D point + class")
    with pytest.raises(PromptError, match="lung"):
        VISTA3DModel(network=network, point_class=True)(case, Prompt("point", "lung", 12, prompt.points, (1,)))


# -- 2. preprocessing and masks against the bundle's chain --------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_preprocessing_is_the_bundle_chain_on_the_scans_nifti(name, tmp_path):
    case = CASES[name]()
    reference = bundle_preprocessing()({"image": str(write_nifti(case, tmp_path))})["image"]
    image, grid = VISTA3DModel(network=EchoVISTA3D()).preprocess(case)
    assert tuple(image.shape) == (1, *reference.shape) and image.dtype == torch.float32
    assert grid.shape == tuple(reference.shape[1:])
    np.testing.assert_allclose(grid.affine, reference.affine.numpy(), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(image[0].numpy(), reference.numpy())
    if name == "cropped":  # CropForeground did cut this one
        assert grid.shape != VISTA3DModel(network=EchoVISTA3D()).preprocess(echo_case("oblique"))[1].shape


@pytest.mark.parametrize("name", list(CASES))
def test_masks_equal_the_bundles_invertd_voxel_for_voxel(name, tmp_path):
    """Dense noise masks through our mapping and the bundle's Invertd: every voxel of the scan agrees
    (none of these grids puts a scan voxel half-way between two preprocessed voxels, where either is nearest)."""
    case = CASES[name]()
    path = write_nifti(case, tmp_path)
    network = NoiseEcho()
    model = VISTA3DModel(network=network)
    for organ, label_prompt in [("liver", [1]), ("lung", [20])]:
        mask = model(case, Prompt("class", organ, 1))
        expected = bundle_mask(path, network, 128, label_prompt=label_prompt)
        assert expected.any() and (organ == "lung" or not expected.all())  # the lung: five noise masks, nearly everything
        np.testing.assert_array_equal(mask, expected, err_msg=f"{organ} on {name}")
    click = blob_voxel("oblique") if name == "cropped" else point_prompt(case).points[0]
    for roi in (32, 128) if name in ("oblique", "cropped") else (32,):  # 128: one window, the input padded to it
        mask = VISTA3DModel(network=network, roi_size=roi)(case, Prompt("point", "liver", 1, (click,), (1,)))
        expected = bundle_mask(path, network, roi, points=[list(click)], point_labels=[1])
        assert expected.any()
        np.testing.assert_array_equal(mask, expected, err_msg=f"point on {name}, roi {roi}")


def test_masks_differ_from_invertd_only_where_two_voxels_are_equally_near(tmp_path, monkeypatch):
    """0.75 mm voxels fall half-way between two 1.5 mm ones: there Invertd (torch, round half to even)
    and resample_onto (scipy) may pick different neighbours; everywhere else they agree."""
    monkeypatch.setitem(SCANS, "fine", ((60, 56, 30), (0.75, 0.75, 3.0), (0, 0, 0), True, "ct"))
    case = echo_case("fine")
    network = NoiseEcho()
    model = VISTA3DModel(network=network)
    mask = model(case, Prompt("class", "liver", 1))
    expected = bundle_mask(write_nifti(case, tmp_path), network, 128, label_prompt=[1])
    different = np.argwhere(mask != expected)
    grid = model.preprocess(case)[1]
    mapping = np.linalg.inv(grid.affine) @ case.affine.astype(np.float32).astype(np.float64)
    position = different @ mapping[:3, :3].T + mapping[:3, 3]
    halfway = (np.abs(position - np.floor(position) - 0.5) < 1e-6).any(axis=1)
    assert len(different) and halfway.all()
    assert len(different) < 0.2 * mask.size


# -- 3. class batches, windows, the scan memo ---------------------------------------------------------------

def test_one_pass_per_batch_of_class_ids_on_the_first_class_prompt_and_none_after():
    case = echo_case("lps", organs=ORGANS)
    network = ThresholdEcho()
    model = VISTA3DModel(network=network, class_batch=6)
    first = model(case, Prompt("class", "spleen", 2))
    batches = [c["class_vector"] for c in network.calls]
    ids = [i for organ in ORGANS for i in CLASS_IDS[organ]]
    assert batches[0][0] == 3 and sorted(i for b in batches for i in b) == sorted(ids)  # the prompted organ first, then every listed organ once
    assert [len(b) for b in batches] == [6, 6, 5]
    for organ in ORGANS:
        model(case, Prompt("class", organ, 1))
    assert len(network.calls) == 3  # the other organs come from the memo
    assert_centred(first, case, blob_world(case), "VISTA3D spleen")
    model(echo_case("ras", organs=("liver",)), Prompt("class", "liver", 1))
    assert network.calls[-1]["class_vector"] == [1]  # a new scan: a new pass


def test_windows_and_batches_leave_class_masks_unchanged():
    case = echo_case("pet", organs=("liver", "lung", "heart"))
    masks = {}
    for roi, batch in [(128, 7), (32, 1), (48, 4)]:
        model = VISTA3DModel(network=NoiseEcho(positional=False), roi_size=roi, class_batch=batch)
        masks[roi] = {organ: model(case, Prompt("class", organ, 1)) for organ in ("liver", "lung", "heart")}
    for roi in (32, 48):
        for organ, mask in masks[roi].items():
            assert mask.any()
            np.testing.assert_array_equal(mask, masks[128][organ], err_msg=f"{organ}, roi {roi}")


def test_corrective_clicks_on_a_class_prompt_keep_the_class_mask_outside_their_window():
    case = echo_case("lps", organs=("liver", "lung"))
    network = ThresholdEcho()
    model = VISTA3DModel(network=network, roi_size=16)
    prompt = Prompt("class", "liver", 1)
    before = model(case, prompt)
    far = (33, 25, 11)  # a body voxel 32 mm from the blob: its 24 mm window misses the blob
    after = model(case, prompt.with_click(far, 1, 1))
    assert network.calls[-1] == {"class_vector": [1], "points": True}
    assert after[far] and not before[far]  # the click's ball
    assert (after & before).sum() == before.sum()  # the class mask, kept outside the click's window (the blob lies outside it)
    with pytest.raises(PromptError, match="lung"):
        model(case, Prompt("class", "lung", 12).with_click(far, 1, 1))


def test_pickling_drops_the_built_network_and_the_scan():
    network = ThresholdEcho()
    model = VISTA3DModel(network=network)
    case = echo_case("lps")
    model(case, Prompt("class", "liver", 1))
    copy_ = pickle.loads(pickle.dumps(model))
    assert copy_._network is None and copy_._memo._value is None
    assert_centred(copy_(case, Prompt("class", "liver", 1)), case, blob_world(case), "after pickling")


# -- 4. errors ----------------------------------------------------------------------------------------------

def test_prompts_it_cannot_take_say_what_to_do():
    case = echo_case("lps")
    model = VISTA3DModel(network=EchoVISTA3D())
    with pytest.raises(PromptError, match="class, point, points"):
        model(case, Prompt("box", "liver", 1, box=((1, 1, 1), (5, 5, 5))))
    with pytest.raises(PromptError, match="class, point, points"):
        model(case, Prompt("text", "liver", 1, text="liver"))
    with pytest.raises(PromptError, match="no class for the organ 'thyroid'"):
        model(case, Prompt("class", "thyroid", 14))
    with pytest.raises(PromptError, match=r"1 \(positive\) or 0"):
        model(case, Prompt("point", "liver", 1, point_prompt(case).points, (2,)))
    with pytest.raises(PromptError, match="without|0 points"):
        model(case, Prompt("point", "liver", 1))
    with pytest.raises(PromptError, match="outside VISTA3D's input"):
        model(cropped_case(), Prompt("point", "liver", 1, ((39, 39, 0),), (1,)))


def test_missing_weights_package_and_bad_options(monkeypatch, tmp_path):
    case = echo_case("lps")
    monkeypatch.delenv("UMD_VISTA3D_WEIGHTS", raising=False)
    with pytest.raises(ModelUnavailableError, match="UMD_VISTA3D_WEIGHTS"):
        VISTA3DModel()(case, Prompt("class", "liver", 1))
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        VISTA3DModel(tmp_path / "model.pt")(case, Prompt("class", "liver", 1))
    model = VISTA3DModel(network=EchoVISTA3D())
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "skimage.measure", None)  # the point-only postprocessing needs scikit-image
        with pytest.raises(ModelUnavailableError, match=r"'skimage'.*umd-dataset\[vista3d\]"):
            model(case, point_prompt(case))
    monkeypatch.setitem(sys.modules, "monai.transforms", None)
    with pytest.raises(ModelUnavailableError, match=r"'monai'.*umd-dataset\[vista3d\]"):
        VISTA3DModel(network=EchoVISTA3D())(case, Prompt("class", "liver", 1))
    assert VISTA3DModel(device="cuda:1").device == "cuda:1"  # checked, not started, at construction
    for options, match in [({"device": "gpu"}, "device"), ({"roi_size": 100}, "multiple of 16"), ({"roi_size": 8}, "multiple of 16"),
                           ({"class_batch": 0}, "class_batch"), ({"roi_size": True}, "roi_size")]:
        with pytest.raises(InvalidOptionError, match=match):
            VISTA3DModel(**options)


def test_what_the_network_returns_is_checked():
    case = echo_case("lps")

    class Wrong(EchoVISTA3D):
        def __init__(self, how):
            super().__init__()
            self.how = how

        def forward(self, input_images, *args, **kwargs):
            out = super().forward(input_images, *args, **kwargs)
            return out[:, :, :-1] if self.how == "shape" else out * float("nan")

    with pytest.raises(ModelError, match="expected logits of shape"):
        VISTA3DModel(network=Wrong("shape"))(case, Prompt("class", "liver", 1))
    with pytest.raises(ModelError, match="NaN"):
        VISTA3DModel(network=Wrong("nan"))(case, point_prompt(case))
    empty = replace(case, image=np.full(case.image.shape, -1000, dtype=np.int16))
    with pytest.raises(ModelError, match="no voxel above 0"):
        VISTA3DModel(network=EchoVISTA3D())(empty, Prompt("class", "liver", 1))


def test_checkpoints_load_strictly_in_both_formats_of_the_bundles_loader(tmp_path):
    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    torch.save(source.state_dict(), tmp_path / "raw.pt")
    torch.save({"model": source.state_dict()}, tmp_path / "dict.pt")
    for name in ("raw.pt", "dict.pt"):
        target.reset_parameters()
        load_checkpoint(target, tmp_path / name)
        assert torch.equal(target.weight, source.weight)
    torch.save({"model": {"weight": source.weight}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"1 of its 2 weights missing \(e.g. \['bias'\]\)"):
        load_checkpoint(target, tmp_path / "partial.pt")
    torch.save({"weight": torch.zeros(5, 3), "bias": torch.zeros(5)}, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="does not fit Linear"):
        load_checkpoint(target, tmp_path / "shape.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(target, tmp_path / "junk.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_checkpoint(target, tmp_path / "list.pt")


# -- 5. the real network, random weights --------------------------------------------------------------------

@pytest.mark.slow
def test_random_weight_vista3d132_through_the_adapter_equals_the_bundle_chain(tmp_path):
    from monai.networks.nets import vista3d132

    torch.manual_seed(0)
    torch.save(vista3d132(in_channels=1).state_dict(), tmp_path / "model.pt")
    case = echo_case("lps", organs=("liver",))
    model = VISTA3DModel(tmp_path / "model.pt", roi_size=48)
    path = write_nifti(case, tmp_path)
    mask = model(case, Prompt("class", "liver", 1))
    assert mask.shape == case.image.shape and mask.dtype == bool and 0 < mask.mean() < 1  # random weights: a mask of some shape
    np.testing.assert_array_equal(mask, bundle_mask(path, model.network(), 48, label_prompt=[1]))
    prompt = point_prompt(case)
    mask = model(case, prompt)
    assert 0 < mask.mean() < 1
    np.testing.assert_array_equal(mask, bundle_mask(path, model.network(), 48, points=[list(prompt.points[0])], point_labels=[1]))
