"""Test helpers: the settings of the shared small release, and edits for tests that damage a
release on purpose (the index is edited and the descriptor re-signed, so that only the damage
under test remains)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from umd_dataset.io.files import sha256_file
from umd_dataset.release.format import DESCRIPTOR, MANIFEST, manifest_schema
from umd_dataset.schema.organs import LabelSchema, load_schema
from umd_dataset.schema.sources import load_source
from umd_dataset.synthetic.release import SynthConfig

#: The release most tests read: 6 subjects (4 paired, 1 PET/CT only, 1 PET/MRI only).
SMALL = SynthConfig(subjects=6, seed=7, name="UMD-test")


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


def to_total(canonical: np.ndarray, key: str = "totalsegmentator_total") -> np.ndarray:
    """A TotalSegmentator-style map made from a canonical one: lungs as lobes, plus structures outside the schema."""
    table = load_source(key)
    out = np.zeros(canonical.shape, dtype=np.uint8)
    for organ in load_schema():
        names = table.organs[organ.slug]
        inside = canonical == organ.id
        if len(names) == 1:
            out[inside] = table.id_of(names[0])
        else:  # split a many-to-one organ between two of its parts, by the first array axis
            half = np.zeros_like(inside)
            half[: canonical.shape[0] // 2] = True
            out[inside & half] = table.id_of(names[0])
            out[inside & ~half] = table.id_of(names[-1])
    background = np.flatnonzero(canonical.ravel() == 0)
    out.ravel()[background[:500]] = table.id_of("gallbladder")
    out.ravel()[background[500:800]] = table.id_of("vertebrae_L1")
    return out


def schema_v2(**changes) -> LabelSchema:
    """A hypothetical next schema: umd-v1 with gallbladder added as id 14."""
    data = load_schema(1).to_dict()
    data["version"] = 2
    data["organs"].append(
        {"id": 14, "slug": "gallbladder", "name": "Gallbladder", "laterality": None,
         "snomed": {"code": "28231008", "meaning": "Gallbladder", "srt": "T-63000"}, "color": [0, 200, 0], "synonyms": []}
    )
    data.update(changes)
    return LabelSchema.from_dict(data)


# Models that misbehave, importable by worker processes (process isolation pickles them by name).


def hang(case):
    """Writes its process id to $UMD_TEST_PID_FILE, then hangs."""
    import time

    with open(os.environ["UMD_TEST_PID_FILE"], "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(600)


def exits(case):
    """Calls sys.exit(3)."""
    import sys

    sys.exit(3)
