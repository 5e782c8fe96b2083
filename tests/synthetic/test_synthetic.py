"""The synthetic generator: determinism, plausible anatomy and intensities, resumable atomic writes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import SMALL
from umd_dataset import (
    IncompleteReleaseError,
    JobMismatchError,
    OutputExistsError,
    SynthConfig,
    UnknownNameError,
    open_release,
    synthesize,
)
from umd_dataset.io import read_nifti
from umd_dataset.synthetic.phantom import presets
from umd_dataset.synthetic.release import plan


def _world_centroid(labels: np.ndarray, affine: np.ndarray, organ_id: int) -> np.ndarray:
    ijk = np.argwhere(labels == organ_id).mean(axis=0)
    return affine[:3, :3] @ ijk + affine[:3, 3]


def _load(release, record):
    image, affine = read_nifti(release.image_path(record))
    labels, label_affine = read_nifti(release.label_path(record))
    assert np.array_equal(affine, label_affine)
    return np.asarray(image), np.asarray(labels), affine


def test_same_config_gives_the_same_bytes(tmp_path, small_release):
    again = synthesize(tmp_path / "again", SMALL)
    assert again.scans == small_release.scans
    assert again.info.files == small_release.info.files


def test_different_seed_gives_different_data(tmp_path, small_release):
    other = synthesize(tmp_path / "other", SynthConfig(subjects=1, seed=8, petct_only_fraction=0, petmri_only_fraction=0))
    assert other.scans[0].image_sha256 != small_release.scans[0].image_sha256


def test_plan_mirrors_real_study_mix_and_splits():
    subjects = plan(SynthConfig(subjects=60))
    kinds = [s.studies for s in subjects]
    assert kinds.count(("petct", "petmri")) == 40
    assert kinds.count(("petct",)) == 10 and kinds.count(("petmri",)) == 10
    splits = [s.split for s in subjects]
    assert (splits.count("train"), splits.count("validation"), splits.count("test")) == (36, 12, 12)
    assert len({s.id for s in subjects}) == 60


def test_laterality_in_world_coordinates(small_release):
    """RAS: the patient's left is -x. Left kidney, spleen, stomach at -x; liver, right kidney at +x."""
    ids = {o.slug: o.id for o in small_release.schema}
    for record in small_release.scans:
        _, labels, affine = _load(small_release, record)
        x = {slug: _world_centroid(labels, affine, ids[slug])[0] for slug in ("kidney_left", "kidney_right", "liver", "spleen", "stomach")}
        assert x["kidney_left"] < -30 < 30 < x["kidney_right"], (record.key, x)
        assert x["liver"] > 20 and x["spleen"] < -50 and x["stomach"] < -20, (record.key, x)
        z = {slug: _world_centroid(labels, affine, ids[slug])[2] for slug in ("brain", "heart", "liver", "urinary_bladder")}
        assert z["brain"] > z["heart"] > z["liver"] > z["urinary_bladder"], (record.key, z)


def test_scans_of_a_study_agree_in_world_space_and_studies_differ_in_pose(small_release):
    subject = small_release.pairs()[0]
    centroids = {}
    for study in subject.studies.values():
        for record in study.scans.values():
            _, labels, affine = _load(small_release, record)
            centroids[(study.study, record.scan)] = np.array([_world_centroid(labels, affine, k) for k in range(1, 14)])
    pet_spacing = max(subject.studies["petct"].scans["pet"].spacing_mm)
    same_study = np.linalg.norm(centroids[("petct", "ct")] - centroids[("petct", "pet")], axis=1)
    assert same_study.max() < pet_spacing, same_study
    same_mri = np.linalg.norm(centroids[("petmri", "mri")] - centroids[("petmri", "pet")], axis=1)
    assert same_mri.max() < pet_spacing, same_mri
    across = np.linalg.norm(centroids[("petct", "ct")] - centroids[("petmri", "mri")], axis=1)
    assert 1 < np.median(across) < 60, across  # a small change of pose, same anatomy


def test_intensities_follow_each_modality(small_release):
    ids = {o.slug: o.id for o in small_release.schema}
    subject = small_release.pairs()[0]
    ct, ct_labels, _ = _load(small_release, subject.studies["petct"].scans["ct"])
    assert ct.dtype == np.int16
    assert ct[ct_labels == ids["lung"]].mean() < -600
    assert 40 < ct[ct_labels == ids["liver"]].mean() < 80
    assert ct.min() <= -900  # air around the body

    for study in ("petct", "petmri"):
        pet, pet_labels, _ = _load(small_release, subject.studies[study].scans["pet"])
        assert pet.dtype == np.float32 and pet.min() >= 0
        mean = {slug: float(pet[pet_labels == ids[slug]].mean()) for slug in ("brain", "heart", "urinary_bladder", "liver", "lung")}
        assert min(mean["brain"], mean["urinary_bladder"]) > mean["liver"] > mean["lung"], mean
        assert mean["heart"] > mean["lung"]
        assert 1.0 < mean["liver"] < 4.0  # SUV of a normal liver

    mri, mri_labels, _ = _load(small_release, subject.studies["petmri"].scans["mri"])
    assert mri.dtype == np.int16 and mri.min() >= 0
    assert mri[mri_labels == ids["liver"]].mean() > 2 * mri[mri_labels == ids["lung"]].mean()


def test_pet_grid_is_coarser_than_ct(small_release):
    subject = small_release.pairs()[0]
    ct, pet = subject.studies["petct"].scans["ct"], subject.studies["petct"].scans["pet"]
    assert min(pet.spacing_mm) > max(ct.spacing_mm[:2])
    assert np.prod(pet.shape) < np.prod(ct.shape)


def test_full_preset_has_whole_body_sizes():
    full = presets()["full"]
    assert full["ct"].shape == (512, 512, 400)
    assert full["petct_pet"].shape[:2] == (200, 200) and 2 <= full["petct_pet"].spacing_mm[0] <= 4
    with pytest.raises(UnknownNameError, match="Did you mean 'full'"):
        SynthConfig(preset="ful")


def test_writer_refuses_a_foreign_folder_and_a_complete_release(tmp_path, small_release_root):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not a UMD release; refusing to write"):
        synthesize(foreign, SMALL)
    with pytest.raises(OutputExistsError, match="already holds a complete release.*pass overwrite=True") as raised:
        synthesize(small_release_root, SMALL)
    assert "--overwrite" in raised.value.for_cli() and "overwrite=True" not in raised.value.for_cli()


def test_interrupted_job_with_other_settings_is_refused(tmp_path):
    root = tmp_path / "r"
    calls = []

    def stop_after_one(subject, study):
        calls.append((subject, study))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(root, SynthConfig(subjects=2), on_study=stop_after_one)
    with pytest.raises(IncompleteReleaseError):
        open_release(root)
    with pytest.raises(JobMismatchError, match=r"interrupted job with other settings \(subjects: 2 before, 3 now\)") as caught:
        synthesize(root, SynthConfig(subjects=3))
    assert caught.value.differences == ("subjects: 2 before, 3 now",)
    release = synthesize(root, SynthConfig(subjects=3), overwrite=True)
    assert release.info.counts.subjects == 3


def test_killed_synth_resumes_to_the_same_release(tmp_path, small_release):
    """SIGKILL in the middle of `umd synth`: no release appears; running again finishes the job,
    writes only the missing studies and gives the bytes of an uninterrupted run."""
    root = tmp_path / "killed"
    command = [sys.executable, "-m", "umd_dataset.cli", "synth", str(root), "--subjects", "6", "--seed", "7", "--name", "UMD-test"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    studies = root / ".umd-partial" / "records"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(studies.glob("*.json"))) < 2:
        assert process.poll() is None, "synth ended before it could be interrupted"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before = len(list(studies.glob("*.json")))
    assert 2 <= finished_before < 10
    assert not (root / "release.json").exists()
    with pytest.raises(IncompleteReleaseError):
        open_release(root)

    written = []
    resumed = synthesize(root, SMALL, on_study=lambda subject, study: written.append((subject, study)))
    assert len(written) == 10 - finished_before
    assert resumed.scans == small_release.scans
    assert resumed.verify().ok
    assert not (root / ".umd-partial").exists()
    leftovers = [p for p in Path(root).rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_config_values_are_checked_with_suggestions():
    from umd_dataset.errors import InvalidOptionError

    with pytest.raises(UnknownNameError, match=r"Unknown synthetic preset 'ful'\. Did you mean 'full'"):
        SynthConfig(preset="ful")
    with pytest.raises(InvalidOptionError, match="subjects must be at least 1"):
        SynthConfig(subjects=0)
    with pytest.raises(InvalidOptionError, match="split_fractions"):
        SynthConfig(split_fractions=(0.5, 0.5))


def test_the_phantom_finds_organs_by_concept_and_names_what_it_lacks():
    """The per-organ tables are keyed by concept: a schema version that renames a slug still works,
    one that adds an organ the phantom lacks is refused by name, never with a KeyError."""
    import numpy as np

    from helpers import schema_v2
    from umd_dataset.errors import SchemaError
    from umd_dataset.schema.organs import LabelSchema, load_schema
    from umd_dataset.synthetic.phantom import make_anatomy, phantom_organs

    with pytest.raises(SchemaError, match=r"no shape or intensities for organs of umd-v2: gallbladder \(28231008\)"):
        phantom_organs(schema_v2())
    data = load_schema().to_dict()
    data["version"] = 3
    data["organs"][8]["slug"] = "bladder"  # a renamed slug, the same concept
    renamed = LabelSchema.from_dict(data)
    anatomy = make_anatomy(np.random.default_rng(0), renamed)
    assert "bladder" in anatomy.organs and phantom_organs(renamed)["bladder"].pet_suv == 14.0
