"""`import umd_dataset` is light: no heavy import, no file or folder created, no network."""

from __future__ import annotations

import subprocess
import sys

import umd_dataset


def test_import_is_light():
    code = (
        "import sys, umd_dataset;"
        "heavy = [m for m in ('torch', 'torchio', 'monai', 'nibabel', 'datasets', 'pyarrow', 'scipy') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_api_resolves():
    for name in umd_dataset.__all__:
        assert getattr(umd_dataset, name) is not None, name
    assert issubclass(umd_dataset.ReleaseNotFoundError, FileNotFoundError)
    assert issubclass(umd_dataset.ReleaseNotFoundError, umd_dataset.UMDError)


def test_import_creates_nothing(tmp_path):
    subprocess.run([sys.executable, "-c", "import umd_dataset"], cwd=tmp_path, check=True)
    assert list(tmp_path.iterdir()) == []
