"""Synthetic releases: UMD-mini (the embedded default) and full-size ones, in the exact release format.

`synthesize` plans the subjects (which studies, which split), renders each study with the phantom
and writes it through the resumable `ReleaseWriter`. Generation is deterministic: the same
settings give the same bytes, whatever the order, the number of workers or the interruptions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from umd_dataset.errors import InvalidOptionError, check_choice, spell
from umd_dataset.io.jobs import Progress, run_items
from umd_dataset.release.index import Release, open_release
from umd_dataset.release.writer import ReleaseWriter, write_scan
from umd_dataset.schema.organs import load_schema
from umd_dataset.schema.studies import modalities
from umd_dataset.synthetic.phantom import grid_of, make_anatomy, pose, presets, render_scan

__all__ = ["SynthConfig", "SubjectPlan", "plan", "write_study", "synthesize", "CITATION"]

CITATION = "arXiv:2602.07643"


@dataclass(frozen=True)
class SynthConfig:
    """Settings of a synthetic release. The same settings give the same release, byte for byte.

    Attributes:
        subjects: number of subjects.
        preset: grid sizes, ``"mini"`` (tests) or ``"full"`` (whole-body sizes, benchmarks).
        seed: random seed.
        petct_only_fraction, petmri_only_fraction: share of subjects with one study only (the
            real UMD has 490 PET/CT and 464 PET/MRI studies, many of the same people).
        split_fractions: train / validation / test shares, assigned per subject within each
            group (paired, PET/CT only, PET/MRI only).
        name, version: recorded in the release descriptor.

    Raises:
        UnknownNameError: an unknown preset (with the closest one).
        InvalidOptionError: a count or a share out of range.
    """

    subjects: int = 12
    preset: str = "mini"
    seed: int = 0
    petct_only_fraction: float = 1 / 6
    petmri_only_fraction: float = 1 / 6
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    name: str = "UMD-mini"
    version: str = "1.0.0"

    def __post_init__(self) -> None:
        check_choice(self.preset, presets(), "synthetic preset")
        if self.subjects < 1:
            raise InvalidOptionError(f"subjects must be at least 1, got {self.subjects}")
        if not 0 <= self.petct_only_fraction + self.petmri_only_fraction <= 1:
            raise InvalidOptionError("petct_only_fraction + petmri_only_fraction must lie in [0, 1]")
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))
        if len(self.split_fractions) != len(modalities().splits) or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise InvalidOptionError(
                f"split_fractions must be {len(modalities().splits)} shares ({', '.join(modalities().splits)}) summing "
                f"to 1, got {self.split_fractions}"
            )


@dataclass(frozen=True)
class SubjectPlan:
    """One planned subject: its index (the seed of its anatomy), id, studies and split."""

    index: int
    id: str
    studies: tuple[str, ...]
    split: str


def plan(config: SynthConfig) -> list[SubjectPlan]:
    """Which subjects exist, which studies each has, and its split: a pure function of the config."""
    rng = np.random.default_rng([config.seed, 1_000_003])
    n = config.subjects
    n_ct = int(round(n * config.petct_only_fraction))
    n_mr = int(round(n * config.petmri_only_fraction))
    both = tuple(modalities().studies)
    groups = [both] * (n - n_ct - n_mr) + [("petct",)] * n_ct + [("petmri",)] * n_mr
    order = rng.permutation(n)
    studies_of = {int(order[i]): groups[i] for i in range(n)}
    split_of: dict[int, str] = {}
    train, validation, test = modalities().splits
    for group in sorted(set(groups)):
        members = [i for i in range(n) if studies_of[i] == group]
        members = [members[i] for i in rng.permutation(len(members))]
        n_test = int(round(len(members) * config.split_fractions[2]))
        n_val = int(round(len(members) * config.split_fractions[1]))
        for rank, i in enumerate(members):
            split_of[i] = test if rank < n_test else validation if rank < n_test + n_val else train
    width = max(4, len(str(n)))
    return [SubjectPlan(i, f"UMD{i + 1:0{width}d}", studies_of[i], split_of[i]) for i in range(n)]


def write_study(root: str | os.PathLike, config: SynthConfig, subject: SubjectPlan, study: str) -> list:
    """Generate and write the scans of one study; returns their manifest rows.

    A pure function of (config, subject, study): it can run in any process, in any order.
    """
    schema = load_schema()
    spec = modalities()
    anatomy = make_anatomy(np.random.default_rng([config.seed, subject.index, 0]), schema)
    posed = pose(np.random.default_rng([config.seed, subject.index, 1 + list(spec.studies).index(study)]))
    records = []
    for scan in spec.study(study).scans:
        domain = spec.domain_of(study, scan).key
        rng = np.random.default_rng([config.seed, subject.index, 10 + spec.domain_keys.index(domain)])
        image, labels, affine = render_scan(anatomy, schema, domain, grid_of(config.preset, domain), posed, rng)
        records.append(write_scan(Path(root), subject.id, study, scan, image, labels, affine, schema))
    return records


def _write_item(root: str, config: SynthConfig, item: tuple[SubjectPlan, str]) -> list:
    return write_study(root, config, *item)


def synthesize(
    root: str | os.PathLike,
    config: SynthConfig | None = None,
    *,
    overwrite: bool = False,
    workers: int = 1,
    progress: bool = False,
    on_study: Callable[[str, str], None] | None = None,
) -> Release:
    """Write a synthetic release (the embedded default, UMD-mini) and open it.

    Resumable: if an earlier call with the same config was interrupted, finished studies are
    kept and the rest is written. The descriptor is written last, so an interrupted folder never
    opens as a release.

    Args:
        root: output folder (created; must be new, empty, or an interrupted job of the same config).
        config: what to generate (default: `SynthConfig()`, 12 subjects on the ``mini`` grids).
        overwrite: replace an existing release or an interrupted job with other settings.
        workers: processes generating studies in parallel.
        progress: show a progress bar.
        on_study: called with (subject, study) after each study is written.

    Returns:
        The opened `Release`.

    Raises:
        OutputExistsError: `root` holds a complete release or is a foreign non-empty folder.
        JobMismatchError: `root` holds an interrupted job with other settings (named).

    Example:
        >>> release = synthesize("umd-mini", SynthConfig(subjects=4))  # doctest: +SKIP
    """
    config = config or SynthConfig()
    job = {"generator": "umd_dataset.synthetic", **asdict(config)}
    with ReleaseWriter(root, job=job, schema=load_schema(), overwrite=overwrite,
                       fix=f"pass {spell('overwrite=True', '--overwrite')} to start over.") as writer:
        subjects = plan(config)
        expected = [(s, study) for s in subjects for study in s.studies]
        finished = writer.finished  # read once: it lists the job folder
        todo = [(s, study) for s, study in expected if (s.id, study) not in finished]
        with Progress(len(expected), initial=len(expected) - len(todo), desc=f"synth {config.name}", unit="study",
                      enabled=progress) as bar:

            def done(item: tuple[SubjectPlan, str], records) -> None:
                writer.record_study(records)
                bar.update()
                if on_study is not None:
                    on_study(item[0].id, item[1])

            run_items(todo, partial(_write_item, str(root), config), done, workers=workers)
        splits: dict[str, list[str]] = {name: [] for name in modalities().splits}
        for subject in subjects:
            splits[subject.split].append(subject.id)
        writer.finalize(
            name=config.name,
            version=config.version,
            splits=splits,
            expected=[(s.id, study) for s, study in expected],
            license="CC-BY-4.0",
            citation=CITATION,
            description="Synthetic phantoms in the exact format of the UMD release (not real patients).",
            synthetic=job,
        )
    return open_release(root)
