"""What an ingest job is made of: its options (`IngestOptions`), the study jobs every input format
is planned into (`StudyJob`, with `ScanInput` and `LabelInput`), and the report (`IngestReport`).

How the ids of a label input get their meaning is a type, not a magic string: `SourceTableNames`
(a shipped alias table), `SchemaIds` (canonical ids already), `GivenNames` (the input's own id ->
name table, e.g. an nnU-Net ``dataset.json``) or `FreeText` (mask file names, SEG segment labels).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

from umd_dataset.errors import InputNotFoundError, InvalidOptionError, check_choice, spelled
from umd_dataset.ingest.pseudonym import Redactor, keyed_hash
from umd_dataset.labels.harmonize import HarmonizeOptions
from umd_dataset.schema.sources import load_source
from umd_dataset.schema.studies import modalities

__all__ = [
    "IngestOptions",
    "MRI_CONTRASTS",
    "ScanInput",
    "SourceTableNames",
    "SchemaIds",
    "GivenNames",
    "FreeText",
    "LabelNames",
    "LabelInput",
    "StudyJob",
    "IngestReport",
]

#: MR contrasts the series classifier tells apart (``""``: not recognised).
MRI_CONTRASTS = ("in_phase", "water", "t1", "", "opposed_phase", "fat", "t2", "diffusion")


@dataclass(frozen=True)
class IngestOptions:
    """Settings of an ingest job. Every value is checked here, when the options are made.

    Attributes:
        name, version: the release's name and data version.
        secret: key of the pseudonyms; needed whenever subjects get pseudonyms (every DICOM input,
            and NIfTI or nnU-Net inputs unless they keep their ids). Pass the same key to resume a
            job and to give the same people the same ids in later runs. It is never written or
            printed: the job keeps only its fingerprint.
        mapping_path: where to write identity -> subject id (CSV); None writes no mapping.
        splits_path: CSV ``subject,split`` (subject = identity or pseudonym) to assign splits;
            others are placed by keyed hash (60/20/20).
        workers: processes converting studies in parallel.
        skip_failed: finish the release without the studies that failed (listed in the report);
            by default a failed study stops the release from being finalized.
        allow_unlabelled: write an empty label map for a study without labels instead of failing.
        labels: how labels are harmonized onto the schema (`HarmonizeOptions`: overlap policy,
            unknown labels, labels to drop, aliases), e.g. ``HarmonizeOptions(drop=("tumor",))``
            for a dataset that also labels lesions.
        mri_contrasts: preference order of MR contrasts when a study has several (`MRI_CONTRASTS`).
        suv_overrides: identity or PatientID -> {weight_kg, injected_dose_bq, half_life_s}.

    Raises:
        InvalidOptionError, UnknownNameError: a value out of range or not among the allowed ones.
    """

    name: str = "UMD"
    version: str = "1.0.0"
    secret: str | None = None
    mapping_path: str | None = None
    splits_path: str | None = None
    workers: int = 1
    skip_failed: bool = False
    allow_unlabelled: bool = False
    labels: HarmonizeOptions = field(default_factory=HarmonizeOptions)
    mri_contrasts: tuple[str, ...] = ("in_phase", "water", "t1", "", "opposed_phase", "fat", "t2")
    suv_overrides: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.labels, HarmonizeOptions):
            raise InvalidOptionError(f"labels must be a HarmonizeOptions, got {type(self.labels).__name__}")
        if self.splits_path is not None and not Path(self.splits_path).is_file():
            raise InputNotFoundError(f"The splits file {self.splits_path} does not exist.")
        if int(self.workers) < 1:
            raise InvalidOptionError(f"workers must be at least 1, got {self.workers}")
        object.__setattr__(self, "mri_contrasts", tuple(self.mri_contrasts))
        for contrast in self.mri_contrasts:
            check_choice(contrast, MRI_CONTRASTS, "MR contrast")
        known = ("weight_kg", "injected_dose_bq", "half_life_s")
        for who, values in self.suv_overrides.items():
            for key, value in values.items():
                check_choice(key, known, "SUV override")
                if not float(value) > 0:
                    raise InvalidOptionError(f"SUV override {key} of one patient must be positive, got {value!r}")

    def settings(self, secret: str) -> dict:
        """The options that decide what the release holds (the job's identity when resuming), with
        the identifiers that key the SUV overrides replaced by keyed hashes."""
        return {
            "name": self.name, "version": self.version, "allow_unlabelled": self.allow_unlabelled, "splits_path": self.splits_path,
            "labels": self.labels.policy(), "mri_contrasts": list(self.mri_contrasts),
            "suv_overrides": {keyed_hash(secret, k): dict(v) for k, v in sorted(self.suv_overrides.items())},
        }


@dataclass(frozen=True)
class ScanInput:
    """Where the voxels of one scan come from: DICOM files of one series, or one NIfTI file.

    Attributes:
        suv_factor: for a NIfTI PET, multiply by this to get SUV (None: the values are SUV already).
    """

    format: Literal["dicom", "nifti"]
    paths: tuple[str, ...]
    description: str = ""
    suv_factor: float | None = None


@dataclass(frozen=True)
class SourceTableNames:
    """Label ids and names of a shipped annotation source (`umd_dataset.load_source`), with the
    version of the tool that wrote them where the source's ids changed between versions."""

    key: str
    version: str | None = None

    def __post_init__(self) -> None:
        load_source(self.key, version=self.version)  # an unknown key or an unchecked version raises here


@dataclass(frozen=True)
class SchemaIds:
    """Labels that already hold the canonical ids of the label schema."""


@dataclass(frozen=True)
class GivenNames:
    """The input's own id -> name table (an nnU-Net ``dataset.json``), names resolved as free text."""

    names: tuple[tuple[int, str], ...]

    def as_dict(self) -> dict[int, str]:
        return dict(self.names)


@dataclass(frozen=True)
class FreeText:
    """Names resolved as free text: mask file names, or the coded concepts and labels of SEG segments."""


LabelNames = Union[SourceTableNames, SchemaIds, GivenNames, FreeText]


@dataclass(frozen=True)
class LabelInput:
    """Where the labels of a study come from, how their ids are named, and on which scan they lie.

    Attributes:
        format: ``dicom_seg`` (one SEG series, possibly several instances), ``label_map`` (a
            multi-label NIfTI) or ``masks`` (a folder of binary masks).
        paths: the file(s) or folder.
        names: how the labels' ids or names are read (see the module's types).
        drawn_on: the scan key the labels lie on (the other scan gets them carried).
    """

    format: Literal["dicom_seg", "label_map", "masks"]
    paths: tuple[str, ...]
    names: LabelNames
    drawn_on: str

    def __post_init__(self) -> None:
        check_choice(self.format, ("dicom_seg", "label_map", "masks"), "label input format")
        check_choice(self.drawn_on, modalities().scans, "scan the labels lie on")
        if self.format == "label_map" and isinstance(self.names, FreeText):
            raise InvalidOptionError(
                f"{self.paths[0]}: a multi-label map needs the names of its ids: a source table, the schema's ids, "
                "or the input's own names."
            )


@dataclass(frozen=True)
class StudyJob:
    """One study to write: its pseudonymous subject, kind, scan inputs, labels and the choices made."""

    subject: str
    study: str
    scans: Mapping[str, ScanInput]
    labels: LabelInput | None
    choices: tuple[str, ...] = ()
    suv_overrides: Mapping[str, float] = field(default_factory=dict)


@dataclass
class IngestReport:
    """What an ingest run did: studies written, left out, failed; files skipped or unreadable.

    Printed, it never shows an identifier of the input (`redact` removes those read from its headers).
    """

    written: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    file_problems: list[str] = field(default_factory=list)
    skipped_files: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    redact: Redactor = field(default_factory=Redactor, repr=False)

    def __str__(self) -> str:
        return self.redact(spelled(self.marked(), cli=False))

    def for_cli(self) -> str:
        """The report as the command line prints it: options named by their flags."""
        return self.redact(spelled(self.marked(), cli=True))

    def marked(self) -> str:
        """The report's text with the `umd_dataset.errors.spell` markers of its failures kept (not redacted)."""
        lines = [f"studies written: {len(self.written)} (kept from an earlier run: {len(self.resumed)})"]
        lines += [f"failed: {key}: {why}" for key, why in self.failed.items()]
        lines += [f"left out: {what}" for what in self.left_out]
        lines += [f"unusable file: {what}" for what in self.file_problems]
        if self.skipped_files:
            shown = ", ".join(self.skipped_examples[:5]) + (", ..." if self.skipped_files > len(self.skipped_examples[:5]) else "")
            lines.append(f"non-DICOM files skipped: {self.skipped_files} ({shown})" if shown else f"non-DICOM files skipped: {self.skipped_files}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)
