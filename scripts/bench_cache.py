"""Benchmark: random 128^3 patches from a whole-body CT (512x512x400 int16, synthetic anatomy with
CT noise), read three ways, side by side:

- torchio from the release's ``.nii.gz``: ``ScalarImage(path)`` loaded, then cropped (what a
  patch costs when the volume is not already in memory);
- a memory-mapped uncompressed NIfTI (``nibabel`` ``.nii``, Fortran order): slicing the memmap;
- the umd_dataset patch cache (Blosc2, 64^3 chunks, LZ4; `--codec zstd` for Zstd level 1).

The memmap's file was just written, so it is read from the page cache: the best case for it. A
release of 490 whole-body CTs (about 100 GB uncompressed) does not stay in memory, and then the
memmap reads 4 MB from disk per patch, the cache about 2 MB.

    python scripts/bench_cache.py [--patches 40] [--size 128]

The readers are timed cache first, torchio last (after torchio's whole-volume loads, the same
process reads every patch two to three times slower). Every reader delivers the patch as a C-contiguous array, the layout a torch model consumes (the
cache stores C order; NIfTI is Fortran-ordered, so the other two pay a transposing copy). Prints
patches per second and the ratios; checks that all three give the same voxels.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=int, default=40)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--codec", default="lz4", choices=["lz4", "zstd"])
    args = parser.parse_args()

    import nibabel as nib
    import torchio as tio

    from umd_dataset.views.cache import build_cache
    from umd_dataset.synthetic.release import SynthConfig, synthesize

    with tempfile.TemporaryDirectory() as tmp:
        config = SynthConfig(subjects=1, preset="full", petct_only_fraction=1.0, petmri_only_fraction=0.0, name="bench")
        start = time.perf_counter()
        release = synthesize(Path(tmp) / "release", config)
        ct = release.select(scan="ct")[0]
        print(f"release: one full-size PET/CT ({ct.shape} CT) in {time.perf_counter() - start:.1f} s")
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

        results, rates = {}, {}
        readers = (("torchio .nii.gz", torchio_patches, max(2, args.patches // 10)),
                   ("memmap .nii", memmap_patches, args.patches),
                   ("umd cache (blosc2)", cache_patches, args.patches))  # image patches only, for all three
        for name, function, n in readers:
            function(1)  # warm up: imports, page cache
        for name, function, n in reversed(readers):
            start = time.perf_counter()
            results[name] = function(n)
            rates[name] = n / (time.perf_counter() - start)
        for name in results:
            for a, b in zip(results[name], results["umd cache (blosc2)"]):
                assert np.array_equal(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)), name
        base = rates["torchio .nii.gz"]
        print(f"{'reader':<22}{'patches/s':>12}{'x torchio':>12}{'x memmap':>12}")
        for name, rate in rates.items():
            print(f"{name:<22}{rate:12.2f}{rate / base:12.1f}{rate / rates['memmap .nii']:12.2f}")
        print("all readers gave identical voxels")


if __name__ == "__main__":
    main()
