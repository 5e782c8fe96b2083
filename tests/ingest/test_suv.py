"""SUVbw factors against hand computation, and the known pitfalls of PET headers."""

from __future__ import annotations

import math

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from umd_dataset.errors import SUVError
from umd_dataset.ingest.suv import suv_factor

HALF_LIFE = 6586.2  # F-18, s


def pet_header(**changes) -> Dataset:
    ds = Dataset()
    ds.Units, ds.DecayCorrection = "BQML", "START"
    ds.PatientWeight = "80"
    ds.SeriesDate, ds.SeriesTime = "20240305", "103000"
    ds.AcquisitionTime = "103000"
    info = Dataset()
    info.RadionuclideTotalDose, info.RadionuclideHalfLife = "370000000", str(HALF_LIFE)
    info.RadiopharmaceuticalStartDateTime = "20240305093000"
    ds.RadiopharmaceuticalInformationSequence = Sequence([info])
    for key, value in changes.items():
        if key.startswith("info_"):
            if value is None:
                delattr(info, key[5:])
            else:
                setattr(info, key[5:], value)
        elif value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    return ds


def hand(weight_kg, dose_bq, elapsed_s):
    """SUVbw factor by hand: grams over the dose decayed over the elapsed time."""
    return weight_kg * 1000 / (dose_bq * math.exp(-math.log(2) * elapsed_s / HALF_LIFE))


def test_decay_to_series_start():
    suv = suv_factor([pet_header()])
    assert suv.factor == pytest.approx(hand(80, 3.7e8, 3600), rel=1e-12)
    assert suv.decay_correction == "START" and suv.supplied == []


def test_admin_decay_correction_does_not_decay_the_dose():
    suv = suv_factor([pet_header(DecayCorrection="ADMIN")])
    assert suv.factor == pytest.approx(80 * 1000 / 3.7e8, rel=1e-12)
    assert "ADMIN" in suv.notes[0]


def test_injection_time_without_date_across_midnight():
    # injected 23:40, scan starts 00:40 the next day: only the time of injection is written
    ds = pet_header(SeriesDate="20240306", SeriesTime="004000", AcquisitionTime="004000", info_RadiopharmaceuticalStartDateTime=None)
    ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime = "234000"
    suv = suv_factor([ds])
    assert suv.factor == pytest.approx(hand(80, 3.7e8, 3600), rel=1e-12)
    assert any("crossed midnight" in n for n in suv.notes)


def test_dose_in_mbq_is_recognised():
    suv = suv_factor([pet_header(info_RadionuclideTotalDose="370")])
    assert suv.factor == pytest.approx(hand(80, 3.7e8, 3600), rel=1e-12)
    assert any("MBq" in n for n in suv.notes)


def test_earliest_acquisition_before_series_time_is_the_reference():
    suv = suv_factor([pet_header(AcquisitionTime="102000")])
    assert suv.factor == pytest.approx(hand(80, 3.7e8, 3000), rel=1e-12)


def test_no_decay_correction_gives_a_factor_per_slice():
    slices = [pet_header(DecayCorrection="NONE", AcquisitionTime=t) for t in ("103000", "103500")]
    suv = suv_factor(slices)
    assert suv.slice_factors == pytest.approx([hand(80, 3.7e8, 3600), hand(80, 3.7e8, 3900)], rel=1e-12)


def test_philips_counts_use_the_private_scale_factor():
    ds = pet_header(Units="CNTS")
    ds.add_new((0x7053, 0x1000), "DS", "0.000345")
    assert suv_factor([ds]).factor == pytest.approx(0.000345)
    with pytest.raises(SUVError, match=r"\(7053,1000\)"):
        suv_factor([pet_header(Units="CNTS")])


def test_already_suv():
    assert suv_factor([pet_header(Units="GML")]).factor == 1.0


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"PatientWeight": None}, r"PatientWeight \(0010,1030\) is missing.*weight_kg="),
        ({"PatientWeight": "0"}, r"PatientWeight \(0010,1030\) is 0.0 kg, implausible"),
        ({"info_RadionuclideTotalDose": None}, r"RadionuclideTotalDose \(0018,1074\) is missing"),
        ({"info_RadionuclideHalfLife": None}, r"RadionuclideHalfLife \(0018,1075\)"),
        ({"info_RadiopharmaceuticalStartDateTime": None}, r"RadiopharmaceuticalStartDateTime \(0018,1078\)"),
        ({"DecayCorrection": "XYZ"}, r"DecayCorrection \(0054,1102\) is 'XYZ'"),
        ({"Units": "PROPCPS"}, r"Units \(0054,1001\) is 'PROPCPS'"),
        ({"SeriesTime": "083000", "AcquisitionTime": "083000"}, r"-60.0 minutes between injection"),
    ],
)
def test_missing_or_implausible_inputs_name_the_tag(changes, pattern):
    with pytest.raises(SUVError, match=pattern):
        suv_factor([pet_header(**changes)], where="S1/petct/pet")


def test_supplied_values_replace_missing_tags():
    suv = suv_factor([pet_header(PatientWeight=None)], weight_kg=70.0)
    assert suv.factor == pytest.approx(hand(70, 3.7e8, 3600), rel=1e-12)
    assert suv.supplied == ["weight_kg"]
