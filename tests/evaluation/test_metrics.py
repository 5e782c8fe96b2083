"""Metrics against DeepMind's surface-distance, hand-derived values, and the edge-case table."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from umd_dataset.errors import MaskValueError
from umd_dataset.evaluation.metrics import case_metrics, organ_metrics, surface_distances

sd = pytest.importorskip("surface_distance", reason="surface-distance is a test dependency: pip install -e '.[test]'")


def reference_values(a, b, spacing):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        distances = sd.compute_surface_distances(a, b, spacing)
        return {
            "dice": sd.compute_dice_coefficient(a, b),
            "nsd1": sd.compute_surface_dice_at_tolerance(distances, 1.0),
            "nsd2": sd.compute_surface_dice_at_tolerance(distances, 2.0),
            "hd95": sd.compute_robust_hausdorff(distances, 95),
            "assd_mean_of_means": float(np.mean(sd.compute_average_surface_distance(distances))),
            "assd": float(
                (np.sum(distances["distances_gt_to_pred"] * distances["surfel_areas_gt"])
                 + np.sum(distances["distances_pred_to_gt"] * distances["surfel_areas_pred"]))
                / (np.sum(distances["surfel_areas_gt"]) + np.sum(distances["surfel_areas_pred"]))
            ),
        }


def blob(rng, shape, sigma, level):
    return ndimage.gaussian_filter(rng.normal(size=shape), sigma) > level


CASES = {
    "blobs, anisotropic": lambda rng: (blob(rng, (40, 44, 24), 3, 0.05), blob(rng, (40, 44, 24), 3, 0.05), (0.8, 1.3, 2.5)),
    "thin tube": lambda rng: (
        np.pad(np.ones((1, 1, 30), bool), ((10, 10), (10, 10), (2, 2))),
        np.pad(np.ones((1, 2, 28), bool), ((11, 9), (10, 9), (3, 3))),
        (0.7, 0.7, 3.0),
    ),
    "touching the border": lambda rng: (
        np.pad(np.ones((20, 16, 10), bool), ((0, 5), (3, 0), (0, 0))),
        np.pad(np.ones((18, 16, 10), bool), ((2, 5), (0, 3), (0, 0))),
        (1.0, 2.0, 4.0),
    ),
    "a false positive across the array (far sources)": lambda rng: (lambda a: (a, a | np.roll(a, 52, 0), (0.8, 0.8, 2.0)))(
        np.pad(blob(rng, (14, 16, 12), 2, 0.0), ((2, 54), (2, 2), (2, 2)))
    ),
    "boundary noise": lambda rng: (lambda a: (a, a ^ (ndimage.binary_dilation(a) & (rng.random(a.shape) < 0.3)), (1.1, 0.9, 2.0)))(
        blob(rng, (36, 36, 30), 4, 0.02)
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_agrees_with_surface_distance(name):
    reference, prediction, spacing = CASES[name](np.random.default_rng(3))
    expected = reference_values(reference, prediction, spacing)
    got = case_metrics(reference, prediction, spacing, tolerances_mm=(1.0, 2.0))
    mine = {"dice": got.dice, "nsd1": got.nsd[1.0], "nsd2": got.nsd[2.0], "hd95": got.hd95, "assd": got.assd,
            "assd_mean_of_means": got.assd_mean_of_means}
    for key in expected:
        assert mine[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-12), (name, key)


def test_shifted_cube_by_hand():
    """A 4x4x4 cube shifted by one voxel along the 3 mm axis: 48 of 64 voxels shared; the caps are
    3 mm apart, the sides coincide."""
    a = np.zeros((8, 8, 10), bool)
    a[2:6, 2:6, 2:6] = True
    b = np.roll(a, 1, axis=2)
    metrics = case_metrics(a, b, (1.0, 2.0, 3.0), tolerances_mm=(1.0, 3.0))
    assert metrics.dice == pytest.approx(2 * 48 / 128)
    assert (metrics.tp, metrics.fp, metrics.fn, metrics.n_ref, metrics.n_pred) == (48, 16, 16, 64, 64)
    assert metrics.hd95 == pytest.approx(3.0)
    assert metrics.nsd[3.0] == pytest.approx(1.0) and metrics.nsd[1.0] < 1.0
    assert metrics.edge_case == ""


def test_edge_cases():
    empty = np.zeros((5, 6, 7), bool)
    full = empty.copy()
    full[1:3, 1:3, 1:3] = True
    spacing = (1.0, 2.0, 2.0)
    diagonal = math.sqrt(25 + 144 + 196)
    absent = case_metrics(empty, empty, spacing)
    assert absent.edge_case == "absent" and math.isnan(absent.dice) and math.isnan(absent.hd95)
    missed = case_metrics(full, empty, spacing)
    assert (missed.edge_case, missed.dice, missed.nsd[1.0], missed.fn) == ("missed", 0.0, 0.0, 8)
    assert missed.hd95 == pytest.approx(diagonal) and missed.assd == pytest.approx(diagonal)
    extra = case_metrics(empty, full, spacing)
    assert (extra.edge_case, extra.dice, extra.fp) == ("false_positive", 0.0, 8)


def test_rows_hold_plain_numbers_that_json_writes():
    reference = np.zeros((6, 6, 6), bool)
    reference[1:4, 1:4, 1:4] = True
    row = case_metrics(reference, np.roll(reference, 1, 0), (1.0, 1.0, 2.0)).as_row()
    assert all(type(row[k]) is int for k in ("tp", "fp", "fn", "n_ref", "n_pred"))
    assert json.loads(json.dumps(row))["tp"] == 18


def test_sorted_by_distance_then_area_as_the_reference_sorts_its_pairs():
    from umd_dataset.evaluation.metrics import _area_table, _distance_then_area

    rng = np.random.default_rng(2)
    spacing = (0.7, 1.1, 2.5)
    codes = rng.integers(1, 255, 5000).astype(np.uint8)
    distances = np.sqrt(rng.integers(0, 30, 5000) * 0.49)  # many ties
    distances[rng.random(5000) < 0.3] = 0.0
    distances[:7] = np.inf
    areas = _area_table(spacing)[codes]
    assert np.array_equal(_distance_then_area(distances, codes, spacing), np.lexsort((areas, distances)))


@pytest.mark.parametrize("spacing", [(1.0, 0.0, 2.0), (1.0, -1.0, 2.0), (1.0, float("nan"), 2.0), (1.0, 2.0), "1,1,1", None])
def test_a_spacing_that_is_not_three_positive_sizes_is_named(spacing):
    from umd_dataset.errors import InvalidOptionError

    mask = np.zeros((4, 4, 4), bool)
    mask[1:3, 1:3, 1:3] = True
    for call in (lambda: case_metrics(mask, mask, spacing), lambda: surface_distances(mask, mask, spacing),
                 lambda: organ_metrics(mask.astype(np.uint8), mask.astype(np.uint8), spacing, [1])):
        with pytest.raises(InvalidOptionError, match=r"spacing_mm must be three positive, finite voxel sizes in mm .*got"):
            call()


def test_non_bool_masks_are_rejected():
    with pytest.raises(MaskValueError, match="must be a bool numpy array"):
        surface_distances(np.ones((3, 3, 3), np.uint8), np.ones((3, 3, 3), bool), (1, 1, 1))


def test_organ_metrics_of_a_label_map(small_release):
    from umd_dataset.io import read_nifti

    record = small_release.select(scan="ct")[0]
    labels, _ = read_nifti(small_release.label_path(record))
    labels = np.asarray(labels)
    moved = np.roll(labels, 2, axis=0)
    result = organ_metrics(labels, moved, record.spacing_mm, list(range(1, 14)))
    for organ, metrics in result.items():
        expected = reference_values(labels == organ, moved == organ, record.spacing_mm)
        assert metrics.dice == pytest.approx(expected["dice"], rel=1e-6)
        assert metrics.hd95 == pytest.approx(expected["hd95"], rel=1e-6)
        assert metrics.nsd[2.0] == pytest.approx(expected["nsd2"], rel=1e-6)


def _box(shape, lo, hi):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def _ellipsoid(shape, centre, radii):
    grid = np.indices(shape).astype(float)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1


# distances equal to the tolerance: the reference computes (index difference) x spacing and lands
# exactly on tau; distances from scaled coordinates landed just above it (NSD up to 14% off here)
def _shifted(kind: str, shift: tuple[int, int, int], start: int = 7):
    if kind == "box":
        shape, lo, hi = (40, 40, 24), np.array([start, start, 4]), np.array([start + 20, start + 18, 14])
        return _box(shape, lo, hi), _box(shape, lo + shift, hi + shift)
    shape, centre, radii = (44, 44, 24), np.array([start + 12, start + 12, 10]), (9, 8, 5)
    return _ellipsoid(shape, centre, radii), _ellipsoid(shape, centre + shift, radii)


TIES = {
    "box, 0.4 mm isotropic, tau 2 mm": ("box", (0, 5, 0), (0.4, 0.4, 0.4), 2.0),
    "ellipsoid, 0.4 mm isotropic, tau 2 mm": ("ellipsoid", (5, 5, 0), (0.4, 0.4, 0.4), 2.0),
    "box, (0.6, 0.8, 3) mm, tau 1 mm": ("box", (1, 3, 1), (0.6, 0.8, 3.0), 1.0),
    "ellipsoid, (0.6, 0.8, 3) mm, tau 1 mm": ("ellipsoid", (2, 4, 0), (0.6, 0.8, 3.0), 1.0),
    "box, (1.2, 1.6, 3) mm, tau 2 mm": ("box", (1, 3, 1), (1.2, 1.6, 3.0), 2.0),
    "ellipsoid, (1.2, 1.6, 3) mm, tau 2 mm": ("ellipsoid", (2, 4, 0), (1.2, 1.6, 3.0), 2.0),
}


@pytest.mark.parametrize("name", list(TIES))
def test_distances_equal_to_the_tolerance_count_as_the_reference_counts_them(name):
    kind, shift, spacing, tau = TIES[name]
    reference, prediction = _shifted(kind, shift)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = sd.compute_surface_dice_at_tolerance(sd.compute_surface_distances(reference, prediction, spacing), tau)
    got = case_metrics(reference, prediction, spacing, tolerances_mm=(tau,)).nsd[tau]
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("spacing", [(0.98, 0.98, 2.5), (4.0, 4.0, 4.0), (0.4, 0.4, 0.4), (0.7, 1.9, 3.3)])
@pytest.mark.parametrize("shift", [(0, 0, 0), (1, 0, 1), (3, 2, 0), (9, -7, 4)])
def test_surfel_distances_equal_the_reference_on_every_search_path(spacing, shift):
    """Shared surfels are at 0, the others are searched in the cells around them (`evaluation/surfels`;
    far sources, in blocks of cells, are checked in test_surfels): the sorted distance arrays equal
    the reference's, at spacings that give the cells 1 to 6 voxels along an axis."""
    rng = np.random.default_rng(sum(shift) + int(10 * spacing[2]))
    reference = blob(rng, (34, 30, 26), 3, 0.05)
    prediction = np.roll(reference ^ (ndimage.binary_dilation(reference) & (rng.random(reference.shape) < 0.2)), shift, (0, 1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = sd.compute_surface_distances(reference, prediction, spacing)
    got = surface_distances(reference, prediction, spacing, workers=1)
    for mine, theirs in ((got.distances_ref_to_pred, expected["distances_gt_to_pred"]), (got.distances_pred_to_ref, expected["distances_pred_to_gt"])):
        assert mine.shape == theirs.shape
        assert np.allclose(mine, theirs, rtol=1e-12, atol=1e-12)
    assert np.allclose(np.sort(got.areas_ref), np.sort(expected["surfel_areas_gt"]), rtol=1e-12)
