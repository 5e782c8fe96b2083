"""Voxel grids: spacing from the affine, matching within a tolerance, the LPS <-> RAS flip, and
DICOM plane tags that round-trip to the same affine."""

from __future__ import annotations

import numpy as np
import pytest

from umd_dataset.io.dicom import plane_tags, slice_position, volume_affine
from umd_dataset.io.geometry import LPS_TO_RAS, Geometry, spacing_from_affine


def _oblique(spacing=(0.8, 1.2, 3.0)) -> np.ndarray:
    angle = np.deg2rad(17)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-1, -1, 1]) @ np.diag(spacing)
    affine[:3, 3] = (12.5, -40.0, 310.0)
    return affine


def test_spacing_is_the_norm_of_each_column():
    assert spacing_from_affine(_oblique()) == pytest.approx((0.8, 1.2, 3.0), abs=1e-12)


def test_geometry_matches_within_the_tolerance_and_describes_itself():
    a = Geometry((10, 20, 30), _oblique())
    shifted = _oblique()
    shifted[0, 3] += 1e-4
    assert a.matches(Geometry((10, 20, 30), shifted))
    shifted[0, 3] += 0.5
    assert not a.matches(Geometry((10, 20, 30), shifted))
    assert not a.matches(Geometry((10, 20, 31), _oblique()))
    assert a.spacing_mm == pytest.approx((0.8, 1.2, 3.0), abs=1e-12)
    assert "shape (10, 20, 30), spacing (0.8, 1.2, 3) mm" in a.describe()


def test_lps_to_ras_flips_x_and_y_and_is_its_own_inverse():
    assert np.array_equal(LPS_TO_RAS @ [1, 2, 3, 1], [-1, -2, 3, 1])
    assert np.array_equal(LPS_TO_RAS @ LPS_TO_RAS, np.eye(4))


def test_plane_tags_and_slice_positions_give_back_the_affine():
    affine = _oblique()
    tags = plane_tags(affine)
    orientation = np.asarray(tags["ImageOrientationPatient"])
    first, second = np.asarray(slice_position(affine, 0)), np.asarray(slice_position(affine, 1))
    rebuilt = volume_affine(orientation[:3], orientation[3:], tags["PixelSpacing"], second - first, first)
    assert np.allclose(rebuilt, affine, atol=1e-5)
    assert tags["PixelSpacing"] == [1.2, 0.8] and tags["SliceThickness"] == 3.0  # (between rows, between columns)


def test_nearest_neighbour_resampling_keeps_the_outer_half_voxel_of_a_mask():
    """A mask that fills its whole grid covers that grid's outer voxel faces: a finer target grid over
    the same field of view gets it everywhere (scipy's ``constant`` mode cut it at the outer voxel
    centres, and a centre at -1e-15 from rounding lost a whole plane)."""
    import numpy as np

    from umd_dataset.io.geometry import resample_onto, to_world

    source = np.ones((4, 4, 4), dtype=bool)
    coarse = np.diag([3.0, 3.0, 3.0, 1.0])
    fine = np.diag([1.0, 1.0, 1.0, 1.0])
    fine[:3, 3] = to_world(coarse, [-0.5, -0.5, -0.5]) + 0.5  # the fine voxels tile the coarse grid's extent exactly
    result = resample_onto(source, coarse, (12, 12, 12), fine)
    assert result.all()
    rotated = coarse.copy()
    rotated[:3, 3] -= 1e-13  # rounding noise at the outer voxel centres
    assert resample_onto(source, rotated, (12, 12, 12), fine).all()
    outside = resample_onto(source, coarse, (14, 14, 14), fine @ np.array([[1, 0, 0, -1], [0, 1, 0, -1], [0, 0, 1, -1], [0, 0, 0, 1.0]]))
    assert outside.sum() == 12**3 and not outside[0].any() and not outside[-1].any()  # beyond the faces: background


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.uint16])
def test_label_boxes_equal_find_objects(dtype):
    from scipy import ndimage

    from umd_dataset.io.geometry import label_boxes

    rng = np.random.default_rng(4)
    for shape, high, top in [((40, 33, 21), 13, 13), ((17, 50, 9), 20, 25), ((35, 8, 30), 40, 13), ((3, 4, 5), 0, 13)]:
        labels = np.zeros(shape, dtype)
        for label in range(1, high + 1):  # a few boxes and stray voxels per label, some labels left out
            if rng.random() < 0.2:
                continue
            corner = rng.integers(0, shape)
            size = rng.integers(1, 6, 3)
            labels[tuple(slice(c, c + s) for c, s in zip(corner, size))] = label
            labels[tuple(rng.integers(0, shape))] = label
        assert label_boxes(labels, top, workers=2) == ndimage.find_objects(labels, max_label=top)
    odd = np.zeros((5, 6, 7), np.int16)
    odd[1, 2, 3], odd[4, 0, 0] = -1, 2  # outside 0..63: find_objects decides
    assert label_boxes(odd, 3) == ndimage.find_objects(odd, max_label=3)


def test_support_box_is_the_box_of_the_non_zero_voxels():
    from umd_dataset.io.geometry import support_box

    values = np.zeros((9, 8, 7), np.float32)
    assert support_box(values) is None
    values[2, 5, 1] = values[6, 3, 4] = -1.5
    assert support_box(values) == (slice(2, 7), slice(3, 6), slice(1, 5))
    where = np.nonzero(values)
    assert support_box(values) == tuple(slice(int(w.min()), int(w.max()) + 1) for w in where)
