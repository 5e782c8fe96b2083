"""Standardized uptake value (body weight) of a PET series, from its DICOM header.

    SUVbw = activity concentration [Bq/ml] * weight [g] / decayed injected dose [Bq]
    decayed dose = injected dose * 2 ** (-(t_reference - t_injection) / half life)

Pitfalls handled, each recorded in `SUVFactor.notes`:

- the injection time: RadiopharmaceuticalStartDateTime is preferred (it has a date); a bare
  RadiopharmaceuticalStartTime takes the series date, and a day is subtracted when that puts the
  injection after the scan (a scan that crosses midnight);
- DecayCorrection ``START``: images are decay-corrected to the series start, so the dose is decayed
  from injection to SeriesDate/SeriesTime (or to the earliest AcquisitionTime when that is earlier,
  as QIBA recommends); ``ADMIN``: images are corrected to the administration time, the dose is not
  decayed; ``NONE``: every slice is decayed to its own acquisition time (a factor per slice);
- Units ``BQML``: Bq/ml; ``GML``: already SUV; ``CNTS``: Philips counts, converted with the private
  SUV scale factor (7053,1000) when present; anything else is an error;
- RadionuclideTotalDose written in MBq (a value below 1e4 is taken as MBq and converted, noted);
- PatientWeight missing or implausible (outside 2-350 kg) is an error naming the tag, unless the
  caller supplies the weight.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import numpy as np

from umd_dataset.errors import SUVError, spell

__all__ = ["SUVFactor", "suv_factor", "apply_suv", "dicom_datetime"]


@dataclass
class SUVFactor:
    """The SUVbw conversion of one series and every input it used.

    Attributes:
        factor: multiply rescaled pixel values by this to get SUVbw (g/ml). For ``DecayCorrection
            NONE``, `slice_factors` holds one factor per slice instead.
        weight_kg, injected_dose_bq, decayed_dose_bq, half_life_s: the inputs, after unit fixes.
        injection_time, reference_time: ISO date-times.
        units, decay_correction: the header values.
        supplied: the inputs given by the caller instead of the header.
    """

    factor: float
    weight_kg: float
    injected_dose_bq: float
    decayed_dose_bq: float
    half_life_s: float
    injection_time: str
    reference_time: str
    units: str
    decay_correction: str
    slice_factors: list[float] | None = None
    supplied: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def dicom_datetime(date: str, time: str) -> datetime:
    """DICOM DA + TM (``HHMMSS.ffffff``, possibly shortened) -> datetime."""
    time = (time or "").strip()
    whole, _, fraction = time.partition(".")
    whole = whole.ljust(6, "0")
    micro = int((fraction + "000000")[:6]) if fraction else 0
    return datetime.strptime(f"{date.strip()}{whole}", "%Y%m%d%H%M%S") + timedelta(microseconds=micro)


def _dt(value: str) -> datetime:
    """DICOM DT (``YYYYMMDDHHMMSS.ffffff&ZZXX``), the offset ignored."""
    value = value.strip().split("+")[0].split("-")[0] if len(value.strip()) > 8 else value.strip()
    return dicom_datetime(value[:8], value[8:])


def suv_factor(
    headers: list,
    *,
    weight_kg: float | None = None,
    injected_dose_bq: float | None = None,
    injection_time: datetime | None = None,
    half_life_s: float | None = None,
    where: str = "",
) -> SUVFactor:
    """The SUVbw factor of a PET series.

    Args:
        headers: the pydicom datasets of the series' slices, in slice order (the first one holds
            the study-level tags; all are used for acquisition times).
        weight_kg, injected_dose_bq, injection_time, half_life_s: values to use instead of the header's.
        where: the series, for messages.

    Raises:
        SUVError: a missing or implausible input, naming the DICOM tag and how to supply it.
    """
    ds = headers[0]
    notes: list[str] = []
    supplied: list[str] = []
    units = str(ds.get("Units", "")).upper()
    decay = str(ds.get("DecayCorrection", "")).upper()
    prefix = f"{where}: " if where else ""
    if units == "GML":
        return SUVFactor(1.0, float(ds.get("PatientWeight") or 0), 0, 0, 0, "", "", units, decay, notes=["Units GML: values are already SUVbw."])

    info = ds.get("RadiopharmaceuticalInformationSequence")
    item = info[0] if info else None
    if weight_kg is None:
        raw = ds.get("PatientWeight")
        if raw in (None, "") or not 2 <= float(raw) <= 350:
            raise SUVError(
                f"{prefix}PatientWeight (0010,1030) is {'missing' if raw in (None, '') else repr(float(raw)) + ' kg, implausible'}; "
                f"SUVbw needs the body weight. Supply it ({spell('weight_kg= in suv_overrides', '--suv-overrides CSV with columns patient,weight_kg')})."
            )
        weight_kg = float(raw)
    else:
        supplied.append("weight_kg")

    if injected_dose_bq is None:
        raw = item.get("RadionuclideTotalDose") if item is not None else None
        if raw in (None, "") or float(raw) <= 0:
            raise SUVError(f"{prefix}RadionuclideTotalDose (0018,1074) is missing; supply the injected dose in Bq (injected_dose_bq=).")
        injected_dose_bq = float(raw)
        if injected_dose_bq < 1e4:
            notes.append(f"RadionuclideTotalDose {injected_dose_bq:g} is below 1e4: taken as MBq ({injected_dose_bq * 1e6:g} Bq).")
            injected_dose_bq *= 1e6
        if not 1e6 <= injected_dose_bq <= 5e10:
            raise SUVError(f"{prefix}RadionuclideTotalDose (0018,1074) = {injected_dose_bq:g} Bq is implausible; supply injected_dose_bq=.")
    else:
        supplied.append("injected_dose_bq")

    if half_life_s is None:
        raw = item.get("RadionuclideHalfLife") if item is not None else None
        if raw in (None, "") or float(raw) <= 0:
            raise SUVError(f"{prefix}RadionuclideHalfLife (0018,1075) is missing; supply half_life_s= (F-18: 6586.2 s).")
        half_life_s = float(raw)
    else:
        supplied.append("half_life_s")

    series_time = dicom_datetime(str(ds.get("SeriesDate") or ds.get("StudyDate")), str(ds.get("SeriesTime") or ds.get("StudyTime")))
    acquisitions = [
        dicom_datetime(str(h.get("AcquisitionDate") or ds.get("SeriesDate") or ds.get("StudyDate")), str(h.AcquisitionTime))
        for h in headers if h.get("AcquisitionTime")
    ]
    if injection_time is None:
        if item is not None and item.get("RadiopharmaceuticalStartDateTime"):
            injection_time = _dt(str(item.RadiopharmaceuticalStartDateTime))
        elif item is not None and item.get("RadiopharmaceuticalStartTime"):
            injection_time = dicom_datetime(series_time.strftime("%Y%m%d"), str(item.RadiopharmaceuticalStartTime))
            notes.append("injection time without a date (RadiopharmaceuticalStartTime): the series date was used.")
            if injection_time > series_time:
                injection_time -= timedelta(days=1)
                notes.append("the injection time fell after the scan: the scan crossed midnight, injection taken on the previous day.")
        else:
            raise SUVError(
                f"{prefix}no RadiopharmaceuticalStartDateTime (0018,1078) or RadiopharmaceuticalStartTime (0018,1072); "
                "supply injection_time=."
            )
    else:
        supplied.append("injection_time")

    reference = series_time
    if acquisitions and min(acquisitions) < series_time:
        reference = min(acquisitions)
        notes.append("the earliest AcquisitionTime precedes SeriesTime: decay computed to the earliest acquisition (QIBA).")
    elapsed = (reference - injection_time).total_seconds()
    if not 0 <= elapsed <= 24 * 3600:
        raise SUVError(
            f"{prefix}{elapsed / 60:.1f} minutes between injection ({injection_time}) and scan ({reference}) is implausible; "
            "check RadiopharmaceuticalStartDateTime or supply injection_time=."
        )

    if decay == "ADMIN":
        decayed = injected_dose_bq
        notes.append("DecayCorrection ADMIN: images are corrected to the administration time; the dose is not decayed.")
        slice_factors = None
    elif decay == "START":
        decayed = injected_dose_bq * 2.0 ** (-elapsed / half_life_s)
        slice_factors = None
    elif decay == "NONE":
        if len(acquisitions) != len(headers):
            raise SUVError(f"{prefix}DecayCorrection NONE needs an AcquisitionTime (0008,0032) on every slice.")
        decayed = injected_dose_bq * 2.0 ** (-elapsed / half_life_s)
        slice_factors = [
            weight_kg * 1000.0 / (injected_dose_bq * 2.0 ** (-(t - injection_time).total_seconds() / half_life_s))
            for t in acquisitions
        ]
        notes.append("DecayCorrection NONE: each slice decayed to its own AcquisitionTime.")
    else:
        raise SUVError(f"{prefix}DecayCorrection (0054,1102) is {decay or 'missing'!r}; expected START, ADMIN or NONE.")

    factor = weight_kg * 1000.0 / decayed
    if units == "CNTS":
        philips = ds.get((0x7053, 0x1000))
        if philips is None:
            raise SUVError(f"{prefix}Units CNTS without the Philips SUV scale factor (7053,1000): counts cannot be converted to SUV.")
        factor = float(philips.value if hasattr(philips, "value") else philips)
        slice_factors = None
        notes.append("Units CNTS: the Philips private SUV scale factor (7053,1000) was used.")
    elif units != "BQML":
        raise SUVError(f"{prefix}Units (0054,1001) is {units or 'missing'!r}; SUVbw is defined for BQML (and GML, CNTS with Philips tags).")
    return SUVFactor(
        factor=float(factor),
        weight_kg=float(weight_kg),
        injected_dose_bq=float(injected_dose_bq),
        decayed_dose_bq=float(decayed),
        half_life_s=float(half_life_s),
        injection_time=injection_time.isoformat(),
        reference_time=reference.isoformat(),
        units=units,
        decay_correction=decay,
        slice_factors=slice_factors,
        supplied=supplied,
        notes=notes,
    )


def apply_suv(values: np.ndarray, suv: SUVFactor) -> np.ndarray:
    """SUVbw volume (float32) from rescaled values on (column, row, slice) axes."""
    if suv.slice_factors is not None:
        return (values * np.asarray(suv.slice_factors)[None, None, :]).astype(np.float32)
    return (values * suv.factor).astype(np.float32)
