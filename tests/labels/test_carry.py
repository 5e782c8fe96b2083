"""Carrying label maps onto a coarser grid in world coordinates: majority, thin organs kept."""

from __future__ import annotations

import numpy as np

from umd_dataset import load_schema
from umd_dataset.io.geometry import Geometry
from umd_dataset.labels.carry import carry_labels

SCHEMA = load_schema()


def grid(shape, spacing, origin=(0.0, 0.0, 0.0)) -> Geometry:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return Geometry(shape, affine)


def test_same_grid_is_a_copy():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    carried = carry_labels(labels, grid(labels.shape, (1, 1, 1)), grid(labels.shape, (1, 1, 1)), SCHEMA)
    assert np.array_equal(carried.labels, labels) and carried.thin == []


def test_majority_on_a_coarser_grid():
    fine = np.zeros((40, 40, 40), np.uint8)
    fine[8:32, 8:32, 8:32] = 1  # a 24 mm cube at 1 mm
    # 4 mm voxels, centred on the fine grid's 4-voxel blocks
    coarse = grid((10, 10, 10), (4, 4, 4), origin=(1.5, 1.5, 1.5))
    carried = carry_labels(fine, grid(fine.shape, (1, 1, 1)), coarse, SCHEMA)
    expected = np.zeros((10, 10, 10), np.uint8)
    expected[2:8, 2:8, 2:8] = 1
    assert np.array_equal(carried.labels, expected)
    source_ml, target_ml = carried.volumes_ml["liver"]
    assert np.isclose(source_ml, target_ml)


def test_thin_organ_survives_and_keeps_about_its_volume():
    fine = np.zeros((60, 60, 60), np.uint8)
    fine[20:40, 20:40, 20:40] = 1  # liver
    fine[29:31, 29:31, 5:55] = 7  # a 2 mm-thick esophagus, 50 mm long, through and beyond it
    fine[45, 45, 5:55] = 11  # a 1 mm "aorta": a quarter of any 2 mm voxel at best
    coarse = grid((15, 15, 15), (4, 4, 4), origin=(1.5, 1.5, 1.5))
    carried = carry_labels(fine, grid(fine.shape, (1, 1, 1)), coarse, SCHEMA)
    present = set(np.unique(carried.labels)) - {0}
    assert present == {1, 7, 11}
    assert {"esophagus", "aorta"} <= set(carried.thin)
    for organ in ("esophagus", "aorta"):
        source_ml, target_ml = carried.volumes_ml[organ]
        assert 0.5 * source_ml <= target_ml <= 2.0 * source_ml, (organ, source_ml, target_ml)
    # a plain majority vote would have lost them
    assert not ((carried.labels == 11).sum() == 0)
    assert any("thin-organ rule" in line for line in carried.notes())


def test_rotated_target_grid_keeps_world_positions():
    fine = np.zeros((30, 30, 30), np.uint8)
    fine[5:12, 18:25, 10:20] = 3
    source = grid(fine.shape, (2, 2, 2))
    flipped = np.diag([-2.0, -2.0, 2.0, 1.0])
    flipped[:3, 3] = (58.0, 58.0, 0.0)  # the same box, array axes reversed in x and y
    carried = carry_labels(fine, source, Geometry(fine.shape, flipped), SCHEMA)
    assert np.array_equal(carried.labels, fine[::-1, ::-1, :])


def _blobs(shape, seed) -> np.ndarray:
    """Organs as random boxes, some touching the edges of the map, one a single voxel."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    for organ_id in range(1, 9):
        lo = [int(rng.integers(0, s - 1)) for s in shape]
        hi = [min(s, a + int(rng.integers(1, max(2, s // 2)))) for a, s in zip(lo, shape)]
        labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = organ_id
    labels[0, 0, 0] = 12
    return labels


def _axes(direction: np.ndarray, spacing, origin, shape) -> Geometry:
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(spacing)
    affine[:3, 3] = origin
    return Geometry(shape, affine)


def test_grids_along_each_other_take_the_axis_path_with_the_general_paths_labels(monkeypatch):
    """Issue 13: carrying a CT's labels onto its PET took 3.6 s of a whole-study ingest, computing three
    float64 coordinates per voxel and sample; grids whose axes run along each other (also flipped or
    permuted, and a PET larger than the CT) now index one axis at a time. Same labels, volumes and thin list."""
    import umd_dataset.labels.carry as carry

    source = grid((40, 36, 30), (0.9, 1.1, 2.0), origin=(-3.0, 5.0, 1.0))
    labels = _blobs(source.shape, 0)
    flip = np.diag([-1.0, 1.0, -1.0])
    permute = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    targets = {
        "coarser": grid((11, 12, 16), (4.0, 3.3, 2.5), origin=(-2.0, 4.0, 0.0)),
        "larger than the source": grid((20, 20, 24), (4.0, 4.0, 3.0), origin=(-20.0, -10.0, -15.0)),
        "flipped": _axes(flip, (3.0, 3.0, 4.0), (35.0, 6.0, 60.0), (14, 14, 16)),
        "permuted": _axes(permute, (2.5, 3.5, 4.5), (-1.0, 45.0, 2.0), (18, 16, 12)),
    }
    for name, target in targets.items():
        monkeypatch.setattr(carry, "_axis_of_each_row", lambda matrix: None)  # the general path
        general = carry.carry_labels(labels, source, target, SCHEMA)
        monkeypatch.undo()
        assert carry._axis_of_each_row(np.linalg.inv(source.affine) @ target.affine) is not None, name
        fast = carry.carry_labels(labels, source, target, SCHEMA)
        assert np.array_equal(fast.labels, general.labels), name
        assert fast.volumes_ml == general.volumes_ml and fast.thin == general.thin, name
        assert fast.labels.any(), name
    rotated = _axes(np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1.0]]), (3, 3, 3), (0, 0, 0), (9, 9, 9))
    assert carry._axis_of_each_row(np.linalg.inv(source.affine) @ rotated.affine) is None
