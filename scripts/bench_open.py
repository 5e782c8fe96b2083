"""Benchmark: open a 1,000-scan release index, against what a user would do without one
(walk the folder tree and read every NIfTI header with nibabel).

    python scripts/bench_open.py [--subjects 250] [--repeat 5]

Prints both times and their ratio. The release holds small volumes (headers are the same size as
full-size ones); its index is the real one written by `ReleaseWriter`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def build(root: Path, subjects: int) -> None:
    from umd_dataset.schema.organs import load_schema
    from umd_dataset.release.writer import ReleaseWriter, write_scan

    schema = load_schema()
    writer = ReleaseWriter(root, job={"bench": subjects}, schema=schema)
    rng = np.random.default_rng(0)
    ids = [f"S{i:04d}" for i in range(subjects)]
    for subject in ids:
        for study, scans in (("petct", ("ct", "pet")), ("petmri", ("mri", "pet"))):
            rows = []
            for scan in scans:
                image = rng.normal(size=(8, 8, 8)).astype(np.float32)
                labels = rng.integers(0, 14, size=(8, 8, 8), dtype=np.uint8)
                rows.append(write_scan(root, subject, study, scan, image, labels, np.eye(4), schema))
            writer.record_study(rows)
    cut = int(len(ids) * 0.8)
    writer.finalize(name="bench", version="1.0.0", splits={"train": ids[:cut], "test": ids[cut:]})


def walk_and_read_headers(root: Path) -> int:
    import nibabel as nib

    count = 0
    for path in sorted((root / "subjects").glob("*/*/*.nii.gz")):
        image = nib.load(path)
        _ = image.shape, image.affine, image.get_data_dtype()
        count += 1
    return count


def timed(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=250, help="subjects (4 scans each)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from umd_dataset import open_release

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "release"
        build(root, args.subjects)
        open_release(root)  # warm imports and the file cache for both contenders
        walk_and_read_headers(root)
        index_s = timed(lambda: open_release(root), args.repeat)
        walk_s = timed(lambda: walk_and_read_headers(root), args.repeat)
        scans = len(open_release(root))
    print(f"scans in release:                          {scans}")
    print(f"umd_dataset.open_release (index):          {index_s * 1000:8.1f} ms")
    print(f"walk folder + nibabel header of each file: {walk_s * 1000:8.1f} ms   ({2 * scans} files)")
    print(f"ratio (walk / open_release):               {walk_s / index_s:8.1f}x")


if __name__ == "__main__":
    main()
