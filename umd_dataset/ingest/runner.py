"""Running ingest: study jobs (from any input format) -> the files of a verified release.

Every input format is planned into `StudyJob`s (what to read for each scan and its labels); one
function, `run_study`, turns a job into the files of one study, so the formats share the volume
handling, SUV, harmonization onto the schema, carrying the label map onto the PET grid and the
per-study provenance record. `run_jobs` runs the studies (in parallel if asked) through the
resumable release writer: finished studies are kept, failed ones reported, and the descriptor is
written last.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from umd_dataset.errors import IngestError, IngestInputError, LabelOverlapError, marked_message, spell
from umd_dataset.io.files import write_json
from umd_dataset.io.geometry import Geometry
from umd_dataset.io.jobs import Progress, run_items
from umd_dataset.io.nifti import load_nifti
from umd_dataset.labels.carry import carry_labels
from umd_dataset.labels.harmonize import Harmonized, harmonize, harmonize_label_map, harmonize_masks
from umd_dataset.release.format import PROVENANCE, scan_paths
from umd_dataset.release.index import Release, open_release
from umd_dataset.release.writer import ReleaseWriter, scratch_dir, write_scan
from umd_dataset.schema.organs import load_schema
from umd_dataset.schema.studies import modalities
from umd_dataset.ingest.pseudonym import Redactor
from umd_dataset.ingest.options import (
    IngestOptions,
    IngestReport,
    LabelInput,
    ScanInput,
    SchemaIds,
    SourceTableNames,
    StudyJob,
)

__all__ = ["run_study", "run_jobs"]


# ----------------------------------------------------------------------------------------------
# one study


def _read_scan(source: ScanInput, scan: str, overrides: Mapping[str, float], where: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(values, affine, record) of one scan, in the units of the release (HU, SUV, MR units)."""
    functional = modalities().scan(scan).functional
    record: dict = {"format": source.format, "series": source.description}
    if source.format == "nifti":
        image = load_nifti(source.paths[0])
        values = np.asanyarray(image.dataobj)
        if values.ndim != 3:
            raise IngestInputError(f"{source.paths[0]}: a scan must be a 3D volume, got shape {values.shape}.")
        affine = image.affine
        if functional and source.suv_factor is not None:
            values = values * source.suv_factor
            record["suv"] = {"factor": source.suv_factor, "supplied": ["suv_factor"]}
    else:
        from umd_dataset.ingest.dicom import assemble
        from umd_dataset.ingest.suv import apply_suv, suv_factor

        volume = assemble(source.paths)
        values, affine = volume.array, volume.affine
        record["slices"] = int(values.shape[2])
        record["notes"] = volume.notes
        if functional:
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
    return _store_dtype(np.asarray(values), functional), np.asarray(affine, dtype=np.float64), record


def _store_dtype(values: np.ndarray, functional: bool) -> np.ndarray:
    """Functional images (SUV) as float32; structural ones as int16 when every value is an integer that fits."""
    if functional:
        return values.astype(np.float32)
    integral = np.issubdtype(values.dtype, np.integer) or np.array_equal(values, np.rint(values))
    if integral and values.size and values.min() >= -32768 and values.max() <= 32767:
        return values.astype(np.int16)
    return values.astype(np.float32)


def _read_labels(labels: LabelInput, target: Geometry, options: IngestOptions) -> Harmonized:
    """The study's labels harmonized onto the schema, on the grid of the scan they were drawn on."""
    settings = options.labels
    if labels.format == "dicom_seg":
        parts = [harmonize(path, target=target, options=settings) for path in labels.paths]
        return parts[0] if len(parts) == 1 else _merge_seg_instances(parts)
    names = labels.names
    if labels.format == "masks":
        source, version = (names.key, names.version) if isinstance(names, SourceTableNames) else (None, None)
        return harmonize_masks(labels.paths[0], source, source_version=version, target=target, options=settings)
    if isinstance(names, SourceTableNames):  # the file's own names (TotalSegmentator --ml) are checked too
        return harmonize(labels.paths[0], names.key, source_version=names.version, target=target, options=settings)
    given = {o.id: o.slug for o in load_schema()} if isinstance(names, SchemaIds) else names.as_dict()
    image = load_nifti(labels.paths[0])  # a label map's names are never free text (LabelInput refuses it)
    return harmonize_label_map(np.asanyarray(image.dataobj), image.affine, names=given, target=target, options=settings,
                               where=labels.paths[0])


def _merge_seg_instances(parts: list[Harmonized]) -> Harmonized:
    """One label map from the instances of a SEG series (each holding some of the organs);
    a voxel claimed by two instances with different organs is an error naming both files."""
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
    provenance.organ_voxels = load_schema().count_voxels(merged).present
    provenance.absent = [a for a in provenance.absent if a not in provenance.organ_voxels]
    parts[0].labels = merged
    return parts[0]


def _redacted(value, redact: Redactor):
    """A JSON-like value with every string passed through `redact`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v, redact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v, redact) for v in value]
    return value


def run_study(root: str, job: StudyJob, options: IngestOptions, redact: Redactor | None = None) -> StudyResult:
    """Write the scans, label maps and provenance of one study; return its manifest rows and notes.

    The provenance record holds no identifier of the input (`redact` removes those read from the
    headers; file paths are reduced to file names).

    Raises:
        IngestInputError: the study has no labels (and `IngestOptions.allow_unlabelled` is off),
            or a scan is not a 3D volume; or the errors of assembly, SUV and harmonization.
    """
    schema = load_schema()
    spec = modalities().study(job.study)
    where = f"{job.subject}/{job.study}"
    volumes = {scan: _read_scan(job.scans[scan], scan, job.suv_overrides, f"{where}/{scan}") for scan in spec.scans}
    geometries = {scan: Geometry(v[0].shape, v[1]) for scan, v in volumes.items()}
    provenance: dict = {"subject": job.subject, "study": job.study, "choices": list(job.choices), "scans": {}}
    drawn_on = None
    if job.labels is not None:
        drawn_on = job.labels.drawn_on
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
        raise IngestInputError(
            f"{where}: no labels (no DICOM SEG in the study, no label file given). Pass allow_unlabelled to write empty label maps."
        )
    records = []
    for scan in spec.scans:
        image, affine, record = volumes[scan]
        if drawn_on is None:
            labels = np.zeros(image.shape, dtype=np.uint8)
        elif scan == drawn_on:
            labels = label_maps[drawn_on]
        else:
            carried = carry_labels(label_maps[drawn_on], geometries[drawn_on], geometries[scan], schema)
            labels = carried.labels
            record["labels"] = carried.notes()
        records.append(write_scan(Path(root), job.subject, job.study, scan, image, labels, affine, schema))
        provenance["scans"][scan] = record
    folder = Path(scan_paths(job.subject, job.study, spec.scans[0])[0]).parent
    write_json(Path(root) / folder / PROVENANCE, _redacted(provenance, redact or Redactor()), scratch_dir(root))
    return StudyResult(records, tuple(_notes(provenance)))


def _notes(provenance: dict) -> list[str]:
    """The notes of a study's provenance a user should see at the end of the run (SUV, assembly)."""
    where = f"{provenance['subject']}/{provenance['study']}"
    notes = []
    for scan, record in provenance["scans"].items():
        notes += [f"{where}/{scan}: {note}" for note in record.get("notes", [])]
        notes += [f"{where}/{scan}: SUV: {note}" for note in (record.get("suv") or {}).get("notes", [])]
    return notes


@dataclass(frozen=True)
class StudyResult:
    """What `run_study` wrote: the manifest rows of its scans, and the notes to show the user."""

    records: list
    notes: tuple[str, ...] = ()


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
    secret: str,
    progress: bool = False,
) -> Release:
    """Run study jobs into a release folder (resumable), finalize it and verify it.

    Args:
        job_identity: settings that identify this ingest job (resuming needs the same ones); it
            holds no key and no identifier (see `umd_dataset.ingest.pseudonym`).
        identities: identity -> subject id, written to `options.mapping_path` if given.
        secret: the pseudonym key, for the keyed split assignment.

    Raises:
        IngestError: studies failed (and `options.skip_failed` is off); the release is left
            unfinished, and running the same command again retries only what is missing.
    """
    from umd_dataset.ingest.pseudonym import assign_splits, write_mapping

    root = Path(root)
    with ReleaseWriter(root, job=job_identity, schema=load_schema(), private=("key_fingerprint", "input"),
                       fix="use another output folder to start over.") as writer:
        done = writer.finished
        todo = [job for job in jobs if (job.subject, job.study) not in done]
        planned = {(j.subject, j.study) for j in jobs}
        report.resumed = sorted(f"{s}/{st}" for s, st in done if (s, st) in planned)
        with Progress(len(jobs), initial=len(jobs) - len(todo), desc="ingest", unit="study", enabled=progress) as bar:

            def finish(job: StudyJob, result) -> None:
                key = f"{job.subject}/{job.study}"
                if isinstance(result, BaseException):
                    report.failed[key] = f"{type(result).__name__}: {marked_message(result)}"  # spelled when printed
                    shutil.rmtree(root / "subjects" / job.subject / job.study, ignore_errors=True)  # files of no manifest row
                else:
                    writer.record_study(result.records)
                    report.written.append(key)
                    report.notes += list(result.notes)
                bar.update()

            run_items(todo, partial(run_study, str(root), options=options, redact=report.redact), finish, workers=options.workers,
                      catch=True)
        if options.mapping_path:
            write_mapping(options.mapping_path, identities)
        if report.failed and not options.skip_failed:
            raise IngestError(
                f"{len(report.failed)} of {len(jobs)} studies failed; the release is not finalized (finished studies are kept: "
                f"fix the input and run the same command again, or pass {spell('skip_failed=True', '--skip-failed')} to finish without them).\n{report.redact(report.marked())}",
                report,
            )
        written = {(s, st) for s, st in writer.finished}
        expected = [(j.subject, j.study) for j in jobs if f"{j.subject}/{j.study}" not in report.failed]
        subjects = sorted({s for s, _ in written})
        given = _read_splits(options.splits_path, identities)
        splits = assign_splits(subjects, secret, given=given)
        writer.finalize(name=options.name, version=options.version, splits=splits, expected=expected,
                        description="Ingested with umd_dataset.")
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
