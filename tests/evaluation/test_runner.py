"""The evaluation runner: failures recorded, resumable, sharded; prompts; adapters."""

from __future__ import annotations

import json
import sys
import time

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from umd_dataset import load_schema
from umd_dataset.errors import UMDError
from umd_dataset.evaluation import EvalConfig, evaluate
from umd_dataset.evaluation.adapters import CommandModel, FolderModel, FunctionModel, TorchModel
from umd_dataset.evaluation.baselines import NoisyOracle, RegionGrowing
from umd_dataset.evaluation.prompts import PromptConfig, correction_click, make_prompt, prompt_rng
from umd_dataset.io import read_nifti, write_nifti

SCHEMA = load_schema()
FAST = EvalConfig(split="test", domains=("ct", "petct_pet"), organs=("liver", "kidney_left", "esophagus"))


def reference_model(release):
    """A perfect automatic model: it reads the reference label map of the scan it is given."""

    def predict(case):
        record = next(r for r in release.scans if (r.subject, r.study, r.scan) == (case.subject, case.study, case.scan))
        return np.asarray(read_nifti(release.label_path(record))[0])

    return FunctionModel(predict, name="perfect")


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=["seconds_model"]).reset_index(drop=True)


def test_perfect_model_scores_one_and_report_is_complete(small_release, tmp_path):
    result = evaluate(reference_model(small_release), small_release, tmp_path / "run", config=FAST, progress=False)
    table = result.table
    assert result.complete and set(table["domain"]) == {"ct", "petct_pet"}
    scored = table[table["edge_case"] != "absent"]
    assert (scored["dice"] == 1.0).all() and (scored["hd95_mm"] == 0.0).all() and (scored["nsd_1mm"] == 1.0).all()
    assert {"tp", "fp", "fn", "n_ref", "n_pred"} <= set(table.columns)
    for name in ("results.parquet", "results.csv", "report.md", "report.html", "config.json"):
        assert (tmp_path / "run" / name).is_file(), name
    html = (tmp_path / "run" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5  # self-contained: the five plots are embedded (three paired, box plots, heat map)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["release"]["version"] == "1.0.0" and config["umd_dataset"] and config["metrics"]["name"] == "umd-metrics-v2"
    assert pd.read_parquet(tmp_path / "run" / "results.parquet").shape == table.shape


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("raise", r"RuntimeError: model crashed"),
        ("shape", r"has shape \(10, 10, 10\); expected shape \(\d+, \d+, \d+\) \(spacing \(.*\) mm\)"),
        ("nan", r"contains NaN"),
        ("labels", r"holds \[42\], not organ ids of umd-v1"),
        ("grid", r"is on another grid: expected shape .* spacing .*, given shape .* spacing"),
        ("slow", r"timed out after 0.5 s"),
    ],
)
def test_model_failures_are_recorded_and_the_run_goes_on(small_release, tmp_path, behaviour, reason):
    good = reference_model(small_release)
    calls = []

    def predict(case):
        calls.append(case.scan)
        if case.scan != "pet":
            return good(case)
        if behaviour == "raise":
            raise RuntimeError("model crashed")
        if behaviour == "shape":
            return np.zeros((10, 10, 10), np.uint8)
        if behaviour == "nan":
            return np.full(case.image.shape, np.nan)
        if behaviour == "labels":
            return np.full(case.image.shape, 42, np.uint8)
        if behaviour == "grid":
            affine = case.affine.copy()
            affine[0, 0] *= 2
            return nib.Nifti1Image(np.zeros(case.image.shape, np.uint8), affine)
        time.sleep(3)
        return good(case)

    config = EvalConfig(split="test", domains=("ct", "petct_pet"), organs=("liver",), timeout_s=0.5)
    table = evaluate(FunctionModel(predict, name="flaky"), small_release, tmp_path / "run", config=config, progress=False).table
    failed = table[table["status"] == "failed"]
    assert set(failed["scan"]) == {"pet"} and len(failed) == (table["scan"] == "pet").sum()
    assert failed["failure"].str.contains(reason).all(), failed["failure"].iloc[0]
    assert (failed["edge_case"] == "missed").all() and (failed["dice"] == 0).all()  # scored as an empty prediction
    assert (table[table["scan"] == "ct"]["dice"] == 1.0).all()  # the other scans went on


def test_interrupted_run_resumes_to_the_same_table(small_release, tmp_path):
    whole = evaluate(NoisyOracle(seed=4), small_release, tmp_path / "whole", config=FAST, progress=False).table
    calls = []
    oracle = NoisyOracle(seed=4)

    def interrupted(case):
        if len(calls) == 1:
            raise KeyboardInterrupt  # as if the process were stopped at the second scan
        calls.append(case.scan)
        return oracle(case)

    model = FunctionModel(interrupted, name="noisy-oracle")
    model.needs_reference = True
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, small_release, tmp_path / "run", config=FAST, progress=False)
    assert len(small_release.select(split="test", domain=list(FAST.domains))) >= 2
    lines = (tmp_path / "run" / "results" / "shard-000-of-001.jsonl").read_text().splitlines()
    assert len(lines) == 1
    with open(tmp_path / "run" / "results" / "shard-000-of-001.jsonl", "a") as handle:
        handle.write('[{"subject": "half a line')  # a line cut by a kill
    seen = []

    def resumed_predict(case):
        seen.append((case.subject, case.study, case.scan))
        return oracle(case)

    resumed = FunctionModel(resumed_predict, name="noisy-oracle")
    resumed.needs_reference = True
    result = evaluate(resumed, small_release, tmp_path / "run", config=FAST, progress=False)
    assert result.scans_skipped == len(lines) and len(seen) == result.scans_scored
    assert len(set(seen)) == len(seen)  # no scan computed twice
    pd.testing.assert_frame_equal(comparable(result.table), comparable(whole))


def test_other_settings_in_the_same_folder_are_refused(small_release, tmp_path):
    evaluate(NoisyOracle(), small_release, tmp_path / "run", config=FAST, progress=False)
    with pytest.raises(UMDError, match="holds a run with other settings"):
        evaluate(NoisyOracle(), small_release, tmp_path / "run", config=EvalConfig(split="test"), progress=False)


def test_sharded_run_merges_into_the_same_table(small_release, tmp_path):
    whole = evaluate(NoisyOracle(), small_release, tmp_path / "whole", config=FAST, progress=False).table
    first = evaluate(NoisyOracle(), small_release, tmp_path / "sharded", config=EvalConfig(**{**FAST.__dict__, "shard": (0, 2)}), progress=False)
    assert not first.complete and first.table is None
    second = evaluate(NoisyOracle(), small_release, tmp_path / "sharded", config=EvalConfig(**{**FAST.__dict__, "shard": (1, 2)}), progress=False)
    assert second.complete
    pd.testing.assert_frame_equal(comparable(second.table), comparable(whole))


def test_promptable_model_with_corrective_clicks(small_release, tmp_path):
    config = EvalConfig(split="test", domains=("petct_pet",), organs=("liver", "brain"), prompt=PromptConfig(iterations=2, seed=1))
    table = evaluate(RegionGrowing(), small_release, tmp_path / "run", config=config, progress=False).table
    assert set(table["iteration"]) <= {0, 1, 2} and (table["iteration"] == 0).any()
    first = json.loads(table[table["iteration"] == 0]["prompt"].iloc[0])
    assert first["kind"] == "point" and len(first["points"]) == 1 and first["point_labels"] == [1]
    # every round adds one click, placed where the previous round's mask was wrong (positive in a
    # missed region, negative in a false positive), and a case stops once its mask is perfect
    from umd_dataset.evaluation.case import Case
    from umd_dataset.evaluation.prompts import Prompt

    model = RegionGrowing()
    clicked = 0
    for (subject, study, scan, organ), rounds in table.groupby(["subject", "study", "scan", "organ"]):
        rounds = rounds.sort_values("iteration")
        assert list(rounds["iteration"]) == list(range(len(rounds)))
        record = small_release.subject(subject).studies[study].scans[scan]
        image, affine = read_nifti(small_release.image_path(record))
        case = Case(np.asarray(image), affine, record.spacing_mm, subject, study, scan, record.domain, "PT", "SUV")
        truth = np.asarray(read_nifti(small_release.label_path(record))[0]) == SCHEMA.organ(organ).id
        prompts = [Prompt(**{**json.loads(p), "points": tuple(map(tuple, json.loads(p)["points"])),
                             "point_labels": tuple(json.loads(p)["point_labels"])}) for p in rounds["prompt"]]
        for before, after in zip(prompts, prompts[1:]):
            assert after.points[:-1] == before.points and len(after.points) == len(before.points) + 1
            previous = model(case, before)
            point, label = correction_click(truth, previous, record.spacing_mm)
            assert (after.points[-1], after.point_labels[-1]) == (point, label)
            assert truth[point] == bool(label) and previous[point] != truth[point]
            clicked += 1
        if len(rounds) < 3:  # stopped early: the last mask was perfect
            assert rounds["dice"].iloc[-1] == 1.0
    assert clicked > 0
    again = evaluate(RegionGrowing(), small_release, tmp_path / "again", config=config, progress=False).table
    assert list(again["prompt"]) == list(table["prompt"])  # identical prompts on every run
    assert "Mean Dice per prompt round" in (tmp_path / "run" / "report.md").read_text()


def test_prompts_follow_their_rules():
    mask = np.zeros((30, 30, 30), bool)
    mask[5:25, 5:25, 5:25] = True
    mask[5:25, 12:18, 12:25] = False  # a C shape: its centroid lies outside
    spacing = (1.0, 1.0, 2.0)
    centre = make_prompt(mask, "liver", 1, PromptConfig(point="center"), spacing, SCHEMA, prompt_rng(0, "s", "liver"))
    assert mask[centre.points[0]]
    centroid = make_prompt(mask, "liver", 1, PromptConfig(point="centroid"), spacing, SCHEMA, prompt_rng(0, "s", "liver"))
    assert "centroid outside" in centroid.note and centroid.points == centre.points
    random_a = make_prompt(mask, "liver", 1, PromptConfig(kind="points", point="random", k=3), spacing, SCHEMA, prompt_rng(7, "s", "liver"))
    random_b = make_prompt(mask, "liver", 1, PromptConfig(kind="points", point="random", k=3), spacing, SCHEMA, prompt_rng(7, "s", "liver"))
    assert random_a == random_b and len(set(random_a.points)) == 3 and all(mask[p] for p in random_a.points)
    box = make_prompt(mask, "liver", 1, PromptConfig(kind="box"), spacing, SCHEMA, prompt_rng(0))
    assert box.box == ((5, 5, 5), (24, 24, 24))
    jittered = make_prompt(mask, "liver", 1, PromptConfig(kind="box", box_jitter_mm=4), spacing, SCHEMA, prompt_rng(0))
    assert jittered.box != box.box
    text = make_prompt(mask, "urinary_bladder", 9, PromptConfig(kind="text"), spacing, SCHEMA, prompt_rng(0))
    assert text.text == "Urinary bladder"
    prediction = mask.copy()
    prediction[5:25, 5:10, 5:25] = False  # a missed slab
    point, label = correction_click(mask, prediction, spacing)
    assert label == 1 and mask[point] and not prediction[point]


def test_folder_command_and_torch_adapters(small_release, tmp_path):
    for record in small_release.select(split="test", scan="ct"):
        labels, affine = read_nifti(small_release.label_path(record))
        write_nifti(tmp_path / "preds" / f"{record.subject}_{record.study}_{record.scan}.nii.gz", np.asarray(labels), affine)
    config = EvalConfig(split="test", domains=("ct",), organs=("liver",))
    folder = evaluate(FolderModel(tmp_path / "preds"), small_release, tmp_path / "folder", config=config, progress=False).table
    assert (folder["dice"] == 1.0).all()
    script = tmp_path / "zeros.py"
    script.write_text(
        "import sys, nibabel as nib, numpy as np\n"
        "image = nib.load(sys.argv[1])\n"
        "nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), sys.argv[2])\n"
    )
    command = evaluate(CommandModel(f"{sys.executable} {script} {{input}} {{output}}"), small_release, tmp_path / "command", config=config, progress=False).table
    assert (command["status"] == "ok").all() and (command["edge_case"] == "missed").all()

    import torch

    from umd_dataset.evaluation.baselines.unet import NORMALIZATIONS, UNet3D, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "unet.pt", UNet3D(width=4, depth=2), scan="ct", schema="umd-v1", patch_size=32, normalization=NORMALIZATIONS["ct"])
    model = TorchModel.from_checkpoint(tmp_path / "unet.pt")
    net = evaluate(model, small_release, tmp_path / "torch", config=config, progress=False).table
    assert (net["status"] == "ok").all() and len(net) == len(small_release.select(split="test", scan="ct"))
    # the runner scores exactly what the adapter predicts on the scan's own grid
    from umd_dataset.evaluation.case import Case
    from umd_dataset.evaluation.metrics import case_metrics

    for _, row in net.iterrows():
        record = small_release.subject(row["subject"]).studies[row["study"]].scans[row["scan"]]
        image, affine = read_nifti(small_release.image_path(record))
        case = Case(np.asarray(image), affine, record.spacing_mm, record.subject, record.study, record.scan, record.domain, "CT", "HU")
        prediction = model(case)
        assert prediction.shape == record.shape and prediction.dtype == np.uint8 and prediction.max() <= 13
        truth = np.asarray(read_nifti(small_release.label_path(record))[0]) == 1
        expected = case_metrics(truth, prediction == 1, record.spacing_mm)
        assert row["dice"] == pytest.approx(expected.dice) and row["n_pred"] == expected.n_pred and row["tp"] == expected.tp


def test_killed_umd_evaluate_resumes_to_the_uninterrupted_table(small_release, tmp_path):
    import os
    import signal
    import subprocess

    (tmp_path / "slowmodel.py").write_text(
        "import time\nfrom umd_dataset.evaluation.baselines import NoisyOracle\n_oracle = NoisyOracle(seed=2)\n"
        "def slow(case):\n    time.sleep(0.4)\n    return _oracle(case)\nslow.needs_reference = True\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    args = ["--model", "python:slowmodel:slow", "--split", "train", "--domains", "ct,petct_pet,mri,petmri_pet", "--organs", "liver,aorta"]
    command = [sys.executable, "-m", "umd_dataset.cli", "evaluate", str(small_release.root)]
    whole = subprocess.run([*command, str(tmp_path / "whole"), *args], env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    results = tmp_path / "killed" / "results" / "shard-000-of-001.jsonl"
    process = subprocess.Popen([*command, str(tmp_path / "killed"), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (results.is_file() and results.read_text().count("\n") >= 2):
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = results.read_text().count("\n")
    total = len(small_release.select(split="train"))
    assert 2 <= written < total
    again = subprocess.run([*command, str(tmp_path / "killed"), *args], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    first = pd.read_parquet(tmp_path / "whole" / "results.parquet")
    second = pd.read_parquet(tmp_path / "killed" / "results.parquet")
    pd.testing.assert_frame_equal(comparable(second), comparable(first))
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    scans = [(rows[0]["subject"], rows[0]["study"], rows[0]["scan"]) for rows in lines]
    assert len(scans) == len(set(scans)) == total  # no scan scored twice
