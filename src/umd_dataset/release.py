"""The release on disk: its layout, descriptor and manifest, and the writer that produces it.

A release is a folder::

    release.json                      descriptor, written last (a folder without it is no release)
    manifest.parquet                  one row per scan (see `MANIFEST_SCHEMA`)
    labels.json                       the label schema the label maps use
    splits.json                       split -> subjects (a subject's studies share its split)
    subjects/<subject>/<study>/<scan>.nii.gz          the scan
    subjects/<subject>/<study>/<scan>_labels.nii.gz   its label map, on the scan's own grid

`dataset_card.md` (shipped in the package, the README of Hugging Face exports) documents the same
format for people.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath

import numpy as np

from umd_dataset.errors import ReleaseFormatError, UMDError, UnsafePathError
from umd_dataset.io import atomic_path, read_json, sha256_file, spacing_from_affine, write_json, write_nifti
from umd_dataset.labels import LabelSchema
from umd_dataset.modalities import modalities

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DESCRIPTOR",
    "MANIFEST",
    "LABELS",
    "SPLITS",
    "PARTIAL_DIR",
    "ScanRecord",
    "ReleaseInfo",
    "ReleaseWriter",
    "scan_paths",
    "write_scan",
    "safe_relative_path",
]

FORMAT_NAME = "umd-release"
#: Major.minor of the release format this package writes. It reads every 1.x release.
FORMAT_VERSION = "1.0"
DESCRIPTOR = "release.json"
MANIFEST = "manifest.parquet"
LABELS = "labels.json"
SPLITS = "splits.json"
PARTIAL_DIR = ".umd-partial"
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class ScanRecord:
    """One row of the manifest: a scan, its label map and their geometry and checksums.

    Attributes:
        subject, study, scan: identify the scan (``study`` is ``petct`` or ``petmri``).
        modality: DICOM modality of the scan (CT, PT, MR).
        image, label: paths relative to the release root, ``/``-separated.
        shape: voxels along the three array axes; the label map has the same shape.
        spacing_mm: voxel size along each array axis.
        affine: the 4x4 voxel-to-world (RAS, mm) matrix, row-major, shared by image and label map.
        dtype, label_dtype: stored NIfTI data types.
        image_sha256, label_sha256: file checksums.
        image_bytes, label_bytes: file sizes.
        organs: slugs of the organs present in the label map (at least one voxel).
        organ_voxels: voxel count of each organ in `organs`, same order.
        split: the subject's split; joined from ``splits.json`` when a release is opened,
            not stored in the manifest.
    """

    subject: str
    study: str
    scan: str
    modality: str
    image: str
    label: str
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    affine: tuple[float, ...]
    dtype: str
    label_dtype: str
    image_sha256: str
    label_sha256: str
    image_bytes: int
    label_bytes: int
    organs: tuple[str, ...]
    organ_voxels: tuple[int, ...]
    split: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        """``"<subject>/<study>/<scan>"``, unique within a release."""
        return f"{self.subject}/{self.study}/{self.scan}"

    @property
    def affine_matrix(self) -> np.ndarray:
        return np.asarray(self.affine, dtype=np.float64).reshape(4, 4)

    @property
    def domain(self) -> str:
        """Evaluation domain key (``ct``, ``petct_pet``, ``mri``, ``petmri_pet``)."""
        return modalities().domain_of(self.study, self.scan).key

    def to_row(self) -> dict:
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "split"}
        for name in ("shape", "spacing_mm", "affine", "organs", "organ_voxels"):
            row[name] = list(row[name])
        return row

    @classmethod
    def from_row(cls, row: Mapping, split: str = "") -> ScanRecord:
        return cls(
            subject=row["subject"],
            study=row["study"],
            scan=row["scan"],
            modality=row["modality"],
            image=row["image"],
            label=row["label"],
            shape=tuple(int(v) for v in row["shape"]),
            spacing_mm=tuple(float(v) for v in row["spacing_mm"]),
            affine=tuple(float(v) for v in row["affine"]),
            dtype=row["dtype"],
            label_dtype=row["label_dtype"],
            image_sha256=row["image_sha256"],
            label_sha256=row["label_sha256"],
            image_bytes=int(row["image_bytes"]),
            label_bytes=int(row["label_bytes"]),
            organs=tuple(row["organs"]),
            organ_voxels=tuple(int(v) for v in row["organ_voxels"]),
            split=split,
        )


def manifest_schema():
    """The Arrow schema of ``manifest.parquet``."""
    import pyarrow as pa

    return pa.schema(
        [
            ("subject", pa.string()),
            ("study", pa.string()),
            ("scan", pa.string()),
            ("modality", pa.string()),
            ("image", pa.string()),
            ("label", pa.string()),
            ("shape", pa.list_(pa.int64(), 3)),
            ("spacing_mm", pa.list_(pa.float64(), 3)),
            ("affine", pa.list_(pa.float64(), 16)),
            ("dtype", pa.string()),
            ("label_dtype", pa.string()),
            ("image_sha256", pa.string()),
            ("label_sha256", pa.string()),
            ("image_bytes", pa.int64()),
            ("label_bytes", pa.int64()),
            ("organs", pa.list_(pa.string())),
            ("organ_voxels", pa.list_(pa.int64())),
        ]
    )


@dataclass(frozen=True)
class ReleaseInfo:
    """The release descriptor (``release.json``).

    Attributes:
        name: release name, e.g. ``"UMD"`` or ``"UMD-mini"``.
        version: semantic version of the data (``"1.0.0"``).
        format_version: version of the on-disk format, ``"<major>.<minor>"``.
        label_schema: key of the label schema (``"umd-v1"``), whose full text is ``labels.json``.
        counts: subjects, studies per kind, scans per kind, paired subjects.
        files: sha256 of ``manifest.parquet``, ``labels.json`` and ``splits.json``.
        license, citation, description: as in the dataset card.
        synthetic: the generator settings for a synthetic release, else None.
        created_with: ``"umd_dataset <version>"``.
    """

    name: str
    version: str
    format_version: str
    label_schema: str
    counts: dict
    files: dict
    license: str = ""
    citation: str = ""
    description: str = ""
    synthetic: dict | None = None
    created_with: str = ""

    @property
    def major(self) -> int:
        return int(self.format_version.split(".")[0])

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["format"] = FORMAT_NAME
        return data


def scan_paths(subject: str, study: str, scan: str) -> tuple[str, str]:
    """Relative paths of a scan and its label map in the release layout."""
    folder = f"subjects/{subject}/{study}"
    return f"{folder}/{scan}.nii.gz", f"{folder}/{scan}_labels.nii.gz"


def safe_relative_path(root: Path, relative: str, *, resolve: bool = True) -> Path:
    """Join a manifest path to the release root, refusing any path that leaves the root.

    Rejected: absolute paths, ``..`` components, backslashes, and (with `resolve`) symbolic links
    that point outside the root.

    Raises:
        UnsafePathError: the path escapes the release root.
    """
    pure = PurePosixPath(relative)
    if (
        not relative
        or "\\" in relative
        or pure.is_absolute()
        or re.match(r"^[A-Za-z]:", relative)
        or any(part in ("..", "") for part in relative.split("/"))
    ):
        raise UnsafePathError(
            f"Manifest path {relative!r} in {root} is not a plain relative path inside the release; "
            "release paths must be '/'-separated, relative, and free of '..'. The manifest is corrupt "
            "or was edited by hand: restore it from the original release."
        )
    path = root.joinpath(*pure.parts)
    if resolve:
        real_root = os.path.realpath(root)
        real = os.path.realpath(path)
        if os.path.commonpath([real_root, real]) != real_root:
            raise UnsafePathError(
                f"Manifest path {relative!r} resolves to {real}, outside the release root {real_root} "
                "(a symbolic link points out of the release). Replace the link with the file itself."
            )
    return path


def check_identifier(value: str, what: str) -> str:
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
        raise ReleaseFormatError(
            f"Invalid {what} {value!r}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit."
        )
    return value


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
    counts = np.bincount(label.ravel(), minlength=len(schema) + 1)
    if counts.size > len(schema) + 1:
        bad = sorted(int(v) for v in np.flatnonzero(counts[len(schema) + 1 :]) + len(schema) + 1)
        raise ReleaseFormatError(
            f"{subject}/{study}/{scan}: label values {bad} are not organ ids of schema {schema.key} "
            f"(1..{len(schema)}); harmonize the label map first."
        )
    image_rel, label_rel = scan_paths(subject, study, scan)
    tmp_dir = root / PARTIAL_DIR / "tmp"
    write_nifti(root / image_rel, image, affine, tmp_dir)
    write_nifti(root / label_rel, label, affine, tmp_dir)
    present = [o for o in schema.organs if counts[o.id] > 0]
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
        organs=tuple(o.slug for o in present),
        organ_voxels=tuple(int(counts[o.id]) for o in present),
    )


class ReleaseWriter:
    """Writes a release folder so that an interrupted job can be resumed and is never mistaken
    for a complete release.

    While the job runs, the folder holds ``.umd-partial/`` with the job's settings and one record
    per finished study; ``release.json`` is written last, by `finalize`, after the manifest. A
    second writer with the same `job` settings skips the finished studies; one with other
    settings refuses to mix them.

    Example:
        >>> writer = ReleaseWriter(root, job={"seed": 0}, schema=load_schema())  # doctest: +SKIP
        >>> if ("S1", "petct") not in writer.finished:                           # doctest: +SKIP
        ...     writer.record_study([write_scan(root, "S1", "petct", "ct", ...), ...])
        >>> writer.finalize(info, splits={"train": ["S1"]})                        # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike, *, job: Mapping, schema: LabelSchema, overwrite: bool = False):
        self.root = Path(root)
        self.schema = schema
        self.job = dict(job)
        self._partial = self.root / PARTIAL_DIR
        self._studies = self._partial / "studies"
        self._start(overwrite)

    def _start(self, overwrite: bool) -> None:
        root = self.root
        complete = (root / DESCRIPTOR).exists()
        partial = self._partial.exists()
        if complete and not overwrite:
            raise UMDError(
                f"{root} already holds a complete release. Pass overwrite=True (CLI: --overwrite) to "
                "replace it, or choose another folder."
            )
        if root.exists() and not (complete or partial) and any(root.iterdir()):
            raise UMDError(
                f"{root} is a non-empty folder that is not a UMD release; refusing to write into it. "
                "Choose an empty or new folder."
            )
        if overwrite and (complete or partial):
            (root / DESCRIPTOR).unlink(missing_ok=True)  # first: the folder stops passing for a release
            for name in (MANIFEST, LABELS, SPLITS, "subjects", PARTIAL_DIR):
                target = root / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            partial = False
        if partial:
            previous = read_json(self._partial / "job.json") if (self._partial / "job.json").exists() else None
            if previous != _jsonable(self.job):
                raise UMDError(
                    f"{root} holds an interrupted job with other settings ({previous}) than this one "
                    f"({_jsonable(self.job)}). Run it again with the same settings to finish it, or pass "
                    "overwrite=True (CLI: --overwrite) to start over."
                )
            shutil.rmtree(self._partial / "tmp", ignore_errors=True)  # half-written temporary files
        self._studies.mkdir(parents=True, exist_ok=True)
        (self._partial / "tmp").mkdir(exist_ok=True)
        write_json(self._partial / "job.json", _jsonable(self.job), self._partial / "tmp")

    @property
    def finished(self) -> dict[tuple[str, str], list[ScanRecord]]:
        """Manifest rows of the studies already written, by (subject, study)."""
        done = {}
        for path in sorted(self._studies.glob("*.json")):
            rows = [ScanRecord.from_row(r) for r in read_json(path)]
            done[(rows[0].subject, rows[0].study)] = rows
        return done

    def record_study(self, records: Sequence[ScanRecord]) -> None:
        """Mark a study finished, once all its scans are written (see `write_scan`)."""
        subjects = {(r.subject, r.study) for r in records}
        if len(subjects) != 1:
            raise ValueError(f"record_study takes the scans of one study, got {sorted(subjects)}")
        subject, study = subjects.pop()
        expected = set(modalities().study(study).scans)
        if {r.scan for r in records} != expected:
            raise ReleaseFormatError(f"Study {subject}/{study} must hold scans {sorted(expected)}.")
        write_json(self._studies / f"{subject}__{study}.json", [r.to_row() for r in records], self._partial / "tmp")

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
        """Write manifest, label schema, splits and, last, the descriptor; remove the job folder.

        Args:
            expected: the (subject, study) pairs the release must hold; finalizing with one of
                them missing raises.

        Raises:
            ReleaseFormatError: a study is missing, or a subject is in no split or in two.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        from umd_dataset import __version__

        done = self.finished
        if expected is not None:
            missing = sorted(set(expected) - set(done))
            if missing:
                raise ReleaseFormatError(f"Cannot finalize {self.root}: studies not written yet: {missing}")
        records = sorted((r for rows in done.values() for r in rows), key=lambda r: (r.subject, r.study, r.scan))
        split_lists = {s: sorted(set(ids)) for s, ids in splits.items()}
        check_splits(split_lists, {r.subject for r in records}, where=f"{self.root / SPLITS}")
        tmp = self._partial / "tmp"
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
            counts=count_records(records),
            files={f: sha256_file(self.root / f) for f in (MANIFEST, LABELS, SPLITS)},
            license=license,
            citation=citation,
            description=description,
            synthetic=synthetic,
            created_with=f"umd_dataset {__version__}",
        )
        write_json(self.root / DESCRIPTOR, info.to_dict(), tmp)
        shutil.rmtree(self._partial)
        return self.root


def check_splits(splits: Mapping[str, Sequence[str]], subjects: set[str], where: str) -> None:
    """Every subject in exactly one known split, and no unknown subject.

    Raises:
        ReleaseFormatError: naming the file, the subjects and the splits at fault.
    """
    known = modalities().splits
    unknown_splits = sorted(set(splits) - set(known))
    if unknown_splits:
        raise ReleaseFormatError(f"{where}: unknown split names {unknown_splits}; allowed: {list(known)}.")
    seen: dict[str, str] = {}
    twice = []
    for split in sorted(splits, key=known.index):
        for subject in splits[split]:
            if subject in seen:
                twice.append(f"{subject} ({seen[subject]} and {split})")
            seen[subject] = split
    problems = []
    if twice:
        problems.append(f"subjects in two splits: {', '.join(sorted(twice))}")
    missing = sorted(subjects - set(seen))
    if missing:
        problems.append(f"subjects in no split: {missing}")
    extra = sorted(set(seen) - subjects)
    if extra:
        problems.append(f"split entries for subjects with no scan: {extra}")
    if problems:
        raise ReleaseFormatError(f"{where}: {'; '.join(problems)}. Each subject belongs to exactly one split.")


def count_records(records: Sequence[ScanRecord]) -> dict:
    """The counts a descriptor records: subjects, studies and scans per kind, paired subjects."""
    studies: dict[str, set[str]] = {}
    scans: dict[str, int] = {}
    for r in records:
        studies.setdefault(r.study, set()).add(r.subject)
        domain = f"{r.study}/{r.scan}"
        scans[domain] = scans.get(domain, 0) + 1
    subject_sets = list(studies.values())
    paired = set.intersection(*subject_sets) if len(subject_sets) == len(modalities().studies) else set()
    return {
        "subjects": len({r.subject for r in records}),
        "studies": {k: len(v) for k, v in sorted(studies.items())},
        "scans": dict(sorted(scans.items())),
        "paired_subjects": len(paired),
    }


def _jsonable(value: object) -> object:
    """The value as it reads back from JSON (tuples become lists), for comparing job settings."""
    import json

    return json.loads(json.dumps(value, sort_keys=True))
