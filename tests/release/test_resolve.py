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


def test_a_wrong_version_points_to_the_release_beside_it(release_copy):
    import shutil

    from helpers import edit_descriptor
    from umd_dataset import ReleaseVersionError, open_release

    newer = release_copy.parent / "UMD-test-2"
    shutil.copytree(release_copy, newer)
    edit_descriptor(newer, lambda d: d.update(version="2.0.0"))
    with pytest.raises(ReleaseVersionError) as caught:
        resolve_release(release_copy, version="2.0.0")
    message = str(caught.value)
    assert f"holds UMD-test version 1.0.0, not 2.0.0. The UMD-test 2.0.0 release is beside it, at {newer}: " in message
    assert f"pass data_dir='{newer}'." in message and "give that folder." in caught.value.for_cli()
    assert resolve_release(newer, version="2.0.0").info.version == "2.0.0"
    with pytest.raises(ReleaseVersionError, match=r"not 3\.0\.0\. Releases beside it: UMD-test 2\.0\.0 at .*UMD-test-2\. "
                                                   r"Versions other than the ones on this machine"):
        resolve_release(release_copy, version="3.0.0")
    assert resolve_release(open_release(release_copy), version="1.0.0").info.version == "1.0.0"


def test_umd_mini_is_not_generated_for_a_version_it_never_has(monkeypatch, tmp_path):
    from umd_dataset import ReleaseVersionError

    monkeypatch.setenv("UMD_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ReleaseVersionError, match=r"exists in version 1\.0\.0 only, not 1\.0\. Did you mean '1\.0\.0'\?.*"
                                                   r"SynthConfig\(version='1\.0'\)"):
        resolve_release("umd-mini", version="1.0")
    assert not (tmp_path / "cache").exists()
