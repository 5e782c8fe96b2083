"""Benchmark: convert a generated whole-body CT series (512x512x400 slices, scrambled file order)
to NIfTI with umd_dataset, dcm2niix (the converter the field uses most), dicom2nifti and SimpleITK,
side by side in interleaved rounds, and report the medians, the ratios to dcm2niix, the load
average, and the voxel and world-coordinate differences between the outputs.

    pip install dcm2niix dicom2nifti   # SimpleITK comes with torchio
    python scripts/bench_dicom.py [--slices 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _benchdata import full_size_petct  # scripts/, beside this one


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


def with_dcm2niix(folder: Path, out: Path, compress: str = "y") -> None:
    """``dcm2niix -z y`` (gzip: pigz where installed, else its own), or ``-z n`` (no gzip); the output renamed to `out`."""
    import shutil
    import subprocess

    binary = shutil.which("dcm2niix")
    if binary is None:
        raise ImportError("no dcm2niix on PATH: pip install dcm2niix")
    work = out.parent / f"{out.name}.d"
    work.mkdir()
    subprocess.run([binary, "-z", compress, "-b", "n", "-f", "series", "-o", str(work), str(folder)], check=True, capture_output=True)
    (work / ("series.nii.gz" if compress != "n" else "series.nii")).rename(out)
    shutil.rmtree(work)


def ours_uncompressed(folder: Path, out: Path) -> None:
    ours(folder, out)


def dcm2niix_uncompressed(folder: Path, out: Path) -> None:
    with_dcm2niix(folder, out, "n")


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


def bench_ingest(rounds: int) -> None:
    """A whole ``umd ingest`` of one whole-body PET/CT study (SUV, labels, checks, verify) next to
    dcm2niix converting its two image series, in interleaved rounds."""
    import os
    import shutil

    from umd_dataset.ingest import IngestOptions, ingest
    from umd_dataset.synthetic.dicom import write_dicom_study

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        release, _ = full_size_petct(tmp / "release")
        subject = next(iter(release.subjects.values()))
        written = write_dicom_study(release, subject.id, "petct", tmp / "dicom")
        series = sorted({p.parent for p in Path(written["folder"]).rglob("*") if p.is_file()})
        images = [folder for folder in series if not any("seg" in part.lower() for part in folder.parts[-1:])]
        sizes = {f.name: len(list(f.iterdir())) for f in series}
        print(f"one PET/CT study: {sizes} files, made in {time.perf_counter() - start:.1f} s")
        load = os.getloadavg()[0]
        times: dict[str, list[float]] = {"umd ingest": [], "dcm2niix (both series)": []}
        for attempt in range(rounds):
            out = tmp / f"ingested-{attempt}"
            start = time.perf_counter()
            ingest(tmp / "dicom", out, options=IngestOptions(secret="bench"))
            times["umd ingest"].append(time.perf_counter() - start)
            shutil.rmtree(out)
            start = time.perf_counter()
            for index, folder in enumerate(images):
                with_dcm2niix(folder, tmp / f"dcm2niix-{attempt}-{index}.nii.gz")
            times["dcm2niix (both series)"].append(time.perf_counter() - start)
        median = {name: statistics.median(runs) for name, runs in times.items()}
        print(f"load average before: {load:.2f}; medians of {rounds} interleaved rounds; series given to dcm2niix: "
              f"{[f.name for f in images]}")
        for name, seconds in median.items():
            print(f"{name:<24}{seconds:8.2f} s{seconds / median['dcm2niix (both series)']:8.2f}x")


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed")
    parser.add_argument("--ingest", action="store_true", help="also: a whole umd ingest of one PET/CT study against dcm2niix on its two series")
    args = parser.parse_args()
    if args.ingest:
        bench_ingest(args.rounds)
    tools = {"umd_dataset": ours, "dcm2niix": with_dcm2niix, "SimpleITK": with_simpleitk, "dicom2nifti": with_dicom2nifti,
             "umd .nii": ours_uncompressed, "dcm2niix -z n": dcm2niix_uncompressed}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        start = time.perf_counter()
        make_series(folder, args.slices)
        print(f"series: 512x512x{args.slices} CT, {len(list(folder.iterdir()))} files, written in {time.perf_counter() - start:.1f} s")
        load = os.getloadavg()[0]
        times: dict[str, list[float]] = {}
        outputs = {}
        missing = set()
        for attempt in range(args.rounds):
            for name, tool in tools.items():
                if name in missing:
                    continue
                out = Path(tmp) / f"{name.replace(' ', '_')}-{attempt}.nii{'' if name in ('umd .nii', 'dcm2niix -z n') else '.gz'}"
                start = time.perf_counter()
                try:
                    tool(folder, out)
                except ImportError as error:
                    print(f"{name}: not installed ({error})")
                    missing.add(name)
                    continue
                times.setdefault(name, []).append(time.perf_counter() - start)
                outputs[name] = out
        median = {name: statistics.median(runs) for name, runs in times.items()}
        reference, reference_affine = canonical(outputs["umd_dataset"])
        base = median.get("dcm2niix", median["umd_dataset"])
        import shutil

        print(f"{os.cpu_count()} CPUs, load average before: {load:.2f}; medians of {args.rounds} interleaved rounds; "
              f"pigz {'installed' if shutil.which('pigz') else 'not installed (dcm2niix -z y uses its own gzip)'}")
        print(f"{'tool':<15}{'seconds':>9}{'/ dcm2niix':>12}{'max |voxel diff|':>18}{'max |affine diff| mm':>22}   (ratios: same compression)")
        for name, seconds in median.items():
            data, affine = canonical(outputs[name])
            voxels = np.abs(data - reference).max() if data.shape == reference.shape else float("nan")
            same = median.get("dcm2niix -z n", base) if name in ("umd .nii", "dcm2niix -z n") else base
            print(f"{name:<15}{seconds:9.2f}{seconds / same:12.2f}{voxels:18.3g}{np.abs(affine - reference_affine).max():22.3g}")


if __name__ == "__main__":
    main()
