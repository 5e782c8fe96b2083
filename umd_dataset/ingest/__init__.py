"""The ingest part: raw PET/CT and PET/MRI studies -> a verified release (`ingest`).

    >>> from umd_dataset.ingest import ingest                      # doctest: +SKIP
    >>> release, report = ingest("raw_dicom/", "UMD-local")          # doctest: +SKIP

- `dicom`: DICOM series discovery, classification and volume assembly;
- `suv`: SUV (body weight) from PET headers;
- `plan`: each input format (DICOM tree, NIfTI mapping, nnU-Net raw folder) -> study jobs;
- `options`: the options, study jobs and report;
- `runner`: study jobs -> the files of a release, resumably;
- `pseudonym`: keyed subject pseudonyms and split assignment.
"""

from __future__ import annotations

import os
from pathlib import Path

from umd_dataset.errors import IngestError, IngestInputError, InputNotFoundError, check_choice, spell
from umd_dataset.ingest.options import IngestOptions, IngestReport

__all__ = ["ingest", "IngestOptions", "IngestReport", "IngestError", "INPUT_FORMATS"]

INPUT_FORMATS = ("auto", "dicom", "nifti", "nnunet")


def ingest(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    options: IngestOptions | None = None,
    input_format: str = "auto",
    keep_ids: bool = False,
    progress: bool = False,
):
    """Turn raw studies into a release at `out`, resumably, and verify it.

    Args:
        source: a DICOM folder tree, a CSV mapping of NIfTI files, or an nnU-Net raw folder.
        out: the release folder (new, empty, or an interrupted ingest of the same input).
        options: `IngestOptions`.
        input_format: ``dicom``, ``nifti``, ``nnunet``, or ``auto`` (by what `source` is).
        keep_ids: for NIfTI and nnU-Net inputs, keep their subject/case ids instead of pseudonyms.
        progress: show progress bars.

    Returns:
        (the opened `Release`, the `IngestReport`).

    Raises:
        InputNotFoundError: `source` does not exist.
        IngestInputError: no pseudonym key where pseudonyms are made (see `IngestOptions.secret`).
        IngestError: studies failed (their reasons in `.report`); finished ones are kept for a rerun.
    """
    from umd_dataset.ingest.plan import plan_dicom, plan_nifti, plan_nnunet
    from umd_dataset.ingest.pseudonym import PUBLIC_SPLIT_KEY, key_fingerprint, keyed_hash
    from umd_dataset.ingest.runner import run_jobs

    check_choice(input_format, INPUT_FORMATS, "input format")
    options = options or IngestOptions()
    source = Path(source)
    if not source.exists():
        raise InputNotFoundError(f"{source} does not exist: give a DICOM folder, a CSV mapping of NIfTI files or an nnU-Net raw folder.")
    if input_format == "auto":
        if source.is_file() and source.suffix.lower() == ".csv":
            input_format = "nifti"
        elif (source / "dataset.json").is_file():
            input_format = "nnunet"
        else:
            input_format = "dicom"
    pseudonyms = input_format == "dicom" or not keep_ids
    if pseudonyms and not options.secret:
        raise IngestInputError(
            f"Ingest makes pseudonyms, and needs their key: give it with {spell('secret=', '--secret KEY')} (or the environment "
            "variable UMD_PSEUDONYM_KEY). Keep the key: the same key resumes this job and gives the same people the same "
            "ids in later releases. It is never written or printed."
        )
    secret = options.secret or PUBLIC_SPLIT_KEY
    report = IngestReport()
    if input_format == "dicom":
        from umd_dataset.ingest.dicom import discover

        discovery = discover(source, progress=progress)
        for series in discovery.series:
            first = series.first
            report.redact.add(first.patient_id, first.patient_name, first.birth_date)
        jobs, identities = plan_dicom(discovery, options, secret, report)
    elif input_format == "nifti":
        jobs, identities = plan_nifti(source, options, secret, keep_ids)
    else:
        jobs, identities = plan_nnunet(source, options, secret, keep_ids)
    if pseudonyms and input_format != "dicom":
        report.redact.add(*identities)  # the input's own subject ids
    if not jobs:
        raise IngestError(f"No study to ingest in {source}.\n{report}", report)
    identity = {"ingest": input_format, "input": keyed_hash(secret, str(source.resolve())), "key_fingerprint": key_fingerprint(secret),
                "keep_ids": keep_ids, "options": options.settings(secret)}
    release = run_jobs(out, jobs, options, job_identity=identity, identities=identities, report=report, progress=progress,
                       secret=secret)
    return release, report
