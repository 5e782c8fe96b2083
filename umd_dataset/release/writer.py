"""Writing a release: one scan and its label map at a time (`write_scan`), resumably (`ReleaseWriter`),
with the descriptor written last so that an interrupted folder never opens as a release.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from umd_dataset._version import __version__
from umd_dataset.errors import OutputExistsError, ReleaseFormatError
from umd_dataset.io.files import atomic_path, read_json, sha256_file, write_json
from umd_dataset.io.geometry import spacing_from_affine
from umd_dataset.io.jobs import FolderLock, JobFolder
from umd_dataset.io.nifti import write_nifti
from umd_dataset.release.format import (
    CROISSANT,
    DESCRIPTOR,
    FORMAT_VERSION,
    LABELS,
    MANIFEST,
    PARTIAL_DIR,
    README,
    SPLITS,
    ReleaseCounts,
    ReleaseInfo,
    ScanRecord,
    check_identifier,
    check_splits,
    manifest_schema,
    scan_paths,
)
from umd_dataset.schema.organs import LabelSchema
from umd_dataset.schema.studies import modalities

__all__ = ["ReleaseWriter", "write_scan", "scratch_dir", "write_metadata", "readme_text", "STOCK_DATASETS_MESSAGE"]


def scratch_dir(root: str | os.PathLike) -> Path:
    """The folder for the temporary files of atomic writes into a release being written."""
    return Path(root) / PARTIAL_DIR / "tmp"


def write_scan(
    root: Path,
    subject: str,
    study: str,
    scan: str,
    image: np.ndarray,
    label: np.ndarray,
    affine: np.ndarray,
    schema: LabelSchema,
) -> ScanRecord:
    """Write one scan and its label map into a release folder, atomically, and return its manifest row.

    Raises:
        ReleaseFormatError: bad identifiers, a label map on another grid, or label values outside
            the schema.
    """
    spec = modalities()
    check_identifier(subject, "subject id")
    if scan not in spec.study(study).scans:
        raise ReleaseFormatError(f"Study {study!r} holds scans {spec.study(study).scans}, not {scan!r}.")
    if image.ndim != 3 or image.shape != label.shape:
        raise ReleaseFormatError(
            f"{subject}/{study}/{scan}: image shape {image.shape} and label map shape {label.shape} must "
            "be equal and 3D: the label map must lie on the scan's own grid."
        )
    if label.dtype != np.uint8:
        raise ReleaseFormatError(f"{subject}/{study}/{scan}: label maps are stored as uint8, got {label.dtype}.")
    counts = schema.count_voxels(label)
    if counts.invalid:
        raise ReleaseFormatError(
            f"{subject}/{study}/{scan}: label values {list(counts.invalid)} are not organ ids of schema {schema.key} "
            f"(1..{len(schema)}); harmonize the label map first."
        )
    image_rel, label_rel = scan_paths(subject, study, scan)
    tmp_dir = scratch_dir(root)
    write_nifti(root / image_rel, image, affine, tmp_dir)
    write_nifti(root / label_rel, label, affine, tmp_dir)
    present = counts.present
    return ScanRecord(
        subject=subject,
        study=study,
        scan=scan,
        modality=spec.scan(scan).modality,
        image=image_rel,
        label=label_rel,
        shape=tuple(int(s) for s in image.shape),
        spacing_mm=spacing_from_affine(affine),
        affine=tuple(float(v) for v in np.asarray(affine, dtype=np.float64).ravel()),
        dtype=str(image.dtype),
        label_dtype=str(label.dtype),
        image_sha256=sha256_file(root / image_rel),
        label_sha256=sha256_file(root / label_rel),
        image_bytes=(root / image_rel).stat().st_size,
        label_bytes=(root / label_rel).stat().st_size,
        organs=tuple(present),
        organ_voxels=tuple(present.values()),
    )


class ReleaseWriter:
    """Writes a release folder so that an interrupted job can be resumed and is never mistaken
    for a complete release.

    While the job runs, the folder holds ``.umd-partial/`` (a `JobFolder`: the job's settings and
    one record per finished study); ``release.json`` is written last, by `finalize`, after the
    manifest. A second writer with the same `job` settings skips the finished studies; one with
    other settings is refused with the settings that differ.

    Args:
        root: the release folder (new, empty, or holding an interrupted job).
        job: the settings that identify the job.
        schema: the label schema of the label maps.
        overwrite: replace a complete release or an interrupted job with other settings.
        fix: how to start over, for messages (default: the Python argument).
        private: job settings never shown in messages.

    Raises:
        FolderBusyError: another process is writing `root`.
        OutputExistsError: `root` holds a complete release (without `overwrite`), or is a
            non-empty folder that is no release.
        JobMismatchError: `root` holds an interrupted job with other settings.

    The writer holds an exclusive lock on `root` until `finalize` or `close` (use it in a ``with``
    block), so a second writer of the same folder is refused at once.

    Example:
        >>> with ReleaseWriter(root, job={"seed": 0}, schema=load_schema()) as writer:  # doctest: +SKIP
        ...     if ("S1", "petct") not in writer.finished:
        ...         writer.record_study([write_scan(root, "S1", "petct", "ct", ...), ...])
        ...     writer.finalize(name="UMD", version="1.0.0", splits={"train": ["S1"]})
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        job: Mapping,
        schema: LabelSchema,
        overwrite: bool = False,
        fix: str = "pass overwrite=True to start over.",  # callers with a CLI flag spell it with errors.spell
        private: Iterable[str] = (),
    ) -> None:
        self.root = Path(root)
        self.schema = schema
        self.lock = FolderLock(self.root, "a release writer")  # before anything is read or written
        try:
            self._prepare(overwrite, fix)
            self.job = JobFolder(self.root / PARTIAL_DIR, job, what="job", fix=fix, private=private)
        except BaseException:
            self.lock.release()
            raise

    def _prepare(self, overwrite: bool, fix: str) -> None:
        root = self.root
        complete = (root / DESCRIPTOR).exists()
        partial = (root / PARTIAL_DIR).exists()
        if complete and not overwrite:
            raise OutputExistsError(f"{root} already holds a complete release. Choose another folder, or {fix}")
        if root.exists() and not (complete or partial) and any(root.iterdir()):
            raise OutputExistsError(
                f"{root} is a non-empty folder that is not a UMD release; refusing to write into it. "
                "Choose an empty or new folder."
            )
        if overwrite and (complete or partial):
            (root / DESCRIPTOR).unlink(missing_ok=True)  # first: the folder stops passing for a release
            for name in (MANIFEST, LABELS, SPLITS, README, CROISSANT, "subjects", PARTIAL_DIR):
                target = root / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()

    def close(self) -> None:
        """Release the folder's lock (the job folder stays, for a later run to resume)."""
        self.lock.release()

    def __enter__(self) -> ReleaseWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def finished(self) -> dict[tuple[str, str], list[ScanRecord]]:
        """Manifest rows of the studies already written, by (subject, study)."""
        done = {}
        for rows in self.job.finished.values():
            records = [ScanRecord.from_row(r) for r in rows]
            done[(records[0].subject, records[0].study)] = records
        return done

    def record_study(self, records: Sequence[ScanRecord]) -> None:
        """Mark a study finished, once all its scans are written (see `write_scan`).

        Raises:
            ReleaseFormatError: the records are not exactly the scans of one study.
        """
        studies = sorted({(r.subject, r.study) for r in records})
        if len(studies) != 1:
            raise ReleaseFormatError(f"record_study takes the scans of one study, got {studies}")
        subject, study = studies[0]
        expected = set(modalities().study(study).scans)
        if sorted(r.scan for r in records) != sorted(expected):
            raise ReleaseFormatError(f"Study {subject}/{study} must hold scans {sorted(expected)}.")
        self.job.record(f"{subject}/{study}", [r.to_row() for r in records])

    def finalize(
        self,
        *,
        name: str,
        version: str,
        splits: Mapping[str, Iterable[str]],
        expected: Iterable[tuple[str, str]] | None = None,
        license: str = "",
        citation: str = "",
        description: str = "",
        synthetic: dict | None = None,
    ) -> Path:
        """Write manifest, label schema, splits, ``README.md`` and ``croissant.json`` and, last, the
        descriptor (with the sha256 of all five); remove the job folder.

        ``README.md`` says what the folder is; its YAML header makes stock
        `datasets.load_dataset(folder)` refuse the folder with a message naming
        `umd_dataset.load_dataset` (see `readme_text`). ``croissant.json`` is the release's Croissant
        metadata (`umd_dataset.release.croissant.release_croissant`).

        Args:
            expected: the (subject, study) pairs the release must hold; finalizing with one of
                them missing raises.

        Raises:
            ReleaseFormatError: a study is missing, or a subject is in no split or in two.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        done = self.finished
        if expected is not None:
            missing = sorted(set(expected) - set(done))
            if missing:
                raise ReleaseFormatError(f"Cannot finalize {self.root}: studies not written yet: {missing}")
        records = sorted((r for rows in done.values() for r in rows), key=lambda r: (r.subject, r.study, r.scan))
        split_lists = {s: sorted(set(ids)) for s, ids in splits.items()}
        check_splits(split_lists, {r.subject for r in records}, where=f"{self.root / SPLITS}")
        tmp = self.job.tmp
        table = pa.Table.from_pylist([r.to_row() for r in records], schema=manifest_schema())
        with atomic_path(self.root / MANIFEST, tmp) as path:
            pq.write_table(table, path)
        write_json(self.root / LABELS, self.schema.to_dict(), tmp)
        write_json(self.root / SPLITS, {"splits": split_lists}, tmp)
        info = ReleaseInfo(
            name=name,
            version=version,
            format_version=FORMAT_VERSION,
            label_schema=self.schema.key,
            counts=ReleaseCounts.of(records),
            files={f: sha256_file(self.root / f) for f in (MANIFEST, LABELS, SPLITS)},
            license=license,
            citation=citation,
            description=description,
            synthetic=synthetic,
            created_with=f"umd_dataset {__version__}",
        )
        info = _write_metadata(self.root, info, self.schema, split_lists, tmp)
        write_json(self.root / DESCRIPTOR, info.to_dict(), tmp)
        self.job.remove()
        self.lock.release()
        return self.root


def _write_metadata(root: Path, info: ReleaseInfo, schema: LabelSchema, splits: Mapping[str, Sequence[str]],
                    tmp: Path | None) -> ReleaseInfo:
    """Write ``README.md`` and ``croissant.json`` (from the index files, whose sha256 `info` holds);
    return `info` with their sha256 added to its ``files``."""
    from umd_dataset.release.croissant import release_croissant, write_croissant

    index = {name: info.files[name] for name in (MANIFEST, LABELS, SPLITS)}
    with atomic_path(root / README, tmp) as path:
        path.write_text(readme_text(info), encoding="utf-8")
    files = {**info.files, README: sha256_file(root / README)}
    files[CROISSANT] = write_croissant(root / CROISSANT, release_croissant(info, schema, splits, index), tmp)
    return replace(info, files=files)


def write_metadata(release) -> Path:
    """Write (again) the ``README.md`` and ``croissant.json`` of an opened release, from its index,
    and record their sha256 in ``release.json``: for a release written before they existed, or
    whose ``croissant.json`` `umd verify` reports stale after its index was edited on purpose.
    Nothing else changes; the descriptor is replaced in one rename.

    Args:
        release: an opened `umd_dataset.release.index.Release`.

    Raises:
        FolderBusyError: another process is writing the release.
    """
    root = Path(release.root)
    with FolderLock(root, "a release writer"):
        info = _write_metadata(root, release.info, release.schema, release.splits, None)
        descriptor = read_json(root / DESCRIPTOR)  # as written: fields this version does not know stay
        descriptor["files"] = info.files
        write_json(root / DESCRIPTOR, descriptor)
    return root


#: The message stock `datasets.load_dataset` shows for a release folder. It is the ``data_files``
#: path of the README's configs, which datasets resolves first and reports as not found; it holds
#: no glob character (``*?[]``), no ``::`` and no ``:``.
STOCK_DATASETS_MESSAGE = (
    "This folder is a UMD release, not a Hugging Face dataset folder - load it with "
    "umd_dataset.load_dataset(folder, config) (pip install umd-dataset), or export it with umd export-hf "
    "and load the export with datasets.load_dataset"
)


def readme_text(info: ReleaseInfo) -> str:
    """The ``README.md`` of a release: what the folder is and how to load it, for people; for stock
    `datasets.load_dataset`, a YAML header whose ``configs`` name no data file but
    `STOCK_DATASETS_MESSAGE`, so that `datasets` refuses the folder with that message
    (``FileNotFoundError: Unable to find '<folder>/This folder is a UMD release ...'``) instead of
    loading every NIfTI file of every scan and label map as one column of one "train" split.
    """
    import yaml

    configs = [{"config_name": "default", "data_files": STOCK_DATASETS_MESSAGE}]
    header = {"license": info.license.lower() or "other", "pretty_name": f"{info.name} {info.version} (a UMD release folder)",
              "configs": configs}
    return (
        "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True, width=1000) + "---\n\n"
        f"# {info.name} {info.version}\n\n"
        f"This folder is a release of {info.name} in the `umd-release` format {info.format_version}, label schema "
        f"`{info.label_schema}`: {info.counts.subjects} subjects, {info.counts.paired_subjects} of them with both a PET/CT "
        "and a PET/MRI study. `release.json` describes it, `manifest.parquet` lists every scan with its checksums, "
        "`croissant.json` is its Croissant metadata.\n\n"
        "Load it with umd_dataset (`pip install umd-dataset`), which checks every file it reads against the manifest:\n\n"
        "```python\nimport umd_dataset\n"
        "train = umd_dataset.load_dataset(\"path/to/this/folder\", \"petct\", split=\"train\")  # or petmri, paired\n```\n\n"
        "Check every file with `umd verify path/to/this/folder`. Stock `datasets.load_dataset` refuses this folder on "
        "purpose (it would read every image and label map as one column of one split): for stock `datasets`, export it "
        "with `umd export-hf path/to/this/folder OUT` and load `OUT`.\n"
        + (f"\nLicence: {info.license}. Citation: {info.citation}.\n" if info.license or info.citation else "")
    )
