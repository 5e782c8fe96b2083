"""Verifying a release: every file checked against its manifest row, all problems reported at once.

This module does not import the index (`umd_dataset.release.index`): `Release.verify` calls it
with the opened release, so the arrow runs one way.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from umd_dataset.errors import UMDError, UnsafePathError, VerificationError
from umd_dataset.io.files import sha256_file
from umd_dataset.io.jobs import track
from umd_dataset.io.nifti import read_nifti, read_nifti_header
from umd_dataset.release.format import (
    CROISSANT,
    DESCRIPTOR,
    LABELS,
    MANIFEST,
    PARTIAL_DIR,
    PROVENANCE,
    SPLITS,
    ScanRecord,
    safe_relative_path,
)

__all__ = ["Problem", "VerificationReport", "verify_release"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file of a release.

    Attributes:
        path: path relative to the release root.
        kind: ``missing``, ``unsafe_path``, ``checksum``, ``size``, ``unreadable``, ``geometry``,
            ``dtype``, ``labels``, ``stale`` (a ``croissant.json`` that describes other files),
            ``orphan`` or ``leftover``.
        message: what was expected, what was found, and what to do.
    """

    path: str
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: [{self.kind}] {self.message}"


@dataclass
class VerificationReport:
    """Every problem `verify_release` found; empty when the release is intact."""

    root: Path
    files_checked: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.ok:
            return f"{self.root}: {self.files_checked} files verified, no problem found."
        lines = [f"{self.root}: {len(self.problems)} problem(s) in {self.files_checked} files checked:"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise VerificationError(self)


def verify_release(
    release, *, deep: bool = False, workers: int | None = None, progress: bool = False
) -> VerificationReport:
    """Check every image and label map of a release against the manifest.

    For each file: it exists and stays inside the release root; its size and sha256 match; its
    NIfTI header has the manifest's shape, affine and dtype (label maps: the scan's shape and
    affine). With `deep`, voxels are read too: label values are organ ids of the schema, the
    organs present and their voxel counts match the manifest, and image voxels are finite.

    Args:
        release: an opened `umd_dataset.release.index.Release`.
        deep: also decode every volume (slower: reads and decompresses all data).
        workers: threads for hashing and decoding (default: up to 8, by CPU count).
        progress: show a progress bar.

    The files the descriptor lists (``manifest.parquet``, ``labels.json``, ``splits.json`` and, in
    releases written since they exist, ``README.md`` and ``croissant.json``) are hashed again
    against ``release.json``, and every file ``croissant.json`` names must have the sha256 it
    records there. Files that no manifest row names (besides those, ingest's per-study
    ``provenance.json`` and the ``.umd-cache`` patch cache) are listed as orphans, and a job
    folder left behind by a killed writer as leftover.

    Returns:
        A `VerificationReport` with all problems found; it never stops at the first one.
    """
    jobs = [(record, which) for record in release.scans for which in ("image", "label")]
    workers = workers or min(8, (os.cpu_count() or 1) + 2)

    def check(job: tuple[ScanRecord, str]) -> list[Problem]:
        record, which = job
        return _check_file(release, record, which, deep)

    problems: list[Problem] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for found in track(pool.map(check, jobs), total=len(jobs), desc="verify", unit="file", enabled=progress):
            problems.extend(found)
    index = _index_files(release)
    problems = index + problems + _unlisted(release)
    return VerificationReport(root=release.root, files_checked=len(jobs) + len(release.info.files), problems=problems)


#: Files and folders of a release that no manifest row names, by design: the index files (and
#: whatever else the descriptor lists with its sha256), the per-study provenance records of ingest,
#: and the patch cache (derived data).
_INDEX_FILES = (DESCRIPTOR, MANIFEST, LABELS, SPLITS)
_DERIVED = (".umd-cache",)


def _index_files(release) -> list[Problem]:
    """The files the descriptor lists, against their sha256 there; ``croissant.json`` against the
    files it names."""
    root = Path(release.root)
    problems = []
    for name, expected in sorted(release.info.files.items()):
        try:
            path = safe_relative_path(root, name)
        except UnsafePathError as error:
            problems.append(Problem(name, "unsafe_path", str(error)))
            continue
        if not path.is_file():
            problems.append(Problem(name, "missing", f"{DESCRIPTOR} lists it. Restore it from the original release."))
        elif (digest := sha256_file(path)) != expected:
            problems.append(Problem(name, "checksum", f"sha256 {digest} != {DESCRIPTOR} {expected}: the file changed "
                                    "or is corrupt. Restore it from the original release."))
    if CROISSANT in release.info.files and (root / CROISSANT).is_file():
        from umd_dataset.release.croissant import croissant_problems

        problems += [Problem(path, "stale", message + " Restore the release's croissant.json, or write it again with "
                             "umd_dataset.release.writer.write_metadata(release).") for path, message in croissant_problems(root)]
    return problems


def _unlisted(release) -> list[Problem]:
    """Files that no manifest row names (orphans), and a job folder left behind by a killed writer."""
    root = Path(release.root)
    named = {p for r in release.scans for p in (r.image, r.label)}
    problems = []
    if (root / PARTIAL_DIR).exists():
        problems.append(Problem(PARTIAL_DIR, "leftover", "the job folder of an interrupted or killed writer is still here; "
                                "the release is complete (release.json exists): remove the folder."))
    for folder, dirs, files in os.walk(root):
        relative_folder = Path(folder).relative_to(root).as_posix()
        if relative_folder == ".":
            dirs[:] = [d for d in dirs if d not in _DERIVED and d != PARTIAL_DIR]
            files = [f for f in files if f not in _INDEX_FILES and f not in release.info.files]
        for name in files:
            relative = name if relative_folder == "." else f"{relative_folder}/{name}"
            if relative in named or (name == PROVENANCE and relative.startswith("subjects/")):
                continue
            problems.append(Problem(relative, "orphan", "no manifest row names this file: remove it, or restore the manifest that lists it."))
    return problems


def _check_file(release, record: ScanRecord, which: str, deep: bool) -> list[Problem]:
    relative = record.image if which == "image" else record.label
    what = f"{which} of {record.key}"
    try:
        path = release.path(relative)
    except UnsafePathError as error:
        return [Problem(relative, "unsafe_path", str(error))]
    if not path.is_file():
        return [Problem(relative, "missing", f"the {what} is missing. Restore it from the original release.")]
    problems = []
    expected_size = record.image_bytes if which == "image" else record.label_bytes
    expected_sha = record.image_sha256 if which == "image" else record.label_sha256
    size = path.stat().st_size
    if size != expected_size:
        problems.append(Problem(relative, "size", f"{size} bytes, manifest says {expected_size}."))
    digest = sha256_file(path)
    if digest != expected_sha:
        problems.append(
            Problem(relative, "checksum", f"sha256 {digest} != manifest {expected_sha}: the file changed or is corrupt.")
        )
    try:
        shape, affine, dtype = read_nifti_header(path)
    except Exception as error:  # nibabel raises many types for damaged files; report, don't stop
        return problems + [Problem(relative, "unreadable", f"not a readable NIfTI file: {error}")]
    if shape != record.shape:
        problems.append(Problem(relative, "geometry", f"shape {shape}, manifest says {record.shape}."))
    if not np.allclose(affine, record.affine_matrix, atol=1e-4):
        problems.append(
            Problem(relative, "geometry", f"affine {affine.round(4).tolist()} != manifest {record.affine_matrix.round(4).tolist()}.")
        )
    expected_dtype = record.dtype if which == "image" else record.label_dtype
    if dtype != expected_dtype:
        problems.append(Problem(relative, "dtype", f"stored dtype {dtype}, manifest says {expected_dtype}."))
    if deep and not problems:
        problems += _check_voxels(release, record, which, path, relative)
    return problems


def _check_voxels(release, record: ScanRecord, which: str, path: Path, relative: str) -> list[Problem]:
    try:
        array, _ = read_nifti(path)
    except (OSError, ValueError, EOFError, UMDError) as error:
        return [Problem(relative, "unreadable", f"voxels cannot be decoded: {error}")]
    if which == "image":
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            return [Problem(relative, "labels", f"{bad} voxels are NaN or infinite.")]
        return []
    schema = release.schema
    try:
        counts = schema.count_voxels(array)
    except UMDError as error:  # not an integer array
        return [Problem(relative, "labels", str(error))]
    problems = []
    if counts.invalid:
        problems.append(Problem(relative, "labels", f"values {list(counts.invalid)} are not organ ids of {schema.key}."))
    present = counts.present
    expected = record.organ_voxel_counts
    if present != expected:
        problems.append(Problem(relative, "labels", f"organ voxel counts {present} != manifest {expected}."))
    return problems
