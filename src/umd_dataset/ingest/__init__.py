"""Ingest: raw PET/CT and PET/MRI studies -> a verified release.

    >>> from umd_dataset.ingest import ingest                      # doctest: +SKIP
    >>> release, report = ingest("raw_dicom/", "UMD-local")          # doctest: +SKIP

Inputs: a DICOM tree (series discovered, classified and paired by frame of reference, labels
from DICOM SEG), a CSV mapping of NIfTI files (`plan_nifti`), or an nnU-Net raw folder
(`plan_nnunet`). See `umd_dataset.ingest.runner` for the options and the report.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from umd_dataset.ingest.runner import IngestError, IngestOptions, IngestReport

__all__ = ["ingest", "IngestOptions", "IngestReport", "IngestError"]


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
        IngestError: studies failed (their reasons in `.report`); finished ones are kept for a rerun.
    """
    from umd_dataset.ingest.pseudonym import new_secret
    from umd_dataset.ingest.plan import plan_dicom, plan_nifti, plan_nnunet
    from umd_dataset.ingest.runner import previous_secret, run_jobs

    options = options or IngestOptions()
    source = Path(source)
    if input_format == "auto":
        if source.is_file() and source.suffix.lower() == ".csv":
            input_format = "nifti"
        elif (source / "dataset.json").is_file():
            input_format = "nnunet"
        else:
            input_format = "dicom"
    secret = options.secret or previous_secret(out) or new_secret()
    report = IngestReport()
    if input_format == "dicom":
        from umd_dataset.ingest.dicom import discover

        jobs, identities = plan_dicom(discover(source, progress=progress), options, secret, report)
    elif input_format == "nifti":
        jobs, identities = plan_nifti(source, options, secret, keep_ids)
    elif input_format == "nnunet":
        jobs, identities = plan_nnunet(source, options, secret, keep_ids)
    else:
        raise ValueError(f"input_format must be dicom, nifti, nnunet or auto, got {input_format!r}")
    if not jobs:
        raise IngestError(f"No study to ingest in {source}.\n{report}", report)
    settings = {k: v for k, v in asdict(options).items() if k not in ("secret", "mapping_path", "workers", "skip_failed")}
    identity = {"ingest": input_format, "input": str(source.resolve()), "secret": secret, "keep_ids": keep_ids, "options": settings}
    release = run_jobs(out, jobs, options, job_identity=identity, identities=identities, report=report, progress=progress)
    return release, report
