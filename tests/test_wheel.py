"""The built wheel, installed (not editable) into a fresh environment, carries the package data and
the one dataset card, and `umd export-hf` writes that card into an export. Nothing is downloaded:
the wheel is built with the installed backend and installed without an index; the fresh
environment borrows this one's third-party packages through a path file, not its umd_dataset."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), str(REPO)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = out.glob("umd_dataset-*.whl")
    return path


def test_the_wheel_carries_the_package_data_and_the_card(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "umd_dataset/dataset_card.md" in names
    for required in ("umd_dataset/schema/labels_v1.json", "umd_dataset/schema/modalities.json",
                     "umd_dataset/schema/sources/totalsegmentator_total.json", "umd_dataset/synthetic/phantom.json",
                     "umd_dataset/py.typed", "umd_dataset/_version.py"):
        assert required in names
    assert not any(n.startswith(("tests/", "scripts/", "src/")) for n in names)
    card = zipfile.ZipFile(wheel).read("umd_dataset/dataset_card.md").decode()
    assert card == (REPO / "dataset_card.md").read_text()


def test_installed_wheel_exports_a_release_with_the_card(wheel, small_release_root, tmp_path):
    env = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # third-party packages from this environment; its .pth files (the editable umd_dataset) are not processed
    borrowed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "borrowed.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)]
    result = subprocess.run(install, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(python), "-c", "import umd_dataset; print(umd_dataset.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, env=clean)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(env), f"imported {where.stdout.strip()}, not the installed wheel"

    out = tmp_path / "hub"
    export = subprocess.run([str(env / "bin" / "umd"), "export-hf", str(small_release_root), str(out), "--min-shards", "1"],
                            cwd=tmp_path, capture_output=True, text=True, env=clean)
    assert export.returncode == 0, export.stdout + export.stderr
    readme = (out / "README.md").read_text()
    card_body = (REPO / "dataset_card.md").read_text().split("---\n", 2)[2]
    assert card_body in readme
    assert "config_name: petct" in readme and "## This export" in readme
