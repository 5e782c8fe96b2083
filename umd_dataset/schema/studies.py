"""Studies, scans, evaluation domains, paired comparisons and splits of UMD, from ``schema/modalities.json``.

Like `umd_dataset.schema.organs`, this module reads pure data and imports nothing heavy. Every part
of the package takes these names from here: no study, scan, domain or split key is spelled out in
code, and a scan's role (structural or functional) is its ``kind`` in the data file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal

from umd_dataset.errors import SchemaError, UnknownNameError, check_choice, did_you_mean

__all__ = ["StudySpec", "ScanSpec", "Domain", "Comparison", "Modalities", "modalities"]

ScanKind = Literal["structural", "functional"]


@dataclass(frozen=True)
class ScanSpec:
    """One kind of scan: ``ct``, ``pet`` or ``mri``.

    Attributes:
        key, name: machine and display name.
        modality: the DICOM Modality value (CT, PT, MR).
        units: the units of its voxel values in a release.
        kind: ``structural`` (anatomy: CT, MRI) or ``functional`` (PET).
    """

    key: str
    name: str
    modality: str
    units: str
    kind: ScanKind

    @property
    def functional(self) -> bool:
        return self.kind == "functional"


@dataclass(frozen=True)
class StudySpec:
    """One kind of study (hybrid acquisition) and the scans it holds: one structural, one functional."""

    key: str
    name: str
    scans: tuple[str, ...]
    structural: str
    functional: str


@dataclass(frozen=True)
class Domain:
    """An evaluation domain: one scan kind of one study kind (e.g. PET of PET/CT)."""

    key: str
    name: str
    study: str
    scan: str


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of two domains on the same subjects (second minus first)."""

    first: str
    second: str
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.first} vs {self.second}"


@dataclass(frozen=True)
class Modalities:
    """Everything ``modalities.json`` declares, looked up by key with "did you mean" errors."""

    studies: dict[str, StudySpec]
    scans: dict[str, ScanSpec]
    domains: tuple[Domain, ...]
    comparisons: tuple[Comparison, ...]
    splits: tuple[str, ...]

    @property
    def domain_keys(self) -> tuple[str, ...]:
        return tuple(d.key for d in self.domains)

    def study(self, key: str) -> StudySpec:
        return _get(self.studies, key, "study")

    def scan(self, key: str) -> ScanSpec:
        return _get(self.scans, key, "scan")

    def domain(self, key: str) -> Domain:
        return _get({d.key: d for d in self.domains}, key, "domain")

    def domain_of(self, study: str, scan: str) -> Domain:
        for domain in self.domains:
            if domain.study == study and domain.scan == scan:
                return domain
        raise UnknownNameError(f"No evaluation domain for scan {scan!r} of study {study!r}.")

    def scan_of_modality(self, modality: str) -> ScanSpec | None:
        """The scan kind whose DICOM Modality is `modality` (``PT`` -> pet), or None."""
        return next((s for s in self.scans.values() if s.modality == modality), None)

    def check_split(self, split: str) -> str:
        return check_choice(split, self.splits, "split")

    def check_domains(self, domains) -> tuple[str, ...]:
        return tuple(check_choice(d, self.domain_keys, "domain") for d in domains)


def _get(table: dict, key: str, what: str):
    try:
        return table[key]
    except KeyError:
        raise UnknownNameError(did_you_mean(key, table, what)) from None


@lru_cache(maxsize=None)
def modalities() -> Modalities:
    """The studies, scans, domains, paired comparisons and split names of UMD."""
    data = json.loads(resources.files("umd_dataset.schema").joinpath("modalities.json").read_text("utf-8"))
    scans = {k: ScanSpec(k, **v) for k, v in data["scans"].items()}
    studies = {}
    for key, spec in data["studies"].items():
        kinds = {scans[s].kind: s for s in spec["scans"]}
        if sorted(kinds) != ["functional", "structural"] or len(spec["scans"]) != 2:
            raise SchemaError(f"modalities.json: study {key!r} must hold one structural and one functional scan, got {spec['scans']}.")
        studies[key] = StudySpec(key, spec["name"], tuple(spec["scans"]), kinds["structural"], kinds["functional"])
    domains = tuple(Domain(**d) for d in data["domains"])
    keys = {d.key for d in domains}
    comparisons = tuple(Comparison(c["first"], c["second"], c.get("note", "")) for c in data["comparisons"])
    for c in comparisons:
        if not {c.first, c.second} <= keys:
            raise SchemaError(f"modalities.json: comparison {c.key} names a domain that is not declared.")
    return Modalities(studies=studies, scans=scans, domains=domains, comparisons=comparisons, splits=tuple(data["splits"]))
