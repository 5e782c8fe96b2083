"""The command line's messages, pinned one by one (issue 12, items 10-17: a new user's first hour).

Each test runs `umd_dataset.cli.main` in this process, as the console script does, and checks the
exit code and the words on standard error: one line, naming the value and the fix, in flags.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from umd_dataset import open_release
from umd_dataset.cli import main
from umd_dataset.io import read_nifti, write_nifti


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``umd ARGS...`` in this process: (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["umd", *map(str, args)])
        try:
            main()
        except SystemExit as ended:
            code = ended.code if isinstance(ended.code, int) else (0 if ended.code is None else 1)
        else:  # main always ends with sys.exit
            raise AssertionError("umd_dataset.cli.main returned without sys.exit")
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


SMALL_RUN = ("--model", "oracle", "--split", "test", "--domains", "ct", "--organs", "liver")


# --- 10: validate before writing; name the setting that differs ---------------------------------


def test_a_misspelt_split_writes_nothing_and_the_corrected_command_runs(cli, small_release_root, tmp_path):
    out = tmp_path / "run"
    code, _, err = cli("evaluate", small_release_root, out, "--model", "oracle", "--split", "tset", "--organs", "liver")
    assert code == 2 and _one_error_line(err) == "error: Unknown split 'tset'. Did you mean 'test'? Available: 'train', 'validation', 'test'."
    assert not out.exists()  # no config.json left behind to refuse the corrected command
    code, _, err = cli("evaluate", small_release_root, out, "--model", "oracle", "--split", "test", "--organs", "liver", "--domains", "ct")
    assert code == 0, err


def test_a_misspelt_domain_and_organ_write_nothing(cli, small_release_root, tmp_path):
    out = tmp_path / "run"
    code, _, err = cli("evaluate", small_release_root, out, "--model", "oracle", "--domains", "ct,pet")
    assert code == 2 and "'pet'" in _one_error_line(err) and "petct_pet" in err
    code, _, err = cli("evaluate", small_release_root, out, "--model", "oracle", "--organs", "livr")
    assert code == 2 and "Unknown organ 'livr'. Did you mean 'liver'?" in _one_error_line(err)
    assert not out.exists()


def test_an_empty_selection_names_the_splits_and_writes_nothing(cli, tmp_path):
    assert cli("synth", tmp_path / "two", "--subjects", "2")[0] == 0
    counts = {split: len(open_release(tmp_path / "two").select(split=split)) for split in ("train", "validation", "test")}
    empty = next(split for split, n in counts.items() if n == 0)
    out = tmp_path / "run"
    code, _, err = cli("evaluate", tmp_path / "two", out, "--model", "oracle", "--split", empty, "--domains", "mri")
    line = _one_error_line(err)
    assert code == 2 and f"holds no scan of mri in the {empty} split (" in line and f"{empty}: 0 scans" in line
    assert "choose another --split" in line and "split=" not in line
    assert not out.exists()


def test_a_run_with_other_settings_names_only_the_settings_that_differ(cli, small_release_root, tmp_path):
    out = tmp_path / "run"
    assert cli("evaluate", small_release_root, out, *SMALL_RUN)[0] == 0
    code, _, err = cli("evaluate", small_release_root, out, *SMALL_RUN, "--reported", "ct=0.9")
    line = _one_error_line(err)
    assert code == 2 and "holds a run with other settings (--reported ct=: not set before, 0.9 now)" in line
    assert "{" not in line  # no Python dict
    code, _, err = cli("evaluate", small_release_root, out, *SMALL_RUN[:-4], "--domains", "ct,mri", "--organs", "liver", "--seed", "3")
    line = _one_error_line(err)
    assert code == 2 and '(--domains: ["ct"] before, ["ct", "mri"] now; --seed: 0 before, 3 now)' in line
    assert "config." not in line
    assert cli("evaluate", small_release_root, out, *SMALL_RUN)[0] == 0  # the same settings resume it


def test_the_python_api_names_the_differing_settings_by_their_fields(small_release, tmp_path):
    from umd_dataset.errors import JobMismatchError
    from umd_dataset.evaluation import EvalConfig, evaluate
    from umd_dataset.evaluation.baselines import NoisyOracle

    config = EvalConfig(split="test", domains=("ct",), organs=("liver",))
    evaluate(NoisyOracle(), small_release, tmp_path / "run", config=config, progress=False)
    other = EvalConfig(split="test", domains=("ct",), organs=("liver", "spleen"))
    with pytest.raises(JobMismatchError, match=r'\(config\.organs: \["liver"\] before, \["liver", "spleen"\] now\)'):
        evaluate(NoisyOracle(), small_release, tmp_path / "run", config=other, progress=False)


# --- 11: a model that fails on every case ------------------------------------------------------


def test_a_model_that_fails_on_every_case_says_why_and_exits_1(cli, small_release_root, tmp_path, monkeypatch):
    (tmp_path / "broken.py").write_text(textwrap.dedent("""
        def predict(case):
            raise RuntimeError("CUDA out of memory")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = cli("evaluate", small_release_root, tmp_path / "run", "--model", "python:broken:predict", "--split", "test",
                         "--domains", "ct", "--organs", "liver,spleen")
    assert code == 1
    scans = len(open_release(small_release_root).select(split="test", scan="ct"))
    assert f"{2 * scans} of {2 * scans} cases failed (scored as empty predictions); first reasons: " in err
    assert "RuntimeError: CUDA out of memory" in err and "section Failures" in err
    assert "error: the model failed on every case: the scores above are those of empty predictions." in err
    assert "mean Dice" in out  # the table is still shown, after which the error says what it is


def test_a_model_that_fails_on_some_cases_says_so_and_exits_0(cli, small_release_root, tmp_path, monkeypatch):
    (tmp_path / "flaky.py").write_text(textwrap.dedent("""
        import numpy as np
        def predict(case):
            if case.scan == "pet":
                raise ValueError("no PET support")
            return np.zeros(case.image.shape, np.uint8)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = cli("evaluate", small_release_root, tmp_path / "run", "--model", "python:flaky:predict", "--split", "test",
                       "--domains", "ct,petct_pet", "--organs", "liver")
    assert code == 0, err
    assert "cases failed (scored as empty predictions); first reasons: ValueError: no PET support" in err
    assert "every case" not in err


# --- 12: no raw tracebacks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--model", "unet:missing.pt"), "error: The checkpoint missing.pt does not exist"),
        (("--model", "oracle", "--reported", "ct:0.9"),
         "error: Invalid value: --reported 'ct:0.9': write DOMAIN=DICE with a Dice between 0 and 1, e.g. --reported ct=0.91,petct_pet=0.88"),
        (("--model", "oracle", "--reported", "cat=0.9"), "'cat'"),
        (("--model", "oracle", "--reported", "ct=1.5"), "between 0 and 1"),
        (("--model", "python:nomod:fn"), "error: Invalid value: --model python:nomod:fn: cannot import the module 'nomod'"),
        (("--model", "python:json:nofunction"), "Unknown function of json 'nofunction'. Available: 'JSONDecodeError'"),
        (("--model", "python:nocolon"), "write python:MODULE:FUNCTION"),
        (("--model", "vista3"), "unknown model 'vista3'. Did you mean 'vista3d'?"),
        (("--model", "oracle", "--model-option", "x=1"), "--model-option is for the adapters"),
    ],
)
def test_bad_model_values_are_one_line(cli, small_release_root, tmp_path, args, expected):
    code, _, err = cli("evaluate", small_release_root, tmp_path / "run", *args)
    assert code == 2 and expected in _one_error_line(err)
    assert not (tmp_path / "run").exists()


def test_labels_harmonize_of_a_missing_input_is_one_line(cli, tmp_path):
    code, _, err = cli("labels", "harmonize", tmp_path / "nope.nii.gz", tmp_path / "out.nii.gz")
    assert code == 2
    assert _one_error_line(err) == (f"error: {tmp_path / 'nope.nii.gz'} does not exist: give a label map (.nii.gz), a folder of "
                                    "masks or a DICOM SEG.")


# --- 13: releases that are not there, and folders that are the release --------------------------


def test_info_suggests_the_release_beside_a_misspelt_name(cli, small_release_root, monkeypatch):
    monkeypatch.chdir(small_release_root.parent)
    name = small_release_root.name
    code, _, err = cli("info", name[:-1])
    assert code == 2
    assert _one_error_line(err) == f"error: {name[:-1]} is not a UMD release: it does not exist. Did you mean '{name}'?"


def test_info_on_a_file_of_a_release_says_to_give_its_folder(cli, small_release_root):
    code, _, err = cli("info", small_release_root / "release.json")
    line = _one_error_line(err)
    assert code == 2 and "it is a file, not a folder" in line and f"It lies inside the release {small_release_root}: give that folder" in line
    assert "no release.json" not in line


def test_info_on_a_folder_with_other_files_does_not_advise_synth_into_it(cli, tmp_path):
    (tmp_path / "mine.txt").write_text("mine")
    code, _, err = cli("info", tmp_path)
    line = _one_error_line(err)
    assert code == 2 and "it has no release.json (and holds other files)" in line and "umd synth" not in line
    code, _, err = cli("info", tmp_path / "empty")  # where nothing is, making a synthetic release there is the advice
    assert code == 2 and "umd synth" in _one_error_line(err)


def test_evaluate_into_the_release_itself_is_refused_before_writing(cli, release_copy):
    before = sorted(p.name for p in release_copy.iterdir())
    code, _, err = cli("evaluate", release_copy, release_copy, *SMALL_RUN)
    assert code == 2 and f"error: {release_copy} is the release itself: give the evaluation a folder of its own" in _one_error_line(err)
    assert sorted(p.name for p in release_copy.iterdir()) == before
    code, _, err = cli("evaluate", release_copy, release_copy / "subjects", *SMALL_RUN)
    assert code == 2 and "inside the release" in _one_error_line(err)


def test_ingest_of_a_missing_folder_says_it_does_not_exist(cli, tmp_path):
    code, _, err = cli("ingest", tmp_path / "nope", tmp_path / "out")
    assert code == 2
    assert _one_error_line(err) == (f"error: {tmp_path / 'nope'} does not exist: give a DICOM folder, a CSV mapping of NIfTI files "
                                    "or an nnU-Net raw folder.")
    assert not (tmp_path / "out").exists()


def _dicom_of_one_subject(release, out: Path) -> Path:
    from umd_dataset.synthetic.dicom import write_dicom_study

    subject = release.pairs()[0]
    for study in subject.studies:
        write_dicom_study(release, subject.id, study, out)
    return out


def test_ingest_shows_each_progress_bar_once_in_a_log(cli, small_release, tmp_path):
    _dicom_of_one_subject(small_release, tmp_path / "dicom")
    code, out, err = cli("ingest", tmp_path / "dicom", tmp_path / "out", "--secret", "k")
    assert code == 0, err
    finals = [part for part in err.replace("\r", "\n").splitlines() if part.startswith("ingest:") and "100%" in part]
    assert len(finals) == 1, err  # stderr is no terminal here: the bar is drawn at its start and its end, once each
    assert "studies written: 2" in out


# --- 14: flags on the command line, arguments in Python --------------------------------------------


def test_export_over_an_export_speaks_the_overwrite_flag(cli, small_release_root, tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "x").write_text("x")
    code, _, err = cli("export-hf", small_release_root, tmp_path / "export")
    line = _one_error_line(err)
    assert code == 2 and "--overwrite" in line and "overwrite=True" not in line and "CLI:" not in line


def test_synth_over_a_release_speaks_the_overwrite_flag(cli, release_copy):
    code, _, err = cli("synth", release_copy, "--subjects", "2")
    line = _one_error_line(err)
    assert code == 2 and "--overwrite" in line and "overwrite=True" not in line


def test_an_unknown_label_name_in_harmonize_speaks_alias_and_drop_flags(cli, small_release, tmp_path):
    record = small_release.select(scan="ct")[0]
    labels, affine = read_nifti(small_release.label_path(record))
    masks = tmp_path / "masks"
    masks.mkdir()
    write_nifti(masks / "Leberx.nii.gz", (np.asarray(labels) == 1).astype(np.uint8), affine)
    code, _, err = cli("labels", "harmonize", masks, tmp_path / "out.nii.gz")
    line = _one_error_line(err)
    assert code == 2 and "Unknown label name 'Leberx'" in line
    assert "--alias 'Leberx=ORGAN'" in line and "--drop 'Leberx'" in line and "aliases=" not in line and "drop=[" not in line
    code, _, err = cli("labels", "harmonize", masks, tmp_path / "out.nii.gz", "--alias", "Leberx=liver")
    assert code == 0, err
    assert (read_nifti(tmp_path / "out.nii.gz")[0] == np.where(np.asarray(labels) == 1, 1, 0)).all()


def test_a_missing_patient_weight_speaks_the_suv_overrides_flag(cli, small_release, tmp_path):
    import pydicom

    _dicom_of_one_subject(small_release, tmp_path / "dicom")
    for path in (tmp_path / "dicom").rglob("*"):
        if path.is_file() and path.suffix != ".json":
            ds = pydicom.dcmread(path, stop_before_pixels=False, force=True)
            if getattr(ds, "Modality", "") == "PT" and "PatientWeight" in ds:
                del ds.PatientWeight
                ds.save_as(path)
    code, _, err = cli("ingest", tmp_path / "dicom", tmp_path / "out", "--secret", "k")
    text = err.replace("\r", "\n")
    assert code == 2 and "PatientWeight" in text and "--suv-overrides" in text and "weight_kg=" not in text, text


# --- 15: labels resolve, SUV notes, skipped files -----------------------------------------------------


def test_labels_resolve_resolves_every_name_then_exits_1(cli):
    code, out, err = cli("labels", "resolve", "tumour", "Lt Kidney", "Leberx", "spleen")
    assert code == 1
    assert [line.split("->")[0].strip() for line in out.splitlines()] == ["'tumour'", "'Lt Kidney'", "'Leberx'", "'spleen'"]
    assert "-> kidney_left" in out and "-> spleen" in out
    assert err.strip() == "error: 2 of 4 names are unknown."
    assert cli("labels", "resolve", "Lt Kidney")[0] == 0


# --- 16: help ------------------------------------------------------------------------------------------


def test_top_level_help_names_every_command_and_the_start(cli):
    code, out, _ = cli("--help")
    assert code == 0
    for command in ("synth", "info", "verify", "ingest", "export-hf", "models", "evaluate", "demo", "cache", "labels"):
        assert f"  {command} " in out
    assert "evaluate models per organ and domain" in out and "Start with `umd demo`" in out


def test_evaluate_help_lists_the_valid_values(cli):
    from umd_dataset.evaluation.prompts import KINDS, POINT_RULES
    from umd_dataset.schema.studies import modalities

    code, out, _ = cli("evaluate", "--help")
    flat = " ".join(out.split())
    assert code == 0
    assert "Usage: umd evaluate [OPTIONS] RELEASE OUT" in out and "{" not in out.splitlines()[0]
    assert f"Split to score: {', '.join(modalities().splits)} or all" in flat
    assert all(domain in flat for domain in modalities().domain_keys)
    assert f"Promptable models: {', '.join(KINDS)}" in flat and f"Point rule: {', '.join(POINT_RULES)}" in flat


def test_help_is_100_columns_wide_and_usage_lines_have_no_braces(cli):
    for command in (["ingest"], ["synth"], ["export-hf"], ["labels", "harmonize"], ["cache", "build"], ["demo"]):
        code, out, _ = cli(*command, "--help")
        assert code == 0
        usage = out.splitlines()[0]
        assert usage.startswith("Usage: umd ") and "{" not in usage and "}" not in usage, usage
        assert max(len(line) for line in out.splitlines()) <= 100
    code, out, _ = cli("ingest", "--help")
    assert max(len(line) for line in out.splitlines()) > 80  # no longer cut at 80 columns
    assert "Usage: umd ingest [OPTIONS] SOURCE OUT" in out


# --- 17: where things are written ---------------------------------------------------------------------


def test_the_demo_folder_and_evaluation_runs_are_ignored_by_git():
    ignored = (Path(__file__).parents[1] / ".gitignore").read_text().splitlines()
    assert "/umd-demo/" in ignored and "/runs/" in ignored


def test_the_cli_imports_no_heavy_library_for_help():
    import subprocess

    code = ("import sys, umd_dataset.cli; heavy = {'torch', 'pandas', 'scipy', 'datasets', 'monai', 'numba'} & set(sys.modules); "
            "print(json.dumps(sorted(heavy)))")
    result = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True)
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stdout + result.stderr
