"""Harmonization of multi-label maps, per-organ mask folders and DICOM SEG onto the schema."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from umd_dataset.labels.dicom_seg import write_seg
from umd_dataset import load_schema
from umd_dataset.errors import GridMismatchError, LabelOverlapError, LossyLabelError, MaskValueError, UnknownLabelError
from umd_dataset.labels.harmonize import (
    HarmonizeOptions,
    harmonize,
    harmonize_dicom_seg,
    harmonize_label_map,
    harmonize_masks,
    read_provenance,
)
from umd_dataset.io import Geometry, read_nifti, write_nifti
from umd_dataset.schema.sources import load_source

from helpers import to_total

SCHEMA = load_schema()


@pytest.fixture(scope="module")
def ct(small_release):
    record = small_release.pairs()[0].studies["petct"].scans["ct"]
    labels, affine = read_nifti(small_release.label_path(record))
    return np.asarray(labels), affine, small_release.image_path(record)


def test_totalsegmentator_multilabel_round_trip(ct):
    labels, affine, _ = ct
    for key in ("totalsegmentator_total", "totalsegmentator_total_v1"):
        result = harmonize_label_map(to_total(labels, key), affine, key)
        assert np.array_equal(result.labels, labels), key
        assert result.labels.dtype == np.uint8
        prov = result.provenance
        lung = [r for r in prov.labels if r.organ == "lung"]
        assert len(lung) == 2 and sum(r.voxels for r in lung) == int((labels == 12).sum())
        left_out = {r.name: (r.status, r.voxels) for r in prov.labels if r.status != "mapped"}
        assert left_out == {"gallbladder": ("outside_schema", 500), "vertebrae_L1": ("outside_schema", 300)}
        assert prov.organ_voxels["liver"] == int((labels == 1).sum())
        assert prov.absent == []


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_lookup_table_agrees_with_a_per_label_loop_in_any_memory_layout(ct, layout):
    labels, affine, _ = ct
    total = to_total(labels)
    total = {"C": np.ascontiguousarray(total), "F": np.asfortranarray(total), "strided": total[::2, :, 1::3]}[layout]
    table = load_source("totalsegmentator_total")
    expected = np.zeros(total.shape, dtype=np.uint8)
    for label_id, name in table.labels.items():
        if name in table.name_to_organ:
            expected[total == label_id] = SCHEMA.organ(table.name_to_organ[name]).id
    result = harmonize_label_map(total, affine, table)
    assert np.array_equal(result.labels, expected)
    assert sum(r.voxels for r in result.provenance.labels) == int(np.count_nonzero(total))


def test_bladder_ids_differ_between_versions(ct):
    labels, affine, _ = ct
    bladder = (labels == SCHEMA.organ("urinary_bladder").id).astype(np.uint8)
    v2 = harmonize_label_map(bladder * 21, affine, "totalsegmentator_total")
    v1 = harmonize_label_map(bladder * 104, affine, "totalsegmentator_total_v1")
    assert np.array_equal(v1.labels, v2.labels) and v1.labels.max() == 9


def test_totalsegmentator_ml_header_names_are_read_and_checked(ct, tmp_path):
    labels, affine, _ = ct
    table = load_source("totalsegmentator_total")
    image = nib.Nifti1Image(to_total(labels), affine)
    body = "".join(f'<Label Key="{i}" Red="1" Green="0" Blue="0" Alpha="1"><![CDATA[{n}]]></Label>\n' for i, n in table.labels.items())
    xml = f'<?xml version="1.0" encoding="UTF-8"?> <CaretExtension> <VolumeInformation Index="0"> <LabelTable>\n{body}</LabelTable></VolumeInformation></CaretExtension>'
    image.header.extensions.append(nib.nifti1.Nifti1Extension(0, xml.encode()))
    path = tmp_path / "total_ml.nii.gz"
    nib.save(image, path)
    assert np.array_equal(harmonize(path).labels, labels)  # names from the header, no source needed
    assert np.array_equal(harmonize(path, "totalsegmentator_total").labels, labels)
    with pytest.raises(UnknownLabelError, match=r"total_ml\.nii\.gz: the label names stored in the file disagree with source totalsegmentator_total_v1"):
        harmonize(path, "totalsegmentator_total_v1")


def test_unknown_label_id_names_file_and_value(ct):
    labels, affine, _ = ct
    bad = to_total(labels)
    bad[0, 0, 0] = 200
    with pytest.raises(UnknownLabelError, match=r"scan\.nii\.gz: label id 200 \(1 voxels\) is not a label of totalsegmentator_total"):
        harmonize_label_map(bad, affine, "totalsegmentator_total", where="scan.nii.gz")
    result = harmonize_label_map(bad, affine, "totalsegmentator_total", options=HarmonizeOptions(unknown="drop"))
    assert [(r.name, r.status, r.voxels) for r in result.provenance.labels if r.status == "unknown_dropped"] == [("200", "unknown_dropped", 1)]


def test_lossy_label_raises_unless_dropped(ct):
    labels, affine, _ = ct
    table = load_source("moose_clin_ct_puma", version="2.4.10")
    puma = np.zeros_like(labels)
    puma[labels == 1] = table.id_of("Liver")
    puma[(labels == 3) | (labels == 4)] = table.id_of("Kidneys")
    with pytest.raises(LossyLabelError, match=r"'Kidneys'.*both kidneys in one label.*drop=\['Kidneys'\]"):
        harmonize_label_map(puma, affine, table)
    result = harmonize_label_map(puma, affine, table, options=HarmonizeOptions(drop=("Kidneys",)))
    assert set(np.unique(result.labels)) == {0, 1}
    dropped = [r for r in result.provenance.labels if r.status == "dropped"]
    assert dropped[0].name == "Kidneys" and dropped[0].voxels == int(((labels == 3) | (labels == 4)).sum())
    assert "kidney_left" in result.provenance.unavailable


def test_non_integer_label_map_is_rejected(ct):
    labels, affine, _ = ct
    with pytest.raises(MaskValueError, match="must hold integers"):
        harmonize_label_map(labels.astype(np.float32) + 0.5, affine, "totalsegmentator_total")


def test_label_map_on_the_wrong_grid(ct, small_release):
    labels, affine, ct_path = ct
    pet = small_release.pairs()[0].studies["petct"].scans["pet"]
    with pytest.raises(GridMismatchError, match=r"another grid than the target: shape \(80, 80, 100\).*expected shape \(50, 50, 100\)"):
        harmonize_label_map(labels, affine, "totalsegmentator_total", target=small_release.image_path(pet))


def write_masks(folder, masks: dict, affine):
    folder.mkdir(exist_ok=True)
    for name, mask in masks.items():
        write_nifti(folder / f"{name}.nii.gz", mask.astype(np.uint8), affine)
    return folder


def test_totalsegmentator_per_class_folder(ct, tmp_path):
    labels, affine, ct_path = ct
    total = to_total(labels)
    table = load_source("totalsegmentator_total")
    folder = write_masks(tmp_path / "segmentations", {n: total == i for i, n in table.labels.items() if i in np.unique(total)}, affine)
    write_nifti(folder / "spleen.nii.gz", np.zeros_like(labels), affine)  # an empty mask: spleen absent
    expected = np.where(labels == 2, 0, labels)
    result = harmonize(folder, "totalsegmentator_total", target=ct_path)
    assert np.array_equal(result.labels, expected)
    assert result.provenance.absent == ["spleen"]
    assert [r.status for r in result.provenance.labels if r.name == "spleen"] == ["empty"]
    # files outside the schema are listed but not read
    assert {r.name: r.voxels for r in result.provenance.labels if r.status == "outside_schema"} == {"gallbladder": None, "vertebrae_L1": None}
    with pytest.raises(Exception, match="empty"):
        harmonize(folder, "totalsegmentator_total", options=HarmonizeOptions(empty="error"))


def test_free_text_mask_folder(ct, tmp_path):
    labels, affine, _ = ct
    names = {1: "Liver_mask", 3: "Lt Kidney", 4: "kidney (right)", 9: "Bladder", 12: "LUNGS"}
    folder = write_masks(tmp_path / "annotator", {names[k]: labels == k for k in names}, affine)
    write_nifti(folder / "gall bladder.nii.gz", np.zeros_like(labels), affine)
    result = harmonize(folder)
    assert np.array_equal(result.labels, np.where(np.isin(labels, list(names)), labels, 0))
    assert {r.name: r.organ for r in result.provenance.labels if r.status == "mapped"} == {
        "Liver_mask": "liver", "Lt Kidney": "kidney_left", "kidney (right)": "kidney_right", "Bladder": "urinary_bladder", "LUNGS": "lung",
    }
    write_nifti(folder / "tumour.nii.gz", np.zeros_like(labels), affine)
    with pytest.raises(UnknownLabelError, match=r"'tumour' \(in .*tumour\.nii\.gz\)"):
        harmonize(folder)
    aliased = harmonize(folder, options=HarmonizeOptions(aliases={"tumour": "spleen"}))
    assert "spleen" in aliased.provenance.absent


def test_mask_on_another_grid_names_the_file(ct, tmp_path, small_release):
    labels, affine, ct_path = ct
    folder = write_masks(tmp_path / "m", {"liver": labels == 1}, affine)
    shifted = affine.copy()
    shifted[0, 3] += 3.0
    write_nifti(folder / "spleen.nii.gz", (labels == 2).astype(np.uint8), shifted)
    with pytest.raises(GridMismatchError, match=r"spleen\.nii\.gz .* is not on the grid of .*liver\.nii\.gz"):
        harmonize(folder)
    pet = small_release.image_path(small_release.pairs()[0].studies["petct"].scans["pet"])
    with pytest.raises(GridMismatchError, match=r"liver\.nii\.gz is on another grid than the target"):
        harmonize_masks({"liver": folder / "liver.nii.gz"}, target=pet)


def test_non_binary_mask_is_rejected_not_cast(ct, tmp_path):
    labels, affine, _ = ct
    folder = tmp_path / "m"
    folder.mkdir()
    write_nifti(folder / "liver.nii.gz", (labels == 1).astype(np.uint8) * 255, affine)
    with pytest.raises(MaskValueError, match=r"liver\.nii\.gz is not a binary mask: values other than 0 and 1, e\.g\. \[255\]"):
        harmonize(folder)


def test_overlap_follows_the_declared_policy_not_file_order(ct):
    labels, affine, _ = ct
    liver = labels == 1
    rim = np.zeros_like(liver)
    rim.flat[np.flatnonzero(liver)[:300]] = True  # a stomach mask that also claims 300 liver voxels
    stomach = (labels == 6) | rim
    overlap = int((stomach & liver).sum())
    assert overlap == 300 and stomach.sum() < liver.sum()
    masks = {"stomach": (stomach, affine), "liver": (liver, affine)}
    with pytest.raises(LabelOverlapError, match=rf"liver and stomach share {overlap} voxels.*overlap='smallest'"):
        harmonize_masks(masks)
    smallest = harmonize_masks(masks, options=HarmonizeOptions(overlap="smallest"))
    assert (smallest.labels[stomach & liver] == 6).all()  # the stomach is smaller
    [record] = smallest.provenance.overlaps
    assert record.voxels == overlap and record.assigned_to == "stomach"
    largest = harmonize_masks(dict(reversed(list(masks.items()))), options=HarmonizeOptions(overlap="largest"))
    assert (largest.labels[stomach & liver] == 1).all()
    priority = harmonize_masks(masks, options=HarmonizeOptions(overlap=("liver", "stomach")))
    assert np.array_equal(priority.labels, largest.labels)
    # no voxel of a known organ is lost silently: every input voxel is in the output or in an overlap record
    assigned = {slug: int(n) for slug, n in smallest.provenance.organ_voxels.items()}
    assert assigned["liver"] + record.voxels == int(liver.sum())
    assert assigned["stomach"] == int(stomach.sum())


def test_pydicom_seg_test_file():
    path = get_testdata_file("liver_1frame.dcm", download=False)
    result = harmonize(path)
    assert result.labels.shape == (512, 512, 1)
    assert result.provenance.organ_voxels == {"liver": 36233}
    assert [r.note for r in result.provenance.labels][0].endswith("SRT T-62000 (Liver)")
    assert any("3 per-frame functional groups but 1 frames" in n for n in result.provenance.notes)
    assert np.allclose(result.affine[:3, 3], [235.2, 226.8, -128.69])  # LPS (-235.2, -226.8) -> RAS


@pytest.mark.parametrize("scan", ["ct", "mri"])
def test_generated_seg_by_code_laterality_and_label(small_release, tmp_path, scan):
    study = "petct" if scan == "ct" else "petmri"
    record = small_release.pairs()[0].studies[study].scans[scan]
    labels, affine = read_nifti(small_release.label_path(record))
    labels = np.asarray(labels)
    geometry = Geometry(labels.shape, affine)
    kidney = ("64033007", "SCT", "Kidney")
    segments = [
        {"label": "Segment 1", "mask": labels == 3, "code": kidney, "laterality": ("7771000", "SCT", "Left")},
        {"label": "Segment 2", "mask": labels == 4, "code": kidney, "laterality": ("G-A100", "SRT", "Right")},
        {"label": "Leber", "mask": labels == 1, "code": ("10200004", "SCT", "Liver")},
        {"label": "right lung", "mask": labels == 12, "code": None},
        {"label": "Gallbladder", "mask": np.zeros(labels.shape, bool), "code": ("28231008", "SCT", "Gallbladder")},
    ]
    path = write_seg(tmp_path / "seg.dcm", geometry, segments)
    expected = np.where(np.isin(labels, [1, 3, 4, 12]), labels, 0)
    on_target = harmonize(path, target=small_release.image_path(record))
    assert np.array_equal(on_target.labels, expected)
    own = harmonize_dicom_seg(path)  # the SEG's own grid: same voxels in world space
    world = lambda lab, aff, k: aff[:3, :3] @ np.argwhere(lab == k).mean(axis=0) + aff[:3, 3]  # noqa: E731
    for k in (1, 3, 4):
        assert np.allclose(world(own.labels, own.affine, k), world(expected, affine, k), atol=1e-3)
    by_name = {r.name: r.organ for r in on_target.provenance.labels}
    assert by_name == {"Segment 1": "kidney_left", "Segment 2": "kidney_right", "Leber": "liver", "right lung": "lung", "Gallbladder": None}


def test_seg_on_another_grid_is_refused(small_release, tmp_path):
    subject = small_release.pairs()[0]
    ct = subject.studies["petct"].scans["ct"]
    labels, affine = read_nifti(small_release.label_path(ct))
    path = write_seg(tmp_path / "seg.dcm", Geometry(labels.shape, affine), [{"label": "liver", "mask": np.asarray(labels) == 1}])
    pet = small_release.image_path(subject.studies["petct"].scans["pet"])
    with pytest.raises(GridMismatchError, match="is not one voxel of the target grid"):
        harmonize(path, target=pet)


def test_provenance_round_trips_through_json(ct, tmp_path):
    labels, affine, _ = ct
    result = harmonize_label_map(to_total(labels), affine, "totalsegmentator_total")
    result.save(tmp_path / "out.nii.gz", tmp_path / "out.json")
    assert read_provenance(tmp_path / "out.json") == result.provenance
    saved, saved_affine = read_nifti(tmp_path / "out.nii.gz")
    assert np.array_equal(saved, labels) and np.allclose(saved_affine, affine)
    assert json.loads((tmp_path / "out.json").read_text())["policy"]["overlap"] == "error"


def test_seg_with_empty_slices_left_out_keeps_its_slice_spacing(tmp_path):
    """Writers leave out empty slices: frames on slices 1 and 5 of a 2.5 mm grid stay 10 mm apart."""
    affine = np.diag([1.0, 1.0, 2.5, 1.0])
    mask = np.zeros((6, 6, 8), bool)
    mask[2:4, 2:4, 1] = mask[2:4, 2:4, 5] = True
    path = write_seg(tmp_path / "seg.dcm", Geometry(mask.shape, affine), [{"label": "Liver", "mask": mask}])
    result = harmonize_dicom_seg(path)
    assert np.allclose(np.linalg.norm(result.affine[:3, :3], axis=0), [1.0, 1.0, 2.5])
    assert result.labels.shape == (6, 6, 5)
    assert np.array_equal(np.flatnonzero(result.labels.any(axis=(0, 1))), [0, 4])
    assert np.allclose(result.affine[:3, 3], affine[:3, :3] @ [0, 0, 1])


def test_a_missing_input_is_a_file_not_found_that_names_it(tmp_path):
    from umd_dataset.errors import InputNotFoundError
    from umd_dataset.labels.harmonize import harmonize, harmonize_masks

    with pytest.raises(InputNotFoundError, match="nope.nii.gz does not exist"):
        harmonize(tmp_path / "nope.nii.gz")
    with pytest.raises(InputNotFoundError, match="masks is not a folder of masks"):
        harmonize_masks(tmp_path / "masks")
    assert issubclass(InputNotFoundError, FileNotFoundError)
