"""Benchmark: a whole-body CT (512x512x400 int16) and its label map loaded whole, through the views
and straight from the files, side by side in interleaved rounds.

- the release's files read with the package's own reader (`umd_dataset.io.read_nifti`: ISA-L, the
  voxels as nibabel lays them out), the floor every view is measured against;
- nibabel's ``nib.load(path).get_fdata(dtype=float32)``, what a user would otherwise write;
- ``ScanDataset[i]`` (float32 images, the default, and ``image_dtype=None``: int16), C-contiguous
  tensors, both files verified;
- a row of the Hub export read with stock ``datasets.load_dataset(folder)``, its image and label
  decoded by ``datasets.Nifti`` into arrays.

    python scripts/bench_views.py [--rounds 7]

Prints the medians, each view's overhead over reading the files, the export's size against the
release's files, and checks that every route gives the same voxels.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _benchdata import full_size_petct  # scripts/, beside this one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds, each in another order; medians are printed")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import datasets
    import nibabel as nib
    import torch

    from umd_dataset.views.pytorch import ScanDataset
    from umd_dataset.io import read_nifti
    from umd_dataset.views.export import export_hf

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        release, ct = full_size_petct(Path(tmp) / "release")
        export = export_hf(release, Path(tmp) / "export")
        hub = datasets.load_dataset(str(export), "petct", split=ct.split, cache_dir=str(Path(tmp) / "hf-cache"))
        row_index = [i for i, s in enumerate(hub["scan"]) if s == "ct"][0]
        image_path, label_path = release.image_path(ct), release.label_path(ct)

        def files():
            return np.asanyarray(read_nifti(image_path)[0]), np.asanyarray(read_nifti(label_path)[0])

        def nibabel():
            return nib.load(image_path).get_fdata(dtype=np.float32), np.asanyarray(nib.load(label_path).dataobj)

        float_view = ScanDataset(release, scan="ct")
        stored_view = ScanDataset(release, scan="ct", image_dtype=None)

        def view_float():
            item = float_view[0]
            return item["image"][0], item["label"][0]

        def view_stored():
            item = stored_view[0]
            return item["image"][0], item["label"][0]

        def export_row():
            row = hub[row_index]
            return np.asanyarray(row["image"].dataobj), np.asanyarray(row["label"].dataobj)

        contenders = {"files (read_nifti, ISA-L)": files, "nibabel get_fdata": nibabel,
                      "ScanDataset float32": view_float, "ScanDataset int16": view_stored,
                      "export row (stock datasets)": export_row}
        reference = files()
        for name, function in contenders.items():  # warm up (checksums, imports) and check the voxels
            image, label = (np.asarray(a) for a in function())
            assert np.array_equal(image, reference[0]) and np.array_equal(label, reference[1]), name
            if isinstance(function(), tuple) and name.startswith("ScanDataset"):
                assert all(t.is_contiguous() for t in function() if isinstance(t, torch.Tensor)), name
        times: dict[str, list[float]] = {name: [] for name in contenders}
        load = os.getloadavg()[0]
        names = list(contenders)
        for round_ in range(args.rounds):  # the order turns each round: a route runs slower after one that freed GBs
            for name in names[round_ % len(names):] + names[: round_ % len(names)]:
                function = contenders[name]
                start = time.perf_counter()
                function()
                times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(values) for name, values in times.items()}
        base = medians["files (read_nifti, ISA-L)"]
        print(f"{os.cpu_count()} CPUs, load average before: {load:.2f}; medians of {args.rounds} interleaved rounds, the order turning")
        print(f"{'route (image + label)':<30}{'seconds':>9}{'x files':>9}")
        for name, value in medians.items():
            print(f"{name:<30}{value:9.2f}{value / base:9.2f}")
        release_bytes = sum(os.path.getsize(release.path(r.image)) + os.path.getsize(release.path(r.label)) for r in release.select())
        export_bytes = sum(p.stat().st_size for p in Path(export).rglob("*.parquet"))
        petct_bytes = sum(p.stat().st_size for p in (Path(export) / "data" / "petct").rglob("*.parquet"))
        arrow_bytes = sum(p.stat().st_size for p in (Path(tmp) / "hf-cache").rglob("*.arrow"))
        print(f"release files {release_bytes / 2**20:.0f} MiB; export Parquet {export_bytes / 2**20:.0f} MiB in all configs, "
              f"petct {petct_bytes / 2**20:.0f} MiB ({petct_bytes / release_bytes:.2f}x); the Arrow cache stock "
              f"load_dataset prepares from petct {arrow_bytes / 2**20:.0f} MiB ({arrow_bytes / release_bytes:.2f}x, uncompressed)")
        print("every round (s):", "; ".join(f"{name}: {' '.join(f'{v:.2f}' for v in values)}" for name, values in times.items()))
        print("all routes gave identical voxels")


if __name__ == "__main__":
    main()
