"""NIfTI reading and writing: dtypes, affines, deterministic bytes, headers without voxels."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from umd_dataset.io.nifti import load_nifti, nifti_label_names, read_nifti, read_nifti_header, write_nifti

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
