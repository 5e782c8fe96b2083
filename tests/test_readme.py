"""Every example of the README runs: its commands (bar the pip installs) and its Python blocks.
The README's test command is the one CI runs."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)


def _commands(block: str) -> list[list[str]]:
    """Shell commands of a block, one per `&&` segment, comments dropped, pip installs skipped."""
    commands = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        for part in filter(None, (p.strip() for p in line.split("&&"))):
            if part.startswith("pip install"):
                continue
            commands.append(shlex.split(part))
    return commands


def _run(words: list[str], cwd: Path) -> subprocess.CompletedProcess:
    assert words[0] == "umd", f"README command {words} is not covered by this test"
    return subprocess.run([sys.executable, "-m", "umd_dataset.cli", *words[1:]], cwd=cwd, capture_output=True, text=True)


def test_readme_opens_with_install_and_test_commands():
    bash = [code for lang, code in BLOCKS if lang == "bash"]
    install, test = bash[0].strip(), bash[1].strip()
    assert install.startswith("pip install") and "umd demo" in install
    assert test.startswith("pip install") and "pytest" in test
    ci = (REPO / ".ci" / "run").read_text()
    assert test in ci.splitlines(), "the README's test command must be the one .ci/run runs"


def test_every_readme_example_runs(tmp_path):
    for lang, code in BLOCKS:
        if lang == "bash":
            for words in _commands(code):
                if words[0] == "python":  # the test command itself
                    continue
                result = _run(words, tmp_path)
                assert result.returncode == 0, f"{shlex.join(words)} failed:\n{result.stdout}\n{result.stderr}"
                if words[:2] == ["umd", "demo"]:  # it says where it writes (issue 12, item 17)
                    assert f"umd demo: writing into {tmp_path / 'umd-demo'}" in result.stdout
        elif lang == "python":
            result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
            assert result.returncode == 0, f"README Python block failed:\n{code}\n{result.stderr}"
    demo = tmp_path / "umd-demo"
    assert (demo / "umd-mini" / "release.json").is_file()
    assert (demo / "noisy-oracle" / "report.html").is_file()
    _check_the_demo_measures_its_gap(demo)


def _check_the_demo_measures_its_gap(demo: Path) -> None:
    """The demo's model is trained on CT of the training split only, and the report's CT vs PET of
    PET/CT finding comes from that model's own scores on the test split."""
    import json

    import pandas as pd

    from umd_dataset import open_release
    from umd_dataset.evaluation.baselines.voxel import VoxelClassifier
    from umd_dataset.evaluation.stats import paired

    release = open_release(demo / "umd-mini")
    model = VoxelClassifier.load(demo / "voxel-classifier-ct.pt")
    train_ct = {f"{r.subject}/{r.study}/{r.scan}" for r in release.select(split="train", scan="ct")}
    assert set(model.trained_on["scans"]) == train_ct and model.trained_on["scan"] == "ct"
    run = json.loads((demo / "voxel-classifier-ct" / "config.json").read_text())
    assert run["model"] == "voxel-classifier-ct" and "trained on the CT scans of the train split" in run["about"]
    table = pd.read_parquet(demo / "voxel-classifier-ct" / "results.parquet")
    assert set(table["split"]) == {"test"} and set(table["model"]) == {"voxel-classifier-ct"}
    gap = paired(table)
    gap = gap[(gap["pair"] == "ct vs petct_pet") & (gap["organ"] == "all organs")].iloc[0]
    finding = (demo / "voxel-classifier-ct" / "report.md").read_text().split("## Scope")[0]
    assert f"median paired difference {gap['median_difference']:+.3f}" in finding and gap["median_difference"] < 0


def test_readme_error_example_is_true(small_release):
    import pytest

    from umd_dataset import UnknownNameError

    quoted = re.search(r"`release\.select\(study=\"pet_ct\"\)` says\s+`([^`]+)`", README).group(1)
    with pytest.raises(UnknownNameError) as caught:
        small_release.select(study="pet_ct")
    assert str(caught.value).startswith(quoted)
