"""Resolving a release name: the one place "umd", "umd-mini" and folders are told apart; every
view and the evaluation go through it, and reading a named release never writes."""

from __future__ import annotations

import pytest

from umd_dataset import ReleaseNotFoundError
from umd_dataset.release.resolve import default_mini_root, resolve_release


def test_an_opened_release_and_a_folder_resolve_without_writing(small_release, small_release_root):
    assert resolve_release(small_release) is small_release
    before = sorted(p.name for p in small_release_root.iterdir())
    assert resolve_release(small_release_root).scans == small_release.scans
    assert resolve_release(str(small_release_root)).root == small_release_root
    assert sorted(p.name for p in small_release_root.iterdir()) == before


def test_umd_is_found_through_its_environment_variable(monkeypatch, small_release_root):
    monkeypatch.setenv("UMD_DATA_DIR", str(small_release_root))
    assert resolve_release("umd").info.name == "UMD-test"
    monkeypatch.delenv("UMD_DATA_DIR")
    with pytest.raises(ReleaseNotFoundError, match="UMD_DATA_DIR"):
        resolve_release("umd")
    assert resolve_release("umd", data_dir=small_release_root).info.name == "UMD-test"


def test_umd_mini_lives_under_umd_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("UMD_CACHE", str(tmp_path))
    assert default_mini_root() == tmp_path / "umd-mini-1.0.0"


def test_no_other_module_tells_the_names_apart():
    """Names are compared in one place (``== "umd-mini"`` or ``in ("umd", ...)`` nowhere else)."""
    import ast
    from pathlib import Path

    import umd_dataset

    package = Path(umd_dataset.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        if path.name == "resolve.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                constants = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)]
                if {"umd", "umd-mini"} & set(constants):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
