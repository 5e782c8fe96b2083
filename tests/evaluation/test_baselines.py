"""The shipped baselines: the noisy oracle degrades every scan alike, and the voxel classifier (the
demo's model) trains on one scan kind, round-trips through its file, and sees a scan the same
whatever its storage order."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest

from umd_dataset.errors import CheckpointError, InvalidOptionError
from umd_dataset.evaluation.baselines import NoisyOracle
from umd_dataset.evaluation.baselines.voxel import VoxelClassifier, VoxelFeatures
from umd_dataset.evaluation.case import Case
from umd_dataset.io.geometry import reorient


def test_the_noisy_oracle_ignores_the_modality(small_release):
    record = next(iter(small_release.select(scan="ct")))
    image, affine = small_release.read(record, "image")
    reference, _ = small_release.read(record, "label")
    ct = Case(np.asarray(image), affine, record.spacing_mm, record.subject, record.study, record.scan, "ct", "CT", "HU",
              reference=np.asarray(reference))
    pet = replace(ct, domain="petct_pet", modality="PT", units="SUV")
    assert np.array_equal(NoisyOracle(seed=3)(ct), NoisyOracle(seed=3)(pet))  # the same degradation, whatever the scan shows


@pytest.fixture(scope="module")
def classifier(small_release):
    return VoxelClassifier.train(small_release, scan="ct", split="train", epochs=3, organ_samples=500, background_samples=2000, progress=False)


def test_the_classifier_trains_on_one_scan_kind_of_one_split(classifier, small_release):
    trained = {f"{r.subject}/{r.study}/{r.scan}" for r in small_release.select(split="train", scan="ct")}
    assert set(classifier.trained_on["scans"]) == trained and classifier.name == "voxel-classifier-ct"
    assert "CT scans of the train split" in classifier.about


    class Empty:
        root = "empty-release"

        def select(self, **selection):
            return []

    with pytest.raises(InvalidOptionError, match="the train split holds no mri scan to train on"):
        VoxelClassifier.train(Empty(), scan="mri", split="train", progress=False)


def test_predictions_round_trip_through_the_file_and_pickling(classifier, small_release, tmp_path):
    record = next(iter(small_release.select(split="test", scan="pet")))
    image, affine = small_release.read(record, "image")
    case = Case(np.asarray(image), affine, record.spacing_mm, record.subject, record.study, record.scan, record.domain, "PT", "SUV")
    labels = classifier(case)
    assert labels.shape == case.image.shape and labels.dtype == np.uint8 and labels.max() <= len(small_release.schema)
    classifier.save(tmp_path / "c.pt")
    assert np.array_equal(VoxelClassifier.load(tmp_path / "c.pt")(case), labels)
    assert np.array_equal(pickle.loads(pickle.dumps(classifier))(case), labels)  # process isolation pickles the model
    (tmp_path / "bad.pt").write_bytes(b"no checkpoint")
    with pytest.raises(CheckpointError):
        VoxelClassifier.load(tmp_path / "bad.pt")


def test_the_same_anatomy_stored_lps_or_ras_gets_the_same_labels_in_world_space(classifier, small_release):
    record = next(iter(small_release.select(split="test", scan="ct")))
    image, affine = small_release.read(record, "image")
    case = Case(np.asarray(image), affine, record.spacing_mm, record.subject, record.study, record.scan, record.domain, "CT", "HU")
    flipped_image, flipped_affine = reorient(np.asarray(image), affine, "LPI")
    flipped = replace(case, image=flipped_image, affine=flipped_affine)
    back, _ = reorient(classifier(flipped), flipped_affine, "".join(_codes(affine)))
    assert np.array_equal(back, classifier(case))


def _codes(affine):
    import nibabel as nib

    return nib.aff2axcodes(affine)


def test_features_are_computed_on_a_working_grid_no_finer_than_asked():
    features = VoxelFeatures(spacing_mm=4.0)
    affine = np.diag([-0.8, -0.8, 2.0, 1.0])
    work, work_affine = features.working(np.zeros((100, 100, 50), np.int16), affine)
    assert work.shape == (21, 21, 25) and np.allclose(np.diag(work_affine)[:3], [4.0, 4.0, 4.0])  # reoriented to RAS
    coarse, coarse_affine = features.working(np.zeros((10, 10, 10), np.int16), np.diag([6.0, 6.0, 10.0, 1.0]))
    assert coarse.shape == (10, 10, 10) and np.allclose(np.diag(coarse_affine)[:3], [6.0, 6.0, 10.0])  # coarser scans keep their grid
