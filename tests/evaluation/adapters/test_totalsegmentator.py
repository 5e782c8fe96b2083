"""TotalSegmentator: the geometry round trip through an echo of its Python API, labels onto the schema, usage statistics off."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from echo import SCANS, assert_centred, ball, blob_world, bright_centre, echo_case

from umd_dataset.errors import ModelOutputError, ModelUnavailableError, SourceVersionError, UnknownNameError
from umd_dataset.evaluation.adapters.totalsegmentator import TotalSegmentatorModel, usage_statistics_off
from umd_dataset.evaluation.case import as_label_map
from umd_dataset.schema.organs import load_schema
from umd_dataset.schema.sources import load_source


class EchoTotalSegmentator:
    """`totalsegmentator(input=Nifti1Image, task=...)`: a multi-label image on the input grid (as
    TotalSegmentator returns it, names in the header extension), liver around the input's blob and
    the brain in one corner."""

    def __init__(self, grid=None):
        self.calls, self.grid = [], grid

    def __call__(self, input, task="total", device="gpu", ml=False, fast=False, quiet=False, roi_subset=None, **options):
        assert isinstance(input, nib.Nifti1Image), "TotalSegmentator takes a path or a Nifti1Image"
        assert device in ("cpu", "gpu", "mps") or device.startswith("gpu:"), f"TotalSegmentator refuses device {device!r}"
        self.calls.append({"task": task, "device": device, "roi_subset": roi_subset, "fast": fast})
        table = load_source(f"totalsegmentator_{task}", version="2.18.0")
        values = np.asarray(input.dataobj)
        labels = np.zeros(values.shape, np.uint8)
        labels[ball(values.shape, bright_centre(values), 4)] = table.id_of("liver")
        labels[:2, :2, :2] = table.id_of("brain")
        xml = "".join(f'<Label Key="{i}"><![CDATA[{n}]]></Label>' for i, n in table.labels.items())
        image = nib.Nifti1Image(labels, self.grid if self.grid is not None else input.affine)
        image.header.extensions.append(nib.nifti1.Nifti1Extension(0, f"<CaretExtension><LabelTable>{xml}</LabelTable></CaretExtension>".encode()))
        return image


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.delenv("TOTALSEG_HOME_DIR", raising=False)  # the adapter sets it for TotalSegmentator: restored after each test
    folder = tmp_path / "totalseg-home"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("scan", list(SCANS))
def test_labels_come_back_on_the_scan_grid_as_schema_ids_centred_on_the_organ(scan, home):
    case = echo_case(scan)
    api = EchoTotalSegmentator()
    labels = as_label_map(TotalSegmentatorModel(home, api=api, version="2.18.0")(case), case, load_schema())
    assert set(np.unique(labels)) == {0, 1, 13}  # liver (TotalSegmentator 5 in total, 5 in total_mr) and brain -> 1 and 13
    assert_centred(labels == 1, case, blob_world(case), f"TotalSegmentator on {scan}")
    assert api.calls[0]["task"] == {"ct": "total", "mri": "total_mr", "pet": "total"}[case.scan]


def test_usage_statistics_are_off_before_the_first_call_and_other_settings_kept(home):
    (home / "config.json").write_text(json.dumps({"totalseg_id": "totalseg_abc", "send_usage_stats": True, "prediction_counter": 7}))
    case = echo_case("lps")
    TotalSegmentatorModel(home, api=EchoTotalSegmentator(), version="2.18.0")(case)
    assert json.loads((home / "config.json").read_text()) == {"totalseg_id": "totalseg_abc", "send_usage_stats": False, "prediction_counter": 7}
    fresh = home / "fresh"
    fresh.mkdir()
    config = json.loads(usage_statistics_off(fresh).read_text())
    assert config["send_usage_stats"] is False and config["prediction_counter"] == 0  # what TotalSegmentator's counter needs


def test_devices_tasks_and_roi_subset_reach_totalsegmentator_in_its_own_words(home):
    case = echo_case("anisotropic")
    api = EchoTotalSegmentator()
    TotalSegmentatorModel(home, api=api, version="2.18.0", device="cuda:1", tasks={"mri": "total"}, roi_subset=True)(case)
    call = api.calls[0]
    assert call["device"] == "gpu:1" and call["task"] == "total"
    assert "liver" in call["roi_subset"] and "lung_upper_lobe_left" in call["roi_subset"] and len(call["roi_subset"]) == 17
    with pytest.raises(UnknownNameError):
        TotalSegmentatorModel(home, tasks={"pet": "total_pet"})
    with pytest.raises(UnknownNameError):
        TotalSegmentatorModel(home, device="tpu")


def test_an_unchecked_version_another_grid_and_missing_weights_raise(home, monkeypatch):
    case = echo_case("lps")
    with pytest.raises(SourceVersionError):
        TotalSegmentatorModel(home, api=EchoTotalSegmentator(), version="9.0.0")(case)
    with pytest.raises(ModelOutputError, match="another grid"):
        TotalSegmentatorModel(home, api=EchoTotalSegmentator(grid=np.eye(4)), version="2.18.0")(case)
    monkeypatch.delenv("TOTALSEG_HOME_DIR", raising=False)
    with pytest.raises(ModelUnavailableError, match="TOTALSEG_HOME_DIR"):
        TotalSegmentatorModel(api=EchoTotalSegmentator(), version="2.18.0")(case)
