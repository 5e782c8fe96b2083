"""NIfTI reading and writing: dtypes, affines, deterministic bytes, headers without voxels."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from umd_dataset.errors import UnreadableFileError
from umd_dataset.io.nifti import (
    decode_c_order, image_from_bytes, load_nifti, nifti_label_names, read_nifti, read_nifti_header, to_c_order, to_fortran_order,
    write_nifti,
)

AFFINE = np.array([[-0.8, 0, 0, 10.0], [0, -0.8, 0, -20.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_round_trip_keeps_dtype_values_and_affine(tmp_path, suffix, dtype):
    array = (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 120).astype(dtype)
    write_nifti(tmp_path / f"v{suffix}", array, AFFINE)
    values, affine = read_nifti(tmp_path / f"v{suffix}")
    assert values.dtype == dtype and np.array_equal(values, array)
    assert np.allclose(affine, AFFINE)
    header = nib.load(tmp_path / f"v{suffix}").header
    assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 1
    assert read_nifti_header(tmp_path / f"v{suffix}") == ((4, 5, 6), pytest.approx(AFFINE), np.dtype(dtype).name)


def test_the_same_array_gives_the_same_bytes(tmp_path):
    array = np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32)
    write_nifti(tmp_path / "a.nii.gz", array, AFFINE)
    write_nifti(tmp_path / "b.nii.gz", array, AFFINE)
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()
    assert gzip.decompress((tmp_path / "a.nii.gz").read_bytes())[:4] == (348).to_bytes(4, "little")


def test_the_bytes_do_not_depend_on_the_compression_threads(tmp_path):
    array = np.random.default_rng(1).integers(-1024, 3000, size=(96, 80, 400)).astype(np.int16)  # several 1 MiB blocks
    for threads in (1, 2, 3):
        write_nifti(tmp_path / f"t{threads}.nii.gz", array, AFFINE, threads=threads)
    written = {(tmp_path / f"t{threads}.nii.gz").read_bytes() for threads in (1, 2, 3)}
    assert len(written) == 1
    data = gzip.decompress(written.pop())  # one standard gzip stream, read by Python's gzip
    assert np.array_equal(np.frombuffer(data[352:], np.int16).reshape(array.shape, order="F"), array)


def test_nifti2_files_are_read(tmp_path):
    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    nib.save(nib.Nifti2Image(array, AFFINE), tmp_path / "two.nii.gz")
    image = load_nifti(tmp_path / "two.nii.gz")
    assert isinstance(image, nib.Nifti2Image) and np.array_equal(np.asanyarray(image.dataobj), array)


def test_totalsegmentator_label_names_from_the_header_extension(tmp_path):
    xml = (
        '<CaretExtension><VolumeInformation><LabelTable><Label Key="1" Red="1" Green="0" Blue="0" Alpha="1">'
        "<![CDATA[spleen]]></Label><Label Key=\"5\"><![CDATA[ liver ]]></Label></LabelTable></VolumeInformation></CaretExtension>"
    )
    image = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), AFFINE)
    image.header.extensions.append(nib.nifti1.Nifti1Extension(0, xml.encode()))
    nib.save(image, tmp_path / "ml.nii.gz")
    assert nifti_label_names(tmp_path / "ml.nii.gz") == {1: "spleen", 5: "liver"}
    write_nifti(tmp_path / "plain.nii.gz", np.zeros((2, 2, 2), np.uint8), AFFINE)
    assert nifti_label_names(tmp_path / "plain.nii.gz") is None


# decode_c_order (issue 13, item 3): a C-ordered array straight from the bytes, equal to reading then reordering.


def _reference(data: bytes, dtype=None) -> np.ndarray:
    return to_c_order(np.asanyarray(image_from_bytes(data).dataobj), dtype)


def _bytes_of(image, suffix: str, tmp_path) -> bytes:
    path = tmp_path / f"v{suffix}"
    nib.save(image, path)
    return path.read_bytes()


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("dtype, target", [(np.int16, None), (np.int16, np.float32), (np.uint8, None), (np.float32, None),
                                           (np.float64, np.float32)])
@pytest.mark.parametrize("shape", [(70, 130, 37), (3, 5, 16), (1, 1, 1), (200, 9, 17)])
def test_decode_c_order_equals_reading_then_reordering(tmp_path, suffix, dtype, target, shape):
    """Shapes that are no multiple of the slab depth (16) or the tile edge (64), one voxel, and conversions."""
    rng = np.random.default_rng(sum(shape))
    array = (rng.normal(size=shape) * 300).astype(dtype)
    path = tmp_path / f"a{suffix}"
    write_nifti(path, array, AFFINE)
    data = path.read_bytes()
    decoded, header = decode_c_order(data, target)
    assert decoded.flags.c_contiguous and decoded.dtype == np.dtype(target or dtype)
    assert np.array_equal(decoded, _reference(data, target)) and np.array_equal(decoded, array.astype(target or dtype))
    assert np.allclose(header.get_best_affine(), AFFINE)


@pytest.mark.parametrize("make", ["nifti2", "scaled", "big-endian", "extension", "4d"])
def test_decode_c_order_on_other_layouts_gives_nibabels_values(tmp_path, make):
    array = np.arange(5 * 6 * 18, dtype=np.int16).reshape(5, 6, 18)
    if make == "nifti2":
        image = nib.Nifti2Image(array, AFFINE)
    elif make == "scaled":
        image = nib.Nifti1Image(array, AFFINE)
        image.header.set_slope_inter(2.0, -7.0)
    elif make == "big-endian":
        image = nib.Nifti1Image(array.astype(">i2"), AFFINE)
        image.header.set_data_dtype(">i2")
    elif make == "extension":  # the voxels start after the extension (vox_offset > 352)
        image = nib.Nifti1Image(array, AFFINE)
        image.header.extensions.append(nib.nifti1.Nifti1Extension(0, b"<x>" * 400))
    else:
        image = nib.Nifti1Image(array[..., None].repeat(2, axis=3), AFFINE)
    data = _bytes_of(image, ".nii.gz", tmp_path)
    decoded, _ = decode_c_order(data, np.float64)
    expected = np.asanyarray(nib.load(tmp_path / "v.nii.gz").dataobj).astype(np.float64)
    assert decoded.flags.c_contiguous and np.array_equal(decoded, expected)


def test_decode_c_order_refuses_damaged_bytes_and_leaves_no_thread(tmp_path):
    import threading

    array = np.random.default_rng(0).integers(-1000, 1000, size=(64, 64, 40), dtype=np.int16)
    write_nifti(tmp_path / "a.nii.gz", array, AFFINE)
    write_nifti(tmp_path / "a.nii", array, AFFINE)
    data, raw = (tmp_path / "a.nii.gz").read_bytes(), (tmp_path / "a.nii").read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    before = threading.active_count()
    damaged = {"flipped byte": bytes(flipped), "truncated gzip": data[: len(data) // 2], "gzip without its trailer": data[:-4],
               "truncated .nii": raw[: len(raw) - 100], "no header": data[:20]}
    for name, bad in damaged.items():
        with pytest.raises(UnreadableFileError, match="readable NIfTI|ends before|truncated|ends inside") as caught:
            decode_c_order(bad, where="scan.nii.gz")
        assert "scan.nii.gz" in str(caught.value), name
    assert threading.active_count() == before
    assert "ends before its last voxel" in _message(lambda: decode_c_order(raw[: len(raw) - 100], where="x"))


def _message(function) -> str:
    with pytest.raises(UnreadableFileError) as caught:
        function()
    return str(caught.value)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_the_bytes_do_not_depend_on_the_arrays_memory_layout(tmp_path, dtype):
    """write_nifti reorders C-ordered arrays into NIfTI's Fortran order in blocks (nibabel did it element
    by element): the file is the same, byte for byte, for every layout of the same voxels."""
    rng = np.random.default_rng(1)
    array = (rng.normal(size=(70, 45, 33)) * 100).astype(dtype)
    layouts = {"F": np.asfortranarray(array), "C": np.ascontiguousarray(array), "strided": np.repeat(array, 2, axis=1)[:, ::2]}
    written = set()
    for name, values in layouts.items():
        assert np.array_equal(values, array)
        write_nifti(tmp_path / f"{name}.nii.gz", values, AFFINE)
        written.add((tmp_path / f"{name}.nii.gz").read_bytes())
    assert len(written) == 1
    assert np.array_equal(read_nifti(tmp_path / "C.nii.gz")[0], array)
    assert to_fortran_order(layouts["C"]).flags.f_contiguous and np.array_equal(to_fortran_order(layouts["C"]), array)
