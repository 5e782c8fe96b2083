"""DICOM discovery, classification and volume assembly on the real files that ship with pydicom."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from umd_dataset.errors import SeriesGeometryError
from umd_dataset.ingest.dicom import assemble, discover
from umd_dataset.io.geometry import LPS_TO_RAS

DICOMDIR_TESTS = os.path.join(os.path.dirname(get_testdata_file("CT_small.dcm", download=False)), "dicomdirtests")


def test_single_ct_slice_geometry_and_rescale():
    path = get_testdata_file("CT_small.dcm", download=False)
    ds = pydicom.dcmread(path)
    volume = assemble([path])
    assert volume.array.shape == (128, 128, 1)
    expected = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.array_equal(volume.array[:, :, 0], expected.T)  # array axes: column, row
    lps_origin = np.asarray(ds.ImagePositionPatient, float)
    assert np.allclose(volume.affine[:3, 3], (LPS_TO_RAS[:3, :3] @ lps_origin))
    row_dir = np.asarray(ds.ImageOrientationPatient[:3], float)
    assert np.allclose(volume.affine[:3, 0], LPS_TO_RAS[:3, :3] @ row_dir * float(ds.PixelSpacing[1]))


def test_feet_first_series_is_ordered_by_position_not_instance_number():
    folder = os.path.join(DICOMDIR_TESTS, "98892001", "CT5N")
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    volume = assemble(files)
    assert volume.array.shape[2] == 5
    datasets = [pydicom.dcmread(f) for f in files]
    normal = np.cross(*np.reshape(np.asarray(datasets[0].ImageOrientationPatient, float), (2, 3)))
    by_position = sorted(datasets, key=lambda d: np.asarray(d.ImagePositionPatient, float) @ normal)
    for k, ds in enumerate(by_position):
        expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.array_equal(volume.array[:, :, k], expected.T)
    # the third affine column points along increasing slice position, in RAS
    assert np.allclose(volume.affine[:3, 2] / np.linalg.norm(volume.affine[:3, 2]), LPS_TO_RAS[:3, :3] @ normal)


def test_missing_slices_are_an_error_that_says_where():
    folder = os.path.join(DICOMDIR_TESTS, "77654033", "CT2")
    files = [os.path.join(folder, f) for f in os.listdir(folder)]
    with pytest.raises(SeriesGeometryError, match=r"missing slice\(s\) between .*CT2/\d+ \(.* mm\) and .*CT2/\d+"):
        assemble(files)


def test_classification_of_the_pydicom_test_tree():
    found = discover(DICOMDIR_TESTS)
    kinds = {(s.first.description, s.kind) for s in found.series}
    assert ("Scout", "localizer") in kinds
    assert ("FAST LOCALIZER", "localizer") in kinds
    assert ("T/S/C RF FAST PILOT", "localizer") in kinds  # slices in three orientations
    assert any(kind == "mip" for desc, kind in kinds if desc.startswith("ANGIO Projected"))
    assert ("SmartScore - Gated 0.5 sec", "ct") in kinds
    assert ("Routine Brain", "ct") in kinds
    assert {p.reason for p in found.skipped} == {"not a DICOM file (no DICM prefix)"}  # README files
    assert any("DICOMDIR" in p.path for p in found.problems)


def test_oblique_mr_with_localizers_is_split_by_orientation():
    folder = os.path.join(DICOMDIR_TESTS, "98892003", "MR2")
    files = [os.path.join(folder, f) for f in os.listdir(folder)]
    with pytest.raises(SeriesGeometryError, match="mixed orientations in one series"):
        assemble(files)


def test_enhanced_multiframe_ct():
    path = get_testdata_file("eCT_Supplemental.dcm", download=False)
    if path is None:
        pytest.fail("pydicom-data is a test dependency: pip install -e '.[test]'")
    volume = assemble([path])
    assert volume.array.shape == (512, 512, 2)
    assert np.allclose(np.linalg.norm(volume.affine[:3, :3], axis=0), [0.388672, 0.388672, 10.0], atol=1e-5)
    ds = pydicom.dcmread(path)
    # IOP (-1,0,0; 0,1,0): the normal points to -z (LPS), so the frame at z=-149 comes first
    positions = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in ds.PerFrameFunctionalGroupsSequence]
    assert positions == [-159.0, -149.0]
    assert np.array_equal(volume.array[:, :, 0], (ds.pixel_array[1].astype(float) - 1024).T)
    assert np.array_equal(volume.array[:, :, 1], (ds.pixel_array[0].astype(float) - 1024).T)


def test_multiframe_without_positions_is_refused():
    path = get_testdata_file("emri_small.dcm", download=False)
    with pytest.raises(SeriesGeometryError, match="cannot be placed"):
        assemble([path])


def test_multiframe_dose_grid_with_frame_offsets():
    path = get_testdata_file("rtdose.dcm", download=False)
    ds = pydicom.dcmread(path)
    volume = assemble([path])
    assert volume.array.shape == (ds.Columns, ds.Rows, int(ds.NumberOfFrames))
    offsets = np.asarray(ds.GridFrameOffsetVector, float)
    assert np.isclose(np.linalg.norm(volume.affine[:3, 2]), abs(offsets[1] - offsets[0]))


def test_corrupt_and_non_dicom_files_are_reported_not_fatal(tmp_path):
    ct = get_testdata_file("CT_small.dcm", download=False)
    shutil.copy(ct, tmp_path / "good.dcm")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    data = open(ct, "rb").read()
    (tmp_path / "deep" / "er" / "truncated.dcm").write_bytes(data[:400])
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "deep" / "random.dcm").write_bytes(os.urandom(1000))
    found = discover(tmp_path)
    assert [s.kind for s in found.series] == ["ct"]
    assert [p.path.endswith("truncated.dcm") for p in found.problems] == [True]
    assert "truncated" in found.problems[0].reason
    assert sorted(os.path.basename(p.path) for p in found.skipped) == ["notes.txt", "random.dcm"]


def test_a_file_that_cannot_be_opened_is_reported_with_the_others_read(tmp_path):
    """Files are read ahead in threads and parsed in order: one that cannot be opened (here a link to
    nothing) is a problem of its own, and every other file still counts, in path order."""
    ct = get_testdata_file("CT_small.dcm", download=False)
    for index in range(12):
        shutil.copy(ct, tmp_path / f"{index:02d}.dcm")
    (tmp_path / "05b.dcm").symlink_to(tmp_path / "gone.dcm")
    found = discover(tmp_path, workers=3)
    assert [(os.path.basename(p.path), p.reason.split(":")[0]) for p in found.problems] == [("05b.dcm", "unreadable")]
    assert [os.path.basename(h.path) for h in found.series[0].headers] == [f"{index:02d}.dcm" for index in range(12)]


def test_gantry_tilt_is_corrected_and_reported(tmp_path):
    from datetime import datetime

    from umd_dataset.synthetic.dicom import DicomPatient, write_dicom_series

    shape, tilt_voxels = (24, 32, 8), 1  # each slice starts one row further along y: a tilted gantry
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    affine[1, 2] = 2.0 * tilt_voxels
    stored = np.zeros(shape, np.uint16)
    for k in range(shape[2]):
        stored[10, 20 - k * tilt_voxels, k] = 1000  # a line that is vertical in the world
    write_dicom_series(
        tmp_path, stored, affine, modality="CT", patient=DicomPatient(), study_uid="1.2", series_uid="1.2.3",
        frame_of_reference="1.2.4", series_number=1, description="tilted", when=datetime(2024, 1, 1),
    )
    volume = assemble(sorted(str(p) for p in tmp_path.iterdir()))
    assert any("gantry tilt of 21.80 degrees corrected" in n for n in volume.notes)
    assert np.allclose(volume.affine[:3, :3], np.diag([2.0, 2.0, 5.0]))  # orthogonal after the correction
    for k in range(shape[2]):
        assert np.argmax(volume.array[:, :, k]) == np.ravel_multi_index((10, 20), shape[:2]), k


@pytest.mark.parametrize(
    ("modality", "image_type", "description", "corrected", "kind", "contrast"),
    [
        ("MR", ["DERIVED", "PRIMARY", "DIXON", "WATER"], "t1_vibe_dixon_tra_W", None, "mri", "water"),
        ("MR", ["DERIVED", "PRIMARY", "DIXON", "FAT"], "t1_vibe_dixon_tra_F", None, "mri", "fat"),
        ("MR", ["ORIGINAL", "PRIMARY", "DIXON", "IN_PHASE"], "t1_vibe_dixon_tra_in", None, "mri", "in_phase"),
        ("MR", ["ORIGINAL", "PRIMARY", "DIXON", "OPPOSED_PHASE"], "t1_vibe_dixon_tra_opp", None, "mri", "opposed_phase"),
        ("MR", ["ORIGINAL", "PRIMARY", "M", "ND"], "HASTE T2 cor", None, "mri", "t2"),
        ("PT", ["ORIGINAL", "PRIMARY"], "PET WB", ["DECY", "ATTN", "SCAT"], "pet", ""),
        ("PT", ["ORIGINAL", "PRIMARY"], "PET WB", ["DECY", "SCAT"], "pet_nac", ""),
        ("PT", ["ORIGINAL", "PRIMARY"], "PET NAC WB", None, "pet_nac", ""),
        ("PT", ["DERIVED", "SECONDARY", "MIP"], "PET MIP", ["ATTN"], "mip", ""),
        ("CT", ["ORIGINAL", "PRIMARY", "LOCALIZER"], "Topogram", None, "localizer", ""),
        ("OT", ["DERIVED", "SECONDARY"], "Screen Save", None, "secondary", ""),
    ],
)
def test_classification_rules(modality, image_type, description, corrected, kind, contrast):
    from pydicom.dataset import Dataset

    from umd_dataset.ingest.dicom import Header, Series, classify

    ds = Dataset()
    ds.Modality, ds.ImageType, ds.SeriesDescription = modality, image_type, description
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2", "1.2.3"
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    if corrected:
        ds.CorrectedImage = corrected
    series = Series("1.2", "1.2.3", [Header.of("x.dcm", ds)])
    assert classify(series)[:2] == (kind, contrast)


def test_malformed_header_value_is_reported_not_fatal(tmp_path):
    ct = get_testdata_file("CT_small.dcm", download=False)
    shutil.copy(ct, tmp_path / "good.dcm")
    ds = pydicom.dcmread(ct)
    ds.SeriesInstanceUID = "1.2.3.999"
    ds.ImagePositionPatient = [1.0, 22.0, 3.0]
    ds.save_as(tmp_path / "bad.dcm")
    data = (tmp_path / "bad.dcm").read_bytes()
    (tmp_path / "bad.dcm").write_bytes(data.replace(b"1.0\\22.0\\3.0", b"1.0\\abc.\\3.0"))  # bytes only pydicom's reader meets
    found = discover(tmp_path)
    assert [s.kind for s in found.series] == ["ct"]
    assert [os.path.basename(p.path) for p in found.problems] == ["bad.dcm"]
    assert "malformed header value" in found.problems[0].reason


@pytest.mark.parametrize("allocated, stored, signed", [(16, 16, 0), (16, 12, 0), (16, 12, 1), (16, 16, 1), (8, 8, 0), (32, 32, 1), (32, 20, 0)])
def test_pixels_are_read_as_pydicom_reads_them(allocated, stored, signed, tmp_path):
    """The fast path of uncompressed images masks to BitsStored (unsigned) and sign-extends from
    it (signed), as ``pixel_array`` does, and gives its dtype."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    from umd_dataset.ingest.dicom import pixels_of

    rng = np.random.default_rng(allocated + stored + signed)
    raw = rng.integers(0, 2**allocated, size=(5, 7), dtype=np.uint64).astype(f"<u{allocated // 8}")
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
        ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3"
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 5, 7, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, stored, stored - 1, signed
        ds.PixelData = raw.tobytes()
        path = tmp_path / "one.dcm"
        ds.save_as(path, enforce_file_format=True)
        read = pydicom.dcmread(path)
        mine, theirs = pixels_of(read), np.asarray(read.pixel_array)
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs), (syntax, mine, theirs)


def test_pixels_of_real_files_equal_pixel_array():
    import pydicom
    from pydicom.data import get_testdata_file

    from umd_dataset.ingest.dicom import pixels_of

    for name in ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "emri_small.dcm", "rtdose.dcm", "MR_small_bigendian.dcm"):
        ds = pydicom.dcmread(get_testdata_file(name))
        assert np.array_equal(pixels_of(ds), ds.pixel_array), name
