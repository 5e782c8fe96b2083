"""Placing DICOM SEG frames on a target grid: whole-block placement equals the per-pixel one."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from umd_dataset.errors import GridMismatchError
from umd_dataset.io.geometry import Geometry, permuted, shifted
from umd_dataset.labels import dicom_seg
from umd_dataset.labels.dicom_seg import read_dicom_seg, write_seg

AFFINE = np.array([[-0.8, 0, 0, 40.0], [0, -0.9, 0, 30.0], [0, 0, 2.5, -60.0], [0, 0, 0, 1]])


def _masks(shape, seed=0):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), 2)
    blob = field > np.quantile(field, 0.8)
    blob[:2], blob[-2:] = False, False  # a margin along the columns (the smaller target cuts into the rest)
    other = np.roll(blob, 5, axis=1) & ~blob
    assert blob.sum() > 100 and other.sum() > 100
    return [{"label": "liver", "mask": blob}, {"label": "spleen", "mask": other}]


def _flipped(affine, shape, axis):
    """The same voxels, stored with `axis` reversed."""
    flip = np.eye(4)
    flip[axis, axis], flip[axis, 3] = -1, shape[axis] - 1
    return affine @ flip


def _read_both(path, target, monkeypatch):
    placed = []
    original = dicom_seg._place_as_block
    with monkeypatch.context() as patch:
        patch.setattr(dicom_seg, "_place_as_block", lambda *args: placed.append(original(*args)) or placed[-1])
        fast = read_dicom_seg(path, target)
    assert placed and all(placed)  # every frame went in as a block ...
    with monkeypatch.context() as patch:  # ... and here none does
        patch.setattr(dicom_seg, "_place_as_block", lambda *args: False)
        slow = read_dicom_seg(path, target)
    return fast, slow


@pytest.mark.parametrize("case", ["own grid", "same grid", "flipped columns", "flipped slices", "permuted", "larger grid", "none"])
def test_block_placement_equals_the_per_pixel_placement(case, tmp_path, monkeypatch):
    shape = (30, 24, 12)
    segments = _masks(shape)
    path = write_seg(tmp_path / "seg.dcm", Geometry(shape, AFFINE), segments)
    targets = {
        "own grid": None,
        "same grid": Geometry(shape, AFFINE),
        "flipped columns": Geometry(shape, _flipped(AFFINE, shape, 0)),
        "flipped slices": Geometry(shape, _flipped(AFFINE, shape, 2)),
        "permuted": Geometry((12, 30, 24), permuted(AFFINE, (2, 0, 1))),
        "larger grid": Geometry((40, 34, 20), shifted(AFFINE, (-4, -6, -3))),
        "none": None,
    }
    if case == "none":  # no frame takes the block path: a grid rotated in plane by a fraction of a voxel
        rotation = np.eye(4)
        rotation[:2, :2] = [[np.cos(0.01), -np.sin(0.01)], [np.sin(0.01), np.cos(0.01)]]
        with pytest.raises(GridMismatchError):
            read_dicom_seg(path, Geometry(shape, rotation @ AFFINE))
        return
    fast, slow = _read_both(path, targets[case], monkeypatch)
    assert [s.number for s in fast.segments] == [s.number for s in slow.segments]
    for a, b in zip(fast.segments, slow.segments):
        assert a.mask.shape == b.mask.shape and np.array_equal(a.mask, b.mask), (case, a.label)
    if case in ("same grid", "own grid"):
        for segment, written in zip(fast.segments, segments):
            assert np.array_equal(segment.mask, written["mask"])


def test_foreground_outside_the_target_is_still_refused(tmp_path):
    shape = (30, 24, 12)
    path = write_seg(tmp_path / "seg.dcm", Geometry(shape, AFFINE), _masks(shape))
    smaller = Geometry((20, 24, 12), AFFINE)  # cuts off foreground along the columns
    with pytest.raises(GridMismatchError, match=r"foreground pixels of frame \d+ .* lie outside the target grid"):
        read_dicom_seg(path, smaller)
