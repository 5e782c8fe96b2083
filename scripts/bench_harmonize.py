"""Benchmark: harmonizing a whole-body multi-label map (512x512x400, TotalSegmentator 'total' ids,
117 classes present) with the lookup table of `harmonize_label_map`, next to the naive loop a user
would otherwise write (one boolean pass over the volume per source label).

    python scripts/bench_harmonize.py [--repeat 3]

Prints both times, their ratio, and checks that the outputs are identical.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def make_map() -> tuple[np.ndarray, np.ndarray]:
    """A 512x512x400 TotalSegmentator-style map: the synthetic anatomy's organs in 'total' ids,
    lungs as lobes, and the other 100-odd classes scattered over the background."""
    from umd_dataset.schema.organs import load_schema
    from umd_dataset.schema.sources import load_source
    from umd_dataset.synthetic.phantom import FOV_CENTER_MM, make_anatomy, presets, rasterize_labels

    schema = load_schema()
    table = load_source("totalsegmentator_total")
    grid = presets()["full"]["ct"]
    affine = grid.affine(FOV_CENTER_MM)
    canonical = rasterize_labels(make_anatomy(np.random.default_rng(0), schema), schema, grid.shape, affine, np.eye(4))
    total = np.zeros(grid.shape, dtype=np.uint8)
    for organ in schema:
        names = table.organs[organ.slug]
        inside = canonical == organ.id
        parts = np.array_split(np.flatnonzero(inside.ravel()), len(names))
        for name, part in zip(names, parts):
            total.ravel()[part] = table.id_of(name)
    others = [i for i, n in table.labels.items() if n not in table.name_to_organ and i != 0]
    background = np.flatnonzero(canonical.ravel() == 0)
    rng = np.random.default_rng(1)
    for label_id, block in zip(others, np.array_split(rng.permutation(background)[: background.size // 4], len(others))):
        total.ravel()[block] = label_id
    return total, affine


def naive(total: np.ndarray, organ_labels_only: bool) -> np.ndarray:
    """The loop a user writes: one boolean pass over the volume per source label (of every label of
    the source, or, knowing the table, of the labels that form an organ only)."""
    from umd_dataset.schema.organs import load_schema
    from umd_dataset.schema.sources import load_source

    schema = load_schema()
    table = load_source("totalsegmentator_total")
    out = np.zeros(total.shape, dtype=np.uint8)
    for label_id, name in table.labels.items():
        organ = table.name_to_organ.get(name)
        if organ_labels_only and organ is None:
            continue
        out[total == label_id] = schema.organ(organ).id if organ else 0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from umd_dataset.labels.harmonize import harmonize_label_map

    total, affine = make_map()
    present = int(np.count_nonzero(np.bincount(total.ravel())))
    times = {"lut": [], "all": [], "organs": []}
    for _ in range(args.repeat):
        start = time.perf_counter()
        fast = harmonize_label_map(total, affine, "totalsegmentator_total").labels
        times["lut"].append(time.perf_counter() - start)
        start = time.perf_counter()
        every = naive(total, organ_labels_only=False)
        times["all"].append(time.perf_counter() - start)
        start = time.perf_counter()
        organs = naive(total, organ_labels_only=True)
        times["organs"].append(time.perf_counter() - start)
    assert np.array_equal(fast, every) and np.array_equal(fast, organs), "the methods disagree"
    lut, loop_all, loop_organs = (statistics.median(times[k]) for k in ("lut", "all", "organs"))
    print(f"label map: {total.shape} {total.dtype}, {present} distinct values (TotalSegmentator 'total' ids)")
    print(f"harmonize_label_map (one lookup-table pass, with provenance): {lut:7.3f} s")
    print(f"naive loop, one pass per source label (117 passes):           {loop_all:7.3f} s   ratio {loop_all / lut:5.1f}x")
    print(f"naive loop, one pass per organ label only (19 passes):        {loop_organs:7.3f} s   ratio {loop_organs / lut:5.1f}x")
    print("outputs identical: yes")


if __name__ == "__main__":
    main()
