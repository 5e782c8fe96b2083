"""Resolving a release name to an opened `Release`: ``"umd"`` (the real release), ``"umd-mini"``
(the embedded synthetic default), or a folder. Every view and the evaluation resolve names here.

Resolving reads; it never writes, with one exception that says so: ``"umd-mini"`` is generated on
first use (about 15 MB) into `default_mini_root`, and the folder is printed on standard error.
This is the one place the release part uses the synthetic generator.

A `version` asked for is the data version (``release.json``'s ``version``), compared exactly; a
mismatch names the versions that exist (this release's, the releases beside it, or the one
version of UMD-mini) and how to get them.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from umd_dataset.errors import ReleaseNotFoundError, ReleaseVersionError, spell
from umd_dataset.release.format import DESCRIPTOR
from umd_dataset.release.index import Release, open_release

__all__ = ["NAMES", "MINI_VERSION", "default_mini_root", "resolve_release", "check_version"]

#: The names `resolve_release` knows, besides folders.
NAMES = ("umd", "umd-mini")
#: The data version of the embedded UMD-mini.
MINI_VERSION = "1.0.0"


def default_mini_root() -> Path:
    """Where ``"umd-mini"`` lives: ``$UMD_CACHE/umd-mini-<version>`` (default ``~/.cache/umd_dataset``)."""
    base = Path(os.environ.get("UMD_CACHE", Path.home() / ".cache" / "umd_dataset"))
    return base / f"umd-mini-{MINI_VERSION}"


def resolve_release(
    name: str | os.PathLike | Release = "umd", data_dir: str | os.PathLike | None = None, *, version: str | None = None
) -> Release:
    """The release a name means.

    Args:
        name: an opened `Release` (returned as it is); ``"umd"`` (the real release, in `data_dir`
            or ``$UMD_DATA_DIR``); ``"umd-mini"`` (generated on first use); or a release folder.
        data_dir: the folder of a named release.
        version: the data version expected (``"1.0.0"``), compared exactly; None takes any.

    Raises:
        ReleaseNotFoundError: no release where one was expected; the message says how to get one.
        ReleaseVersionError: the release is another version; the message names the versions
            there are and how to get them (UMD-mini is never generated for a version it is not).
    """
    if isinstance(name, Release):
        return check_version(name, version)
    name = os.fspath(name)
    if data_dir is not None or name not in NAMES:
        return check_version(open_release(data_dir if data_dir is not None else name), version)
    if name == "umd":
        folder = os.environ.get("UMD_DATA_DIR")
        if not folder:
            local = spell("pass data_dir='path/to/UMD'", "give its folder instead of umd")
            hub = spell("load a Hub copy with hub_repo='<org>/<name>' (needs the network)", "load a Hub copy from Python (hub_repo=)")
            raise ReleaseNotFoundError(
                f"The UMD release is not on this machine. Download it (see the dataset card) and {local} or set UMD_DATA_DIR; or "
                f"{hub}; or use 'umd-mini' for the synthetic UMD-mini, generated locally in the same format."
            )
        return check_version(open_release(folder), version)
    if version is not None and version != MINI_VERSION:  # before generating anything
        raise ReleaseVersionError(
            f"'umd-mini' is the synthetic UMD-mini that this umd_dataset generates, and it exists in version {MINI_VERSION} "
            f"only, not {version}.{_close(version, [MINI_VERSION])} Pass version={MINI_VERSION!r} or leave the version out. "
            f"(A synthetic release labelled {version}: synthesize(folder, SynthConfig(version={version!r})), then load that folder.)"
        )
    root = default_mini_root()
    if not (root / DESCRIPTOR).is_file():
        from umd_dataset.synthetic.release import SynthConfig, synthesize

        print(f"umd-mini: generating the synthetic UMD-mini {MINI_VERSION} (about 20 MB, once) into {root} (set UMD_CACHE "
              "to choose the folder)", file=sys.stderr)
        synthesize(root, SynthConfig(version=MINI_VERSION), progress=True)
    return check_version(open_release(root), version)


def check_version(release: Release, version: str | None) -> Release:
    """`release` if its data version is `version` (or `version` is None).

    Raises:
        ReleaseVersionError: another version; the message names this release's version, the
            releases beside it (name, version, folder) and how to get the one asked for.
    """
    if version is None or release.info.version == version:
        return release
    info = release.info
    beside = _releases_beside(release.root)
    same = [(v, path) for n, v, path in beside if n == info.name and v == version]
    if same:
        hint = (f" The {info.name} {version} release is beside it, at {same[0][1]}: "
                f"{spell(f'pass data_dir={str(same[0][1])!r}', 'give that folder')}.")
    else:
        others = [f"{n} {v} at {path}" for n, v, path in beside if path != release.root]
        listing = f" Releases beside it: {'; '.join(others)}." if others else " There is no other release beside it."
        hint = (f"{listing} Versions other than the ones on this machine are published with the dataset card (the Hub "
                f"copy); download {info.name} {version} if it exists and {spell('pass data_dir= to its folder', 'give its folder')}.")
    raise ReleaseVersionError(
        f"{release.root} holds {info.name} version {info.version}, not {version}.{_close(version, [info.version])}{hint} "
        f"Or leave the version out to take {info.version}."
    )


def _close(version: str, versions: list[str]) -> str:
    """A hint for a version written another way (``1.0`` for ``1.0.0``): versions compare exactly."""
    def parts(v: str) -> tuple[int, ...]:
        numbers = [int(p) for p in re.findall(r"\d+", v)][:3]
        return tuple(numbers + [0] * (3 - len(numbers)))

    if not re.search(r"\d", version):
        return ""
    close = [v for v in versions if parts(v) == parts(version) and v != version]
    return f" Did you mean {close[0]!r}? Versions compare exactly." if close else ""


def _releases_beside(root: Path, limit: int = 8) -> list[tuple[str, str, Path]]:
    """(name, version, folder) of the releases in the folder that holds `root` (descriptors only)."""
    parent = Path(root).parent
    found = []
    try:
        folders = sorted(p for p in parent.iterdir() if (p / DESCRIPTOR).is_file())
    except OSError:
        return []
    for folder in folders[: limit * 4]:
        try:
            data = json.loads((folder / DESCRIPTOR).read_text(encoding="utf-8"))
            found.append((str(data["name"]), str(data["version"]), folder))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found[:limit]
