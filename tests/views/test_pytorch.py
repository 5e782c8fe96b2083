"""Torch, torchio and MONAI views; the same scan is the same voxels through every view; MONAI and
torchio spatial transforms give on the package's items what they give on each library's own loading
of the file (LPS, RAS, oblique and permuted grids); C-contiguous tensors; ranks get disjoint subjects
and equal lengths; batches of scans of different shapes."""

from __future__ import annotations

import json
import math
import shutil
import warnings

import numpy as np
import pytest
import torch
import torchio as tio

from helpers import edit_manifest
from umd_dataset import open_release
from umd_dataset.errors import InvalidOptionError, UnknownNameError
from umd_dataset.io import read_nifti, sha256_file, write_nifti
from umd_dataset.io.geometry import reorient, spacing_from_affine
from umd_dataset.views.cache import build_cache
from umd_dataset.views.hf import load_dataset
from umd_dataset.views.pytorch import (
    ITEM_FORMATS,
    PadCollate,
    PairedDataset,
    ScanDataset,
    SubjectSampler,
    list_collate,
    monai_dicts,
    subjects_dataset,
    unpad,
)

warnings.filterwarnings("ignore", message=".*nvImageCodec.*")


def test_same_scan_same_voxels_in_every_view(small_release, tmp_path):
    record = small_release.select(study="petmri", scan="pet", split="train")[0]  # a float PET on an RAS-ordered study
    torch_item = ScanDataset(small_release, study="petmri", scan="pet", split="train")[0]
    hf_row = load_dataset(str(small_release.root), "petmri", split="train").filter(lambda r: r["scan"] == "pet")[0]
    tio_subject = subjects_dataset(small_release, study="petmri", scan="pet", split="train")[0]
    cache = build_cache(small_release, tmp_path / "cache")
    cached_image, cached_label = cache.read(record.key, (0, 0, 0), record.shape)

    reference = torch_item["image"][0].numpy()
    assert torch_item["subject"] == record.subject == hf_row["subject"] == tio_subject["subject"]
    assert np.array_equal(np.asanyarray(hf_row["image"].dataobj), reference)
    assert np.array_equal(tio_subject["image"].data[0].numpy(), reference)
    assert np.array_equal(cached_image, reference)
    labels = torch_item["label"][0].numpy()
    assert np.array_equal(np.asanyarray(hf_row["label"].dataobj), labels)
    assert np.array_equal(tio_subject["label"].data[0].numpy(), labels)
    assert np.array_equal(cached_label, labels)
    affine = torch_item["affine"].numpy()
    assert np.allclose(hf_row["image"].affine, affine) and np.allclose(tio_subject["image"].affine, affine)
    assert np.allclose(record.affine_matrix, affine)
    for item_format in ("monai", "torchio"):  # the other formats: the same voxels and affine
        item = ScanDataset(small_release, study="petmri", scan="pet", split="train", item_format=item_format)[0]
        image = item["image"].data if item_format == "torchio" else item["image"]
        assert np.array_equal(np.asarray(image[0]), reference) and np.array_equal(np.asarray(item["label"].data[0]), labels)
        assert np.allclose(np.asarray(item["image"].affine), affine) and item["subject"] == record.subject


def test_dataloader_with_workers_and_transform(small_release):
    seen = []

    def transform(item):
        item["image"] = item["image"] / 1000.0
        return item

    dataset = ScanDataset(small_release, scan="ct", transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)
    for batch in loader:
        assert batch["image"].shape[1:] == (1, 80, 80, 100) and batch["label"].dtype == torch.uint8
        assert batch["image"].abs().max() < 4  # the transform ran in the workers
        seen += batch["subject"]
    assert sorted(seen) == sorted(r.subject for r in small_release.select(scan="ct"))


def test_paired_items_hold_both_studies_of_one_subject(small_release):
    dataset = PairedDataset(small_release, split="train")
    item = dataset[0]
    assert {"ct", "petct_pet", "mri", "petmri_pet"} <= set(item)
    assert {item[d]["subject"] for d in ("ct", "petct_pet", "mri", "petmri_pet")} == {item["subject"]}
    assert item["ct"]["image"].shape != item["petct_pet"]["image"].shape  # each scan on its own grid


def test_torchio_queue_with_label_sampler(small_release):
    dataset = subjects_dataset(small_release, scan="ct", split="train", transform=tio.RescaleIntensity(out_min_max=(0, 1)))
    sampler = tio.LabelSampler(patch_size=16, label_name="label", label_probabilities={0: 0, 1: 1})
    queue = tio.Queue(dataset, max_length=8, samples_per_volume=2, sampler=sampler, num_workers=0, shuffle_subjects=False)
    batch = next(iter(torch.utils.data.DataLoader(queue, batch_size=4)))
    assert batch["image"][tio.DATA].shape == (4, 1, 16, 16, 16)
    centre = batch["label"][tio.DATA][:, 0, 8, 8, 8]
    assert (centre == 1).all()  # patches centred on the liver


def test_monai_dicts_load_the_same_voxels_with_monai(small_release):
    from monai.transforms import LoadImaged

    items = monai_dicts(small_release, split="test", scan="pet")
    records = small_release.select(split="test", scan="pet")
    assert [(i["subject"], i["study"], i["scan"]) for i in items] == [(r.subject, r.study, r.scan) for r in records]
    assert all(i["split"] == "test" and i["domain"] == r.domain for i, r in zip(items, records))
    load = LoadImaged(keys=["image", "label"], image_only=True)
    view = ScanDataset(small_release, split="test", scan="pet")
    for item, expected in zip(items, view):
        loaded = load(item)
        assert np.array_equal(loaded["image"].numpy(), expected["image"][0].numpy())
        assert np.array_equal(loaded["label"].numpy().astype(np.uint8), expected["label"][0].numpy())
        assert np.allclose(loaded["image"].affine.numpy(), expected["affine"].numpy())


# Items that MONAI and torchio transforms understand (issue 12, item 1). The release's CT and PET are stored
# LPS-ordered and its MRI RAS-ordered; a copy adds two oblique scans and a permuted and flipped MRI and PET.


def _rotation(cos_z: float, sin_z: float, cos_x: float, sin_x: float) -> np.ndarray:
    about_z = np.array([[cos_z, -sin_z, 0], [sin_z, cos_z, 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, cos_x, -sin_x], [0, sin_x, cos_x]])
    return about_x @ about_z


#: Rotations about z then x: by the angles of a 3-4-5 triangle (36.87 degrees), whose products with the CT's
#: spacing float32 holds exactly, and by 20 and 10 degrees, whose affine entries it rounds.
EXACT = _rotation(0.8, 0.6, 0.8, 0.6)
ROUNDED = _rotation(math.cos(math.radians(20)), math.sin(math.radians(20)), math.cos(math.radians(10)), math.sin(math.radians(10)))


@pytest.fixture(scope="module")
def odd_release(small_release_root, tmp_path_factory):
    """A release copy with an oblique CT and PET (`EXACT`, `ROUNDED` rotations of their LPS grids), an
    MRI stored SLP and a PET stored AIL; returns (release, {case: manifest key})."""
    root = tmp_path_factory.mktemp("odd") / "release"
    shutil.copytree(small_release_root, root)
    release = open_release(root)
    ct, mri, pet = release.select(scan="ct")[0], release.select(scan="mri")[1], release.select(scan="pet", study="petct")[2]
    oblique_pet = release.select(scan="pet", study="petmri")[2]
    rows = {}
    for record, change in ((ct, EXACT), (mri, "SLP"), (pet, "AIL"), (oblique_pet, ROUNDED)):
        image, affine = read_nifti(release.image_path(record))
        labels, _ = read_nifti(release.label_path(record))
        image, labels = np.asarray(image), np.asarray(labels)
        if not isinstance(change, str):
            centre = affine[:3, :3] @ ((np.asarray(image.shape) - 1) / 2) + affine[:3, 3]
            new = affine.copy()
            new[:3, :3] = change @ affine[:3, :3]
            new[:3, 3] = centre - new[:3, :3] @ ((np.asarray(image.shape) - 1) / 2)
        else:
            image, new = reorient(image, affine, change)
            labels, _ = reorient(labels, affine, change)
        write_nifti(release.image_path(record), np.ascontiguousarray(image), new)
        write_nifti(release.label_path(record), np.ascontiguousarray(labels), new)
        rows[record.key] = (image.shape, new)

    def change(manifest_rows):
        for row in manifest_rows:
            key = f"{row['subject']}/{row['study']}/{row['scan']}"
            if key in rows:
                shape, affine = rows[key]
                row["shape"], row["affine"] = list(shape), affine.ravel().tolist()
                row["spacing_mm"] = list(spacing_from_affine(affine))
                for which in ("image", "label"):
                    path = root / row[which]
                    row[f"{which}_sha256"], row[f"{which}_bytes"] = sha256_file(path), path.stat().st_size

    edit_manifest(root, change)
    return open_release(root), {"oblique_ct": ct.key, "slp_mri": mri.key, "ail_pet": pet.key, "oblique_pet": oblique_pet.key}


CASES = ["lps_ct", "ras_mri", "lps_pet", "oblique_ct", "slp_mri", "ail_pet", "oblique_pet"]


def _record(odd_release, case):
    release, keys = odd_release
    if case in keys:
        return release, next(r for r in release.scans if r.key == keys[case])
    scan = {"lps_ct": "ct", "ras_mri": "mri", "lps_pet": "pet"}[case]
    untouched = set(keys.values())
    return release, next(r for r in release.select(scan=scan) if r.key not in untouched)


def _monai_reference(release, record):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    chain = Compose([LoadImaged(keys=["image", "label"]), EnsureChannelFirstd(keys=["image", "label"])])
    return chain({"image": str(release.image_path(record)), "label": str(release.label_path(record))})


def _monai_item(release, record, **options):
    index = [r.key for r in release.scans].index(record.key)
    return ScanDataset(release, item_format="monai", **options)[index]


def test_the_odd_release_holds_the_grids_it_promises(odd_release):
    import nibabel as nib

    codes = {case: "".join(nib.aff2axcodes(_record(odd_release, case)[1].affine_matrix)) for case in CASES}
    assert codes["lps_ct"] == codes["lps_pet"] == "LPS" and codes["ras_mri"] == "RAS"
    assert codes["slp_mri"] == "SLP" and codes["ail_pet"] == "AIL"
    for case in ("oblique_ct", "oblique_pet"):
        oblique = _record(odd_release, case)[1].affine_matrix[:3, :3]
        assert np.count_nonzero(np.abs(oblique) > 1e-6) > 3  # not a permutation of the axes


def test_plain_dict_items_mislead_monai_and_torchio(odd_release):
    """The defect the MetaTensor and Subject formats fix: MONAI takes a plain tensor's affine to be the
    identity (the ``affine`` key is ignored), torchio refuses a dict."""
    from monai.transforms import Orientationd, Spacingd

    release, record = _record(odd_release, "lps_ct")
    index = [r.key for r in release.scans].index(record.key)
    plain = ScanDataset(release)[index]
    reference = _monai_reference(release, record)
    orient = Orientationd(keys=["image"], axcodes="RAS")
    wrong = orient({"image": plain["image"], "affine": plain["affine"]})["image"]
    right = orient(dict(reference))["image"]
    assert float((wrong - right).abs().max()) > 1000  # HU: the LPS grid was not flipped
    spacing = Spacingd(keys=["image"], pixdim=4.0)
    assert tuple(spacing({"image": plain["image"]})["image"].shape[1:]) == (21, 21, 26)  # voxels taken as 1 mm
    assert tuple(spacing(dict(reference))["image"].shape[1:]) == (124, 124, 248)
    with pytest.raises(RuntimeError, match="include"):
        tio.ToCanonical()(plain)


@pytest.mark.parametrize("case", CASES)
def test_monai_orientation_and_spacing_match_loadimaged(odd_release, case):
    from monai.transforms import Compose, Orientationd, Spacingd

    release, record = _record(odd_release, case)
    ours = _monai_item(release, record)
    reference = _monai_reference(release, record)
    for key in ("image", "label"):
        assert torch.equal(ours[key].affine, reference[key].affine)
        assert np.array_equal(ours[key].meta["original_affine"], reference[key].meta["original_affine"])
        assert np.array_equal(ours[key].meta["spatial_shape"], reference[key].meta["spatial_shape"])
        assert ours[key].meta["filename_or_obj"] == reference[key].meta["filename_or_obj"]
        assert ours[key].meta["space"] == reference[key].meta["space"] == "RAS"
    keys = ["image", "label"]
    for pixdim in (4.0, (6.25, 6.25, 10.0), (5.0, 7.0, 9.0)):  # isotropic, the release CT's spacing, three different
        chain = Compose([Orientationd(keys=keys, axcodes="RAS"), Spacingd(keys=keys, pixdim=pixdim, mode=("bilinear", "nearest"))])
        got, expected = chain(dict(ours)), chain(dict(reference))
        for key in keys:
            assert got[key].shape == expected[key].shape, (pixdim, key)
            assert torch.equal(got[key].as_tensor().float(), expected[key].as_tensor().float()), (pixdim, key)
            assert torch.allclose(got[key].affine, expected[key].affine, atol=1e-9)


@pytest.mark.slow
def test_monai_spacing_of_2_mm_matches_loadimaged(odd_release):
    from monai.transforms import Spacingd

    release, record = _record(odd_release, "lps_ct")
    spacing = Spacingd(keys=["image"], pixdim=2.0)
    got = spacing(dict(_monai_item(release, record)))["image"]
    expected = spacing(dict(_monai_reference(release, record)))["image"]
    assert tuple(got.shape[1:]) == tuple(expected.shape[1:]) == (248, 248, 496)
    assert torch.equal(got.as_tensor(), expected.as_tensor()) and torch.equal(got.affine, expected.affine)


def test_monai_items_invert_and_need_no_channel_step(odd_release):
    from monai.transforms import Compose, EnsureChannelFirstd, Invertd, Orientationd, Spacingd

    release, record = _record(odd_release, "oblique_ct")
    ours, reference = _monai_item(release, record), _monai_reference(release, record)
    assert EnsureChannelFirstd(keys=["image", "label"])(dict(ours))["image"].shape == ours["image"].shape  # already channel first
    chain = Compose([Orientationd(keys=["image", "label"], axcodes="RAS"),
                     Spacingd(keys=["image", "label"], pixdim=(8.0, 8.0, 8.0), mode=("bilinear", "nearest"))])
    inverse = {}
    for name, item in (("ours", ours), ("reference", reference)):
        out = chain(dict(item))
        out["prediction"] = out["label"].clone()
        inverse[name] = Invertd(keys="prediction", transform=chain, orig_keys="label", nearest_interp=True)(out)["prediction"]
    assert inverse["ours"].shape == ours["label"].shape
    assert torch.equal(inverse["ours"].as_tensor().float(), inverse["reference"].as_tensor().float())
    assert torch.allclose(inverse["ours"].affine, ours["label"].affine)


@pytest.mark.parametrize("case", [c for c in CASES if c != "oblique_pet"])
def test_torchio_canonical_and_resample_match_the_torchio_loader(odd_release, case):
    release, record = _record(odd_release, case)
    index = [r.key for r in release.scans].index(record.key)
    reference = tio.Subject(image=tio.ScalarImage(release.image_path(record)), label=tio.LabelMap(release.label_path(record)))
    stored = ScanDataset(release, item_format="torchio", image_dtype=None)[index]
    floats = ScanDataset(release, item_format="torchio")[index]
    assert isinstance(stored, tio.Subject) and stored["scan"] == record.scan and stored["subject"] == record.subject
    assert stored["image"].data.dtype == reference["image"].data.dtype
    # SimpleITK rebuilds an oblique affine from pixdim and the qform quaternion, nibabel (and the release) takes the
    # float32 sform: they differ by ~1e-7 mm, which flips the rounding of an output shape that falls exactly on a
    # whole number (80 x 6.25 mm / 4 mm = 125 voxels). These targets fall on none.
    for target in (4.1, (5.0, 7.0, 9.0)):
        chain = tio.Compose([tio.ToCanonical(), tio.Resample(target)])
        expected = chain(reference)
        for subject, exact in ((stored, True), (floats, record.dtype == "float32")):
            got = chain(subject)
            assert got["image"].shape == expected["image"].shape
            assert np.allclose(got["image"].affine, expected["image"].affine) and np.allclose(got["label"].affine, expected["label"].affine)
            assert torch.equal(got["label"].data, expected["label"].data)
            difference = float((got["image"].data.double() - expected["image"].data.double()).abs().max())
            # SimpleITK resamples an int16 image into int16: the float32 default differs by the rounding only
            assert difference == 0 if exact else difference <= 1.0, (target, difference)


def test_an_oblique_affine_that_float32_rounds_is_read_apart_by_simpleitk_and_nibabel(odd_release):
    """Why the torchio comparison leaves out `ROUNDED`: torchio's loader (SimpleITK) builds the affine from
    pixdim and a direction, nibabel (MONAI's reader, this package's) takes the stored float32 sform. They
    disagree about such a file by ~1e-7 mm, enough to flip a resampled shape on a rounding tie; the
    package's items carry nibabel's affine, the release's."""
    release, record = _record(odd_release, "oblique_pet")
    index = [r.key for r in release.scans].index(record.key)
    ours = ScanDataset(release, item_format="torchio")[index]["image"].affine
    loaded = tio.ScalarImage(release.image_path(record))
    import nibabel as nib

    assert np.array_equal(ours, nib.load(release.image_path(record)).affine)
    assert 0 < np.abs(loaded.affine - ours).max() < 1e-6
    exact = _record(odd_release, "oblique_ct")
    assert np.array_equal(tio.ScalarImage(exact[0].image_path(exact[1])).affine, nib.load(exact[0].image_path(exact[1])).affine)


def test_paired_flat_items_work_with_monai_dict_transforms(small_release):
    from monai.transforms import Orientationd, RandFlipd

    nested = PairedDataset(small_release, split="train")[0]
    with pytest.raises(Exception):  # noqa: B017 - the defect: MONAI's dict transforms do not reach into nested dicts
        RandFlipd(keys=["ct"], prob=1.0, spatial_axis=0)(nested)
    pairs = PairedDataset(small_release, split="train", item_format="monai")
    assert pairs.flat
    item = pairs[0]
    domains = ("ct", "petct_pet", "mri", "petmri_pet")
    assert set(item) == {"subject", "split"} | {f"{d}_{f}" for d in domains for f in ("image", "label")}
    flipped = RandFlipd(keys=["ct_image", "ct_label"], prob=1.0, spatial_axis=0)(dict(item))
    assert torch.equal(flipped["ct_image"].as_tensor(), torch.flip(item["ct_image"].as_tensor(), dims=[1]))
    assert torch.equal(flipped["ct_label"].as_tensor(), torch.flip(item["ct_label"].as_tensor(), dims=[1]))
    assert torch.equal(flipped["mri_image"], item["mri_image"])  # other keys untouched
    keys = [f"{d}_{f}" for d in domains for f in ("image", "label")]
    oriented = Orientationd(keys=keys, axcodes="RAS")(dict(item))
    subject = small_release.subject(item["subject"])
    for record in subject.scans:
        expected = Orientationd(keys=["image", "label"], axcodes="RAS")(_monai_reference(small_release, record))
        for field in ("image", "label"):
            got = oriented[f"{record.domain}_{field}"]
            assert torch.equal(got.as_tensor().float(), expected[field].as_tensor().float())
            assert torch.equal(got.affine, expected[field].affine)
            assert got.meta["filename_or_obj"] == str(getattr(small_release, f"{field}_path")(record))


def test_paired_items_in_every_format(small_release):
    flat_dict = PairedDataset(small_release, split="train", flat=True)[0]
    assert {"ct_image", "ct_label", "ct_affine", "ct_spacing_mm", "petmri_pet_image"} <= set(flat_dict)
    nested = PairedDataset(small_release, split="train")[0]
    assert torch.equal(flat_dict["petct_pet_image"], nested["petct_pet"]["image"])
    assert torch.equal(flat_dict["mri_affine"], nested["mri"]["affine"])
    subject = PairedDataset(small_release, split="train", item_format="torchio")[0]
    assert isinstance(subject, tio.Subject) and len(subject.get_images(intensity_only=False)) == 8
    canonical = tio.ToCanonical()(subject)
    assert "".join(tio.io.nib.aff2axcodes(canonical["ct_image"].affine)) == "RAS"
    assert isinstance(canonical["ct_label"], tio.LabelMap) and canonical["subject"] == nested["subject"]
    with pytest.raises(InvalidOptionError, match=r"flat=False with item_format='torchio'"):
        PairedDataset(small_release, item_format="torchio", flat=False)
    nested_monai = PairedDataset(small_release, split="train", item_format="monai", flat=False)[0]
    assert nested_monai["ct"]["image"].meta["filename_or_obj"].endswith("ct.nii.gz")


def test_item_options_are_checked(small_release):
    with pytest.raises(UnknownNameError, match=r"Unknown item format \(item_format=\) 'moani'\. Did you mean 'monai'"):
        ScanDataset(small_release, item_format="moani")
    with pytest.raises(InvalidOptionError, match=r"image_dtype=torch\.int16 cannot hold the float32 voxels of .*/pet"):
        ScanDataset(small_release, scan="pet", image_dtype=torch.int16)
    with pytest.raises(InvalidOptionError, match=r"image_dtype=torch\.uint8 cannot hold the int16 voxels"):
        PairedDataset(small_release, image_dtype=torch.uint8)
    with pytest.raises(InvalidOptionError, match=r"image_dtype='float32' is not a torch dtype"):
        ScanDataset(small_release, image_dtype="float32")
    with pytest.raises(InvalidOptionError, match=r"image_dtype=torch\.bfloat16 has no numpy equivalent"):
        ScanDataset(small_release, image_dtype=torch.bfloat16)
    stored = ScanDataset(small_release, scan="ct", image_dtype=None)[0]
    assert stored["image"].dtype == torch.int16
    assert ScanDataset(small_release, scan="ct", image_dtype=torch.float64)[0]["image"].dtype == torch.float64


# C-contiguous tensors (issue 12, item 2): nibabel gives Fortran-ordered arrays; one copy makes them C-ordered.


@pytest.mark.parametrize("item_format", ITEM_FORMATS)
def test_tensors_are_c_contiguous_in_every_format(small_release, item_format):
    def tensors(item):
        for key in item:
            value = item[key]
            if isinstance(value, tio.Image):
                yield key, value.data
            elif isinstance(value, torch.Tensor) and value.ndim == 4:
                yield key, value
            elif type(value) is dict:
                yield from tensors(value)

    def items():  # made one by one, so that a strided tensor is reported before an option this format lacks
        options = {} if item_format == "dict" else {"item_format": item_format}
        for scan in ("ct", "pet", "mri"):
            yield ScanDataset(small_release, scan=scan, **options)[0]
        yield PairedDataset(small_release, **options)[0]
        yield ScanDataset(small_release, scan="ct", image_dtype=None, **options)[0]
        if item_format != "torchio":
            yield PairedDataset(small_release, flat=item_format == "dict", **options)[0]

    seen = 0
    for item in items():
        for key, tensor in tensors(item):
            assert tensor.is_contiguous(), (item_format, key, tensor.stride())
            seen += 1
    assert seen == 2 * 4 + 2 * 4 + (2 * 4 if item_format != "torchio" else 0)


# Subject-level sharding with equal lengths (issue 12, item 4).


def _rank(rank: int, world: int, store: str, root: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    from umd_dataset import open_release

    release = open_release(root)
    scans = ScanDataset(release)
    by_scan = [scans.records[i].subject for i in SubjectSampler(scans.subjects(), seed=3)]
    paired = PairedDataset(release)
    by_pair = [paired.subjects[i].id for i in torch.utils.data.DistributedSampler(paired, shuffle=False)]
    with open(f"{out}/rank{rank}.json", "w") as handle:
        json.dump({"scan_subjects": by_scan, "pair_subjects": by_pair}, handle)
    dist.barrier()
    dist.destroy_process_group()


def test_two_ranks_get_disjoint_subjects(small_release, tmp_path):
    torch.multiprocessing.spawn(_rank, args=(2, str(tmp_path / "store"), str(small_release.root), str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    scan0, scan1 = (set(r["scan_subjects"]) for r in ranks)
    assert scan0 and scan1 and not scan0 & scan1
    assert scan0 | scan1 == set(small_release.subjects)
    assert len(ranks[0]["scan_subjects"]) == len(ranks[1]["scan_subjects"])  # DDP needs equal lengths
    # every scan of a subject goes to the rank that has the subject (the 20 scans split 10 + 10: no padding)
    assert sum(len(r["scan_subjects"]) for r in ranks) == len(small_release.scans)
    pair0, pair1 = (set(r["pair_subjects"]) for r in ranks)
    assert not pair0 & pair1 and pair0 | pair1 == {s.id for s in small_release.pairs()}


def test_subject_sampler_rejects_a_bad_rank():
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, 2\)"):
        SubjectSampler(["a"], num_replicas=2, rank=2)


#: Subjects of the items of some datasets: the small release's scans, its patches (3 per scan), and uneven sizes.
LAYOUTS = {
    "scans": [s for s, n in zip("ABCDEF", (4, 4, 4, 4, 2, 2)) for _ in range(n)],
    "patches": [s for s, n in zip("ABCDEF", (12, 12, 12, 12, 6, 6)) for _ in range(n)],
    "uneven": [s for s, n in zip("ABCDEFG", (1, 7, 2, 2, 5, 1, 3)) for _ in range(n)],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("world", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("drop_last", [False, True])
def test_subject_sampler_gives_every_rank_the_same_length_and_whole_subjects(layout, world, drop_last):
    subjects = LAYOUTS[layout]
    if drop_last and world > len(set(subjects)):
        with pytest.raises(InvalidOptionError, match=r"drop_last=True .* leaves a rank without items"):
            SubjectSampler(subjects, num_replicas=world, rank=0, drop_last=drop_last)
        return
    options = {"drop_last": True} if drop_last else {}  # the default: pad
    samplers = [SubjectSampler(subjects, num_replicas=world, rank=r, seed=5, **options) for r in range(world)]
    for epoch in (0, 1):
        for sampler in samplers:
            sampler.set_epoch(epoch)
        ranks = [list(s) for s in samplers]
        lengths = {len(indices) for indices in ranks}
        assert len(lengths) == 1 and lengths == {len(samplers[0])}, [len(i) for i in ranks]
        owned = [{subjects[i] for i in indices} for indices in ranks]
        if world <= len(set(subjects)):  # every rank has subjects of its own: no subject on two ranks, padding included
            assert all(not a & b for i, a in enumerate(owned) for b in owned[i + 1:])
        if drop_last:
            assert all(len(set(indices)) == len(indices) for indices in ranks)  # dropped, never repeated
        else:
            assert set().union(*map(set, ranks)) == set(range(len(subjects)))  # every item seen


def test_subject_sampler_pads_with_its_own_items_and_reshuffles_per_epoch():
    subjects = LAYOUTS["uneven"]  # 21 items of 7 subjects
    samplers = [SubjectSampler(subjects, num_replicas=3, rank=r, seed=1) for r in range(3)]
    assert [len(s) for s in samplers] == [7, 7, 7]
    for sampler in samplers:
        indices = list(sampler)
        own = len(set(indices))
        assert indices == (indices[:own] * 7)[:7]  # its own items, then the padding repeats them from the start
    first = list(samplers[0])
    assert list(samplers[0]) == first  # the same epoch, the same order
    samplers[0].set_epoch(1)
    assert list(samplers[0]) != first
    fixed = list(SubjectSampler(subjects, num_replicas=3, rank=1, shuffle=False))
    assert fixed == (sorted(set(fixed)) * 7)[:7]  # no shuffle: dataset order
    dropped = SubjectSampler(subjects, num_replicas=3, rank=0, seed=1, drop_last=True)
    assert len(dropped) == 7 and len(set(dropped)) == 7
    more_ranks = [list(SubjectSampler(["a", "b"], num_replicas=3, rank=r)) for r in range(3)]
    assert [len(i) for i in more_ranks] == [1, 1, 1]  # the rank without a subject repeats another's item


def test_subject_sampler_errors():
    with pytest.raises(InvalidOptionError, match="got no items"):
        SubjectSampler([], num_replicas=1, rank=0)
    with pytest.raises(InvalidOptionError, match=r"subject id \(a string\) of each item, got 3"):
        SubjectSampler(["a", 3], num_replicas=1, rank=0)
    with pytest.raises(InvalidOptionError, match=r"num_replicas=0 must be a whole number"):
        SubjectSampler(["a"], num_replicas=0, rank=0)
    with pytest.raises(InvalidOptionError, match=r"rank -1 is not in \[0, 2\)"):
        SubjectSampler(["a"], num_replicas=2, rank=-1)
    with pytest.raises(InvalidOptionError, match="no torch.distributed process group is initialised"):
        SubjectSampler(["a"])
    with pytest.raises(InvalidOptionError, match=r"set_epoch\(-1\)"):
        SubjectSampler(["a"], num_replicas=1, rank=0).set_epoch(-1)


# Batches of scans of different shapes (issue 12, item 6).


def test_a_ct_and_a_pet_in_one_batch(small_release):
    dataset = ScanDataset(small_release, study="petct")  # index order: the CT, then the PET of each subject
    ct, pet = dataset[0], dataset[1]
    assert (ct["scan"], pet["scan"]) == ("ct", "pet")
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=PadCollate({"ct": -1024, "pet": 0}))
    batches = list(loader)
    assert len(batches) == len(dataset) // 2
    batch = batches[0]
    assert batch["image"].shape == (2, 1, 80, 80, 100) and batch["label"].shape == (2, 1, 80, 80, 100)
    assert batch["shape"].tolist() == [[80, 80, 100], [50, 50, 100]] and batch["scan"] == ["ct", "pet"]
    assert batch["mask"].dtype == torch.bool and batch["mask"].sum(dim=(1, 2, 3, 4)).tolist() == [80 * 80 * 100, 50 * 50 * 100]
    assert torch.equal(batch["image"][0], ct["image"]) and torch.equal(batch["image"][1, :, :50, :50], pet["image"])
    assert (batch["image"][1][~batch["mask"][1]] == 0).all() and (batch["label"][1, :, 50:] == 0).all()
    assert torch.equal(batch["affine"], torch.stack([ct["affine"], pet["affine"]]))  # padding at the far end moves no voxel
    back = unpad(batch["label"], batch["shape"])
    assert torch.equal(back[0], ct["label"]) and torch.equal(back[1], pet["label"])
    raw = PadCollate()([pet, ct])  # one number for every scan
    assert (raw["image"][0, :, 50:] == 0).all() and raw["shape"].tolist() == [[50, 50, 100], [80, 80, 100]]
    ignore = PadCollate(label_value=255, mask=False)([ct, pet])
    assert "mask" not in ignore and (ignore["label"][1, :, 50:] == 255).all()


def test_pad_collate_keeps_metatensors_batched_as_monai_does(small_release):
    from monai.data import MetaTensor, decollate_batch
    from monai.data.utils import collate_meta_tensor

    dataset = ScanDataset(small_release, study="petct", item_format="monai")
    ct, pet = dataset[0], dataset[1]
    batch = PadCollate()([ct, pet])
    image = batch["image"]
    assert isinstance(image, MetaTensor) and image.is_batch and image.shape == (2, 1, 80, 80, 100)
    assert torch.equal(image.affine, torch.stack([ct["image"].affine, pet["image"].affine]))
    assert image.meta["filename_or_obj"] == [ct["image"].meta["filename_or_obj"], pet["image"].meta["filename_or_obj"]]
    padded = [torch.nn.functional.pad(v, (0, 100 - v.shape[3], 0, 80 - v.shape[2], 0, 80 - v.shape[1]))
              for v in (ct["image"], pet["image"])]
    monai_batch = collate_meta_tensor(padded)  # MONAI's own collate of the same padded tensors
    assert torch.equal(image.as_tensor(), monai_batch.as_tensor()) and set(image.meta) == set(monai_batch.meta)
    assert torch.equal(image.meta["spatial_shape"], monai_batch.meta["spatial_shape"])
    items = unpad(image, batch["shape"])
    assert isinstance(items[1], MetaTensor) and items[1].shape == pet["image"].shape
    assert torch.equal(items[1].affine, pet["image"].affine) and torch.equal(items[1].as_tensor(), pet["image"].as_tensor())
    assert torch.equal(decollate_batch(image)[1].affine, pet["image"].affine)
    from monai.data import list_data_collate

    same_shape = list_data_collate([pet, dataset[3]])  # MONAI's own collate batches the items of one shape
    assert same_shape["image"].is_batch and torch.equal(same_shape["image"].affine[0], pet["image"].affine)
    flat = PairedDataset(small_release, item_format="monai")
    paired = PadCollate()([flat[0], flat[1]])
    assert {"ct_shape", "ct_mask", "petmri_pet_shape", "mri_mask"} <= set(paired)
    assert paired["subject"] == [flat.subjects[0].id, flat.subjects[1].id]


def test_pad_collate_on_nested_pairs_and_torchio_subjects(small_release):
    nested = PairedDataset(small_release)
    batch = PadCollate()([nested[0], nested[1]])
    assert batch["ct"]["image"].shape[0] == 2 and batch["ct"]["shape"].shape == (2, 3) and "mask" in batch["petmri_pet"]
    subjects = ScanDataset(small_release, study="petct", item_format="torchio")
    batch = PadCollate({"ct": -1024, "pet": 0})([subjects[0], subjects[1]])
    assert batch["image"][tio.DATA].shape == (2, 1, 80, 80, 100) and batch["image"]["shape"].tolist() == [[80, 80, 100], [50, 50, 100]]
    assert (batch["image"][tio.DATA][1, :, 50:] == 0).all() and (batch["image"][tio.DATA][0] == subjects[0]["image"].data).all()
    assert np.allclose(batch["label"][tio.AFFINE][1].numpy(), subjects[1]["label"].affine) and batch["scan"] == ["ct", "pet"]


def test_list_collate_stacks_nothing(small_release):
    loader = torch.utils.data.DataLoader(ScanDataset(small_release, study="petct"), batch_size=2, collate_fn=list_collate)
    batch = next(iter(loader))
    assert [tuple(v.shape) for v in batch["image"]] == [(1, 80, 80, 100), (1, 50, 50, 100)] and batch["scan"] == ["ct", "pet"]
    pairs = list_collate([PairedDataset(small_release)[0], PairedDataset(small_release)[1]])
    assert len(pairs["ct"]["image"]) == 2 and len(pairs["subject"]) == 2
    assert list_collate([1, 2]) == [1, 2]


def test_collate_errors(small_release):
    dataset = ScanDataset(small_release, study="petct")
    ct, pet = dataset[0], dataset[1]
    with pytest.raises(InvalidOptionError, match=r"item 1 of the batch has keys"):
        PadCollate()([ct, {k: v for k, v in pet.items() if k != "affine"}])
    with pytest.raises(InvalidOptionError, match=r"item 1 of the batch has keys"):
        list_collate([ct, {"image": 1}])
    with pytest.raises(InvalidOptionError, match=r"label_value=-1.0 is not a value of the torch.uint8 volumes"):
        PadCollate(label_value=-1)([ct, pet])
    with pytest.raises(InvalidOptionError, match=r"has no value for 'image', a pet scan: add 'pet'"):
        PadCollate({"ct": -1024})([ct, pet])
    with pytest.raises(UnknownNameError, match=r"Did you mean 'pet'"):
        PadCollate({"pte": 0})
    with pytest.raises(InvalidOptionError, match=r"already hold a key 'shape'"):
        PadCollate()([{**ct, "shape": 1}, {**pet, "shape": 2}])
    with pytest.raises(InvalidOptionError, match=r"only the spatial shape may differ"):
        PadCollate()([ct, {**pet, "image": pet["image"].double()}])
    with pytest.raises(InvalidOptionError, match="use list_collate"):
        PadCollate()([1, 2])
    with pytest.raises(InvalidOptionError, match=r"do not match"):
        unpad(torch.zeros(2, 1, 4, 4, 4), [[4, 4, 4]])
