"""Planning: each kind of input turned into study jobs (DICOM trees, NIfTI files with a mapping,
nnU-Net raw folders), with every choice made recorded."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping
from pathlib import Path

from umd_dataset.errors import IngestInputError, InputNotFoundError
from umd_dataset.ingest.dicom import Discovery, Series
from umd_dataset.ingest.options import (
    FreeText,
    GivenNames,
    IngestOptions,
    IngestReport,
    LabelInput,
    ScanInput,
    SchemaIds,
    SourceTableNames,
    StudyJob,
)
from umd_dataset.ingest.pseudonym import pseudonym
from umd_dataset.schema.studies import modalities

__all__ = ["plan_dicom", "plan_nifti", "plan_nnunet", "overrides_from_csv"]

#: The ``label_source`` of a NIfTI mapping whose label maps hold the schema's ids already.
SCHEMA_IDS = "umd"


def _identity(series: Series) -> str:
    h = series.first
    if h.patient_id:
        return f"{h.patient_issuer}|{h.patient_id}"
    if h.patient_name or h.birth_date:
        return f"name|{h.patient_name}|{h.birth_date}"
    raise IngestInputError(f"{h.path}: no PatientID, PatientName or PatientBirthDate: the study cannot be tied to a person.")


def _pick(candidates: list[Series], key, what: str, choices: list[str]) -> Series:
    """The first candidate under the declared rule `key`; the choice is recorded when there were several."""
    ranked = sorted(candidates, key=key)
    if len(ranked) > 1:
        others = "; ".join(s.describe() for s in ranked[1:])
        choices.append(f"{what}: chose {ranked[0].describe()} over {others}")
    return ranked[0]


def plan_dicom(discovery: Discovery, options: IngestOptions, secret: str, report: IngestReport) -> tuple[list[StudyJob], dict[str, str]]:
    """Study jobs for a discovered DICOM tree, and identity -> subject id.

    Rules (each choice recorded in the study's provenance):

    - a study is a PET/CT when an attenuation-corrected PET shares its frame of reference with a CT,
      a PET/MRI when it shares it with an MR series (the study kind whose structural scan has that
      DICOM modality); studies without both are left out (reported);
    - PET: the attenuation-corrected series with most slices, then lowest series number;
    - CT: most slices, then lowest series number; MR: contrast by `options.mri_contrasts`, then most
      slices, then lowest series number; localizers, MIPs, secondary captures and reports never qualify;
    - labels: a DICOM SEG with the same frame of reference (the highest series number if several);
    - one study of each kind per person: the earliest study date wins, later ones are left out.
    """
    report.file_problems += [f"{p.path}: {p.reason}" for p in discovery.problems]
    report.skipped_files += len(discovery.skipped)
    report.skipped_examples += [str(p.path) for p in discovery.skipped[: max(0, 5 - len(report.skipped_examples))]]
    candidates: dict[tuple[str, str], list[tuple[str, StudyJob]]] = {}
    identities: dict[str, str] = {}
    structural_kinds = {spec.structural for spec in modalities().studies.values()}
    for study_uid, series in discovery.studies().items():
        for item in series:
            if item.kind in ("localizer", "mip", "secondary", "dose_report", "pet_nac", "other"):
                report.left_out.append(f"{item.first.path.rsplit('/', 1)[0]}: {item.describe()}: {item.reason}")
        kinds = {spec.functional for spec in modalities().studies.values()}
        functional = [s for s in series if s.kind in kinds]
        if not functional:
            if any(s.kind in structural_kinds for s in series):
                report.left_out.append(f"study {_short(study_uid)}: no attenuation-corrected PET series; not a hybrid study")
            continue
        choices: list[str] = []
        pet = _pick(functional, lambda s: (-s.slices, s.first.series_number), "PET", choices)
        frame = pet.first.frame_of_reference
        found = None
        for spec in modalities().studies.values():  # in the order of modalities.json: PET/CT first
            matching = [s for s in series if s.kind == spec.structural and s.first.frame_of_reference == frame]
            if matching:
                found = spec, matching
                break
        if found is None:
            report.left_out.append(f"study {_short(study_uid)}: no CT or MR series shares the PET's frame of reference")
            continue
        spec, matching = found
        study, structural_key = spec.key, spec.structural
        order = {c: i for i, c in enumerate(options.mri_contrasts)}
        structural = _pick(
            matching, lambda s: (order.get(s.contrast, len(order)), -s.slices, s.first.series_number),
            modalities().scan(structural_key).name, choices,
        )
        segs = [s for s in series if s.kind == "seg" and s.first.frame_of_reference in (frame, "")]
        labels = None
        if segs:
            seg = _pick(segs, lambda s: -s.first.series_number, "labels", choices)
            paths = [h.path for h in seg.headers]  # a SEG series may be stored as several instances: all are read
            labels = LabelInput("dicom_seg", tuple(paths), FreeText(), drawn_on=structural_key)
        identity = _identity(pet)
        subject = pseudonym(identity, secret)
        identities[identity] = subject
        overrides = dict(options.suv_overrides.get(identity) or options.suv_overrides.get(pet.first.patient_id) or {})
        job = StudyJob(
            subject=subject,
            study=study,
            scans={
                structural_key: ScanInput("dicom", tuple(h.path for h in structural.headers), structural.describe()),
                spec.functional: ScanInput("dicom", tuple(h.path for h in pet.headers), pet.describe()),
            },
            labels=labels,
            choices=tuple(choices),
            suv_overrides=overrides,
        )
        candidates.setdefault((subject, study), []).append((pet.first.study_date + study_uid, job))
    jobs = []
    for (subject, study), options_ in sorted(candidates.items()):
        options_.sort(key=lambda item: item[0])
        jobs.append(options_[0][1])
        for _, later in options_[1:]:
            report.left_out.append(f"{subject}/{study}: a later {study} study of the same person (the earliest is kept)")
    return jobs, identities


def _number(text: str, where: str, column: str) -> float:
    """A number read from an input table, or an error naming the file, the line, the column and the value."""
    try:
        return float(text)
    except ValueError:
        raise IngestInputError(f"{where}: {column} {text!r} is not a number.") from None


def _csv_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise InputNotFoundError(f"{path} does not exist.")
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _short(uid: str) -> str:
    return "..." + uid[-8:]


def plan_nifti(mapping_file: str | Path, options: IngestOptions, secret: str, keep_ids: bool = False) -> tuple[list[StudyJob], dict[str, str]]:
    """Study jobs from a CSV mapping file with the columns

    ``subject, study, scan, image`` and optionally ``label, label_source, label_source_version, suv_factor``.

    One row per scan (``ct``/``pet`` of a ``petct`` study, ``mri``/``pet`` of a ``petmri`` study).
    ``label`` is a multi-label NIfTI or a folder of masks lying on that scan; ``label_source`` is the
    source table of its names/ids (``umd`` for the schema's own ids; empty for free-text mask names),
    ``label_source_version`` the version of the tool that wrote them, where its ids changed between versions. One
    scan per study carries the labels; the other scans get them carried in world coordinates.
    ``suv_factor`` converts a PET to SUV (leave empty if it is SUV already). Paths are relative to the
    mapping file. Subject ids are pseudonymized unless `keep_ids`.
    """
    mapping_file = Path(mapping_file)
    base = mapping_file.parent
    rows = _csv_rows(mapping_file)
    required = {"subject", "study", "scan", "image"}
    if not rows or not required <= set(rows[0]):
        raise IngestInputError(f"{mapping_file}: a mapping needs the columns {sorted(required)} (optional: label, label_source, suv_factor).")
    grouped: dict[tuple[str, str], list[dict]] = {}
    for number, row in enumerate(rows, start=2):
        row["_line"] = f"{mapping_file} line {number}"
        study = row["study"].strip()
        scans = modalities().study(study).scans
        if row["scan"].strip() not in scans:
            raise IngestInputError(f"{mapping_file} line {number}: study {study} holds scans {scans}, not {row['scan']!r}.")
        grouped.setdefault((row["subject"].strip(), study), []).append(row)
    jobs, identities = [], {}
    for (original, study), members in sorted(grouped.items()):
        subject = original if keep_ids else pseudonym(f"nifti|{original}", secret)
        identities[original] = subject
        by_scan = {r["scan"].strip(): r for r in members}
        missing = set(modalities().study(study).scans) - set(by_scan)
        if missing:
            raise IngestInputError(f"{mapping_file}: {original}/{study} lacks the scans {sorted(missing)}.")
        labelled = [scan for scan, r in by_scan.items() if (r.get("label") or "").strip()]
        if len(labelled) > 1:
            raise IngestInputError(f"{mapping_file}: {original}/{study} has labels for {labelled}; give them for one scan (the others get them carried).")
        labels = None
        if labelled:
            row = by_scan[labelled[0]]
            path = base / row["label"].strip()
            source = (row.get("label_source") or "").strip()
            version = (row.get("label_source_version") or "").strip() or None
            names = SchemaIds() if source == SCHEMA_IDS else SourceTableNames(source, version) if source else FreeText()
            labels = LabelInput("masks" if path.is_dir() else "label_map", (str(path),), names, drawn_on=labelled[0])
        scans = {
            scan: ScanInput(
                "nifti", (str(base / r["image"].strip()),), r["image"].strip(),
                _number(r["suv_factor"], r["_line"], "suv_factor") if (r.get("suv_factor") or "").strip() else None,
            )
            for scan, r in by_scan.items()
        }
        jobs.append(StudyJob(subject, study, scans, labels))
    return jobs, identities


def plan_nnunet(folder: str | Path, options: IngestOptions, secret: str, keep_ids: bool = False) -> tuple[list[StudyJob], dict[str, str]]:
    """Study jobs from an nnU-Net raw dataset folder (``dataset.json``, ``imagesTr``, ``labelsTr``).

    ``channel_names`` must name a structural channel (CT or MR/MRI/T1...) and a PET channel; each
    case becomes one study (PET/CT or PET/MRI) of its own subject, both scans on the case's grid
    (nnU-Net requires the channels to be co-registered). Labels: ``labelsTr/<case>`` with the
    dataset's ``labels`` names resolved onto the schema. PET values are taken as SUV.
    """
    folder = Path(folder)
    spec_path = folder / "dataset.json"
    if not spec_path.is_file():
        raise IngestInputError(f"{folder} is not an nnU-Net raw dataset: no dataset.json.")
    try:
        spec = json.loads(spec_path.read_text())
        ending = spec.get("file_ending", ".nii.gz")
        channels = {int(k): str(v).upper() for k, v in spec.get("channel_names", spec.get("modality", {})).items()}
        names = {int(v) if not isinstance(v, list) else int(v[0]): k for k, v in spec["labels"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise IngestInputError(
            f"{spec_path} is not a valid nnU-Net dataset.json ({type(error).__name__}: {error}); it needs "
            "channel_names {index: name} and labels {name: id}."
        ) from error
    pet = [c for c, name in channels.items() if re.search(r"PET|PT|SUV", name)]
    ct = [c for c, name in channels.items() if name == "CT" or name.startswith("CT")]
    mr = [c for c, name in channels.items() if re.search(r"MR|T1|T2|DIXON", name)]
    if len(pet) != 1 or len(ct) + len(mr) != 1:
        raise IngestInputError(f"{spec_path}: channel_names {channels} must name one PET channel and one CT or MR channel.")
    kind = "CT" if ct else "MR"
    study_spec = next(s for s in modalities().studies.values() if modalities().scan(s.structural).modality == kind)
    study, structural_key, structural = study_spec.key, study_spec.structural, (ct or mr)[0]
    label_map_names = GivenNames(tuple(sorted((i, n) for i, n in names.items() if i != 0)))
    images = folder / "imagesTr"
    cases = sorted({p.name[: -len(ending) - 5] for p in images.glob(f"*_0000{ending}")} | {p.name[: -len(ending) - 5] for p in images.glob(f"*_{pet[0]:04d}{ending}")})
    jobs, identities = [], {}
    for case in cases:
        subject = case if keep_ids else pseudonym(f"nnunet|{case}", secret)
        identities[case] = subject
        label_path = folder / "labelsTr" / f"{case}{ending}"
        scans = {
            structural_key: ScanInput("nifti", (str(images / f"{case}_{structural:04d}{ending}"),), f"channel {structural}"),
            study_spec.functional: ScanInput("nifti", (str(images / f"{case}_{pet[0]:04d}{ending}"),), f"channel {pet[0]}"),
        }
        labels = LabelInput("label_map", (str(label_path),), label_map_names, drawn_on=structural_key) if label_path.is_file() else None
        jobs.append(StudyJob(subject, study, scans, labels))
    if not jobs:
        raise IngestInputError(f"{images}: no case files named <case>_0000{ending}.")
    return jobs, identities


def overrides_from_csv(path: str | Path) -> Mapping[str, Mapping[str, float]]:
    """Per-patient SUV inputs: CSV ``patient,weight_kg,injected_dose_bq,half_life_s`` (empty cells ignored)."""
    result: dict[str, dict[str, float]] = {}
    for number, row in enumerate(_csv_rows(Path(path)), start=2):
        if "patient" not in row:
            raise IngestInputError(f"{path}: the SUV overrides need a 'patient' column (and weight_kg, injected_dose_bq, half_life_s).")
        where = f"{path} line {number}"
        result[row["patient"].strip()] = {k: _number(v, where, k) for k, v in row.items() if k != "patient" and v not in (None, "")}
    return result
