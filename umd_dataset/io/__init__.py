"""The io part: the lowest layer, used by every other part (it imports only `umd_dataset.errors`).

- `files`: atomic writes, JSON, checksums;
- `nifti`: NIfTI reading and writing;
- `geometry`: voxel grids (`Geometry`), spacing, the LPS <-> RAS flip;
- `dicom`: DICOM constants and plane geometry;
- `jobs`: resumable jobs (`JobFolder`), the item loop and progress bars.
"""

from __future__ import annotations

from umd_dataset.io.files import atomic_path, read_json, sha256_file, write_json
from umd_dataset.io.geometry import LPS_TO_RAS, Geometry, spacing_from_affine
from umd_dataset.io.nifti import load_nifti, nifti_label_names, read_nifti, read_nifti_header, write_nifti

__all__ = [
    "atomic_path", "read_json", "write_json", "sha256_file", "Geometry", "spacing_from_affine", "LPS_TO_RAS",
    "read_nifti", "write_nifti", "load_nifti", "read_nifti_header", "nifti_label_names",
]
