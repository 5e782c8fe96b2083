"""Resolving a release name to an opened `Release`: ``"umd"`` (the real release), ``"umd-mini"``
(the embedded synthetic default), or a folder. Every view and the evaluation resolve names here.

Resolving reads; it never writes, with one exception that says so: ``"umd-mini"`` is generated on
first use (about 15 MB) into `default_mini_root`, and the folder is printed on standard error.
This is the one place the release part uses the synthetic generator.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from umd_dataset.errors import ReleaseNotFoundError, spell
from umd_dataset.release.format import DESCRIPTOR
from umd_dataset.release.index import Release, open_release

__all__ = ["NAMES", "MINI_VERSION", "default_mini_root", "resolve_release"]

#: The names `resolve_release` knows, besides folders.
NAMES = ("umd", "umd-mini")
#: The data version of the embedded UMD-mini.
MINI_VERSION = "1.0.0"


def default_mini_root() -> Path:
    """Where ``"umd-mini"`` lives: ``$UMD_CACHE/umd-mini-<version>`` (default ``~/.cache/umd_dataset``)."""
    base = Path(os.environ.get("UMD_CACHE", Path.home() / ".cache" / "umd_dataset"))
    return base / f"umd-mini-{MINI_VERSION}"


def resolve_release(name: str | os.PathLike | Release = "umd", data_dir: str | os.PathLike | None = None) -> Release:
    """The release a name means.

    Args:
        name: an opened `Release` (returned as it is); ``"umd"`` (the real release, in `data_dir`
            or ``$UMD_DATA_DIR``); ``"umd-mini"`` (generated on first use); or a release folder.
        data_dir: the folder of a named release.

    Raises:
        ReleaseNotFoundError: no release where one was expected; the message says how to get one.
    """
    if isinstance(name, Release):
        return name
    name = os.fspath(name)
    if data_dir is not None or name not in NAMES:
        return open_release(data_dir if data_dir is not None else name)
    if name == "umd":
        folder = os.environ.get("UMD_DATA_DIR")
        if not folder:
            local = spell("pass data_dir='path/to/UMD'", "give its folder instead of umd")
            hub = spell("load a Hub copy with hub_repo='<org>/<name>' (needs the network)", "load a Hub copy from Python (hub_repo=)")
            raise ReleaseNotFoundError(
                f"The UMD release is not on this machine. Download it (see the dataset card) and {local} or set UMD_DATA_DIR; or "
                f"{hub}; or use 'umd-mini' for the synthetic UMD-mini, generated locally in the same format."
            )
        return open_release(folder)
    root = default_mini_root()
    if not (root / DESCRIPTOR).is_file():
        from umd_dataset.synthetic.release import SynthConfig, synthesize

        print(f"umd-mini: generating the synthetic UMD-mini {MINI_VERSION} (about 20 MB, once) into {root} (set UMD_CACHE "
              "to choose the folder)", file=sys.stderr)
        synthesize(root, SynthConfig(version=MINI_VERSION), progress=True)
    return open_release(root)
