"""Atomic file writes, JSON files and checksums: the primitives every writer of the package uses.

Every file a release holds is written through `atomic_path`: the bytes go to a temporary file in
a scratch folder on the same file system, are flushed to disk, then renamed onto the target, so a
reader (or a killed writer) never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_json", "read_json", "sha256_file"]


@contextmanager
def atomic_path(target: str | os.PathLike, tmp_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield a temporary path; on success, move it onto `target` in one rename.

    The temporary file keeps the target's suffixes (nibabel chooses gzip from ``.nii.gz``). On an
    exception the temporary file is removed and `target` is left as it was.

    Args:
        target: the final path.
        tmp_dir: folder for the temporary file, on the same file system as `target`
            (default: the target's folder).
    """
    target = Path(target)
    folder = Path(tmp_dir) if tmp_dir is not None else target.parent
    folder.mkdir(parents=True, exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".nii.gz") else target.suffix
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp" + suffix, dir=folder)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, data: object, tmp_dir: str | os.PathLike | None = None) -> None:
    """Write `data` as indented, key-sorted JSON, atomically."""
    with atomic_path(path, tmp_dir) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike) -> object:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks (hashlib releases the GIL, so threads scale)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()
