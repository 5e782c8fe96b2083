"""Reading the files of a release, verified: voxels only ever come from bytes whose size and sha256
are the ones the manifest names, decoded and checked against the manifest's shape, dtype and affine.

Every read path of the package goes through here (the torch, torchio and Hugging Face views, the
patch cache, the Hub export, the DICOM export, evaluation). A flipped byte in the middle of a
``.nii.gz`` decodes silently with nibabel (it stops before the gzip trailer and never checks the
CRC); here it raises a `CorruptFileError` that names the file and says to run ``umd verify``.

A file is hashed once per process: after it matched, its (size, mtime, inode) stand for it until
it changes; every read still decompresses the whole gzip stream, whose CRC ISA-L checks.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from umd_dataset.errors import CorruptFileError, ReleaseNotFoundError, UnreadableFileError, check_choice
from umd_dataset.io.nifti import decode_c_order, image_from_bytes
from umd_dataset.release.format import ScanRecord

__all__ = ["FILE_KINDS", "read_bytes", "read_volume", "read_c_order", "load_image", "LazyVolume", "lazy_image"]

#: The two files of a scan.
FILE_KINDS = ("image", "label")

_VERIFIED: dict[tuple[str, int, int, int], str] = {}  # (path, size, mtime_ns, inode) -> sha256 that matched
_LOCK = threading.Lock()


def _expected(record: ScanRecord, which: str) -> tuple[str, int, str]:
    check_choice(which, FILE_KINDS, "file of a scan")
    if which == "image":
        return record.image, record.image_bytes, record.image_sha256
    return record.label, record.label_bytes, record.label_sha256


def read_bytes(release, record: ScanRecord, which: str = "image") -> tuple[Path, bytes]:
    """The path and bytes of a scan's image or label map, checked against the manifest.

    Args:
        release: an opened `umd_dataset.release.index.Release`.
        record: the scan's manifest row.
        which: ``image`` or ``label``.

    Raises:
        ReleaseNotFoundError: the file is missing.
        CorruptFileError: its size or sha256 is not the manifest's.
        UnsafePathError: its manifest path leaves the release.
    """
    relative, size, sha256 = _expected(record, which)
    path = release.path(relative)
    fix = f"Run `umd verify {release.root}` to list every damaged file, and restore them from the original release."
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            data = handle.read()
    except FileNotFoundError:
        raise ReleaseNotFoundError(f"{path} is missing: the manifest lists it as the {which} of {record.key}. {fix}") from None
    if len(data) != size:
        raise CorruptFileError(f"{path} has {len(data)} bytes, the manifest says {size}: the file is truncated or changed. {fix}")
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    with _LOCK:
        known = _VERIFIED.get(key)
    if known != sha256:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise CorruptFileError(
                f"{path} does not match its manifest checksum (sha256 {actual}, expected {sha256}): the file is corrupt "
                f"or was changed. {fix}"
            )
        with _LOCK:
            _VERIFIED[key] = sha256
    return path, data


def load_image(release, record: ScanRecord, which: str = "image"):
    """The verified nibabel image of a scan's image or label map, checked against the manifest's
    shape, stored dtype and affine.

    Raises:
        ReleaseNotFoundError, CorruptFileError: see `read_bytes`; or a header that disagrees with
            the manifest (the message names the file, both values and the fix).
    """
    path, image = _decoded(release, record, which, image_from_bytes)
    _check_header(release, record, which, path, image.header)
    return image


def read_c_order(release, record: ScanRecord, which: str = "image", dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """(voxels as a C-ordered array of `dtype`, default the stored one; 4x4 affine) of a scan's image
    or label map, verified as `load_image` verifies, decoded by `umd_dataset.io.nifti.decode_c_order`
    (reordered while it decompresses: about the time of a plain read, where reading and then
    reordering takes twice as long)."""
    path, (array, header) = _decoded(release, record, which, lambda data, where: decode_c_order(data, dtype, where))
    return array, _check_header(release, record, which, path, header)


def _decoded(release, record: ScanRecord, which: str, decode):
    """(path, ``decode(bytes, path)``) of a scan's file read verified (`read_bytes`); bytes that do
    not decode are a `CorruptFileError` that says to run ``umd verify``."""
    path, data = read_bytes(release, record, which)
    try:
        return path, decode(data, str(path))
    except UnreadableFileError as error:
        raise CorruptFileError(f"{error} Run `umd verify {release.root}`.") from error


def _check_header(release, record: ScanRecord, which: str, path: Path, header) -> np.ndarray:
    """The header's affine, once its shape, stored dtype and affine are the manifest's (else raise)."""
    expected_dtype = record.dtype if which == "image" else record.label_dtype
    shape, dtype, affine = tuple(int(s) for s in header.get_data_shape()), header.get_data_dtype(), header.get_best_affine()
    problems = []
    if shape != tuple(record.shape):
        problems.append(f"shape {shape} (manifest: {tuple(record.shape)})")
    if str(dtype) != expected_dtype:
        problems.append(f"dtype {dtype} (manifest: {expected_dtype})")
    if not np.allclose(affine, record.affine_matrix, atol=1e-4):
        problems.append(f"affine {np.round(affine, 4).tolist()} (manifest: {np.round(record.affine_matrix, 4).tolist()})")
    if problems:
        raise CorruptFileError(
            f"{path} disagrees with its manifest row {record.key}: {'; '.join(problems)}. Run `umd verify {release.root}`."
        )
    return affine


def read_volume(release, record: ScanRecord, which: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """(voxels with the stored dtype, 4x4 affine) of a scan's image or label map, verified (see `load_image`)."""
    image = load_image(release, record, which)
    return np.asanyarray(image.dataobj), image.affine


class LazyVolume:
    """The voxels of a scan's image or label map, read verified (`read_volume`) the first time they
    are needed; shape and dtype come from the manifest until then. An array-like (``shape``,
    ``dtype``, ``__array__``, indexing), so it can be the ``dataobj`` of a nibabel image (see
    `lazy_image`); it is not a nibabel "proxy", whose dtype nibabel would read from a voxel.
    """

    def __init__(self, release, record: ScanRecord, which: str) -> None:
        _expected(record, which)
        self.release, self.record, self.which = release, record, which
        self.shape = tuple(record.shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(record.dtype if which == "image" else record.label_dtype)
        self._array: np.ndarray | None = None

    def _load(self) -> np.ndarray:
        if self._array is None:
            self._array = read_volume(self.release, self.record, self.which)[0]
        return self._array

    def __array__(self, dtype=None, copy=None):
        array = self._load()
        return array if dtype is None else array.astype(dtype)

    def __getitem__(self, index):
        return self._load()[index]

    def __getstate__(self) -> dict:  # sent to DataLoader workers without its voxels
        return {**self.__dict__, "_array": None}


def lazy_image(release, record: ScanRecord, which: str = "image"):
    """A nibabel image of a scan's file whose affine, shape and dtype are the manifest's and whose
    voxels are read verified when first used (``get_fdata()``, ``np.asanyarray(image.dataobj)``)."""
    import nibabel as nib

    image = nib.Nifti1Image(LazyVolume(release, record, which), record.affine_matrix)
    image.set_data_dtype(np.dtype(record.dtype if which == "image" else record.label_dtype))
    return image
