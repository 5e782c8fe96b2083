"""The Hub-ready export of a release: Parquet shards with the NIfTI bytes embedded, and the dataset
card with its ``configs:``, which stock `datasets.load_dataset(folder, config)` loads without
umd_dataset (the same files a Hub copy holds).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from umd_dataset.errors import OutputExistsError
from umd_dataset.io.files import atomic_path
from umd_dataset.io.jobs import track
from umd_dataset.release.card import card_text
from umd_dataset.release.index import Release
from umd_dataset.release.reading import read_bytes
from umd_dataset.schema.studies import modalities
from umd_dataset.views.hf import CONFIGS, dataset_info, features, nifti_columns, rows

__all__ = ["export_hf"]


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
        OutputExistsError: `out` exists (pass `overwrite`).
    """
    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one bar of our own instead of one per shard
    try:
        return _export(release, Path(out), max_shard_bytes, min_shards, overwrite, progress)
    finally:
        if bars:
            datasets.enable_progress_bars()


def _embedded(release: Release, row: dict, columns: tuple[str, ...]) -> dict:
    """A row whose NIfTI values carry the file's verified bytes (path: the file name, as `datasets` embeds it)."""
    row = dict(row)
    for column in columns:
        if row.get(column) is not None:
            relative = os.path.relpath(row[column]["path"], release.root).replace(os.sep, "/")
            _, data = read_bytes(release, *release.record_of(relative))
            row[column] = {"bytes": data, "path": os.path.basename(relative)}
    return row


def _export(release: Release, out: Path, max_shard_bytes: int, min_shards: int, overwrite: bool, progress: bool) -> Path:
    import datasets

    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    written: dict[str, list[str]] = {}
    jobs = [(c, s) for c in CONFIGS for s in modalities().splits]
    for config, split in track(jobs, total=len(jobs), desc="export", unit="split", enabled=progress):
        table = rows(release, config, split)
        if not table:
            continue
        columns = nifti_columns(config)
        size = sum(os.path.getsize(row[c]["path"]) for row in table for c in columns if row.get(c))
        count = min(len(table), max(min_shards, math.ceil(size / max_shard_bytes)))
        bounds = [round(i * len(table) / count) for i in range(count + 1)]
        for index in range(count):  # one shard in memory at a time, its bytes read verified
            shard = [_embedded(release, row, columns) for row in table[bounds[index] : bounds[index + 1]]]
            dataset = datasets.Dataset.from_list(shard, features=features(config), info=dataset_info(release, config))
            path = staging / "data" / config / f"{split}-{index:05d}-of-{count:05d}.parquet"
            with atomic_path(path) as tmp:
                dataset.to_parquet(str(tmp))
        written.setdefault(config, []).append(split)
    (staging / "README.md").write_text(_card(release, written), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return out


def _card(release: Release, written: dict[str, list[str]]) -> str:
    """The package's dataset card, its ``configs`` narrowed to what was written, plus this release's counts."""
    import yaml

    _, header, body = card_text().split("---\n", 2)
    meta = yaml.safe_load(header)
    meta["version"] = release.info.version
    meta["pretty_name"] = f"{release.info.name} {release.info.version}"
    meta["configs"] = [
        {"config_name": config, "data_files": [{"split": s, "path": f"data/{config}/{s}-*.parquet"} for s in splits]}
        for config, splits in written.items()
    ]
    counts = json.dumps(release.info.counts.to_dict(), indent=2)
    extra = f"\n## This export\n\n{release.info.name} {release.info.version}, label schema {release.info.label_schema}.\n\n```json\n{counts}\n```\n"
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n" + body + extra
