"""The Hub-ready export of a release: Parquet shards with the NIfTI files embedded (uncompressed,
under Parquet's zstd, so stock `datasets.Nifti` decodes a row faster than the release's own file
is read), the dataset card with its ``configs:`` (``petct`` the default), which stock
`datasets.load_dataset(folder)` loads without umd_dataset (the same files a Hub copy holds), and
its ``croissant.json``.

Shards hold whole subjects, in subject order, so that splitting by shard never parts the scans of
one subject (see `umd_dataset.views.hf.split_by_node`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from umd_dataset.errors import InvalidOptionError, OutputExistsError, spell
from umd_dataset.io.files import atomic_path, sha256_file
from umd_dataset.io.jobs import track
from umd_dataset.release.card import card_text
from umd_dataset.release.croissant import export_croissant, write_croissant
from umd_dataset.release.format import CROISSANT
from umd_dataset.release.index import Release
from umd_dataset.release.reading import read_bytes
from umd_dataset.schema.studies import modalities
from umd_dataset.views.hf import CONFIGS, DEFAULT_CONFIG, by_subject, dataset_info, features, nifti_columns, rows

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
    """Write a Hub-ready copy: Parquet shards with the NIfTI files embedded, a dataset card, and
    its Croissant metadata.

    The NIfTI files are embedded uncompressed (``.nii``) in zstd-compressed shards: the shards are
    about the size of the release's ``.nii.gz`` files (0.91x on a whole-body PET/CT), and stock
    `datasets` decodes a row in about half the time the package reads the release's files (it
    would gunzip ``.nii.gz`` bytes with Python's gzip: 1.6x). The cost: the Arrow cache that
    map-style `datasets.load_dataset(out)` prepares holds them uncompressed (about 3x the release);
    streaming reads the shards as they are.

    Layout: ``README.md`` (the dataset card with ``configs:``; ``petct`` is the default config, so
    ``datasets.load_dataset(out)`` needs no config name), ``croissant.json`` (`FileObject` with
    sha256 for every shard; `umd_dataset.release.croissant.export_croissant`) and
    ``data/<config>/<split>-<i>-of-<n>.parquet``.

    Shards: rows in subject order, every shard whole subjects (never the CT of a subject in one
    shard and its PET in another). A split has a multiple of `min_shards` shards, enough to keep
    each under about `max_shard_bytes`, or one per subject when it has fewer subjects than that.
    Streaming, `datasets.distributed.split_dataset_by_node` then gives every node whole subjects
    whenever the number of nodes divides the number of shards (with 16: 1, 2, 4, 8 or 16 nodes);
    `umd_dataset.views.hf.split_by_node` does for any number of nodes, streaming or not.

    The folder is written next to `out` and renamed into place, so an interrupted export leaves
    nothing at `out`.

    Raises:
        OutputExistsError: `out` exists (pass `overwrite`).
        InvalidOptionError: `min_shards` or `max_shard_bytes` below 1.
    """
    import datasets

    if min_shards < 1 or max_shard_bytes < 1:
        raise InvalidOptionError(f"min_shards and max_shard_bytes must be at least 1, got {min_shards} and {max_shard_bytes}.")
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one bar of our own instead of one per shard
    try:
        return _export(release, Path(out), max_shard_bytes, min_shards, overwrite, progress)
    finally:
        if bars:
            datasets.enable_progress_bars()


def _embedded(release: Release, row: dict, columns: tuple[str, ...]) -> dict:
    """A row whose NIfTI values carry the file's verified bytes, decompressed (path: the file name
    without ``.gz``, as `datasets` embeds it): stock `datasets.Nifti` decodes ``.nii.gz`` bytes with
    Python's gzip, 2-3x slower than reading the release's file; uncompressed ones it reads as they
    are, and the shard's zstd compression keeps the size (see `_write_shard`)."""
    from isal import igzip

    row = dict(row)
    for column in columns:
        if row.get(column) is not None:
            relative = os.path.relpath(row[column]["path"], release.root).replace(os.sep, "/")
            _, data = read_bytes(release, *release.record_of(relative))
            name = os.path.basename(relative)
            if name.endswith(".gz"):  # the CRC and length of the stream are checked as it is decompressed
                data, name = igzip.decompress(data), name[: -len(".gz")]
            row[column] = {"bytes": data, "path": name}
    return row


def _write_shard(rows: list[dict], config: str, release: Release, path: Path) -> None:
    """One Parquet shard: a row group per row (a scan, or a paired subject: streaming and random
    access read one at a time; no Arrow array nears its 2 GiB limit), every column zstd-compressed
    (`datasets` would store the NIfTI bytes uncompressed), the `datasets` features in its schema."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = features(config).arrow_schema
    table = datasets.Dataset(pa.concat_tables([pa.Table.from_pylist([row], schema=schema) for row in rows]),
                             info=dataset_info(release, config)).data.table
    pq.write_table(table, path, row_group_size=1, compression="zstd", compression_level=_ZSTD_LEVEL)


#: The zstd level of the shards: level 1 compresses the uncompressed NIfTI bytes to about the size
#: of the release's ``.nii.gz`` files at several hundred MB/s (see ``scripts/bench_views.py``).
_ZSTD_LEVEL = 1


def shard_subjects(sizes: list[int], max_shard_bytes: int, min_shards: int) -> list[range]:
    """Which subjects (indices into `sizes`, the bytes of each subject's files, in subject order)
    go in each shard: consecutive subjects, as many shards as the smallest multiple of `min_shards`
    that keeps shards under about `max_shard_bytes`, at most one per subject; shard sizes differ by
    at most one subject."""
    if not sizes:
        return []
    needed = max(1, math.ceil(sum(sizes) / max_shard_bytes))
    count = min(len(sizes), math.ceil(needed / min_shards) * min_shards)
    bounds = [len(sizes) * i // count for i in range(count + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(count)]


def _export(release: Release, out: Path, max_shard_bytes: int, min_shards: int, overwrite: bool, progress: bool) -> Path:
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass {spell('overwrite=True', '--overwrite')} to replace it.")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    written: dict[str, list[str]] = {}
    shards: list[tuple[str, str]] = []
    jobs = [(c, s) for c in CONFIGS for s in modalities().splits]
    for config, split in track(jobs, total=len(jobs), desc="export", unit="split", enabled=progress):
        groups = by_subject(rows(release, config, split))
        if not groups:
            continue
        columns = nifti_columns(config)
        sizes = [sum(os.path.getsize(row[c]["path"]) for row in group for c in columns if row.get(c)) for group in groups]
        plan = shard_subjects(sizes, max_shard_bytes, min_shards)
        for index, subjects in enumerate(plan):  # one shard in memory at a time, its bytes read verified
            # Arrow straight from the rows: `Dataset.from_list` would encode them with `datasets.Nifti`,
            # which drops the bytes of a row whose path names a file in the working folder.
            shard = [_embedded(release, row, columns) for i in subjects for row in groups[i]]
            relative = f"data/{config}/{split}-{index:05d}-of-{len(plan):05d}.parquet"
            with atomic_path(staging / relative) as tmp:
                _write_shard(shard, config, release, tmp)
            shards.append((relative, sha256_file(staging / relative)))
        written.setdefault(config, []).append(split)
    (staging / "README.md").write_text(_card(release, written), encoding="utf-8")
    arrow = {config: features(config).arrow_schema for config in written}
    write_croissant(staging / CROISSANT, export_croissant(release.info, release.schema, arrow, shards))
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return out


def _card(release: Release, written: dict[str, list[str]]) -> str:
    """The package's dataset card, its ``configs`` narrowed to what was written (the default:
    `DEFAULT_CONFIG`, or the first written), plus this release's counts."""
    import yaml

    _, header, body = card_text().split("---\n", 2)
    meta = yaml.safe_load(header)
    meta["version"] = release.info.version
    meta["pretty_name"] = f"{release.info.name} {release.info.version}"
    default = DEFAULT_CONFIG if DEFAULT_CONFIG in written else next(iter(written), None)
    meta["configs"] = [
        {"config_name": config, **({"default": True} if config == default else {}),
         "data_files": [{"split": s, "path": f"data/{config}/{s}-*.parquet"} for s in splits]}
        for config, splits in written.items()
    ]
    counts = json.dumps(release.info.counts.to_dict(), indent=2)
    extra = (
        f"\n## This export\n\n{release.info.name} {release.info.version}, label schema {release.info.label_schema}. "
        f"`{default}` is the default config. Shards hold whole subjects, in subject order: to give several nodes whole "
        "subjects, use `umd_dataset.views.hf.split_by_node` (or, streaming, `datasets.distributed.split_dataset_by_node` with a "
        f"number of nodes that divides the number of shards). `{CROISSANT}` holds the Croissant metadata of this export."
        f"\n\n```json\n{counts}\n```\n"
    )
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n" + body + extra
