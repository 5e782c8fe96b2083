"""Benchmark: convert a generated whole-body CT series (512x512x400 slices, scrambled file order)
to NIfTI with umd_dataset, dicom2nifti and SimpleITK, side by side, and report the voxel and
world-coordinate differences between the outputs.

    pip install dicom2nifti   # SimpleITK comes with torchio
    python scripts/bench_dicom.py [--slices 400] [--repeat 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_series(folder: Path, slices: int) -> None:
    from umd_dataset.schema.organs import load_schema
    from umd_dataset.synthetic.phantom import Grid, make_anatomy, pose, presets, render_scan
    from umd_dataset.synthetic.dicom import DicomPatient, write_dicom_series

    schema = load_schema()
    full = presets()["full"]["ct"]
    grid = Grid((full.shape[0], full.shape[1], slices), full.spacing_mm)
    rng = np.random.default_rng(0)
    image, _, affine = render_scan(make_anatomy(rng, schema), schema, "ct", grid, pose(rng), rng)
    stored = (image.astype(np.int32) + 1024).clip(0, 65535).astype(np.uint16)
    write_dicom_series(
        folder, stored, affine, modality="CT", patient=DicomPatient(), study_uid="1.2.3.4", series_uid="1.2.3.4.5",
        frame_of_reference="1.2.3.4.6", series_number=2, description="CT WB", when=__import__("datetime").datetime(2024, 1, 1, 9),
        intercept=-1024.0,
    )


def ours(folder: Path, out: Path) -> None:
    from umd_dataset.ingest.dicom import assemble
    from umd_dataset.io import write_nifti

    volume = assemble(sorted(str(p) for p in folder.iterdir()))
    write_nifti(out, volume.array.astype(np.int16), volume.affine)


def with_dicom2nifti(folder: Path, out: Path) -> None:
    import dicom2nifti
    import dicom2nifti.settings

    dicom2nifti.settings.disable_validate_slice_increment()  # as fast as it goes; the series is regular
    dicom2nifti.dicom_series_to_nifti(str(folder), str(out), reorient_nifti=False)


def with_simpleitk(folder: Path, out: Path) -> None:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    sitk.WriteImage(reader.Execute(), str(out))


def canonical(path: Path):
    import nibabel as nib

    image = nib.as_closest_canonical(nib.load(path))
    return np.asanyarray(image.dataobj).astype(np.float64), image.affine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    tools = {"umd_dataset": ours, "dicom2nifti": with_dicom2nifti, "SimpleITK": with_simpleitk}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        start = time.perf_counter()
        make_series(folder, args.slices)
        print(f"series: 512x512x{args.slices} CT, {len(list(folder.iterdir()))} files, written in {time.perf_counter() - start:.1f} s")
        times, outputs = {}, {}
        for name, tool in tools.items():
            runs = []
            for attempt in range(args.repeat):
                out = Path(tmp) / f"{name}-{attempt}.nii.gz"
                start = time.perf_counter()
                try:
                    tool(folder, out)
                except ImportError as error:
                    print(f"{name}: not installed ({error})")
                    break
                runs.append(time.perf_counter() - start)
                outputs[name] = out
            if runs:
                times[name] = statistics.median(runs)
        reference, reference_affine = canonical(outputs["umd_dataset"])
        base = times["umd_dataset"]
        print(f"{'tool':<14}{'seconds':>9}{'ratio to umd':>14}{'max |voxel diff|':>18}{'max |affine diff| mm':>22}")
        for name, seconds in times.items():
            data, affine = canonical(outputs[name])
            voxels = np.abs(data - reference).max() if data.shape == reference.shape else float("nan")
            print(f"{name:<14}{seconds:9.2f}{seconds / base:14.2f}{voxels:18.3g}{np.abs(affine - reference_affine).max():22.3g}")


if __name__ == "__main__":
    main()
