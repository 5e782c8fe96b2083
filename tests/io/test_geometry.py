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
