"""The training example: trains through the loaders, writes a checkpoint the evaluation can load, resumes."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import torch

from umd_dataset.evaluation.baselines.unet import UNet3D, load_checkpoint

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_baseline.py"


def run(*args: str) -> None:
    old = sys.argv
    sys.argv = [str(SCRIPT), *args]
    try:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    finally:
        sys.argv = old


def test_train_resume_and_load(release_copy, tmp_path, capsys):
    out = tmp_path / "unet.pt"
    run(str(release_copy), "--scan", "pet", "--steps", "3", "--patch", "16", "--cases", "2", "--save-every", "2", "--out", str(out))
    model, meta = load_checkpoint(out)
    assert isinstance(model, UNet3D) and meta["step"] == 3 and meta["scan"] == "pet" and meta["schema"] == "umd-v1"
    assert len(meta["extra"]["cases"]) == 2 and all("/petct/pet" in c or "/petmri/pet" in c for c in meta["extra"]["cases"])
    with torch.no_grad():
        logits = model(torch.zeros(1, 1, 16, 16, 16))
    assert logits.shape == (1, 14, 16, 16, 16)
    run(str(release_copy), "--scan", "pet", "--steps", "5", "--patch", "16", "--cases", "2", "--out", str(out))
    assert "resuming from" in capsys.readouterr().out
    assert load_checkpoint(out)[1]["step"] == 5


def test_a_missing_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    import pytest

    from umd_dataset.errors import CheckpointError, InputNotFoundError

    with pytest.raises(InputNotFoundError, match="missing.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt is not a readable torch checkpoint"):
        load_checkpoint(tmp_path / "notes.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt is not a umd_dataset U-Net checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
