"""The patch cache: same voxels as the release, padding, stale detection, resumable rebuilds, samplers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import edit_manifest
from umd_dataset import open_release
from umd_dataset.views.cache import PatchCache, PatchDataset, StaleCacheError, build_cache, open_cache
from umd_dataset.io import read_nifti, sha256_file, write_nifti


@pytest.fixture(scope="module")
def cache(small_release, tmp_path_factory):
    return build_cache(small_release, tmp_path_factory.mktemp("cache") / "c")


def test_full_read_and_padding(cache, small_release):
    record = small_release.select(scan="mri")[0]
    image, _ = read_nifti(small_release.image_path(record))
    labels, _ = read_nifti(small_release.label_path(record))
    got_image, got_labels = cache.read(record.key, (0, 0, 0), record.shape)
    assert np.array_equal(got_image, image) and np.array_equal(got_labels, labels)
    corner_image, corner_labels = cache.read(record.key, (-4, -4, -4), (8, 8, 8))
    assert np.array_equal(corner_image[4:, 4:, 4:], np.asarray(image)[:4, :4, :4])
    assert (corner_image[:4] == np.asarray(image)[:4, :4, :4].min()).all() and (corner_labels[:4] == 0).all()


def test_changed_release_is_refused_and_rebuilt_scan_by_scan(small_release, release_copy, tmp_path):
    build_cache(open_release(release_copy), tmp_path / "c")
    release = open_release(release_copy)
    record = release.scans[4]
    labels, affine = read_nifti(release.label_path(record))
    write_nifti(release.label_path(record), np.zeros_like(labels), affine)

    def change(rows):
        for row in rows:
            if row["label"] == record.label:
                row["label_sha256"] = sha256_file(release.label_path(record))
                row["label_bytes"] = release.label_path(record).stat().st_size
                row["organs"], row["organ_voxels"] = [], []

    edit_manifest(release_copy, change)
    changed = open_release(release_copy)
    with pytest.raises(StaleCacheError, match=r"another state of the release.*umd cache build"):
        PatchCache(tmp_path / "c", changed)
    with pytest.raises(StaleCacheError):
        open_cache(changed, tmp_path / "c", rebuild=False)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "c").rglob("*.b2nd")}
    rebuilt = open_cache(changed, tmp_path / "c")  # rebuilt because the release changed
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "c").rglob("*.b2nd")}
    rewritten = sorted(p.name for p in after if after[p] != before.get(p))
    assert rewritten == [f"{record.scan}_image.b2nd", f"{record.scan}_label.b2nd"]
    assert (rebuilt.read(record.key, (0, 0, 0), record.shape)[1] == 0).all()


def test_unfinished_cache_is_refused_and_resumed(small_release, tmp_path):
    build_cache(small_release, tmp_path / "c")
    state = json.loads((tmp_path / "c" / "cache.json").read_text())
    state["complete"] = False
    dropped = sorted(state["scans"])[:3]
    for key in dropped:
        del state["scans"][key]
    (tmp_path / "c" / "cache.json").write_text(json.dumps(state))
    with pytest.raises(StaleCacheError, match="was not finished"):
        PatchCache(tmp_path / "c", small_release)
    resumed = build_cache(small_release, tmp_path / "c")
    assert set(dropped) <= set(resumed.state["scans"])


def test_uniform_and_organ_patches(cache, small_release):
    uniform = PatchDataset(cache, patch_size=24, samples_per_volume=3, scan="ct", seed=1)
    assert len(uniform) == 3 * len(small_release.select(scan="ct"))
    item = uniform[4]
    assert item["image"].shape == (1, 24, 24, 24) and item["image"].dtype == torch.float32
    assert torch.equal(uniform[4]["start"], item["start"])  # reproducible
    uniform.set_epoch(1)
    assert not torch.equal(uniform[4]["start"], item["start"])  # a new draw each epoch
    record = small_release.select(scan="ct")[1]
    image, _ = read_nifti(small_release.image_path(record))
    start = item["start"].numpy()
    assert np.array_equal(item["image"][0].numpy(), np.asarray(image)[start[0] : start[0] + 24, start[1] : start[1] + 24, start[2] : start[2] + 24])
    organ = PatchDataset(cache, patch_size=16, samples_per_volume=4, sampler="organ", organs=["esophagus"], scan="pet")
    for index in range(len(organ)):
        assert (organ[index]["label"] == 7).any()  # a thin organ, in every patch


def test_patches_through_dataloader_workers(cache):
    dataset = PatchDataset(cache, patch_size=16, samples_per_volume=2, sampler="organ")
    dataset[0]  # the main process reads first: workers must still work after the fork
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, timeout=60)
    batches = list(loader)
    assert sum(b["image"].shape[0] for b in batches) == len(dataset)


def test_a_misspelt_sampler_or_codec_is_refused_before_anything_is_written(cache, small_release, tmp_path):
    from umd_dataset.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match=r"Unknown patch sampler 'organs'\. Did you mean 'organ'"):
        PatchDataset(cache, sampler="organs")
    with pytest.raises(UnknownNameError, match=r"Unknown cache codec 'lz5'\. Did you mean 'lz4'"):
        build_cache(small_release, tmp_path / "new-cache", codec="lz5")
    assert not (tmp_path / "new-cache").exists()
