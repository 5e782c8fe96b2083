"""The Hugging Face view of a release, `load_dataset`, and the Hub-ready export.

Configs (one `datasets.Features` each, built from the release index, nothing re-discovered):

- ``petct``, ``petmri``: one row per scan of that kind of study: ``image`` and ``label`` as
  `datasets.Nifti`, with subject, study, scan, domain, modality, split, shape, spacing, affine and
  organs as columns;
- ``paired``: one row per subject with both studies: for each domain (``ct``, ``petct_pet``,
  ``mri``, ``petmri_pet``) a Nifti column, its ``_label`` column, and its spacing, affine and organs.

Which `datasets.load_dataset` routes work, and why: datasets 4+ has no loading scripts, and a bare
name like ``"umd"`` resolves only to a folder ``./umd``, the Hub, or a private registry of packaged
builders. So ``umd_dataset.load_dataset("umd", ...)`` is the supported entry point (it reads the
release index directly); ``datasets.load_dataset(folder, "petct")`` works, with stock datasets and
no umd_dataset installed, on a folder written by `export_hf` (Parquet shards with the NIfTI bytes
embedded and a dataset card with ``configs:``), which is also what a Hub copy holds.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from umd_dataset.errors import ReleaseNotFoundError, UMDError, UnknownNameError, did_you_mean
from umd_dataset.index import Release, open_release
from umd_dataset.modalities import modalities

__all__ = ["CONFIGS", "features", "rows", "to_hf", "load_dataset", "resolve_release", "export_hf", "default_mini_root"]

CONFIGS = ("petct", "petmri", "paired")
MINI_VERSION = "1.0.0"


def features(config: str):
    """The `datasets.Features` of a config."""
    from datasets import Features, List, Nifti, Value

    _check_config(config)
    if config != "paired":
        return Features(
            {
                "subject": Value("string"), "study": Value("string"), "scan": Value("string"), "domain": Value("string"),
                "modality": Value("string"), "split": Value("string"), "image": Nifti(), "label": Nifti(),
                "shape": List(Value("int32"), length=3), "spacing_mm": List(Value("float64"), length=3),
                "affine": List(Value("float64"), length=16), "organs": List(Value("string")), "release": Value("string"),
            }
        )
    columns = {"subject": Value("string"), "split": Value("string"), "release": Value("string")}
    for domain in modalities().domains:
        columns[domain.key] = Nifti()
        columns[f"{domain.key}_label"] = Nifti()
        columns[f"{domain.key}_spacing_mm"] = List(Value("float64"), length=3)
        columns[f"{domain.key}_affine"] = List(Value("float64"), length=16)
        columns[f"{domain.key}_organs"] = List(Value("string"))
    return Features(columns)


def _check_config(config: str) -> None:
    if config not in CONFIGS:
        raise UnknownNameError(did_you_mean(config, CONFIGS, "config"))


def _file(release: Release, relative: str) -> dict:
    return {"bytes": None, "path": str(release.path(relative))}


def rows(release: Release, config: str, split: str | None = None, organs: Iterable[str] | None = None) -> list[dict]:
    """The rows of a config, from the release index (no image is read)."""
    _check_config(config)
    name = f"{release.info.name} {release.info.version}"
    organs = None if organs is None else [release.schema.organ(o).slug for o in organs]
    if config != "paired":
        return [
            {
                "subject": r.subject, "study": r.study, "scan": r.scan, "domain": r.domain, "modality": r.modality,
                "split": r.split, "image": _file(release, r.image), "label": _file(release, r.label), "shape": list(r.shape),
                "spacing_mm": list(r.spacing_mm), "affine": list(r.affine), "organs": list(r.organs), "release": name,
            }
            for r in release.select(study=config, split=split, organ=organs)
        ]
    result = []
    for subject in release.pairs(split=split):
        scans = {r.domain: r for r in subject.scans}
        if organs is not None and not all(set(organs) <= set(r.organs) for r in scans.values()):
            continue
        row = {"subject": subject.id, "split": subject.split, "release": name}
        for key, r in scans.items():
            row[key], row[f"{key}_label"] = _file(release, r.image), _file(release, r.label)
            row[f"{key}_spacing_mm"], row[f"{key}_affine"], row[f"{key}_organs"] = list(r.spacing_mm), list(r.affine), list(r.organs)
        result.append(row)
    return result


def _info(release: Release, config: str):
    from datasets import DatasetInfo

    return DatasetInfo(
        description=f"{release.info.name} {release.info.version}, config {config}. {release.info.description}".strip(),
        citation=release.info.citation,
        license=release.info.license,
        config_name=config,
        dataset_name=release.info.name,
        features=features(config),
    )


def to_hf(release: Release, config: str = "petct", *, split: str | None = None, organs=None, streaming: bool = False):
    """A `datasets.Dataset` (or `IterableDataset` with `streaming`) of one split, or a `DatasetDict`
    (`IterableDatasetDict`) of all splits when `split` is None. Files are read when rows are decoded."""
    import datasets

    splits = [split] if split is not None else [s for s in modalities().splits if release.splits.get(s)]
    result = {}
    for name in splits:
        modalities().check_split(name)
        table = rows(release, config, name, organs)
        if streaming:
            result[name] = datasets.IterableDataset.from_generator(
                _generate, features=features(config), gen_kwargs={"rows": table}, split=datasets.NamedSplit(name)
            )
        else:
            result[name] = datasets.Dataset.from_list(table, features=features(config), info=_info(release, config), split=datasets.NamedSplit(name))
    if split is not None:
        return result[split]
    return datasets.IterableDatasetDict(result) if streaming else datasets.DatasetDict(result)


def _generate(rows: list[dict]):
    yield from rows


def default_mini_root() -> Path:
    """Where `load_dataset("umd-mini")` keeps the synthetic release: ``$UMD_CACHE`` or ``~/.cache/umd_dataset``."""
    base = Path(os.environ.get("UMD_CACHE", Path.home() / ".cache" / "umd_dataset"))
    return base / f"umd-mini-{MINI_VERSION}"


def load_dataset(
    name: str = "umd",
    config: str = "petct",
    *,
    split: str | None = None,
    data_dir: str | os.PathLike | None = None,
    version: str | None = None,
    organs: Iterable[str] | None = None,
    streaming: bool = False,
    hub_repo: str | None = None,
):
    """Load UMD (or the synthetic UMD-mini) as a Hugging Face dataset.

    Args:
        name: ``"umd"`` (the real release), ``"umd-mini"`` (the synthetic one, generated on first
            use into `default_mini_root`), or the path of a release folder.
        config: ``petct``, ``petmri`` or ``paired`` (one row per subject with both studies).
        split: ``train``, ``validation`` or ``test``; None returns a dict of all splits.
        data_dir: the release folder (default for ``"umd"``: ``$UMD_DATA_DIR``).
        version: the data version you expect (e.g. ``"1.0.0"``); another version raises.
        organs: keep only the scans (paired: subjects) whose label maps contain all these organs.
        streaming: return an `IterableDataset`.
        hub_repo: a Hub repository holding an `export_hf` copy, loaded with `datasets.load_dataset`
            (needs the network).

    Raises:
        ReleaseNotFoundError: no release where one was expected; the message says how to get one.

    Example:
        >>> train = load_dataset("umd-mini", "paired", split="train")   # doctest: +SKIP
        >>> train[0]["ct"].shape                                         # doctest: +SKIP
    """
    _check_config(config)
    if hub_repo is not None:
        return _from_hub(hub_repo, config, split, streaming)
    release = resolve_release(name, data_dir)
    if version is not None and release.info.version != version:
        raise UMDError(
            f"{release.root} holds {release.info.name} version {release.info.version}, not {version}. Point data_dir to "
            f"the {version} release, or drop version= to take this one."
        )
    return to_hf(release, config, split=split, organs=organs, streaming=streaming)


def resolve_release(name: str = "umd", data_dir: str | os.PathLike | None = None) -> Release:
    """The release a name means: ``"umd"`` (`data_dir` or ``$UMD_DATA_DIR``), ``"umd-mini"``
    (generated on first use), or a folder.

    Raises:
        ReleaseNotFoundError: no release where one was expected; the message says how to get one.
    """
    if data_dir is None and name not in ("umd", "umd-mini"):
        data_dir = name
    if data_dir is None and name == "umd":
        data_dir = os.environ.get("UMD_DATA_DIR")
        if not data_dir:
            raise ReleaseNotFoundError(
                "The UMD release is not on this machine. Download it (see the dataset card) and pass "
                "data_dir='path/to/UMD' or set UMD_DATA_DIR; or load a Hub copy with hub_repo='<org>/<name>' "
                "(needs the network); or use load_dataset('umd-mini') for the synthetic UMD-mini, generated "
                "locally in the same format."
            )
    if data_dir is None:  # umd-mini
        data_dir = default_mini_root()
        if not (Path(data_dir) / "release.json").is_file():
            from umd_dataset.synthetic import SynthConfig, synthesize

            synthesize(data_dir, SynthConfig(version=MINI_VERSION), progress=True)
    return open_release(data_dir)


def _from_hub(repo: str, config: str, split: str | None, streaming: bool):
    import datasets
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise ReleaseNotFoundError(
            f"Cannot load the Hub copy {repo!r}: HF_HUB_OFFLINE is set. Unset it on a machine with network access, "
            "or pass data_dir= to a local release."
        )
    return datasets.load_dataset(repo, config, split=split, streaming=streaming)


# ----------------------------------------------------------------------------------------------
# export


def export_hf(
    release: Release,
    out: str | os.PathLike,
    *,
    max_shard_bytes: int = 500 * 2**20,
    min_shards: int = 16,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a Hub-ready copy: Parquet shards with the NIfTI bytes embedded, and a dataset card.

    Layout: ``README.md`` (the dataset card with ``configs:``) and
    ``data/<config>/<split>-<i>-of-<n>.parquet``. Each split has at least `min_shards` shards (or one
    per row, if fewer rows), so that `datasets.distributed.split_dataset_by_node` can give every
    node whole shards when streaming; shards stay under about `max_shard_bytes`. The folder is
    written next to `out` and renamed into place, so an interrupted export leaves nothing at `out`.

    Raises:
        UMDError: `out` exists (pass `overwrite`).
    """
    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one bar of our own instead of one per shard
    try:
        return _export(release, Path(out), max_shard_bytes, min_shards, overwrite, progress)
    finally:
        if bars:
            datasets.enable_progress_bars()


def _export(release: Release, out: Path, max_shard_bytes: int, min_shards: int, overwrite: bool, progress: bool) -> Path:
    import datasets
    from datasets.table import embed_table_storage

    from umd_dataset.io import atomic_path

    if out.exists() and not overwrite:
        raise UMDError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    written: dict[str, list[str]] = {}
    jobs = [(c, s) for c in CONFIGS for s in modalities().splits]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="export", unit="split")
    for config, split in jobs:
        table = rows(release, config, split)
        if bar is not None:
            bar.update(1)
        if not table:
            continue
        dataset = datasets.Dataset.from_list(table, features=features(config), info=_info(release, config))
        dataset = dataset.with_format("arrow").map(embed_table_storage, batched=True, desc=None).with_format(None)
        size = sum(os.path.getsize(p["path"]) for row in table for p in row.values() if isinstance(p, dict) and p.get("path"))
        count = min(len(dataset), max(min_shards, math.ceil(size / max_shard_bytes)))
        for index in range(count):
            path = staging / "data" / config / f"{split}-{index:05d}-of-{count:05d}.parquet"
            with atomic_path(path) as tmp:
                dataset.shard(count, index, contiguous=True).to_parquet(str(tmp))
        written.setdefault(config, []).append(split)
    if bar is not None:
        bar.close()
    (staging / "README.md").write_text(_card(release, written), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return out


def _card(release: Release, written: dict[str, list[str]]) -> str:
    """The package's dataset card, its ``configs`` narrowed to what was written, plus this release's counts."""
    import json
    from importlib import resources

    import yaml

    text = resources.files("umd_dataset").joinpath("dataset_card.md").read_text("utf-8")
    _, header, body = text.split("---\n", 2)
    meta = yaml.safe_load(header)
    meta["version"] = release.info.version
    meta["pretty_name"] = f"{release.info.name} {release.info.version}"
    meta["configs"] = [
        {"config_name": config, "data_files": [{"split": s, "path": f"data/{config}/{s}-*.parquet"} for s in splits]}
        for config, splits in written.items()
    ]
    counts = json.dumps(release.info.counts, indent=2)
    extra = f"\n## This export\n\n{release.info.name} {release.info.version}, label schema {release.info.label_schema}.\n\n```json\n{counts}\n```\n"
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n" + body + extra
