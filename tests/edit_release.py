"""Helpers for tests that damage a release on purpose: edit its index and re-sign the descriptor,
so that only the damage under test remains."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from umd_dataset.io import sha256_file
from umd_dataset.release import DESCRIPTOR, MANIFEST, manifest_schema


def edit_descriptor(root: Path, change: Callable[[dict], None]) -> None:
    data = json.loads((root / DESCRIPTOR).read_text())
    change(data)
    (root / DESCRIPTOR).write_text(json.dumps(data))


def edit_manifest(root: Path, change: Callable[[list[dict]], list[dict] | None], *, resign: bool = True) -> None:
    rows = pq.read_table(root / MANIFEST).to_pylist()
    rows = change(rows) or rows
    pq.write_table(pa.Table.from_pylist(rows, schema=manifest_schema()), root / MANIFEST)
    if resign:
        resign_file(root, MANIFEST)


def resign_file(root: Path, name: str) -> None:
    def update(data: dict) -> None:
        data["files"][name] = sha256_file(root / name)

    edit_descriptor(root, update)
