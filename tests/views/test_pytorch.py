"""Torch, torchio and MONAI views; the same scan is the same voxels through every view; two ranks
get disjoint subjects."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchio as tio

from umd_dataset.views.cache import build_cache
from umd_dataset.views.hf import load_dataset
from umd_dataset.views.pytorch import PairedDataset, ScanDataset, SubjectSampler, monai_dicts, subjects_dataset


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
    # every scan of a subject goes to the rank that has the subject
    assert sum(len(r["scan_subjects"]) for r in ranks) == len(small_release.scans)
    pair0, pair1 = (set(r["pair_subjects"]) for r in ranks)
    assert not pair0 & pair1 and pair0 | pair1 == {s.id for s in small_release.pairs()}


def test_subject_sampler_rejects_a_bad_rank():
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, 2\)"):
        SubjectSampler(["a"], num_replicas=2, rank=2)
