"""Organ coverage of a release: how many label maps contain each organ, per evaluation domain.

The accounting behind "about 12,000 organ masks": one organ mask is one organ present in one label
map. Computed from the manifest alone (organs present and their voxel counts), reading no image.
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass

import numpy as np

from umd_dataset.io.files import atomic_path
from umd_dataset.schema.studies import modalities

__all__ = ["CoverageRow", "Coverage", "coverage"]


@dataclass(frozen=True)
class CoverageRow:
    """One organ in one evaluation domain (one kind of scan of one kind of study).

    Attributes:
        organ, domain, study, scan: what is counted.
        label_maps: label maps of this kind of scan that contain the organ.
        scans: label maps of this kind of scan in the release.
        median_volume_ml, min_volume_ml: organ volume over those label maps (None if never present).
    """

    organ: str
    domain: str
    study: str
    scan: str
    label_maps: int
    scans: int
    median_volume_ml: float | None
    min_volume_ml: float | None

    @property
    def fraction(self) -> float:
        return self.label_maps / self.scans if self.scans else 0.0


@dataclass(frozen=True)
class Coverage:
    release: str
    schema: str
    rows: tuple[CoverageRow, ...]

    @property
    def organ_masks(self) -> int:
        """Total organ masks: organs present, summed over every label map."""
        return sum(r.label_maps for r in self.rows)

    def by_organ(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for row in self.rows:
            totals[row.organ] = totals.get(row.organ, 0) + row.label_maps
        return totals

    def to_markdown(self) -> str:
        names = {d.key: d.name for d in modalities().domains}
        domains = list(dict.fromkeys(r.domain for r in self.rows))
        header = "| organ | " + " | ".join(names[d] for d in domains) + " | total |"
        lines = [
            f"Organ coverage of {self.release} (label schema {self.schema}): label maps containing each organ / label maps.",
            "",
            header,
            "|---|" + "---:|" * (len(domains) + 1),
        ]
        cell = {(r.organ, r.domain): r for r in self.rows}
        for organ, total in self.by_organ().items():
            parts = []
            for domain in domains:
                row = cell[(organ, domain)]
                volume = f", {row.median_volume_ml:.0f} mL" if row.median_volume_ml is not None else ""
                parts.append(f"{row.label_maps}/{row.scans}{volume}")
            lines.append(f"| {organ} | " + " | ".join(parts) + f" | {total} |")
        lines += ["", f"Organ masks in all: {self.organ_masks} (median volume in mL after each count)."]
        return "\n".join(lines)

    def write_csv(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=[*CoverageRow.__dataclass_fields__, "fraction"])
            writer.writeheader()
            for row in self.rows:
                writer.writerow({**asdict(row), "fraction": round(row.fraction, 6)})


def coverage(release) -> Coverage:
    """Coverage of every organ in every domain of a release (`umd_dataset.release.index.Release`)."""
    rows = []
    for domain in modalities().domains:
        records = [r for r in release.scans if r.domain == domain.key]
        if not records:
            continue
        for organ in release.schema:
            volumes = [
                r.organ_voxel_counts[organ.slug] * float(np.prod(r.spacing_mm)) / 1000.0
                for r in records
                if organ.slug in r.organs
            ]
            rows.append(
                CoverageRow(
                    organ=organ.slug,
                    domain=domain.key,
                    study=domain.study,
                    scan=domain.scan,
                    label_maps=len(volumes),
                    scans=len(records),
                    median_volume_ml=float(np.median(volumes)) if volumes else None,
                    min_volume_ml=float(np.min(volumes)) if volumes else None,
                )
            )
    return Coverage(f"{release.info.name} {release.info.version}", release.schema.key, tuple(rows))
