"""Tests write SEG files with the package's writer (custom codes, labels and laterality)."""

from umd_dataset.seg_writer import write_seg

__all__ = ["write_seg"]
