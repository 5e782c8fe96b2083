"""The paper's protocol as a preset, the adapter registry and `umd models`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from umd_dataset.errors import InvalidOptionError, ModelUnavailableError, UnknownNameError
from umd_dataset.evaluation import EvalConfig, evaluate
from umd_dataset.evaluation.adapters.base import adapter_specs, availability, find_weights, make_adapter, reported_scores
from umd_dataset.evaluation.protocol import PAPER_SEED, paper_config

READ_FROM_MODELS_MD = {  # ../shared/MODELS.md, "What the UMD paper reports"
    "sam-med3d-turbo": (0.404, 0.410, 0.433, 0.397), "segvol": (0.107, 0.075, 0.134, 0.148),
    "nninteractive": (0.481, 0.342, 0.511, 0.217), "vista3d": (0.071, 0.005, 0.003, 0.006),
    "sat-pro": (0.018, 0.003, 0.006, 0.000), "nnunet-10": (0.686, 0.605, 0.652, 0.560),
}


def test_the_registry_holds_the_eight_adapters_each_importable_without_its_package():
    assert set(adapter_specs()) >= {"vista3d", "nninteractive", "sam-med3d", "segvol", "sat-pro", "totalsegmentator", "moose", "nnunet"}
    import importlib

    for spec in adapter_specs().values():
        module = importlib.import_module(spec.module)  # heavy packages are imported only when a model runs
        assert hasattr(module, spec.factory), f"{spec.module} has no {spec.factory}"
        assert spec.kind in ("automatic", "promptable") and spec.licence and spec.weights and spec.extra
        assert module.__doc__ and module.__doc__.strip(), f"{spec.module} has no docstring citing the model's code"


def test_reported_scores_are_the_papers_as_read_from_models_md():
    for row, values in READ_FROM_MODELS_MD.items():
        assert reported_scores(row) == dict(zip(("ct", "petct_pet", "mri", "petmri_pet"), values))
    with pytest.raises(UnknownNameError, match="sam-med3d-turbo"):
        reported_scores("sam-med3d")


def test_the_paper_protocol_fixes_the_prompt_scope_and_reported_scores():
    base = EvalConfig(split="validation", organs=("liver",), timeout_s=30, isolation="process")
    config, reported, note = paper_config("sam-med3d", base)
    assert (config.prompt.kind, config.prompt.point, config.prompt.seed, config.prompt.iterations) == ("point", "random", PAPER_SEED, 0)
    assert config.split == "test" and config.organs is None and len(config.domains) == 4
    assert (config.timeout_s, config.isolation) == (30, "process")  # how the run is done stays the user's
    assert reported == reported_scores("sam-med3d-turbo") and "secondary summary" in note and "seed 233" in note
    assert paper_config("vista3d", base)[0].prompt.kind == "class"
    assert paper_config("sat-pro", base)[0].prompt.kind == "text"
    assert paper_config("nnunet", base)[1] == reported_scores("nnunet-10")
    with pytest.raises(InvalidOptionError, match="did not evaluate"):
        paper_config("totalsegmentator", base)


def _nnunet_folder(root):
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}}))
    (root / "plans.json").write_text(json.dumps({"image_reader_writer": "SimpleITKIO"}))
    return root


class LiverEverywhere:
    def predict_single_npy_array(self, image, properties, *rest):
        return np.ones(image.shape[1:], np.uint8)


def test_evaluate_with_the_paper_protocol_shows_reported_next_to_measured(small_release, tmp_path):
    from umd_dataset.evaluation.adapters.nnunet import NNUNetModel

    model = NNUNetModel(_nnunet_folder(tmp_path / "Dataset001"), predictor=LiverEverywhere())
    result = evaluate(model, small_release, tmp_path / "run", config=EvalConfig(split="validation", organs=("liver",)),
                      protocol="paper", progress=False)
    run = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run["reported"] == reported_scores("nnunet-10") and run["protocol"]["name"] == "paper"
    assert set(result.table["split"]) == {"test"} and result.table["organ"].nunique() == 13
    report = (tmp_path / "run" / "report.md").read_text()
    top = report.split("## Scope")[0]
    assert "## Reported versus measured" in top and "| CT | 0.686 |" in top and "secondary summary" in top


def test_umd_models_lists_every_adapter_and_what_it_needs(tmp_path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights")
    env = {"UMD_VISTA3D_WEIGHTS": str(weights), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "umd_dataset.cli", "models"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    for spec in adapter_specs().values():
        assert f"{spec.key:<17} {spec.title}" in result.stdout and f"extra: {spec.extra}" in result.stdout and spec.licence in result.stdout
    vista = result.stdout.split("vista3d ", 1)[1].split("\n")[1]
    assert "now: ready" in vista  # monai installed, weights found
    assert 'not installed (pip install "umd-dataset[nninteractive]")' in result.stdout


def test_weights_and_adapters_by_name(tmp_path, monkeypatch):
    monkeypatch.delenv("UMD_SAM_MED3D_WEIGHTS", raising=False)
    with pytest.raises(ModelUnavailableError, match="UMD_SAM_MED3D_WEIGHTS"):
        find_weights("sam-med3d", None)
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        find_weights("sam-med3d", tmp_path / "missing.pth")
    monkeypatch.setenv("UMD_SAM_MED3D_WEIGHTS", str(tmp_path))
    assert availability("sam-med3d")["weights"] == str(tmp_path)
    with pytest.raises(UnknownNameError, match="vista3d"):
        make_adapter("vista3", None)
    model = make_adapter("nnunet", _nnunet_folder(tmp_path / "Dataset002"), predictor=LiverEverywhere())
    assert model.name == "nnunet:Dataset002"
