"""The release index: subjects, studies, scans, pairs and splits, read from a release folder.

Opening a release (`open_release`) reads its descriptor, manifest, label schema and splits,
checks them against each other, and reads no image. Every view of the package (Hugging Face,
torch, torchio, MONAI, the patch cache, evaluation) is built from a `Release`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from umd_dataset.errors import (
    IncompleteReleaseError,
    ReleaseFormatError,
    ReleaseNotFoundError,
    ReleaseVersionError,
    UnknownNameError,
    did_you_mean,
)
from umd_dataset.io.files import read_json, sha256_file
from umd_dataset.release.format import (
    DESCRIPTOR,
    FORMAT_NAME,
    FORMAT_VERSION,
    LABELS,
    MANIFEST,
    PARTIAL_DIR,
    SPLITS,
    ReleaseCounts,
    ReleaseInfo,
    ScanRecord,
    check_identifier,
    check_splits,
    manifest_schema,
    safe_relative_path,
)
from umd_dataset.schema.organs import LabelSchema
from umd_dataset.schema.studies import modalities

if TYPE_CHECKING:
    from umd_dataset.release.verify import VerificationReport

__all__ = ["Release", "Subject", "Study", "SplitCounts", "ReleaseSummary", "open_release"]


@dataclass(frozen=True)
class Study:
    """One study of a subject and its scans, by scan kind (``{"ct": ..., "pet": ...}``)."""

    subject: str
    study: str
    split: str
    scans: Mapping[str, ScanRecord]


@dataclass(frozen=True)
class Subject:
    """One person: its split and its studies, by study kind (``{"petct": ..., "petmri": ...}``)."""

    id: str
    split: str
    studies: Mapping[str, Study]

    @property
    def paired(self) -> bool:
        """True when the subject has every kind of study (PET/CT and PET/MRI)."""
        return set(self.studies) == set(modalities().studies)

    @property
    def scans(self) -> tuple[ScanRecord, ...]:
        return tuple(s for study in self.studies.values() for s in study.scans.values())


@dataclass(frozen=True)
class SplitCounts:
    """Subjects, studies and scans of one split."""

    subjects: int
    studies: int
    scans: int


@dataclass(frozen=True)
class ReleaseSummary:
    """What `Release.summary` counts, from the index alone.

    Attributes:
        root, name, version, label_schema: which release.
        counts: subjects, studies, scans per domain, paired subjects.
        splits: split -> its counts.
        label_maps_with_organ: domain -> organ slug -> label maps of that domain containing the organ.
    """

    root: Path
    name: str
    version: str
    label_schema: str
    counts: ReleaseCounts
    splits: dict[str, SplitCounts]
    label_maps_with_organ: dict[str, dict[str, int]]

    def organ_totals(self) -> dict[str, int]:
        """Organ slug -> label maps containing it, over all domains."""
        totals: dict[str, int] = {}
        for per_organ in self.label_maps_with_organ.values():
            for slug, count in per_organ.items():
                totals[slug] = totals.get(slug, 0) + count
        return totals

    def to_dict(self) -> dict:
        return {
            "root": str(self.root), "name": self.name, "version": self.version, "label_schema": self.label_schema,
            **self.counts.to_dict(),
            "splits": {name: vars(c).copy() for name, c in self.splits.items()},
            "label_maps_with_organ": self.organ_totals(),
            "label_maps_with_organ_by_domain": self.label_maps_with_organ,
        }

    def __str__(self) -> str:
        names = {d.key: d.name for d in modalities().domains}
        studies = {k: v.name for k, v in modalities().studies.items()}
        domains = list(self.label_maps_with_organ)
        width = max([13] + [len(names[d]) + 2 for d in domains])
        lines = [
            f"{self.name} {self.version} at {self.root} (label schema {self.label_schema})",
            f"subjects: {self.counts.subjects}  (with both studies: {self.counts.paired_subjects})",
            "studies:  " + "  ".join(f"{studies[k]}: {v}" for k, v in self.counts.studies.items()),
            "scans:    " + "  ".join(f"{names[k]}: {v}" for k, v in self.counts.scans.items()),
            "",
            f"{'split':<12}{'subjects':>10}{'studies':>10}{'scans':>8}",
        ]
        for split, counts in self.splits.items():
            lines.append(f"{split:<12}{counts.subjects:>10}{counts.studies:>10}{counts.scans:>8}")
        totals = self.organ_totals()
        lines += ["", "label maps containing each organ:",
                  f"{'organ':<18}" + "".join(f"{names[d]:>{width}}" for d in domains) + f"{'total':>8}"]
        for organ, total in totals.items():
            row = "".join(f"{self.label_maps_with_organ[d][organ]:>{width}}" for d in domains)
            lines.append(f"{organ:<18}{row}{total:>8}")
        lines.append(f"{'all organs':<18}" + " " * width * len(domains) + f"{sum(totals.values()):>8}")
        return "\n".join(lines)


class Release:
    """An opened release: the index over its scans. Use `open_release` to make one.

    Attributes:
        root: the release folder.
        info: the descriptor (`ReleaseInfo`).
        schema: the label schema of its label maps.
        scans: every scan, sorted by subject, study, scan.
        splits: split name -> sorted subject ids.
        subjects: subject id -> `Subject`.

    Example:
        >>> release = open_release("umd-mini")                   # doctest: +SKIP
        >>> ct = release.select(scan="ct", split="train", organ="liver")  # doctest: +SKIP
        >>> len(release.pairs())                                   # doctest: +SKIP
        8
    """

    def __init__(
        self,
        root: Path,
        info: ReleaseInfo,
        schema: LabelSchema,
        scans: tuple[ScanRecord, ...],
        splits: Mapping[str, tuple[str, ...]],
    ) -> None:
        self.root = root
        self._by_path: dict[str, tuple[ScanRecord, str]] | None = None
        self.info = info
        self.schema = schema
        self.scans = scans
        order = {name: i for i, name in enumerate(modalities().splits)}
        self.splits = {name: tuple(splits[name]) for name in sorted(splits, key=lambda n: order.get(n, len(order)))}
        split_of = {s: name for name, ids in splits.items() for s in ids}
        grouped: dict[str, dict[str, dict[str, ScanRecord]]] = {}
        for record in scans:
            grouped.setdefault(record.subject, {}).setdefault(record.study, {})[record.scan] = record
        self.subjects: dict[str, Subject] = {
            subject: Subject(
                id=subject,
                split=split_of[subject],
                studies={k: Study(subject, k, split_of[subject], v) for k, v in studies.items()},
            )
            for subject, studies in grouped.items()
        }

    def __repr__(self) -> str:
        counts = self.info.counts
        return (
            f"Release({self.info.name} {self.info.version}, {counts.subjects} subjects, "
            f"{len(self.scans)} scans, root={str(self.root)!r})"
        )

    def __len__(self) -> int:
        return len(self.scans)

    def __iter__(self) -> Iterator[ScanRecord]:
        return iter(self.scans)

    def subject(self, subject_id: str) -> Subject:
        try:
            return self.subjects[subject_id]
        except KeyError:
            raise UnknownNameError(did_you_mean(subject_id, sorted(self.subjects), "subject")) from None

    def path(self, relative: str) -> Path:
        """Absolute path of a file of the release, refusing paths that leave the release root."""
        return safe_relative_path(self.root, relative)

    def image_path(self, scan: ScanRecord) -> Path:
        return self.path(scan.image)

    def label_path(self, scan: ScanRecord) -> Path:
        return self.path(scan.label)

    def read(self, scan: ScanRecord, which: str = "image"):
        """(voxels, affine) of a scan's ``image`` or ``label`` map, from bytes checked against the
        manifest (see `umd_dataset.release.reading`).

        Raises:
            ReleaseNotFoundError: the file is missing.
            CorruptFileError: its bytes or header are not the manifest's; the message says to run ``umd verify``.
        """
        from umd_dataset.release.reading import read_volume

        return read_volume(self, scan, which)

    def load(self, scan: ScanRecord, which: str = "image"):
        """The verified nibabel image (voxels in memory) of a scan's ``image`` or ``label`` map; see `read`."""
        from umd_dataset.release.reading import load_image

        return load_image(self, scan, which)

    def record_of(self, relative: str) -> tuple[ScanRecord, str]:
        """The scan a manifest path belongs to, and which of its files it is (``image`` or ``label``)."""
        if self._by_path is None:
            self._by_path = {p: (r, w) for r in self.scans for p, w in ((r.image, "image"), (r.label, "label"))}
        try:
            return self._by_path[relative]
        except KeyError:
            raise UnknownNameError(f"{relative!r} is no file of the release at {self.root}.") from None

    def select(
        self,
        *,
        study: str | Iterable[str] | None = None,
        scan: str | Iterable[str] | None = None,
        split: str | Iterable[str] | None = None,
        organ: str | Iterable[str] | None = None,
        subject: str | Iterable[str] | None = None,
        domain: str | Iterable[str] | None = None,
    ) -> list[ScanRecord]:
        """Scans matching every given filter.

        Each filter takes one value or several (any of them matches), except `organ`: a scan
        matches when its label map contains *every* listed organ.

        Raises:
            UnknownNameError: a value that is no study, scan, split, organ, subject or domain.
        """
        spec = modalities()
        studies = _names(study, spec.studies, "study")
        scans = _names(scan, spec.scans, "scan")
        splits = _names(split, spec.splits, "split")
        domains = _names(domain, [d.key for d in spec.domains], "domain")
        subjects = _names(subject, self.subjects, "subject")
        organs = None if organ is None else {self.schema.organ(o).slug for o in _as_list(organ)}
        return [
            r
            for r in self.scans
            if (studies is None or r.study in studies)
            and (scans is None or r.scan in scans)
            and (splits is None or r.split in splits)
            and (subjects is None or r.subject in subjects)
            and (domains is None or r.domain in domains)
            and (organs is None or organs <= set(r.organs))
        ]

    def studies(self, *, study: str | Iterable[str] | None = None, split: str | Iterable[str] | None = None) -> list[Study]:
        """Studies (with their scans), optionally of one kind or split."""
        studies = _names(study, modalities().studies, "study")
        splits = _names(split, modalities().splits, "split")
        return [
            s
            for subject in self.subjects.values()
            for s in subject.studies.values()
            if (studies is None or s.study in studies) and (splits is None or s.split in splits)
        ]

    def pairs(self, split: str | Iterable[str] | None = None) -> list[Subject]:
        """Subjects with both a PET/CT and a PET/MRI study, optionally of some splits."""
        splits = _names(split, modalities().splits, "split")
        return [s for s in self.subjects.values() if s.paired and (splits is None or s.split in splits)]

    def summary(self) -> ReleaseSummary:
        """Counts per study, scan, split and organ (label maps containing each organ). Reads no image."""
        domains = [d.key for d in modalities().domains if any(r.domain == d.key for r in self.scans)]
        by_domain = {d: {o.slug: 0 for o in self.schema} for d in domains}
        for record in self.scans:
            for slug in record.organs:
                by_domain[record.domain][slug] += 1
        return ReleaseSummary(
            root=self.root,
            name=self.info.name,
            version=self.info.version,
            label_schema=self.info.label_schema,
            counts=ReleaseCounts.of(self.scans),
            splits={
                name: SplitCounts(
                    subjects=len(ids),
                    studies=sum(len(self.subjects[s].studies) for s in ids),
                    scans=sum(len(self.subjects[s].scans) for s in ids),
                )
                for name, ids in self.splits.items()
            },
            label_maps_with_organ=by_domain,
        )

    def verify(self, *, deep: bool = False, workers: int | None = None, progress: bool = False) -> VerificationReport:
        """Check every file against the manifest; see `umd_dataset.release.verify.verify_release`."""
        from umd_dataset.release.verify import verify_release

        return verify_release(self, deep=deep, workers=workers, progress=progress)


def open_release(root: str | os.PathLike) -> Release:
    """Open a release folder and check that its index is consistent. Reads no image.

    Checks: the descriptor's format and version; the checksums of manifest, label schema and
    splits; the manifest columns; every path stays inside the release; every subject in exactly
    one split; the counts in the descriptor match the manifest. `Release.verify` checks the images.

    Args:
        root: the release folder (the one holding ``release.json``).

    Raises:
        ReleaseNotFoundError: `root` is not a release (no ``release.json``).
        IncompleteReleaseError: `root` is a release whose writing was interrupted.
        ReleaseVersionError: the release uses a newer major format version than this package reads.
        ReleaseFormatError: an index file is corrupt or inconsistent; the message names it.
    """
    root = Path(root).expanduser()
    descriptor = root / DESCRIPTOR
    if not descriptor.is_file():
        if (root / PARTIAL_DIR).is_dir():
            raise IncompleteReleaseError(
                f"{root} is a release whose writing was interrupted (it has {PARTIAL_DIR}/ but no "
                f"{DESCRIPTOR}). Run the same command again (e.g. `umd synth {root}` with the same "
                "options) to finish it; finished studies are kept."
            )
        raise ReleaseNotFoundError(_not_a_release(root))
    info = _read_descriptor(descriptor)
    for name, expected in info.files.items():
        path = safe_relative_path(root, name)
        if not path.is_file():
            raise ReleaseFormatError(f"{path} is missing; the release descriptor lists it. Restore the release.")
        actual = sha256_file(path)
        if actual != expected:
            raise ReleaseFormatError(
                f"{path} does not match its checksum in {descriptor} (expected sha256 {expected}, got "
                f"{actual}). The file was changed or is corrupt: restore it from the original release."
            )
    schema = LabelSchema.from_dict(read_json(root / LABELS))
    if schema.key != info.label_schema:
        raise ReleaseFormatError(
            f"{root / LABELS} holds label schema {schema.key}, but {descriptor} says {info.label_schema}."
        )
    splits_data = read_json(root / SPLITS)
    try:
        splits = {name: tuple(ids) for name, ids in splits_data["splits"].items()}
    except (KeyError, TypeError, AttributeError) as error:
        raise ReleaseFormatError(f"{root / SPLITS}: expected {{'splits': {{split: [subjects]}}}}.") from error
    records = _read_manifest(root / MANIFEST)
    _check_records(root / MANIFEST, records, schema)
    check_splits(splits, {r.subject for r in records}, where=str(root / SPLITS))
    split_of = {s: name for name, ids in splits.items() for s in ids}
    scans = tuple(replace(r, split=split_of[r.subject]) for r in records)
    counts = ReleaseCounts.of(scans)
    if counts != info.counts:
        raise ReleaseFormatError(
            f"{descriptor} records counts {info.counts.to_dict()}, but {root / MANIFEST} holds {counts.to_dict()}. "
            "The release is incomplete or its index was edited: restore it."
        )
    return Release(root, info, schema, scans, splits)


def _check_records(manifest: Path, records: list[ScanRecord], schema: LabelSchema) -> None:
    """Every row names a safe subject id, a known study and one of its scans, paths inside the
    release, organs of the schema; no scan twice; every study holds all of its scans.

    Raises:
        ReleaseFormatError: naming the manifest, the row and the fix.
    """
    spec = modalities()
    keys: set[str] = set()
    studies: dict[tuple[str, str], set[str]] = {}
    for r in records:
        try:
            check_identifier(r.subject, "subject id")
            scans = spec.study(r.study).scans
        except (ReleaseFormatError, UnknownNameError) as error:
            raise ReleaseFormatError(f"{manifest}: row {r.key}: {error} The manifest is corrupt or was edited: restore it.") from None
        if r.scan not in scans:
            raise ReleaseFormatError(f"{manifest}: row {r.key}: a {r.study} study holds scans {list(scans)}, not {r.scan!r}.")
        if r.key in keys:
            raise ReleaseFormatError(f"{manifest}: scan {r.key} appears twice.")
        keys.add(r.key)
        studies.setdefault((r.subject, r.study), set()).add(r.scan)
        safe_relative_path(manifest.parent, r.image, resolve=False)
        safe_relative_path(manifest.parent, r.label, resolve=False)
        unknown = set(r.organs) - set(schema.slugs)
        if unknown:
            raise ReleaseFormatError(f"{manifest}: scan {r.key} lists organs {sorted(unknown)} not in {schema.key}.")
    incomplete = [
        f"{subject}/{study} (lacks {', '.join(sorted(set(spec.study(study).scans) - present))})"
        for (subject, study), present in sorted(studies.items()) if present != set(spec.study(study).scans)
    ]
    if incomplete:
        raise ReleaseFormatError(
            f"{manifest}: studies without all their scans: {'; '.join(incomplete)}. The release is incomplete or its "
            "manifest was edited: restore it from the original release."
        )


def _not_a_release(root: Path) -> str:
    """Why `root` is no release, and what to do: the release beside it with the closest name, the
    folder above a file inside a release, and `umd synth` only where it can write."""
    import difflib

    expected = f"Expected a folder holding {DESCRIPTOR}, {MANIFEST}, {LABELS}, {SPLITS} and subjects/."
    if root.is_file():
        inside = next((p for p in root.parents if (p / DESCRIPTOR).is_file()), None)
        hint = f" It lies inside the release {inside}: give that folder." if inside else ""
        return f"{root} is not a UMD release: it is a file, not a folder.{hint} {expected}"
    parent = root.parent if str(root.parent) else Path(".")
    releases = [p.name for p in parent.iterdir() if (p / DESCRIPTOR).is_file()] if parent.is_dir() else []
    close = difflib.get_close_matches(root.name, releases, n=3, cutoff=0.6)
    if close:
        beside = " or ".join(repr(str(parent / c) if str(root.parent) not in ("", ".") else c) for c in close)
        return f"{root} is not a UMD release: it {'does not exist' if not root.exists() else f'has no {DESCRIPTOR}'}. Did you mean {beside}?"
    if not root.exists():
        return (f"{root} is not a UMD release: it does not exist. {expected} Generate the synthetic UMD-mini there with "
                f"`umd synth {root}`, or point to the downloaded UMD release.")
    if any(root.iterdir()):
        return f"{root} is not a UMD release: it has no {DESCRIPTOR} (and holds other files). {expected} Point to the downloaded UMD release."
    return (f"{root} is not a UMD release: it is an empty folder. {expected} Generate the synthetic UMD-mini there with "
            f"`umd synth {root}`, or point to the downloaded UMD release.")


def _read_descriptor(path: Path) -> ReleaseInfo:
    try:
        data = read_json(path)
    except ValueError as error:
        raise ReleaseFormatError(f"{path} is not valid JSON ({error}). Restore it from the original release.") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise ReleaseFormatError(
            f"{path} is not a UMD release descriptor: expected \"format\": \"{FORMAT_NAME}\", "
            f"got {data.get('format') if isinstance(data, dict) else type(data).__name__!r}."
        )
    version = str(data.get("format_version", ""))
    supported = int(FORMAT_VERSION.split(".")[0])
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise ReleaseFormatError(f"{path}: format_version {version!r} is not '<major>.<minor>'.") from None
    if major > supported:
        raise ReleaseVersionError(
            f"{path} is a release in format {version}; this umd_dataset reads format {supported}.x. "
            "Upgrade the package: pip install --upgrade umd-dataset."
        )
    if major < supported:
        raise ReleaseVersionError(f"{path}: format {version} predates format {supported}.x and is not supported.")
    names = {f.name for f in fields(ReleaseInfo)}
    missing = sorted(n for n in ("name", "version", "label_schema", "counts", "files") if n not in data)
    if missing:
        raise ReleaseFormatError(f"{path} lacks the fields {missing}.")
    values = {k: v for k, v in data.items() if k in names}
    values["counts"] = ReleaseCounts.from_dict(data["counts"], str(path))
    return ReleaseInfo(**values)


def _read_manifest(path: Path) -> list[ScanRecord]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for corrupt files
        raise ReleaseFormatError(f"{path} is not a readable Parquet file ({error}).") from error
    expected = manifest_schema()
    missing = sorted(set(expected.names) - set(table.column_names))
    if missing:
        raise ReleaseFormatError(f"{path} lacks the manifest columns {missing}.")
    return [ScanRecord.from_row(row) for row in table.select(expected.names).to_pylist()]


def _as_list(value: str | Iterable[str]) -> list:
    return [value] if isinstance(value, (str, int)) else list(value)


def _names(value, allowed: Iterable[str], what: str) -> set[str] | None:
    if value is None:
        return None
    allowed = list(allowed)
    names = set(_as_list(value))
    for name in names:
        if name not in allowed:
            raise UnknownNameError(did_you_mean(name, allowed, what))
    return names
