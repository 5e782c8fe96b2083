"""Ingest options and label inputs are checked when they are made, with "did you mean", so that a
typo never reaches a job; how label ids get their meaning is a type, not a magic string."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from umd_dataset.errors import InvalidOptionError, UnknownNameError
from umd_dataset.ingest.options import FreeText, GivenNames, IngestOptions, LabelInput, SchemaIds, SourceTableNames
from umd_dataset.ingest.plan import plan_nifti
from umd_dataset.labels.harmonize import HarmonizeOptions


def test_a_misspelt_overlap_policy_is_refused_when_the_options_are_made():
    """Once accepted, it failed every study after its volumes were read, and was saved into the job
    so that the corrected rerun was refused."""
    with pytest.raises(UnknownNameError, match=r"Unknown overlap policy .*'smalest'\. Did you mean 'smallest'\?"):
        IngestOptions(labels=HarmonizeOptions(overlap="smalest"))


@pytest.mark.parametrize(
    ("make", "error", "pattern"),
    [
        (lambda: IngestOptions(workers=0), InvalidOptionError, "workers must be at least 1"),
        (lambda: IngestOptions(mri_contrasts=("water", "inphase")), UnknownNameError, r"'inphase'\. Did you mean 'in_phase'"),
        (lambda: IngestOptions(suv_overrides={"P1": {"weight": 70.0}}), UnknownNameError, r"'weight'\. Did you mean 'weight_kg'"),
        (lambda: IngestOptions(suv_overrides={"P1": {"weight_kg": -70.0}}), InvalidOptionError, "must be positive"),
        (lambda: IngestOptions(labels={"overlap": "smallest"}), InvalidOptionError, "must be a HarmonizeOptions"),
        (lambda: HarmonizeOptions(unknown="dorp"), UnknownNameError, r"'dorp'\. Did you mean 'drop'"),
        (lambda: HarmonizeOptions(empty="absnet"), UnknownNameError, r"'absnet'\. Did you mean 'absent'"),
        (lambda: HarmonizeOptions(overlap=["liver", "kidny_left"]), UnknownNameError, r"'kidny_left'\. Did you mean 'kidney_left'"),
        (lambda: HarmonizeOptions(aliases={"Leber": "livr"}), UnknownNameError, r"organ for the alias of 'Leber'.*'liver'"),
        (lambda: SourceTableNames("totalsegmentator_totl"), UnknownNameError, r"Did you mean 'totalsegmentator_total'"),
        (lambda: LabelInput("label_map", ("x.nii.gz",), FreeText(), "ct"), InvalidOptionError, "needs the names of its ids"),
        (lambda: LabelInput("labelmap", ("x.nii.gz",), SchemaIds(), "ct"), UnknownNameError, r"Did you mean 'label_map'"),
        (lambda: LabelInput("masks", ("x",), FreeText(), "petct"), UnknownNameError, r"scan the labels lie on 'petct'"),
    ],
)
def test_every_option_is_checked_at_creation(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_the_job_identity_holds_the_harmonization_policy():
    options = IngestOptions(labels=HarmonizeOptions(overlap=("liver", "spleen"), drop=("tumor",)))
    assert options.settings("key")["labels"]["overlap"] == ["liver", "spleen"]
    assert options.settings("key")["labels"]["drop"] == ["tumor"]


def _mapping(tmp_path, label_source: str) -> str:
    path = tmp_path / "mapping.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["subject", "study", "scan", "image", "label", "label_source"])
        writer.writeheader()
        writer.writerow({"subject": "p1", "study": "petct", "scan": "ct", "image": "ct.nii.gz", "label": "ct_labels.nii.gz",
                         "label_source": label_source})
        writer.writerow({"subject": "p1", "study": "petct", "scan": "pet", "image": "pet.nii.gz", "label": "", "label_source": ""})
    return path


@pytest.mark.parametrize(
    ("label_source", "names"),
    [("umd", SchemaIds()), ("totalsegmentator_total", SourceTableNames("totalsegmentator_total"))],
)
def test_a_mapping_says_how_its_label_ids_are_named(tmp_path, label_source, names):
    jobs, _ = plan_nifti(_mapping(tmp_path, label_source), IngestOptions(), "key", keep_ids=True)
    assert jobs[0].labels.names == names and jobs[0].labels.drawn_on == "ct" and jobs[0].labels.format == "label_map"


def test_a_misspelt_label_source_is_refused_while_planning(tmp_path):
    with pytest.raises(UnknownNameError, match=r"Did you mean 'totalsegmentator_total'"):
        plan_nifti(_mapping(tmp_path, "totalsegmentator_totl"), IngestOptions(), "key", keep_ids=True)


def test_given_names_keep_their_ids():
    names = GivenNames(((1, "Liver"), (3, "Lt Kidney")))
    assert names.as_dict() == {1: "Liver", 3: "Lt Kidney"}


def test_the_command_line_refuses_a_typo_before_writing_anything(tmp_path):
    out = tmp_path / "release"
    result = subprocess.run(
        [sys.executable, "-m", "umd_dataset.cli", "ingest", str(tmp_path), str(out), "--overlap", "smalest"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "Did you mean 'smallest'?" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_bad_input_tables_name_the_file_line_and_value(tmp_path):
    from umd_dataset.errors import IngestInputError, InputNotFoundError
    from umd_dataset.ingest.plan import overrides_from_csv, plan_nnunet

    (tmp_path / "suv.csv").write_text("patient,weight_kg\nP1,72\nP2,seventy\n")
    with pytest.raises(IngestInputError, match=r"suv\.csv line 3: weight_kg 'seventy' is not a number"):
        overrides_from_csv(tmp_path / "suv.csv")
    with pytest.raises(InputNotFoundError, match="missing.csv does not exist"):
        overrides_from_csv(tmp_path / "missing.csv")
    with pytest.raises(InputNotFoundError, match="splits file"):
        IngestOptions(splits_path=str(tmp_path / "nope.csv"))
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "dataset.json").write_text("{not json")
    with pytest.raises(IngestInputError, match="is not a valid nnU-Net dataset.json"):
        plan_nnunet(tmp_path / "raw", IngestOptions(), "key")
