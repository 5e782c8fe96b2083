"""The compiled surfel loops against plain numpy: the neighbour codes and surfels of a mask, and the
nearest surfel against a brute-force minimum over every pair, on both search phases."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from umd_dataset.evaluation import surfels as compiled
from umd_dataset.evaluation.metrics import _length
from umd_dataset.evaluation.surfels import nearest_surfels, surfels


def numpy_codes(mask: np.ndarray) -> np.ndarray:
    """The reference's neighbour codes (bit 128 for the (low, low, low) corner ... 1 for (high, high, high))."""
    padded = np.pad(mask.astype(np.uint8), 1)
    code = np.zeros(tuple(s + 1 for s in mask.shape), dtype=np.uint8)
    weight = 128
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                code |= padded[a : a + code.shape[0], b : b + code.shape[1], c : c + code.shape[2]] * np.uint8(weight)
                weight //= 2
    return code


def brute_force(points: np.ndarray, sources: np.ndarray, spacing) -> np.ndarray:
    """The smallest `_length` from each source to any point (every pair)."""
    steps = (points[None, :, :] - sources[:, None, :]).reshape(-1, 3)
    return _length(steps, np.asarray(spacing, dtype=float)).reshape(len(sources), len(points)).min(axis=1)


MASKS = {
    "blob": lambda rng: ndimage.gaussian_filter(rng.normal(size=(23, 31, 17)), 2) > 0.05,
    "a cropped view (strided, offset)": lambda rng: (ndimage.gaussian_filter(rng.normal(size=(40, 37, 29)), 3) > 0.05)[3:, ::2, 2:-1],
    "touching every border": lambda rng: np.ones((5, 6, 7), bool),
    "one voxel": lambda rng: np.pad(np.ones((1, 1, 1), bool), ((2, 3), (0, 4), (1, 1))),
    "empty": lambda rng: np.zeros((4, 5, 6), bool),
}


@pytest.mark.parametrize("name", list(MASKS))
def test_codes_and_surfels_equal_numpy(name):
    mask = MASKS[name](np.random.default_rng(1))
    codes, points, point_codes = surfels(mask)
    expected = numpy_codes(mask)
    border = (expected != 0) & (expected != 255)
    assert codes.dtype == np.uint8 and np.array_equal(codes, expected)
    assert points.dtype == np.int64 and np.array_equal(points, np.argwhere(border))  # C order, as argwhere
    assert np.array_equal(point_codes, expected[border])


SPACINGS = [(0.98, 0.98, 2.5), (1.0, 1.0, 1.0), (0.4, 0.7, 3.3), (4.0, 4.0, 4.0)]


@pytest.mark.parametrize("spacing", SPACINGS)
def test_nearest_is_the_brute_force_minimum_near_and_far(spacing):
    """Sources around, inside, below and far beyond the points' extent: near ones are answered in
    the cells up to REACH apart, far ones (up to ~20 cells off) in the rings beyond."""
    rng = np.random.default_rng(int(10 * sum(spacing)))
    for _ in range(4):
        points = rng.integers(0, 40, (int(rng.integers(1, 500)), 3)) + rng.integers(20, 40, 3)
        sources = rng.integers(0, 160, (3000, 3))
        got = nearest_surfels(points, sources, spacing)
        assert got.dtype == np.int64
        assert np.array_equal(_length(points[got] - sources, np.asarray(spacing)), brute_force(points, sources, spacing))
    far = np.abs(sources[:, None, :] - points[None, :, :]).max(axis=2).min(axis=1)
    cell = np.round(compiled.CELL_VOXELS * min(spacing) / np.asarray(spacing)).clip(1).max()
    assert (far > (compiled.REACH + 1) * cell).sum() > 100  # beyond the cells nearest first: the blocks were searched


def test_nearest_on_surfaces_of_organ_like_shapes_moved_apart():
    """The case the search is built for: the surfels of one blob against those of the same blob
    moved by several mm, sources in C order."""
    rng = np.random.default_rng(7)
    mask = ndimage.gaussian_filter(rng.normal(size=(34, 30, 20)), 3) > 0.05
    moved = np.roll(mask, (6, -4, 2), (0, 1, 2))
    spacing = (0.98, 0.98, 2.5)
    points, sources = surfels(moved)[1], surfels(mask)[1]
    got = nearest_surfels(points, sources, spacing)
    assert np.array_equal(_length(points[got] - sources, np.asarray(spacing)), brute_force(points, sources, spacing))


def test_workers_answer_chunks_with_the_same_result():
    rng = np.random.default_rng(3)
    points = rng.integers(0, 60, (800, 3))
    sources = rng.integers(0, 60, (20000, 3))  # enough for several chunks of 4096
    one = nearest_surfels(points, sources, (0.8, 1.1, 2.0), workers=1)
    assert np.array_equal(one, nearest_surfels(points, sources, (0.8, 1.1, 2.0), workers=3))
    assert np.array_equal(_length(points[one] - sources, np.asarray((0.8, 1.1, 2.0))), brute_force(points, sources, (0.8, 1.1, 2.0)))


def test_equally_near_points_give_their_common_length():
    points = np.array([[10, 10, 14], [10, 10, 6], [10, 14, 10], [14, 10, 10]])  # all 4 voxels from the source
    got = nearest_surfels(points, np.array([[10, 10, 10]]), (1.0, 1.0, 1.0))
    assert _length(points[got] - np.array([[10, 10, 10]]), np.ones(3))[0] == 4.0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"points must be a non-empty \(n, 3\) array.*\(0, 3\)"):
        nearest_surfels(np.zeros((0, 3), int), np.zeros((2, 3), int), (1, 1, 1))
    with pytest.raises(ValueError, match=r"sources must be an \(m, 3\) array.*\(2, 2\)"):
        nearest_surfels(np.zeros((1, 3), int), np.zeros((2, 2), int), (1, 1, 1))
    assert nearest_surfels(np.zeros((1, 3), int), np.zeros((0, 3), int), (1, 1, 1)).shape == (0,)


def test_importing_the_module_compiles_and_imports_nothing():
    code = "import sys, umd_dataset.evaluation.surfels, umd_dataset.evaluation.metrics; print('numba' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_workers_is_the_number_of_threads(monkeypatch):
    """`workers=1` answers in the calling thread; `workers=n` in a pool of n (the issue: the k-d tree
    of the first version used every core whatever the caller asked)."""
    import concurrent.futures

    from umd_dataset.evaluation.metrics import surface_distances

    pools = []

    class Counting(concurrent.futures.ThreadPoolExecutor):
        def __init__(self, workers, *args, **kwargs):
            pools.append(workers)
            super().__init__(workers, *args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", Counting)
    rng = np.random.default_rng(5)
    mask = ndimage.gaussian_filter(rng.normal(size=(70, 64, 40)), 5) > 0.0
    moved = np.roll(mask, (3, 2, 1), (0, 1, 2))  # every surfel apart: > 2 x 4096 sources each way
    one = surface_distances(mask, moved, (0.9, 0.9, 2.0), workers=1)
    assert pools == []
    two = surface_distances(mask, moved, (0.9, 0.9, 2.0), workers=2)
    assert pools == [2, 2]
    assert np.array_equal(one.distances_ref_to_pred, two.distances_ref_to_pred)
    assert np.array_equal(one.distances_pred_to_ref, two.distances_pred_to_ref)


def test_without_a_writable_cache_the_loops_compile_uncached_with_a_warning(monkeypatch):
    import numba

    real = numba.njit

    def no_cache_folder(*args, **kwargs):
        if kwargs.get("cache"):
            def decorate(function):
                raise RuntimeError(f"cannot cache function {function.__name__!r}: no locator available for file 'surfels.py'")
            return decorate
        return real(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", no_cache_folder)
    compiled._compiled.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="set NUMBA_CACHE_DIR to a writable folder"):
            codes, points, _ = surfels(np.pad(np.ones((2, 2, 2), bool), 1))
        assert len(points) == 26 and codes[2, 2, 2] == 255
    finally:
        compiled._compiled.cache_clear()
