"""The release format: its layout, file names, the manifest row (`ScanRecord`), the descriptor
(`ReleaseInfo`, `ReleaseCounts`) and the rules every path, identifier and split must follow.

A release is a folder::

    release.json                      descriptor, written last (a folder without it is no release)
    manifest.parquet                  one row per scan (a `ScanRecord`; columns from its fields)
    labels.json                       the label schema the label maps use
    splits.json                       split -> subjects (a subject's studies share its split)
    README.md                         what the folder is and how to load it (optional)
    croissant.json                    Croissant metadata of the release (optional)
    subjects/<subject>/<study>/<scan>.nii.gz          the scan
    subjects/<subject>/<study>/<scan>_labels.nii.gz   its label map, on the scan's own grid

`dataset_card.md` (at the repository root, shipped in the package, the README of Hugging Face
exports) documents the same format for people; a test holds the two together.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath

import numpy as np

from umd_dataset.errors import ReleaseFormatError, UnsafePathError
from umd_dataset.schema.studies import modalities

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DESCRIPTOR",
    "MANIFEST",
    "LABELS",
    "SPLITS",
    "PROVENANCE",
    "README",
    "CROISSANT",
    "PARTIAL_DIR",
    "ScanRecord",
    "ReleaseCounts",
    "ReleaseInfo",
    "manifest_schema",
    "scan_paths",
    "safe_relative_path",
    "check_identifier",
    "check_splits",
]

FORMAT_NAME = "umd-release"
#: Major.minor of the release format this package writes. It reads every 1.x release.
#: 1.1: ``counts.scans`` is keyed by evaluation domain (``petct_pet``), not ``study/scan``.
FORMAT_VERSION = "1.1"
DESCRIPTOR = "release.json"
MANIFEST = "manifest.parquet"
LABELS = "labels.json"
SPLITS = "splits.json"
#: An ingested study's record of how it was made, ``subjects/<subject>/<study>/provenance.json`` (optional).
PROVENANCE = "provenance.json"
#: What a release says to people and to stock `datasets.load_dataset` (which it refuses, naming
#: `umd_dataset.load_dataset`). Written by `ReleaseWriter` and listed with its sha256 in the
#: descriptor's ``files``; releases written before it existed have none and stay valid.
README = "README.md"
#: The release's Croissant metadata (`umd_dataset.release.croissant`); optional like `README`.
CROISSANT = "croissant.json"
PARTIAL_DIR = ".umd-partial"
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class ScanRecord:
    """One row of the manifest: a scan, its label map and their geometry and checksums.

    The fields are the manifest's columns, in order (`manifest_schema` is derived from them).

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
    affine: tuple[float, ...] = field(metadata={"length": 16})
    dtype: str
    label_dtype: str
    image_sha256: str
    label_sha256: str
    image_bytes: int
    label_bytes: int
    organs: tuple[str, ...]
    organ_voxels: tuple[int, ...]
    split: str = field(default="", compare=False, metadata={"stored": False})

    @property
    def key(self) -> str:
        """``"<subject>/<study>/<scan>"``, unique within a release."""
        return f"{self.subject}/{self.study}/{self.scan}"

    @property
    def affine_matrix(self) -> np.ndarray:
        return np.asarray(self.affine, dtype=np.float64).reshape(4, 4)

    @property
    def domain(self) -> str:
        """Evaluation domain key (e.g. ``petct_pet``), from the schema's modalities."""
        return modalities().domain_of(self.study, self.scan).key

    @property
    def organ_voxel_counts(self) -> dict[str, int]:
        """Organ slug -> voxel count, for the organs present."""
        return dict(zip(self.organs, self.organ_voxels))

    def to_row(self) -> dict:
        """The manifest row (lists for the sequence columns)."""
        return {c.name: list(v) if isinstance(v := getattr(self, c.name), tuple) else v for c in _COLUMNS}

    @classmethod
    def from_row(cls, row: Mapping, split: str = "") -> ScanRecord:
        return cls(**{c.name: c.convert(row[c.name]) for c in _COLUMNS}, split=split)


@dataclass(frozen=True)
class _Column:
    name: str
    annotation: str
    length: int | None = None  # fixed length of a variadic tuple column

    @property
    def convert(self):
        item = {"int": int, "float": float, "str": str}
        if self.annotation.startswith("tuple["):
            kind = self.annotation[len("tuple[") :].split(",")[0].rstrip("]")
            return lambda values: tuple(item[kind](v) for v in values)
        return item[self.annotation]

    def arrow_type(self):
        import pyarrow as pa

        scalar = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}
        if not self.annotation.startswith("tuple["):
            return scalar[self.annotation]
        inner = self.annotation[len("tuple[") : -1].split(", ")
        length = self.length if inner[-1] == "..." else len(inner)
        return pa.list_(scalar[inner[0]], length) if length else pa.list_(scalar[inner[0]])


#: The manifest's columns: every stored field of `ScanRecord`, in order.
_COLUMNS = tuple(
    _Column(f.name, str(f.type), f.metadata.get("length")) for f in fields(ScanRecord) if f.metadata.get("stored", True)
)


def manifest_schema():
    """The Arrow schema of ``manifest.parquet``, derived from the fields of `ScanRecord`."""
    import pyarrow as pa

    return pa.schema([(c.name, c.arrow_type()) for c in _COLUMNS])


@dataclass(frozen=True)
class ReleaseCounts:
    """What a release holds, as its descriptor records it.

    Attributes:
        subjects: people.
        studies: study kind -> studies (``{"petct": 490, "petmri": 464}``).
        scans: evaluation domain -> scans (``{"ct": 490, "petct_pet": 490, ...}``).
        paired_subjects: people with every kind of study.
    """

    subjects: int
    studies: dict[str, int]
    scans: dict[str, int]
    paired_subjects: int

    @classmethod
    def of(cls, records: Sequence[ScanRecord]) -> ReleaseCounts:
        """The counts of a set of manifest rows."""
        subjects_of: dict[str, set[str]] = {}
        scans: dict[str, int] = {}
        for r in records:
            subjects_of.setdefault(r.study, set()).add(r.subject)
            scans[r.domain] = scans.get(r.domain, 0) + 1
        order = {d: i for i, d in enumerate(modalities().domain_keys)}
        groups = list(subjects_of.values())
        paired = set.intersection(*groups) if len(groups) == len(modalities().studies) else set()
        return cls(
            subjects=len({r.subject for r in records}),
            studies={k: len(v) for k, v in sorted(subjects_of.items())},
            scans=dict(sorted(scans.items(), key=lambda item: order[item[0]])),
            paired_subjects=len(paired),
        )

    def to_dict(self) -> dict:
        return {"subjects": self.subjects, "studies": dict(self.studies), "scans": dict(self.scans),
                "paired_subjects": self.paired_subjects}

    @classmethod
    def from_dict(cls, data: Mapping, where: str) -> ReleaseCounts:
        """Read the ``counts`` of a descriptor; format 1.0 keyed scans by ``study/scan``, read too."""
        try:
            scans = {}
            for key, value in data["scans"].items():
                if "/" in key:  # format 1.0
                    study, scan = key.split("/", 1)
                    key = modalities().domain_of(study, scan).key
                scans[key] = int(value)
            return cls(int(data["subjects"]), {k: int(v) for k, v in data["studies"].items()}, scans,
                       int(data["paired_subjects"]))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ReleaseFormatError(
                f"{where}: 'counts' must hold subjects, studies, scans and paired_subjects ({error!r})."
            ) from error


@dataclass(frozen=True)
class ReleaseInfo:
    """The release descriptor (``release.json``).

    Attributes:
        name: release name, e.g. ``"UMD"`` or ``"UMD-mini"``.
        version: semantic version of the data (``"1.0.0"``).
        format_version: version of the on-disk format, ``"<major>.<minor>"``.
        label_schema: key of the label schema (``"umd-v1"``), whose full text is ``labels.json``.
        counts: subjects, studies per kind, scans per domain, paired subjects (`ReleaseCounts`).
        files: sha256 of ``manifest.parquet``, ``labels.json`` and ``splits.json`` (and, in
            releases written since they exist, of ``README.md`` and ``croissant.json``); opening
            a release checks every file listed here.
        license, citation, description: as in the dataset card.
        synthetic: the generator settings for a synthetic release, else None.
        created_with: ``"umd_dataset <version>"``.
    """

    name: str
    version: str
    format_version: str
    label_schema: str
    counts: ReleaseCounts
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
        data["counts"] = self.counts.to_dict()
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
    """`value` if it is a safe id (1-64 letters, digits, '_' or '-', starting with a letter or digit).

    Raises:
        ReleaseFormatError: it is not.
    """
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
        raise ReleaseFormatError(
            f"Invalid {what} {value!r}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit."
        )
    return value


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
