"""The surfels of a mask and the nearest surfel of another surface: the two loops under the surface
distances of `metrics`, compiled with numba.

**Surfels.** The neighbour code of every 2x2x2 neighbourhood of a mask padded with one empty voxel
on each side (bit weights as in the reference's kernel: 128 for the (low, low, low) corner ... 1 for
(high, high, high)), and, in C order, the index and code of each neighbourhood that is neither
empty (0) nor full (255): one pass for the codes, one for the surfels, where numpy makes about
twenty over the whole box.

**Nearest surfel, exact.** The other surface's surfels are bucketed into a uniform grid of cells
(`CELL_VOXELS` of the finest voxels on a side, fewer along coarser axes), each with the bounding box
of its surfels. A source visits the cells up to `REACH` cells off in the order of the nearest they
can be, scanning the surfels of each cell whose box could still hold a nearer one, until no cell
left can. Only if a cell farther off still could does it go on to every block of `BLOCK_CELLS`
cells a side, each with the box of its surfels, and the cells of the blocks that could: a far
source (a false positive across the body) costs a pass over the blocks, not over the cells between.
It starts from the previous source's answer (sources come in C order: mostly neighbours), which
bounds the search from the first cell on.

Candidates are compared by ``((i_a - i_b) * spacing)^2`` summed in axis order, the very operations
`metrics._length` performs before its square root, so the surfel chosen has the smallest of the
distances that `metrics` reports (of equally near surfels, whichever is met first: the same distance). Every
bound that prunes is made of the same squared steps and never exceeds a candidate's own sum.

Compiled on first use (``nogil``: a caller's threads answer chunks of sources side by side) and
cached on disk next to this file, or in numba's user cache where that is not writable
(``NUMBA_CACHE_DIR`` chooses the folder; with none writable, they are compiled in every process,
with a warning).
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np

__all__ = ["surfels", "nearest_surfels", "CELL_VOXELS", "REACH", "BLOCK_CELLS"]

CELL_VOXELS = 6  # cell edge in voxels of the finest axis: fewer cells to visit than smaller ones, fewer surfels to scan than larger
REACH = 3  # cells up to this many apart (per axis) are visited nearest first
BLOCK_CELLS = 4  # beyond them, blocks of this many cells a side are pruned by their boxes before their cells


def _jit(function):
    """numba's ``njit(nogil=True)``, cached on disk; where numba finds no writable folder for its cache
    (neither next to this file nor the user's cache folder), uncached, with a warning."""
    import numba

    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError as error:
        if "cannot cache" not in str(error):
            raise
        warnings.warn(
            "umd_dataset: numba finds no writable folder for its cache, so the metric loops are compiled again in every "
            "process (a few seconds each time); set NUMBA_CACHE_DIR to a writable folder to keep them.",
            RuntimeWarning,
            stacklevel=2,
        )
        return numba.njit(nogil=True)(function)


@lru_cache(maxsize=1)
def _compiled():
    jit = _jit

    @jit
    def codes_of(padded, codes):  # pragma: no cover - compiled
        n0, n1, n2 = codes.shape
        count = 0
        for i in range(n0):
            for j in range(n1):
                for k in range(n2):
                    code = (
                        (padded[i, j, k] << 7) | (padded[i, j, k + 1] << 6) | (padded[i, j + 1, k] << 5) | (padded[i, j + 1, k + 1] << 4)
                        | (padded[i + 1, j, k] << 3) | (padded[i + 1, j, k + 1] << 2) | (padded[i + 1, j + 1, k] << 1) | padded[i + 1, j + 1, k + 1]
                    )
                    codes[i, j, k] = code
                    if code != 0 and code != 255:
                        count += 1
        return count

    @jit
    def surfels_of(codes, points, point_codes):  # pragma: no cover - compiled
        n0, n1, n2 = codes.shape
        at = 0
        for i in range(n0):
            for j in range(n1):
                for k in range(n2):
                    code = codes[i, j, k]
                    if code != 0 and code != 255:
                        points[at, 0] = i
                        points[at, 1] = j
                        points[at, 2] = k
                        point_codes[at] = code
                        at += 1

    @jit
    def bucket(points, low, cell, grid, margin, bucketed, order, start, box):  # pragma: no cover - compiled
        """Counting sort of the points by cell (stable), and each cell's bounding box."""
        n = points.shape[0]
        ids = np.empty(n, np.int64)
        for j in range(n):
            i0 = (points[j, 0] - low[0]) // cell[0] + margin
            i1 = (points[j, 1] - low[1]) // cell[1] + margin
            i2 = (points[j, 2] - low[2]) // cell[2] + margin
            at = (i0 * grid[1] + i1) * grid[2] + i2
            ids[j] = at
            start[at + 1] += 1
        for at in range(1, start.shape[0]):
            start[at] += start[at - 1]
        fill = start[:-1].copy()
        for j in range(n):
            at = ids[j]
            slot = fill[at]
            fill[at] += 1
            order[slot] = j
            for a in range(3):
                v = points[j, a] - low[a]
                bucketed[slot, a] = v
                if slot == start[at] or v < box[at, a]:
                    box[at, a] = v
                if slot == start[at] or v > box[at, 3 + a]:
                    box[at, 3 + a] = v

    @jit
    def search(points, start, box, cell, grid, deltas, bounds, reach, block_start, block_cells, sources, scale, out):  # pragma: no cover - compiled
        """The nearest point of each source. `box` holds a row per cell, then a row per block."""
        s0, s1, s2 = scale[0], scale[1], scale[2]
        c0, c1, c2 = cell[0], cell[1], cell[2]
        g0, g1, g2 = grid[0], grid[1], grid[2]
        cells = g0 * g1 * g2
        blocks = block_start.shape[0] - 1
        previous = -1
        for k in range(sources.shape[0]):
            q0, q1, q2 = sources[k, 0], sources[k, 1], sources[k, 2]
            best = math.inf
            found = -1
            if previous >= 0:  # the previous source's nearest surfel bounds this one's distance
                a = (points[previous, 0] - q0) * s0
                b = (points[previous, 1] - q1) * s1
                c = (points[previous, 2] - q2) * s2
                best = a * a + b * b + c * c
                found = previous
            k0, k1, k2 = q0 // c0 + reach, q1 // c1 + reach, q2 // c2 + reach  # the grid has `reach` cells around every source's
            here = (k0 * g1 + k1) * g2 + k2
            o = 0  # the next of the cells up to `reach` apart, nearest first
            far = False  # then, if a nearer surfel may lie farther: every block, and the cells of those that may hold it
            block = -1
            f = f_end = 0
            while True:
                # the next candidate: a cell (`row` = `at`) or a block (`row` past the cells)
                if not far:
                    if o < deltas.shape[0] and bounds[o] < best:  # bounds: the nearest two points of cells that far apart can be
                        at = here + deltas[o]
                        o += 1
                        if start[at] == start[at + 1]:
                            continue
                        row = at
                    else:
                        # the nearest a cell `reach` + 1 or more cells off can be: past the plane that
                        # far along some axis, where the grid goes on that far
                        bound = math.inf
                        for axis in range(3):
                            kk, cc, qq, gg, ss = (k0, k1, k2)[axis], cell[axis], (q0, q1, q2)[axis], grid[axis], scale[axis]
                            if kk + reach + 1 < gg:
                                v = ((kk + 1) * cc - qq) * ss
                                bound = min(bound, v * v)
                            if kk - reach - 1 >= 0:
                                v = (qq - (kk - 2 * reach - 1) * cc - cc + 1) * ss
                                bound = min(bound, v * v)
                        if bound >= best:
                            break
                        far = True
                        continue
                elif f < f_end:
                    at = block_cells[f]
                    f += 1
                    row = at
                elif block + 1 < blocks:
                    block += 1
                    row = cells + block
                else:
                    break
                # the nearest its box can be
                v = max(box[row, 0] - q0, q0 - box[row, 3], 0) * s0
                near = v * v
                v = max(box[row, 1] - q1, q1 - box[row, 4], 0) * s1
                near += v * v
                v = max(box[row, 2] - q2, q2 - box[row, 5], 0) * s2
                near += v * v
                if near >= best:
                    continue
                if row >= cells:  # a block that may hold a nearer surfel: its cells next
                    f = block_start[block]
                    f_end = block_start[block + 1]
                    continue
                for j in range(start[at], start[at + 1]):
                    a = (points[j, 0] - q0) * s0
                    b = (points[j, 1] - q1) * s1
                    c = (points[j, 2] - q2) * s2
                    t = a * a + b * b + c * c
                    if t < best:
                        best = t
                        found = j
            out[k] = found
            previous = found

    return codes_of, surfels_of, bucket, search


def surfels(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The neighbour codes of a 3D bool mask, and its surfels.

    Returns:
        codes: uint8, the mask's shape plus one along each axis;
        points: (n, 3) int64, the index of every surfel (code neither 0 nor 255), in C order;
        point_codes: (n,) uint8, their codes.
    """
    codes_of, surfels_of, _, _ = _compiled()
    padded = np.zeros(tuple(s + 2 for s in mask.shape), dtype=np.uint8)
    padded[1:-1, 1:-1, 1:-1] = mask
    codes = np.empty(tuple(s + 1 for s in mask.shape), dtype=np.uint8)
    count = codes_of(padded, codes)
    points = np.empty((count, 3), dtype=np.int64)
    point_codes = np.empty(count, dtype=np.uint8)
    surfels_of(codes, points, point_codes)
    return codes, points, point_codes


@lru_cache(maxsize=64)
def _nearest_first(cell: tuple[int, int, int], scale: tuple[float, float, float], reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell offsets up to `reach` per axis, by the nearest two points of cells that far apart can be
    (squared mm, the same squared steps as the candidates'), stable for ties."""
    steps = np.stack(np.meshgrid(*[np.arange(-reach, reach + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    gaps = (np.maximum(np.abs(steps) - 1, 0) * np.asarray(cell) + (steps != 0)) * np.asarray(scale)
    bounds = (gaps[:, 0] * gaps[:, 0] + gaps[:, 1] * gaps[:, 1]) + gaps[:, 2] * gaps[:, 2]
    order = np.argsort(bounds, kind="stable")
    return np.ascontiguousarray(steps[order]), np.ascontiguousarray(bounds[order])


def _blocks(start: np.ndarray, box: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-empty cells grouped in blocks of `BLOCK_CELLS` cells a side, as CSR (`block_start` into
    `block_cells`); each block's bounding box (of its surfels) goes to the rows of `box` after the cells'."""
    cells = np.flatnonzero(start[1:] > start[:-1])
    index = np.stack(np.unravel_index(cells, tuple(int(g) for g in grid)), axis=1) // BLOCK_CELLS
    per_axis = -(-np.asarray(grid) // BLOCK_CELLS)
    block_of = (index[:, 0] * per_axis[1] + index[:, 1]) * per_axis[2] + index[:, 2]
    order = np.argsort(block_of, kind="stable")
    cells, block_of = cells[order], block_of[order]
    first = np.flatnonzero(np.r_[True, block_of[1:] != block_of[:-1]])
    rows = int(np.prod(grid)) + np.arange(len(first))
    box[rows, :3] = np.minimum.reduceat(box[cells, :3], first)
    box[rows, 3:] = np.maximum.reduceat(box[cells, 3:], first)
    return np.append(first, len(cells)).astype(np.int64), np.ascontiguousarray(cells, dtype=np.int64)


def nearest_surfels(points: np.ndarray, sources: np.ndarray, spacing_mm, workers: int = 1) -> np.ndarray:
    """The index, into `points`, of the nearest point of each source (Euclidean, in mm).

    Args:
        points: (n, 3) integer voxel indices, n >= 1 (the other surface's surfels).
        sources: (m, 3) integer voxel indices, best in C order (neighbours answer faster).
        spacing_mm: the voxel spacing along the three axes.
        workers: threads, each answering one contiguous chunk of the sources.

    Returns:
        (m,) int64 indices into `points`.

    Raises:
        ValueError: arrays that are not (n, 3), or no points.
    """
    from concurrent.futures import ThreadPoolExecutor

    scale = np.asarray([float(s) for s in spacing_mm])
    points = np.ascontiguousarray(points, dtype=np.int64)
    sources = np.ascontiguousarray(sources, dtype=np.int64)
    if points.ndim != 2 or points.shape[1] != 3 or not len(points):
        raise ValueError(f"points must be a non-empty (n, 3) array of voxel indices, got shape {points.shape}")
    if sources.ndim != 2 or sources.shape[1] != 3 or scale.shape != (3,):
        raise ValueError(f"sources must be an (m, 3) array of voxel indices and spacing_mm 3 values, got {sources.shape} and {scale.shape}")
    out = np.empty(len(sources), dtype=np.int64)
    if not len(sources):
        return out
    _, _, bucket, search = _compiled()
    low = np.minimum(points.min(axis=0), sources.min(axis=0))  # cells from the lowest index of either
    cell = np.maximum(1, np.round(CELL_VOXELS * scale.min() / scale)).astype(np.int64)
    grid = (np.maximum(points.max(axis=0), sources.max(axis=0)) - low) // cell + 1 + 2 * REACH  # `REACH` empty cells around
    cells = int(np.prod(grid))
    bucketed = np.empty_like(points)
    order = np.empty(len(points), dtype=np.int64)
    start = np.zeros(cells + 1, dtype=np.int64)
    box = np.empty((cells + int(np.prod(-(-grid // BLOCK_CELLS))), 6), dtype=np.int32)  # a row per cell, then per block
    bucket(points, low, cell, grid, REACH, bucketed, order, start, box)
    steps, bounds = _nearest_first(tuple(int(c) for c in cell), tuple(float(s) for s in scale), REACH)
    deltas = np.ascontiguousarray((steps[:, 0] * grid[1] + steps[:, 1]) * grid[2] + steps[:, 2])
    block_start, block_cells = _blocks(start, box, grid)
    shifted = sources - low
    chunks = np.array_split(np.arange(len(sources)), max(1, min(int(workers), len(sources) // 4096)))

    def answer(chunk: np.ndarray) -> None:
        part = slice(int(chunk[0]), int(chunk[-1]) + 1)
        search(bucketed, start, box, cell, grid, deltas, bounds, REACH, block_start, block_cells, shifted[part], scale, out[part])

    if len(chunks) == 1:
        answer(chunks[0])
    else:
        with ThreadPoolExecutor(len(chunks)) as pool:
            list(pool.map(answer, chunks))
    return order[out]
