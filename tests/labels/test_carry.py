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
