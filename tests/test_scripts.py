"""The prepared GPU check runs (on the CPU, its nnU-Net part on a small block) and reports every figure it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_runs_and_writes_its_figures(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu", "--small", "--models", "nnunet",
                             "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {r["domain"] for r in rows} == {"ct", "petct_pet"} and all(r["model"] == "nnunet (PlainConvUNet)" for r in rows)
    assert all(r["seconds"] >= 0 and r["volumes_per_second"] > 0 and "peak_gpu_gib" in r for r in rows)
