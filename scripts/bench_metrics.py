"""Benchmark: Dice, NSD at 1 and 2 mm, HD95 and ASSD of all 13 organs of a whole-body label map
(512x512x400, 0.98x0.98x2.5 mm), umd_dataset next to DeepMind's ``surface-distance`` (the
reference implementation, called per organ as its README shows), side by side.

    pip install surface-distance
    python scripts/bench_metrics.py [--organs 13] [--prediction model|moved] [--rounds 3]

Prints the medians of interleaved rounds: the reference (one thread), ours on every core of the
process and on one thread, the ratios, and the load average; it stops if a value differs. Ours is
called once before the rounds, on a tiny map: the first call of a process loads the loops that
numba compiled (and compiles them, the first time on a machine); its time is printed apart.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np


def label_maps(kind: str = "model"):
    """Reference and prediction: the prediction is either a model-like output (the reference with
    boundary errors of one to three voxels, one organ missed, one spilling over) or the same
    anatomy moved by a few mm and degrees (every surface apart)."""
    from umd_dataset.schema.organs import load_schema
    from umd_dataset.synthetic.phantom import FOV_CENTER_MM, make_anatomy, pose, presets, rasterize_labels

    schema = load_schema()
    grid = presets()["full"]["ct"]
    affine = grid.affine(FOV_CENTER_MM)
    anatomy = make_anatomy(np.random.default_rng(0), schema)
    reference = rasterize_labels(anatomy, schema, grid.shape, affine, np.eye(4))
    if kind == "moved":
        return reference, rasterize_labels(anatomy, schema, grid.shape, affine, pose(np.random.default_rng(5))), grid.spacing_mm
    from scipy import ndimage

    rng = np.random.default_rng(5)
    prediction = reference.copy()
    boxes = ndimage.find_objects(reference)
    for organ in range(1, 14):
        box = boxes[organ - 1]
        mask = reference[box] == organ
        grown = ndimage.binary_dilation(mask, iterations=int(rng.integers(1, 3))) if organ % 2 else ndimage.binary_erosion(mask, iterations=1)
        noise = ndimage.gaussian_filter(rng.random(mask.shape), 2) > 0.5
        changed = np.where(noise, grown, mask)
        view = prediction[box]
        view[mask & ~changed] = 0
        view[changed & (view == 0)] = organ
    prediction[prediction == 7] = 0  # the esophagus missed
    return reference, prediction, grid.spacing_mm


def deepmind(reference, prediction, spacing, organs):
    import surface_distance as sd

    rows = {}
    for organ in organs:
        gt, pred = reference == organ, prediction == organ
        distances = sd.compute_surface_distances(gt, pred, spacing)
        rows[organ] = (
            sd.compute_dice_coefficient(gt, pred),
            sd.compute_surface_dice_at_tolerance(distances, 1.0),
            sd.compute_surface_dice_at_tolerance(distances, 2.0),
            sd.compute_robust_hausdorff(distances, 95),
            float(np.mean(sd.compute_average_surface_distance(distances))),
        )
    return rows


def ours(reference, prediction, spacing, organs, workers=None):
    from umd_dataset.evaluation.metrics import organ_metrics

    result = organ_metrics(reference, prediction, spacing, organs, workers=workers)
    return {k: (m.dice, m.nsd[1.0], m.nsd[2.0], m.hd95, m.assd_mean_of_means) for k, m in result.items()}  # the reference averages the two directed means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--organs", type=int, default=13)
    parser.add_argument("--prediction", choices=["model", "moved"], default="model")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)  # the reference uses deprecated scipy namespaces
    reference, prediction, spacing = label_maps(args.prediction)
    organs = [k for k in range(1, args.organs + 1) if (reference == k).any() and (prediction == k).any()]  # the reference fails on empty masks
    start = time.perf_counter()
    ours(np.pad(np.ones((2, 2, 2), np.uint8), 2), np.pad(np.ones((2, 3, 2), np.uint8), ((2, 2), (2, 1), (2, 2))), spacing, [1])
    first = time.perf_counter() - start  # numba loads (or, once per machine, compiles) the loops of evaluation/surfels
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0]
    times = {"reference": [], f"ours, {cores} threads": [], "ours, 1 thread": []}
    for _ in range(args.rounds):
        start = time.perf_counter()
        theirs = deepmind(reference, prediction, spacing, organs)
        times["reference"].append(time.perf_counter() - start)
        for label, workers in ((f"ours, {cores} threads", None), ("ours, 1 thread", 1)):
            start = time.perf_counter()
            mine = ours(reference, prediction, spacing, organs, workers)
            times[label].append(time.perf_counter() - start)
            worst = max(abs(a - b) / max(abs(b), 1e-12) for k in organs for a, b in zip(mine[k], theirs[k]))
            if worst > 1e-9:
                raise SystemExit(f"{label}: values differ from the reference by {worst:.2e}")
    median = {label: float(np.median(t)) for label, t in times.items()}
    print(f"label maps {reference.shape}, spacing {spacing} mm, prediction: {args.prediction}, {len(organs)} organs present in both; "
          f"metrics: Dice, NSD@1mm, NSD@2mm, HD95, ASSD; medians of {args.rounds} interleaved rounds; load average before: {load:.2f}")
    print(f"DeepMind surface-distance (one thread): {median['reference']:8.2f} s")
    for label in list(median)[1:]:
        print(f"umd_dataset, {label[6:]:<24} {median[label]:8.2f} s   ratio {median['reference'] / median[label]:5.1f}x")
    print(f"values equal to the reference within 1e-9 (relative) in every round ({len(organs)} organs x 5 metrics)")
    print(f"first call of the process (loading the compiled loops; compiling them, the first time on a machine): {first:.2f} s, not in the rounds")


if __name__ == "__main__":
    main()
