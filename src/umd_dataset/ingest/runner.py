"""`ingest`: raw studies (DICOM trees, NIfTI files with a mapping, nnU-Net raw folders) -> a verified release.

Every input format is turned into `StudyJob`s (what to read for each scan and its labels); one
function, `run_study`, turns a job into the files of one study, so the formats share the volume
handling, SUV, harmonization onto the schema, carrying the label map onto the PET grid and the
per-study provenance record. Studies run in parallel; the release writer makes the job resumable
(finished studies are kept, interrupted ones redone) and writes the descriptor last.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from umd_dataset.errors import UMDError
from umd_dataset.io import Geometry, read_json, write_json
from umd_dataset.labels import load_schema
from umd_dataset.modalities import modalities

__all__ = ["IngestError", "IngestOptions", "ScanSource", "LabelSource", "StudyJob", "IngestReport", "run_study", "run_jobs"]

PROVENANCE = "provenance.json"


class IngestError(UMDError):
    """Some studies could not be ingested; `.report` says which and why."""

    def __init__(self, message: str, report: IngestReport) -> None:
        self.report = report
        super().__init__(message)


@dataclass(frozen=True)
class IngestOptions:
    """Settings of an ingest job.

    Attributes:
        name, version: the release's name and data version.
        secret: key of the pseudonyms (default: a new random key, kept while the job runs). Pass the
            same key to give the same people the same ids in later runs.
        mapping_path: where to write identity -> subject id (CSV); None writes no mapping.
        splits_path: CSV ``subject,split`` (subject = identity or pseudonym) to assign splits;
            others are placed by keyed hash (60/20/20).
        workers: processes converting studies in parallel.
        skip_failed: finish the release without the studies that failed (listed in the report);
            by default a failed study stops the release from being finalized.
        allow_unlabelled: write an empty label map for a study without labels instead of failing.
        overlap: policy for voxels claimed by two organs (see `umd_dataset.harmonize`).
        unknown, drop, aliases: how labels are harmonized (see `umd_dataset.harmonize.HarmonizeOptions`),
            e.g. ``drop=("tumor",)`` for a dataset that also labels lesions.
        mri_contrasts: preference order of MR contrasts when a study has several.
        suv_overrides: identity or PatientID -> {weight_kg, injected_dose_bq, half_life_s}.
    """

    name: str = "UMD"
    version: str = "1.0.0"
    secret: str | None = None
    mapping_path: str | None = None
    splits_path: str | None = None
    workers: int = 1
    skip_failed: bool = False
    allow_unlabelled: bool = False
    overlap: str = "error"
    unknown: str = "error"
    drop: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    mri_contrasts: tuple[str, ...] = ("in_phase", "water", "t1", "", "opposed_phase", "fat", "t2")
    suv_overrides: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class ScanSource:
    """Where the voxels of one scan come from: DICOM files of one series, or one NIfTI file.

    Attributes:
        suv_factor: for a NIfTI PET, multiply by this to get SUV (None: the values are SUV already).
    """

    format: str  # "dicom" or "nifti"
    paths: tuple[str, ...]
    description: str = ""
    suv_factor: float | None = None


@dataclass(frozen=True)
class LabelSource:
    """Where the labels of a study come from, and on which scan they were drawn.

    Attributes:
        format: ``dicom_seg``, ``label_map`` (a multi-label NIfTI) or ``masks`` (a folder).
        source: the source table of a label map or of mask names (None: free text, or canonical
            ids when `format` is ``label_map`` and source is ``"umd"``).
        drawn_on: the scan key the labels lie on (``ct``, ``mri`` or ``pet``).
    """

    format: str
    path: str
    source: str | None = None
    drawn_on: str = "structural"
    more: tuple[str, ...] = ()  # further instances of a DICOM SEG series stored as several files


@dataclass(frozen=True)
class StudyJob:
    """One study to write: its pseudonymous subject, kind, scan sources, labels and the choices made."""

    subject: str
    study: str
    scans: Mapping[str, ScanSource]
    labels: LabelSource | None
    choices: tuple[str, ...] = ()
    suv_overrides: Mapping[str, float] = field(default_factory=dict)


@dataclass
class IngestReport:
    """What an ingest run did: studies written, left out, failed; files skipped or unreadable."""

    written: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    file_problems: list[str] = field(default_factory=list)
    skipped_files: int = 0

    def __str__(self) -> str:
        lines = [f"studies written: {len(self.written)} (kept from an earlier run: {len(self.resumed)})"]
        lines += [f"failed: {key}: {why}" for key, why in self.failed.items()]
        lines += [f"left out: {what}" for what in self.left_out]
        lines += [f"unusable file: {what}" for what in self.file_problems]
        if self.skipped_files:
            lines.append(f"non-DICOM files skipped: {self.skipped_files}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# one study


def _read_scan(source: ScanSource, scan: str, overrides: Mapping[str, float], where: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(values, affine, record) of one scan, in the units of the release (HU, SUV, MR units)."""
    record: dict = {"format": source.format, "series": source.description}
    if source.format == "nifti":
        import nibabel as nib

        image = nib.load(source.paths[0])
        values = np.asanyarray(image.dataobj)
        if values.ndim != 3:
            raise UMDError(f"{source.paths[0]}: a scan must be a 3D volume, got shape {values.shape}.")
        affine = image.affine
        if scan == "pet" and source.suv_factor is not None:
            values = values * source.suv_factor
            record["suv"] = {"factor": source.suv_factor, "supplied": ["suv_factor"]}
    else:
        from umd_dataset.ingest.dicom import assemble
        from umd_dataset.ingest.suv import apply_suv, suv_factor

        volume = assemble(source.paths)
        values, affine = volume.array, volume.affine
        record["slices"] = int(values.shape[2])
        record["notes"] = volume.notes
        if scan == "pet":
            suv = suv_factor(volume.headers, where=where, **dict(overrides))
            values = apply_suv(values, suv)
            start, reference = np.datetime64(suv.injection_time or "NaT"), np.datetime64(suv.reference_time or "NaT")
            record["suv"] = {  # no dates: they identify a person; elapsed time is enough to check the decay
                "factor": suv.factor, "weight_kg": suv.weight_kg, "injected_dose_bq": suv.injected_dose_bq,
                "decayed_dose_bq": suv.decayed_dose_bq, "half_life_s": suv.half_life_s,
                "uptake_s": float((reference - start) / np.timedelta64(1, "s")) if suv.injection_time else None,
                "units": suv.units, "decay_correction": suv.decay_correction, "supplied": suv.supplied, "notes": suv.notes,
                "per_slice": suv.slice_factors is not None,
            }
    return _store_dtype(np.asarray(values), scan), np.asarray(affine, dtype=np.float64), record


def _store_dtype(values: np.ndarray, scan: str) -> np.ndarray:
    if scan == "pet":
        return values.astype(np.float32)
    integral = np.issubdtype(values.dtype, np.integer) or np.array_equal(values, np.rint(values))
    if integral and values.size and values.min() >= -32768 and values.max() <= 32767:
        return values.astype(np.int16)
    return values.astype(np.float32)


def _read_labels(labels: LabelSource, target: Geometry, settings: IngestOptions):
    from umd_dataset.harmonize import HarmonizeOptions, harmonize, harmonize_label_map

    options = HarmonizeOptions(overlap=settings.overlap, unknown=settings.unknown, drop=tuple(settings.drop), aliases=dict(settings.aliases))
    if labels.format == "nnunet":  # dataset.json label names, resolved as free text
        import nibabel as nib

        image = nib.load(labels.path)
        names = {int(k): v for k, v in json.loads(labels.source).items()}
        return harmonize_label_map(np.asanyarray(image.dataobj), image.affine, names=names, target=target, options=options, where=labels.path)
    if labels.format == "dicom_seg" and labels.more:
        return _merge_seg_instances([harmonize(p, target=target, options=options) for p in (labels.path, *labels.more)])
    if labels.format == "label_map" and labels.source == "umd":
        import nibabel as nib

        image = nib.load(labels.path)
        names = {o.id: o.slug for o in load_schema()}
        return harmonize_label_map(np.asanyarray(image.dataobj), image.affine, names=names, target=target, options=options, where=labels.path)
    return harmonize(labels.path, labels.source, target=target, options=options)


def _merge_seg_instances(parts: list):
    """One label map from the instances of a SEG series (each holding some of the organs);
    a voxel claimed by two instances with different organs is an error naming both files."""
    from umd_dataset.errors import LabelOverlapError

    merged = parts[0].labels.copy()
    provenance = parts[0].provenance
    for part in parts[1:]:
        clash = (merged != 0) & (part.labels != 0) & (merged != part.labels)
        if clash.any():
            raise LabelOverlapError(
                f"SEG instances {provenance.inputs[0]} and {part.provenance.inputs[0]} give {int(clash.sum())} voxels to different organs."
            )
        merged[merged == 0] = part.labels[merged == 0]
        provenance.inputs += part.provenance.inputs
        provenance.labels += part.provenance.labels
        provenance.notes += part.provenance.notes
    counts = np.bincount(merged.ravel(), minlength=len(load_schema()) + 1)
    provenance.organ_voxels = {o.slug: int(counts[o.id]) for o in load_schema() if counts[o.id] > 0}
    provenance.absent = [a for a in provenance.absent if a not in provenance.organ_voxels]
    parts[0].labels = merged
    return parts[0]


def run_study(root: str, job: StudyJob, options: IngestOptions) -> list:
    """Write the scans, label maps and provenance of one study; return its manifest rows."""
    from umd_dataset.release import scan_paths, write_scan
    from umd_dataset.resample import carry_labels

    schema = load_schema()
    slugs = {o.id: o.slug for o in schema}
    scans = modalities().study(job.study).scans
    structural = next(s for s in scans if s != "pet")
    where = f"{job.subject}/{job.study}"
    volumes = {scan: _read_scan(job.scans[scan], scan, job.suv_overrides, f"{where}/{scan}") for scan in scans}
    geometries = {scan: Geometry(v[0].shape, v[1]) for scan, v in volumes.items()}
    provenance: dict = {"subject": job.subject, "study": job.study, "choices": list(job.choices), "scans": {}}
    drawn_on = None
    if job.labels is not None:
        drawn_on = structural if job.labels.drawn_on in ("structural", structural) else "pet"
        harmonized = _read_labels(job.labels, geometries[drawn_on], options)
        label_maps = {drawn_on: harmonized.labels}
        provenance["labels"] = {"format": job.labels.format, "drawn_on": drawn_on, **harmonized.provenance.to_dict()}
        provenance["labels"]["inputs"] = [Path(p).name for p in provenance["labels"]["inputs"]]
        for label in provenance["labels"]["labels"]:
            label["file"] = Path(label["file"]).name if label.get("file") else None
    elif options.allow_unlabelled:
        label_maps = {}
        provenance["labels"] = {"format": "none", "note": "no labels for this study: empty label maps (allow_unlabelled)"}
    else:
        raise UMDError(f"{where}: no labels (no DICOM SEG in the study, no label file given). Pass allow_unlabelled to write empty label maps.")
    records = []
    for scan in scans:
        image, affine, record = volumes[scan]
        if drawn_on is None:
            labels = np.zeros(image.shape, dtype=np.uint8)
        elif scan == drawn_on:
            labels = label_maps[drawn_on]
        else:
            carried = carry_labels(label_maps[drawn_on], geometries[drawn_on], geometries[scan], slugs)
            labels = carried.labels
            record["labels"] = carried.notes()
        records.append(write_scan(Path(root), job.subject, job.study, scan, image, labels, affine, schema))
        provenance["scans"][scan] = record
    folder = Path(scan_paths(job.subject, job.study, scans[0])[0]).parent
    write_json(Path(root) / folder / PROVENANCE, provenance, Path(root) / ".umd-partial" / "tmp")
    return records


# ----------------------------------------------------------------------------------------------
# many studies


def run_jobs(
    root: str | os.PathLike,
    jobs: list[StudyJob],
    options: IngestOptions,
    *,
    job_identity: dict,
    identities: Mapping[str, str],
    report: IngestReport,
    progress: bool = False,
):
    """Run study jobs into a release folder (resumable), finalize it and verify it.

    Args:
        job_identity: settings that identify this ingest job (resuming needs the same ones).
        identities: identity -> subject id, written to `options.mapping_path` if given.

    Raises:
        IngestError: studies failed (and `options.skip_failed` is off); the release is left
            unfinished, and running the same command again retries only what is missing.
    """
    from umd_dataset.index import open_release
    from umd_dataset.ingest.pseudonym import assign_splits, write_mapping
    from umd_dataset.release import ReleaseWriter

    root = Path(root)
    writer = ReleaseWriter(root, job=job_identity, schema=load_schema())
    done = writer.finished
    todo = [job for job in jobs if (job.subject, job.study) not in done]
    planned = {(j.subject, j.study) for j in jobs}
    report.resumed = sorted(f"{s}/{st}" for s, st in done if (s, st) in planned)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="ingest", unit="study")

    def finish(job: StudyJob, result) -> None:
        key = f"{job.subject}/{job.study}"
        if isinstance(result, BaseException):
            report.failed[key] = f"{type(result).__name__}: {result}"
            shutil.rmtree(root / "subjects" / job.subject / job.study, ignore_errors=True)  # files of no manifest row
        else:
            writer.record_study(result)
            report.written.append(key)
        if bar is not None:
            bar.update(1)

    if options.workers <= 1:
        for job in todo:
            try:
                result = run_study(str(root), job, options)
            except Exception as error:  # noqa: BLE001 - any failure of one study is recorded, as in the pool branch
                result = error
            finish(job, result)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(options.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_study, str(root), job, options): job for job in todo}
            for future in as_completed(futures):
                error = future.exception()
                finish(futures[future], error if error is not None else future.result())
    if bar is not None:
        bar.close()
    if options.mapping_path:
        write_mapping(options.mapping_path, identities)
    if report.failed and not options.skip_failed:
        raise IngestError(
            f"{len(report.failed)} of {len(jobs)} studies failed; the release is not finalized (finished studies are kept: "
            f"fix the input and run the same command again, or pass skip_failed to finish without them).\n{report}",
            report,
        )
    written = {(s, st) for s, st in writer.finished}
    expected = [(j.subject, j.study) for j in jobs if f"{j.subject}/{j.study}" not in report.failed]
    subjects = sorted({s for s, _ in written})
    given = _read_splits(options.splits_path, identities)
    secret = job_identity.get("secret", "")
    splits = assign_splits(subjects, secret, given=given)
    writer.finalize(
        name=options.name,
        version=options.version,
        splits=splits,
        expected=expected,
        description="Ingested with umd_dataset.",
    )
    release = open_release(root)
    release.verify().raise_if_failed()
    return release


def _read_splits(path: str | None, identities: Mapping[str, str]) -> dict[str, str]:
    if not path:
        return {}
    given = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            subject = identities.get(row["subject"], row["subject"])
            given[subject] = row["split"].strip()
    return given


def previous_secret(root: str | os.PathLike) -> str | None:
    """The pseudonym key of an interrupted job in `root`, so that resuming keeps the same ids."""
    path = Path(root) / ".umd-partial" / "job.json"
    return read_json(path).get("secret") if path.is_file() else None
