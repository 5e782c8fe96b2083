"""Studies, scans and evaluation domains of UMD, loaded from ``schema/modalities.json``.

Like `umd_dataset.labels`, this module reads pure data and imports nothing heavy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from umd_dataset.errors import UnknownNameError, did_you_mean

__all__ = ["StudySpec", "ScanSpec", "Domain", "Modalities", "modalities"]


@dataclass(frozen=True)
class ScanSpec:
    """One kind of scan: ``ct``, ``pet`` or ``mri``."""

    key: str
    name: str
    modality: str  # DICOM Modality value: CT, PT, MR
    units: str
    kind: str  # "structural" or "functional"


@dataclass(frozen=True)
class StudySpec:
    """One kind of study (hybrid acquisition) and the scans it holds."""

    key: str
    name: str
    scans: tuple[str, ...]


@dataclass(frozen=True)
class Domain:
    """An evaluation domain: one scan kind of one study kind (e.g. PET of PET/CT)."""

    key: str
    name: str
    study: str
    scan: str


@dataclass(frozen=True)
class Modalities:
    studies: dict[str, StudySpec]
    scans: dict[str, ScanSpec]
    domains: tuple[Domain, ...]
    splits: tuple[str, ...]

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

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise UnknownNameError(did_you_mean(split, self.splits, "split"))
        return split


def _get(table: dict, key: str, what: str):
    try:
        return table[key]
    except KeyError:
        raise UnknownNameError(did_you_mean(key, table, what)) from None


@lru_cache(maxsize=None)
def modalities() -> Modalities:
    """The studies, scans, domains and split names of UMD."""
    data = json.loads(resources.files("umd_dataset.schema").joinpath("modalities.json").read_text("utf-8"))
    return Modalities(
        studies={k: StudySpec(k, v["name"], tuple(v["scans"])) for k, v in data["studies"].items()},
        scans={k: ScanSpec(k, **v) for k, v in data["scans"].items()},
        domains=tuple(Domain(**d) for d in data["domains"]),
        splits=tuple(data["splits"]),
    )
