"""Intensity normalisation per modality: values on known arrays, the dispatch per scan of every item
format, metadata kept, and clear errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torchio as tio

from umd_dataset.errors import InvalidOptionError, UnknownNameError
from umd_dataset.views.pytorch import PairedDataset, ScanDataset
from umd_dataset.views.transforms import HUWindow, ModalityNormalize, PercentileZScore, SUVScale

warnings.filterwarnings("ignore", message=".*nvImageCodec.*")


def test_hu_window_on_known_values():
    hu = torch.tensor([-3000, -1000, -500, 0, 500, 1000, 3071], dtype=torch.int16)
    out = HUWindow()(hu)
    assert out.dtype == torch.float32 and out.tolist() == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert HUWindow(-160, 240)(torch.tensor([40.0, -200.0, 300.0])).tolist() == [0.5, 0.0, 1.0]
    array = np.array([-1000.0, 0.0, 1000.0])  # numpy in, numpy out; float64 stays float64
    out = HUWindow()(array)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.tolist() == [0.0, 0.5, 1.0]
    assert array.tolist() == [-1000.0, 0.0, 1000.0]  # the input is not changed


def test_suv_scale_on_known_values():
    suv = torch.tensor([-0.5, 0.0, math.e - 1, 50.0, 80.0])
    out = SUVScale()(suv)
    expected = [0.0, 0.0, 1 / math.log1p(50.0), 1.0, 1.0]
    assert torch.allclose(out, torch.tensor(expected), atol=1e-7)
    assert SUVScale(suv_max=10.0, log=False)(torch.tensor([0.0, 2.5, 10.0, 12.0])).tolist() == [0.0, 0.25, 1.0, 1.0]
    assert suv[0] == -0.5


def test_percentile_zscore_on_known_values():
    values = np.arange(201, dtype=np.int16)  # 0..200: the 0.5th and 99.5th percentiles are 1 and 199
    low, high, mean, std = PercentileZScore().statistics(values)
    assert (low, high, mean) == (1.0, 199.0, 100.0)
    # clipped: 1, 1..199, 199: variance = (2 * (1^2 + ... + 99^2) + 2 * 99^2) / 201 by hand
    assert std == pytest.approx(math.sqrt((2 * 328350 + 2 * 99**2) / 201), rel=1e-12)
    out = PercentileZScore()(torch.from_numpy(values))
    assert out.dtype == torch.float32
    assert out[100] == 0 and out[0] == out[1] == pytest.approx((1 - 100) / std, rel=1e-6) and out[200] == out[199]
    background = np.concatenate([np.zeros(1000), np.arange(1, 202, dtype=np.float64)])  # an MRI: 0 around the body
    with_zeros, body = PercentileZScore().statistics(background), PercentileZScore(nonzero=True).statistics(background)
    assert with_zeros[0] == 0.0 and body[:3] == (2.0, 200.0, 101.0)
    assert np.allclose(PercentileZScore(lower=0, upper=100)(np.full(5, 7.0)), 0)  # constant: zeros, no division by 0
    assert np.allclose(PercentileZScore(nonzero=True)(np.zeros(4)), 0)  # nothing above 0: every voxel


def test_array_transforms_keep_metatensor_metadata():
    from monai.data import MetaTensor

    affine = torch.diag(torch.tensor([-2.0, -2.0, 3.0, 1.0], dtype=torch.float64))
    image = MetaTensor(torch.arange(24, dtype=torch.int16).reshape(1, 2, 3, 4) * 100, affine=affine, meta={"filename_or_obj": "ct.nii.gz"})
    for transform in (HUWindow(), SUVScale(), PercentileZScore()):
        out = transform(image)
        assert isinstance(out, MetaTensor) and out.dtype == torch.float32
        assert torch.equal(out.affine, affine) and out.meta["filename_or_obj"] == "ct.nii.gz"
    assert image.dtype == torch.int16 and int(image.max()) == 2300


def _marks():
    """Normalisers that say which one ran: ct -> 1, pet -> 2, mri -> 3 everywhere."""
    return ModalityNormalize(ct=lambda x: x * 0 + 1, pet=lambda x: x * 0 + 2, mri=lambda x: x * 0 + 3)


MARK = {"ct": 1, "pet": 2, "mri": 3}


def test_modality_normalize_dispatches_on_the_scan_of_each_item(small_release):
    dataset = ScanDataset(small_release)
    normalize = ModalityNormalize()
    seen = set()
    for item in (dataset[i] for i in range(len(dataset))):
        out = _marks()(item)
        assert (out["image"] == MARK[item["scan"]]).all() and torch.equal(out["label"], item["label"])
        assert torch.equal(out["affine"], item["affine"]) and out["scan"] == item["scan"]
        expected = {"ct": HUWindow(), "pet": SUVScale(), "mri": PercentileZScore()}[item["scan"]](item["image"])
        assert torch.equal(normalize(item)["image"], expected)
        seen.add(item["scan"])
    assert seen == {"ct", "pet", "mri"}
    ct = dataset[0]
    kept = ModalityNormalize(ct=None)(ct)
    assert kept["image"] is ct["image"]  # None: that modality stays as it is
    before = ct["image"].clone()
    ModalityNormalize()(ct)
    assert torch.equal(ct["image"], before)  # the item is not changed: a copy comes back


def test_modality_normalize_on_paired_items_of_every_format(small_release):
    from monai.data import MetaTensor

    flat = PairedDataset(small_release, item_format="monai")[0]
    out = _marks()(flat)
    for domain, scan in (("ct", "ct"), ("petct_pet", "pet"), ("mri", "mri"), ("petmri_pet", "pet")):
        image = out[f"{domain}_image"]
        assert isinstance(image, MetaTensor) and (image == MARK[scan]).all()
        assert torch.equal(image.affine, flat[f"{domain}_image"].affine)
        assert image.meta["filename_or_obj"] == flat[f"{domain}_image"].meta["filename_or_obj"]
        assert out[f"{domain}_label"] is flat[f"{domain}_label"]
    nested = _marks()(PairedDataset(small_release)[0])
    assert (nested["mri"]["image"] == 3).all() and (nested["petct_pet"]["image"] == 2).all() and nested["mri"]["label"].max() > 0
    subject = PairedDataset(small_release, item_format="torchio")[0]
    normalised = _marks()(subject)
    assert isinstance(normalised, tio.Subject) and isinstance(normalised["ct_image"], tio.ScalarImage)
    assert (normalised["ct_image"].data == 1).all() and (normalised.petmri_pet_image.data == 2).all()  # attributes follow
    assert np.array_equal(normalised["mri_image"].affine, subject["mri_image"].affine)
    assert not (subject["ct_image"].data == 1).all()  # the subject given is not changed


def test_modality_normalize_in_monai_and_torchio_chains_and_workers(small_release):
    from monai.transforms import Compose, Orientationd

    chain = Compose([ModalityNormalize(), Orientationd(keys=["image", "label"], axcodes="RAS")])
    item = ScanDataset(small_release, scan="ct", item_format="monai", transform=chain)[0]
    assert float(item["image"].min()) >= 0 and float(item["image"].max()) <= 1
    assert "".join(__import__("nibabel").aff2axcodes(item["image"].affine.numpy())) == "RAS"
    pet_chain = tio.Compose([ModalityNormalize(), tio.ToCanonical()])
    subject = ScanDataset(small_release, scan="pet", item_format="torchio", transform=pet_chain)[0]
    assert float(subject["image"].data.max()) <= 1 and subject["image"].orientation == ("R", "A", "S")
    lambda_ = tio.Lambda(HUWindow(), types_to_apply=[tio.INTENSITY])
    ct = ScanDataset(small_release, scan="ct", item_format="torchio", transform=lambda_)[0]
    assert float(ct["image"].data.max()) <= 1 and ct["label"].data.max() > 1  # the label map untouched
    loader = torch.utils.data.DataLoader(ScanDataset(small_release, scan="mri", transform=ModalityNormalize()), batch_size=2, num_workers=2)
    batch = next(iter(loader))
    assert abs(float(batch["image"][0].mean())) < 0.2  # z-scored in the workers


def test_normalisation_errors():
    with pytest.raises(UnknownNameError, match=r"Unknown scan 'petscan'\. Did you mean 'pet'"):
        ModalityNormalize()({"image": torch.zeros(1, 2, 2, 2), "scan": "petscan"})
    with pytest.raises(InvalidOptionError, match=r"an 'image' but no 'scan' key"):
        ModalityNormalize()({"image": torch.zeros(1, 2, 2, 2)})
    with pytest.raises(InvalidOptionError, match=r"found no image in an item with keys \['scan', 't1'\]"):
        ModalityNormalize()({"t1": torch.zeros(1, 2, 2, 2), "scan": "mri"})
    with pytest.raises(InvalidOptionError, match=r"takes an item \(a dict or a tio.Subject\), got Tensor"):
        ModalityNormalize()(torch.zeros(2))
    with pytest.raises(InvalidOptionError, match=r"ModalityNormalize\(ct='window'\)"):
        ModalityNormalize(ct="window")
    with pytest.raises(InvalidOptionError, match=r"HUWindow\(low=1000, high=-1000\): low must be below high"):
        HUWindow(1000, -1000)
    with pytest.raises(InvalidOptionError, match=r"HUWindow low=nan must be a finite number"):
        HUWindow(float("nan"))
    with pytest.raises(InvalidOptionError, match=r"SUVScale\(suv_max=0\)"):
        SUVScale(suv_max=0)
    with pytest.raises(InvalidOptionError, match=r"0 <= lower < upper <= 100"):
        PercentileZScore(lower=99.5, upper=0.5)
    with pytest.raises(InvalidOptionError, match=r"take a torch tensor or a numpy array, got list"):
        HUWindow()([1, 2])
