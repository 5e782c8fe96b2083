"""The patch cache: same voxels as the release, padding, stale detection, resumable rebuilds, samplers."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch

from helpers import edit_manifest
from umd_dataset import UnknownNameError, open_release
from umd_dataset.errors import InvalidOptionError
from umd_dataset.io import read_nifti, sha256_file, write_nifti
from umd_dataset.io.geometry import resample_onto, shifted, to_voxel, to_world
from umd_dataset.views.cache import (
    FUNCTIONAL_GRIDS,
    PairedPatchDataset,
    PatchCache,
    PatchDataset,
    StaleCacheError,
    build_cache,
    onto_native_grid,
    open_cache,
)


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
    with pytest.raises(UnknownNameError, match=r"Unknown patch sampler 'organs'\. Did you mean 'organ'"):
        PatchDataset(cache, sampler="organs")
    with pytest.raises(UnknownNameError, match=r"Unknown cache codec 'lz5'\. Did you mean 'lz4'"):
        build_cache(small_release, tmp_path / "new-cache", codec="lz5")
    assert not (tmp_path / "new-cache").exists()


# Patch training (issue 12, item 4): a torch Dataset, subjects for SubjectSampler, the epoch in every worker,
# and no silent uniform fallback of the organ sampler.


def _starts(loader) -> list[list[int]]:
    return [s.tolist() for batch in loader for s in (batch["start"] if "start" in batch else batch["structural"]["start"])]


@pytest.mark.parametrize("kind", ["patches", "pairs"])
def test_the_epoch_reaches_persistent_dataloader_workers(cache, kind):
    dataset = (PatchDataset(cache, patch_size=16, samples_per_volume=2, scan="ct", seed=3) if kind == "patches"
               else PairedPatchDataset(cache, patch_size=16, samples_per_study=2, study="petct", seed=3))
    expected = {}
    for epoch in (0, 1):  # what each epoch draws, in this process
        dataset.set_epoch(epoch)
        expected[epoch] = _starts(torch.utils.data.DataLoader(dataset, batch_size=3))
    assert expected[0] != expected[1]
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2, persistent_workers=True, timeout=60)
    seen = []
    for epoch in (0, 1, 0, 1):
        dataset.set_epoch(epoch)
        seen.append(_starts(loader))
    assert seen[0] == expected[0] and seen[1] == expected[1]  # epoch 1 is new in the workers, not a repeat of epoch 0
    assert seen[2] == seen[0] and seen[3] == seen[1]  # a rerun of an epoch draws the same patches


@pytest.mark.slow
def test_the_epoch_reaches_spawned_workers(cache):
    dataset = PatchDataset(cache, patch_size=16, samples_per_volume=2, scan="pet", seed=5)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, persistent_workers=True, timeout=120,
                                         multiprocessing_context="spawn")
    first = _starts(loader)
    dataset.set_epoch(1)
    second = _starts(loader)
    assert first != second and second == _starts(torch.utils.data.DataLoader(dataset, batch_size=4))


def test_set_epoch_refuses_what_is_no_epoch(cache):
    dataset = PatchDataset(cache, patch_size=8, samples_per_volume=1)
    with pytest.raises(InvalidOptionError, match=r"set_epoch\(-1\)"):
        dataset.set_epoch(-1)
    dataset.epoch = 4
    assert dataset.epoch == 4
    twin = copy.deepcopy(dataset)  # a copy has its own counter, shared with its own workers
    twin.set_epoch(2)
    assert dataset.epoch == 4 and twin.epoch == 2 and twin._epoch.is_shared()


@pytest.mark.parametrize("kind", ["patches", "pairs"])
def test_patch_datasets_are_torch_datasets_with_subjects_for_the_subject_sampler(cache, small_release, kind):
    from umd_dataset.views.pytorch import SubjectSampler

    dataset = (PatchDataset(cache, patch_size=8, samples_per_volume=3) if kind == "patches"
               else PairedPatchDataset(cache, patch_size=8, samples_per_study=3, functional_grid="structural"))
    assert isinstance(dataset, torch.utils.data.Dataset)
    subjects = dataset.subjects()
    assert len(subjects) == len(dataset) and set(subjects) == {r.subject for r in small_release.scans}
    covered = set()
    for rank in range(2):
        sampler = SubjectSampler(subjects, num_replicas=2, rank=rank, seed=1)
        indices = list(sampler)
        covered |= set(indices)
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, sampler=sampler)
        names = [s for batch in loader for s in batch["subject"]]
        assert names == [subjects[i] for i in indices]  # subjects() is the subject of each item
    assert covered == set(range(len(dataset)))


@pytest.fixture(scope="module")
def without_brain(small_release_root, tmp_path_factory):
    """A release copy whose first CT has no brain in its label map, and its cache."""
    root = tmp_path_factory.mktemp("no-brain") / "release"
    shutil.copytree(small_release_root, root)
    release = open_release(root)
    record = release.select(scan="ct")[0]
    labels, affine = read_nifti(release.label_path(record))
    labels = np.where(labels == release.schema.organ("brain").id, 0, labels).astype(labels.dtype)
    write_nifti(release.label_path(record), labels, affine)

    def change(rows):
        for row in rows:
            if row["label"] == record.label:
                row["label_sha256"] = sha256_file(release.label_path(record))
                row["label_bytes"] = release.label_path(record).stat().st_size
                kept = [(o, n) for o, n in zip(row["organs"], row["organ_voxels"]) if o != "brain"]
                row["organs"], row["organ_voxels"] = [o for o, _ in kept], [n for _, n in kept]

    edit_manifest(root, change)
    changed = open_release(root)
    return build_cache(changed, tmp_path_factory.mktemp("no-brain-cache") / "c"), record.key


def test_the_organ_sampler_never_falls_back_to_uniform_silently(without_brain):
    cache, key = without_brain
    with pytest.raises(InvalidOptionError, match=rf"1 of \d+ scans have no voxel of any of the organs brain.*{key}.*no_organ='uniform'"):
        PatchDataset(cache, sampler="organ", organs=["brain"], scan="ct")
    with pytest.raises(InvalidOptionError, match=key):
        PairedPatchDataset(cache, sampler="organ", organs=["brain"], study="petct")
    with pytest.warns(UserWarning, match=rf"{key}.*drawn uniformly"):
        uniform = PatchDataset(cache, patch_size=8, samples_per_volume=2, sampler="organ", organs=["brain"], scan="ct", no_organ="uniform")
    assert uniform.uniform_scans == [key] and uniform.skipped == []
    organs = {(uniform.records[i // 2].key, uniform[i]["organ"]) for i in range(len(uniform))}
    assert {o for k, o in organs if k == key} == {0} and {o for k, o in organs if k != key} == {13}
    with pytest.warns(UserWarning, match=rf"{key}.*left out"):
        skipping = PatchDataset(cache, patch_size=8, sampler="organ", organs=["brain"], scan="ct", no_organ="skip")
    assert skipping.skipped == [key] and key not in [r.key for r in skipping.records] and len(skipping.records) == len(uniform.records) - 1
    assert all((skipping[i]["label"] == 13).any() for i in range(len(skipping)))
    with pytest.raises(UnknownNameError, match=r"no_organ policy 'skipp'"):
        PatchDataset(cache, sampler="organ", no_organ="skipp")


# Cross-modal patches (issue 12, item 5): the same world-space box of the structural scan and the PET of a study.


@pytest.fixture(scope="module")
def marked(small_release_root, tmp_path_factory):
    """A release copy with one bright marker voxel in both scans of two studies of one subject, at
    the same world point (the centre of a PET voxel, and the structural voxel nearest to it), and its cache."""
    root = tmp_path_factory.mktemp("marked") / "release"
    shutil.copytree(small_release_root, root)
    release = open_release(root)
    subject = release.pairs()[0]
    markers = {}
    for study in subject.studies.values():
        pet = study.scans["pet"]
        point = to_world(pet.affine_matrix, np.asarray(pet.shape) // 2 + (3, -4, 5))
        for record in study.scans.values():
            image, affine = read_nifti(release.image_path(record))
            image = np.array(image)
            voxel = tuple(int(v) for v in np.floor(to_voxel(affine, point) + 0.5))
            image[voxel] = 30000 if image.dtype == np.int16 else image.max() + 1000
            write_nifti(release.image_path(record), image, affine)
            markers[record.key] = (voxel, float(image[voxel]))

    def change(rows):
        for row in rows:
            key = f"{row['subject']}/{row['study']}/{row['scan']}"
            if key in markers:
                path = root / row["image"]
                row["image_sha256"], row["image_bytes"] = sha256_file(path), path.stat().st_size

    edit_manifest(root, change)
    changed = open_release(root)
    return changed, build_cache(changed, tmp_path_factory.mktemp("marked-cache") / "c"), markers


def _where_max(part: dict) -> tuple[np.ndarray, float]:
    image = part["image"][0].numpy()
    index = np.unravel_index(int(np.argmax(image)), image.shape)
    return to_world(part["affine"].numpy(), index), float(image[index])


def _corner_starts(voxel, size: int):
    """Structural patch corners that put the marker voxel at each corner of the patch, and in its middle."""
    voxel = np.asarray(voxel)
    return [voxel - np.asarray(bits) * (size - 1) for bits in np.ndindex(2, 2, 2)] + [voxel - size // 2]


@pytest.mark.parametrize("study_kind", ["petct", "petmri"])
def test_a_paired_patch_covers_the_same_world_box_on_the_pet_grid(marked, study_kind):
    release, cache, markers = marked
    pairs = PairedPatchDataset(cache, patch_size=12, study=study_kind)
    study = next(s for s in pairs.studies if f"{s.subject}/{s.study}/pet" in markers)
    structural, functional = pairs.structural_of(study), pairs.functional_of(study)
    pet_full, _ = release.read(functional, "image")
    coarser = np.maximum(structural.spacing_mm, functional.spacing_mm)
    for start in _corner_starts(markers[structural.key][0], 12):
        item = pairs.pair(study, start)
        at_structural, value = _where_max(item["structural"])
        assert value == markers[structural.key][1]  # the marker is in the structural patch ...
        at_pet, pet_value = _where_max(item["functional"])
        assert pet_value == pytest.approx(markers[functional.key][1])  # ... and in the PET patch, wherever it lies in the box
        assert (np.abs(at_pet - at_structural) <= coarser / 2 + 1e-6).all()  # at the same world point
        native = item["functional"]
        begin = native["native_start"].numpy()
        assert tuple(native["image"].shape[1:]) == pairs.functional_sizes[f"{study.subject}/{study.study}"]
        assert np.allclose(native["affine"].numpy(), shifted(functional.affine_matrix, begin))
        end = begin + np.asarray(native["image"].shape[1:])
        assert (begin >= 0).all() and (end <= functional.shape).all()
        assert np.array_equal(native["image"][0].numpy(), pet_full[begin[0] : end[0], begin[1] : end[1], begin[2] : end[2]])


def test_the_pet_resampled_onto_the_structural_patch_grid_keeps_label_ids_and_goes_back(marked):
    release, cache, markers = marked
    resampled = PairedPatchDataset(cache, patch_size=12, study="petct", functional_grid="structural")
    native = PairedPatchDataset(cache, patch_size=12, study="petct")
    study = next(s for s in resampled.studies if f"{s.subject}/{s.study}/pet" in markers)
    ct, pet = resampled.structural_of(study), resampled.functional_of(study)
    pet_image, pet_affine = release.read(pet, "image")
    pet_labels, _ = release.read(pet, "label")
    ids = set(np.unique(pet_labels).tolist())
    starts = _corner_starts(markers[ct.key][0], 12) + [np.array([30, 25, 40]), np.array([20, 50, 10])]
    for start in starts:
        item = resampled.pair(study, start)
        structural, functional = item["structural"], item["functional"]
        assert functional["image"].shape == functional["label"].shape == structural["image"].shape == (1, 12, 12, 12)
        assert torch.equal(functional["affine"], structural["affine"]) and functional["label"].dtype == torch.uint8
        labels = functional["label"][0].numpy()
        assert set(np.unique(labels).tolist()) <= ids  # PET label ids only, never an interpolated value
        # nearest neighbour: each voxel takes the PET voxel its centre falls in
        centres = to_world(structural["affine"].numpy(), np.stack(np.meshgrid(*[np.arange(12)] * 3, indexing="ij"), -1))
        nearest = np.floor(to_voxel(pet_affine, centres) + 0.5).astype(int)
        assert np.array_equal(labels, pet_labels[nearest[..., 0], nearest[..., 1], nearest[..., 2]])
        # linear for the intensities, equal to resampling the whole PET volume
        whole = resample_onto(np.asarray(pet_image), pet_affine, (12, 12, 12), structural["affine"].numpy(), order=1, support=False)
        assert np.allclose(functional["image"][0].numpy(), whole, atol=1e-4)
        # and back onto the PET's own grid: the PET's labels again, on every PET voxel whose centre is in the box
        back = onto_native_grid(functional["label"], item)
        own = native.pair(study, start)["functional"]
        assert back.shape == tuple(own["label"].shape[1:]) and np.array_equal(own["native_affine"], functional["native_affine"])
        grid = np.stack(np.meshgrid(*[np.arange(n) for n in back.shape], indexing="ij"), -1)
        inside = to_voxel(structural["affine"].numpy(), to_world(own["affine"].numpy(), grid))
        inside = ((inside > -0.5) & (inside < 11.5)).all(-1)
        assert inside.any() and np.array_equal(back[inside], own["label"][0].numpy()[inside])
    at_ct, _ = _where_max(resampled.pair(study, starts[-3])["structural"])
    at_pet, _ = _where_max(resampled.pair(study, starts[-3])["functional"])
    assert (np.abs(at_pet - at_ct) <= np.asarray(pet.spacing_mm) / 2).all()  # the marker lands where the CT's is


def test_paired_patches_read_only_the_region_they_need(cache, small_release, monkeypatch):
    reads = []
    original = cache.read_array
    monkeypatch.setattr(cache, "read_array", lambda key, which, start, size: reads.append((key, tuple(size))) or original(key, which, start, size))
    for grid in FUNCTIONAL_GRIDS:
        pairs = PairedPatchDataset(cache, patch_size=16, samples_per_study=1, sampler="organ", functional_grid=grid)
        for index in range(len(pairs)):
            pairs[index]
    shapes = {r.key: r.shape for r in small_release.scans}
    assert reads and all(np.prod(size) < np.prod(shapes[key]) / 8 for key, size in reads)
    largest = {key.rsplit("/", 1)[1]: max(np.prod(s) for k, s in reads if k.endswith(key.rsplit("/", 1)[1])) for key, _ in reads}
    assert largest["ct"] == largest["mri"] == 16**3 and largest["pet"] <= (16 * 11 / 10.4 + 4) ** 3


def test_pet_patches_of_a_fixed_size_batch_across_studies(cache):
    needed = PairedPatchDataset(cache, patch_size=16).functional_sizes
    largest = tuple(int(v) for v in np.max(list(needed.values()), axis=0))
    assert len(set(needed.values())) > 1  # PET/CT and PET/MRI PETs have other spacings
    with pytest.raises(InvalidOptionError, match=rf"does not cover.*Give at least \({largest[0]}, {largest[1]}, {largest[2]}\)"):
        PairedPatchDataset(cache, patch_size=16, functional_size=min(largest) - 1)
    pairs = PairedPatchDataset(cache, patch_size=16, samples_per_study=1, functional_size=largest)
    batch = next(iter(torch.utils.data.DataLoader(pairs, batch_size=len(pairs))))
    assert batch["functional"]["image"].shape == (len(pairs), 1, *largest) and set(batch["study"]) == {"petct", "petmri"}
    assert batch["structural"]["image"].shape == (len(pairs), 1, 16, 16, 16)
    back = onto_native_grid(batch["functional"]["label"][0], batch, batch_index=0)
    assert np.array_equal(back, batch["functional"]["label"][0, 0].numpy())  # on the native grid already: unchanged
    with pytest.raises(InvalidOptionError, match="batch_index"):
        onto_native_grid(batch["functional"]["label"][0], batch)
    with pytest.raises(UnknownNameError, match=r"functional grid 'pet'"):
        PairedPatchDataset(cache, functional_grid="pet")
