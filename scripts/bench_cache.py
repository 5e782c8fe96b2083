"""Benchmark: random 128^3 patches from a whole-body CT (512x512x400 int16, synthetic anatomy with
CT noise), read five ways, side by side:

- torchio from the release's ``.nii.gz``: ``ScalarImage(path)`` loaded, then cropped (what a
  patch costs when the volume is not already in memory);
- MONAI's ``CacheDataset`` (``LoadImaged`` + ``EnsureChannelFirstd`` cached in memory,
  ``copy_cache=False``): each patch a crop of the cached volume, the fastest way MONAI offers, but
  the whole release must fit in RAM (about 200 GB as float32 for 490 CTs);
- a memory-mapped uncompressed NIfTI (``nibabel`` ``.nii``, Fortran order): slicing the memmap;
- a zarr v3 array (64^3 chunks, Blosc LZ4 with byte shuffle, the cache's settings);
- the umd_dataset patch cache (Blosc2, 64^3 chunks, LZ4; `--codec zstd` for Zstd level 1).

The memmap's file was just written, so it is read from the page cache: the best case for it. A
release of 490 whole-body CTs (about 100 GB uncompressed) does not stay in memory, and then the
memmap reads 4 MB from disk per patch, the cache and zarr about 2 MB.

    pip install -e ".[bench]"   # zarr
    python scripts/bench_cache.py [--patches 40] [--size 128] [--rounds 3]

Rounds interleave the readers (torchio last in each: after its whole-volume loads the process
reads patches slower); medians are printed with the load average. Every reader delivers the patch
as a C-contiguous array, the layout a torch model consumes (the cache and zarr store C order; NIfTI
and MONAI's volume are Fortran-ordered, so they pay a transposing copy). Prints patches per second
and the ratios; checks that all readers give the same voxels.
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
    parser.add_argument("--patches", type=int, default=40)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--codec", default="lz4", choices=["lz4", "zstd"])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed")
    args = parser.parse_args()

    import nibabel as nib
    import torchio as tio

    from umd_dataset.views.cache import build_cache

    with tempfile.TemporaryDirectory() as tmp:
        release, ct = full_size_petct(Path(tmp) / "release")
        start = time.perf_counter()
        cache = build_cache(release, Path(tmp) / "cache", codec=args.codec)
        print(f"cache built in {time.perf_counter() - start:.1f} s")
        image = nib.load(release.image_path(ct))
        raw = Path(tmp) / "ct.nii"
        nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine), raw)

        rng = np.random.default_rng(0)
        size = args.size
        starts = [rng.integers(0, np.asarray(ct.shape) - size + 1) for _ in range(args.patches)]
        crop = lambda a, s: a[s[0] : s[0] + size, s[1] : s[1] + size, s[2] : s[2] + size]  # noqa: E731

        def torchio_patches(n):
            out = []
            for s in starts[:n]:
                subject = tio.ScalarImage(release.image_path(ct))
                subject.load()
                out.append(np.ascontiguousarray(crop(subject.data[0].numpy(), s)))
            return out

        def memmap_patches(n):
            proxy = nib.load(raw, mmap=True)
            data = np.asanyarray(proxy.dataobj)
            return [np.ascontiguousarray(crop(data, s)) for s in starts[:n]]

        def cache_patches(n):
            return [cache.read_array(ct.key, "image", s, (size, size, size)) for s in starts[:n]]

        from monai.data import CacheDataset
        from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

        start = time.perf_counter()
        monai_cache = CacheDataset([{"image": str(release.image_path(ct))}], Compose([LoadImaged("image"), EnsureChannelFirstd("image")]),
                                   cache_rate=1.0, copy_cache=False, num_workers=1, progress=False)
        print(f"MONAI CacheDataset filled in {time.perf_counter() - start:.1f} s")

        def monai_patches(n):
            volume = monai_cache[0]["image"]
            return [np.ascontiguousarray(crop(volume[0], s).numpy()) for s in starts[:n]]

        import zarr

        start = time.perf_counter()
        store = zarr.create_array(str(Path(tmp) / "ct.zarr"), shape=ct.shape, chunks=(64, 64, 64), dtype=image.get_data_dtype(),
                                  compressors=zarr.codecs.BloscCodec(cname=args.codec, clevel=1 if args.codec == "zstd" else 5,
                                                                     shuffle="shuffle"), zarr_format=3)
        store[...] = np.asanyarray(image.dataobj)
        print(f"zarr v3 array written in {time.perf_counter() - start:.1f} s")

        def zarr_patches(n):
            array = zarr.open_array(str(Path(tmp) / "ct.zarr"), mode="r")
            return [array[s[0] : s[0] + size, s[1] : s[1] + size, s[2] : s[2] + size] for s in starts[:n]]

        ours = "umd cache (blosc2)"
        readers = (("torchio .nii.gz", torchio_patches, max(2, args.patches // 10)),
                   ("MONAI CacheDataset", monai_patches, args.patches),
                   ("memmap .nii", memmap_patches, args.patches),
                   ("zarr v3 (blosc)", zarr_patches, args.patches),
                   (ours, cache_patches, args.patches))  # image patches only, for all of them
        for name, function, n in readers:
            function(1)  # warm up: imports, page cache
        results, times = {}, {name: [] for name, _, _ in readers}
        load = os.getloadavg()[0]
        for _ in range(args.rounds):
            for name, function, n in reversed(readers):
                start = time.perf_counter()
                results[name] = function(n)
                times[name].append(n / (time.perf_counter() - start))
        for name in results:
            for a, b in zip(results[name], results[ours]):
                assert np.array_equal(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)), name
                assert a.flags.c_contiguous, name
        rates = {name: statistics.median(values) for name, values in times.items()}
        base = rates["torchio .nii.gz"]
        print(f"{os.cpu_count()} CPUs, load average before: {load:.2f}; medians of {args.rounds} interleaved rounds")
        print(f"{'reader':<22}{'patches/s':>12}{'x torchio':>12}{'x memmap':>12}{'cache x':>10}")
        for name, rate in rates.items():
            print(f"{name:<22}{rate:12.2f}{rate / base:12.1f}{rate / rates['memmap .nii']:12.2f}{rates[ours] / rate:10.2f}")
        print("all readers gave identical voxels")

if __name__ == "__main__":
    main()
