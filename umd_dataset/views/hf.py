"""The Hugging Face view of a release, and `load_dataset`: rows built from the release index.

Configs (one `datasets.Features` each, built from the release index, nothing re-discovered):

- ``petct``, ``petmri``: one row per scan of that kind of study: ``image`` and ``label`` as
  `datasets.Nifti`, with subject, study, scan, domain, modality, split, shape, spacing, affine and
  organs as columns;
- ``paired``: one row per subject with both studies: for each domain (``ct``, ``petct_pet``,
  ``mri``, ``petmri_pet``) a Nifti column, its ``_label`` column, and its spacing, affine and organs.

Which `datasets.load_dataset` routes work, and why: datasets 4+ has no loading scripts, and a bare
name like ``"umd"`` resolves only to a folder ``./umd``, the Hub, or a private registry of packaged
builders. So ``umd_dataset.load_dataset("umd", ...)`` is the supported entry point (it reads the
release index directly); ``datasets.load_dataset(folder)`` works, with stock datasets and no
umd_dataset installed, on a folder written by `umd_dataset.views.export.export_hf` (Parquet shards
with the NIfTI files embedded, uncompressed under zstd, and a dataset card with ``configs:``, ``petct`` the default), which is
also what a Hub copy holds. On a release folder itself, stock `datasets.load_dataset` stops with a
message naming `umd_dataset.load_dataset` (the release's ``README.md`` sees to it).

Several nodes: `split_by_node` gives each node whole, disjoint subjects, map-style or streaming,
for these views and for exports (`datasets.distributed.split_dataset_by_node` cuts map-style
datasets by row count, which splits the CT and the PET of a subject, and streams by example
unless the number of shards is a multiple of the number of nodes).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from umd_dataset.errors import InvalidOptionError, ReleaseNotFoundError, check_choice, spell
from umd_dataset.release.index import Release
from umd_dataset.release.reading import lazy_image, read_bytes
from umd_dataset.release.resolve import resolve_release
from umd_dataset.schema.studies import modalities

__all__ = [
    "CONFIGS", "DEFAULT_CONFIG", "PAIRED", "features", "nifti_columns", "rows", "dataset_info", "VerifiedNifti", "to_hf",
    "load_dataset", "split_by_node",
]

#: The paired config: one row per subject with every kind of study.
PAIRED = "paired"
#: One config per study kind (a row per scan), and the paired one.
CONFIGS = (*modalities().studies, PAIRED)
#: The config `load_dataset` gives when none is named, and the default config of an export.
DEFAULT_CONFIG = CONFIGS[0]


def features(config: str, decode: bool = True):
    """The `datasets.Features` of a config (`decode=False`: NIfTI columns left as ``{bytes, path}``)."""
    from datasets import Features, List, Value
    from datasets import Nifti as _Nifti

    def Nifti():  # noqa: N802 - reads like the feature it makes
        return _Nifti(decode=decode)

    _check_config(config)
    if config != PAIRED:
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
    check_choice(config, CONFIGS, "config")


def _file(release: Release, relative: str) -> dict:
    return {"bytes": None, "path": str(release.path(relative))}


def rows(release: Release, config: str, split: str | None = None, organs: Iterable[str] | None = None) -> list[dict]:
    """The rows of a config, from the release index (no image is read)."""
    _check_config(config)
    name = f"{release.info.name} {release.info.version}"
    organs = None if organs is None else [release.schema.organ(o).slug for o in organs]
    if config != PAIRED:
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


def dataset_info(release: Release, config: str, decode: bool = True):
    from datasets import DatasetInfo

    return DatasetInfo(
        description=f"{release.info.name} {release.info.version}, config {config}. {release.info.description}".strip(),
        citation=release.info.citation,
        license=release.info.license,
        config_name=config,
        dataset_name=release.info.name,
        features=features(config, decode),
    )


def nifti_columns(config: str) -> tuple[str, ...]:
    """The columns of a config that hold a NIfTI file."""
    from datasets import Nifti

    return tuple(name for name, feature in features(config).items() if isinstance(feature, Nifti))


class VerifiedNifti:
    """The transform of the map-style view: every NIfTI value of a batch becomes a nibabel image
    whose affine, shape and dtype are the manifest's and whose voxels are read through the verified
    reader when first used (`umd_dataset.release.reading.lazy_image`), so reading a plain column
    reads no file, and no voxel comes from bytes the manifest does not name (the stock
    `datasets.Nifti` decoding reads with nibabel, which never checks the gzip trailer).

    Picklable (it holds the release index), so DataLoader workers can use it.
    """

    def __init__(self, release: Release, config: str) -> None:
        self.release, self.columns = release, nifti_columns(config)
        self._root = str(release.root)

    def _verified(self, value):
        if value is None:
            return None
        path = value.get("path") if isinstance(value, dict) else value.get_filename()
        relative = os.path.relpath(path, self._root).replace(os.sep, "/")
        return lazy_image(self.release, *self.release.record_of(relative))

    def __call__(self, batch: dict) -> dict:
        for column in self.columns:
            if column in batch:
                batch[column] = [self._verified(v) for v in batch[column]]
        return batch


def to_hf(release: Release, config: str = DEFAULT_CONFIG, *, split: str | None = None, organs=None, streaming: bool = False):
    """A `datasets.Dataset` (or `IterableDataset` with `streaming`) of one split, or a `DatasetDict`
    (`IterableDatasetDict`) of all splits when `split` is None.

    Files are read when rows are decoded, and every file's bytes are checked against the manifest:
    the map-style view decodes through `VerifiedNifti` (a `set_transform`; a later `with_format`
    replaces it), the streaming view hands the decoder verified bytes. Rows come in subject order;
    each shard of the streaming view is one subject (so shard-wise splitting keeps subjects whole).
    """
    import datasets

    splits = [split] if split is not None else [s for s in modalities().splits if release.splits.get(s)]
    result = {}
    for name in splits:
        modalities().check_split(name)
        table = rows(release, config, name, organs)
        if streaming:
            result[name] = datasets.IterableDataset.from_generator(
                _generate, features=features(config), split=datasets.NamedSplit(name),
                gen_kwargs={"release": release, "columns": nifti_columns(config), "subjects": by_subject(table)},
            )
        else:
            dataset = datasets.Dataset.from_list(table, features=features(config, decode=False),
                                                 info=dataset_info(release, config, decode=False), split=datasets.NamedSplit(name))
            dataset.set_transform(VerifiedNifti(release, config))
            result[name] = dataset
    if split is not None:
        return result[split]
    return datasets.IterableDatasetDict(result) if streaming else datasets.DatasetDict(result)


def by_subject(table: list[dict]) -> list[list[dict]]:
    """Rows grouped by subject, in their order (rows of one subject are adjacent in `rows`)."""
    groups: dict[str, list[dict]] = {}
    for row in table:
        groups.setdefault(row["subject"], []).append(row)
    return list(groups.values())


def _generate(release: Release, columns: tuple[str, ...], subjects: list[list[dict]]):
    """Rows whose NIfTI values carry the file's verified bytes and no path, so that the decoder
    decodes those bytes (and checks the gzip CRC): `datasets.Nifti` drops the bytes of a value whose
    path names a file, and would read the file again, unverified. `subjects` is the list that
    datasets shards: one shard per subject."""
    root = str(release.root)
    for group in subjects:
        for row in group:
            row = dict(row)
            for column in columns:
                if row.get(column) is not None:
                    relative = os.path.relpath(row[column]["path"], root).replace(os.sep, "/")
                    _, data = read_bytes(release, *release.record_of(relative))
                    row[column] = {"path": None, "bytes": data}
            yield row


def split_by_node(dataset, rank: int, world_size: int):
    """The share of node `rank` out of `world_size`: whole subjects, never two nodes with one
    subject, every subject on some node. Use it instead of
    `datasets.distributed.split_dataset_by_node` on these views and on exports.

    - A map-style `datasets.Dataset`: the subjects (sorted ids of its ``subject`` column, which
      alone is read) are dealt out in turn, subject ``i`` to node ``i % world_size``; the node
      keeps the rows of its subjects (`Dataset.select`: transform and format stay).
    - A `datasets.IterableDataset`: its shards are dealt out in turn, whole, shard ``i`` to node
      ``i % world_size`` (as ``split_dataset_by_node`` does when the number of shards is a
      multiple of the number of nodes). Each shard of `load_dataset(..., streaming=True)` is one
      subject, so this is the same assignment as the map-style one; each shard of an export
      (`umd_dataset.views.export.export_hf`) holds whole subjects. Nothing is read to decide.
    - A `DatasetDict` or `IterableDatasetDict`: each of its splits.

    Streaming, shuffle after splitting (or with the same `seed` on every node: shards are dealt out
    after a shard shuffle). Shards of whole subjects are what the streaming split relies on: an
    export written before they were (one shard per row, umd_dataset before issue 12) must be
    written again.

    A node can get no subject at all, when there are fewer subjects (shards) than nodes: it gets
    an empty dataset. Nodes get different numbers of rows; DDP training needs the same number of
    steps on every node: pad or drop, as `torch.utils.data.DistributedSampler` does.

    Args:
        dataset: a dataset from `load_dataset`, `to_hf`, or stock `datasets.load_dataset` on an export.
        rank: this node, 0 <= rank < world_size.
        world_size: the number of nodes.

    Raises:
        InvalidOptionError: a rank or world size out of range, or a map-style dataset without a
            ``subject`` column.

    Example:
        >>> train = load_dataset("umd-mini", "petct", split="train", streaming=True)  # doctest: +SKIP
        >>> mine = split_by_node(train, rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))  # doctest: +SKIP
    """
    import datasets

    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        raise InvalidOptionError(f"world_size must be a whole number of nodes, at least 1; got {world_size!r}.")
    if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < world_size:
        raise InvalidOptionError(f"rank must be 0..{world_size - 1} for world_size={world_size}; got {rank!r}.")
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return type(dataset)({name: split_by_node(part, rank, world_size) for name, part in dataset.items()})
    if isinstance(dataset, datasets.IterableDataset):
        if rank >= dataset.num_shards:
            return dataset.take(0)
        return dataset.shard(num_shards=world_size, index=rank, contiguous=False)
    if not isinstance(dataset, datasets.Dataset):
        raise InvalidOptionError(f"split_by_node takes a datasets.Dataset or IterableDataset (or a dict of them), not "
                                 f"{type(dataset).__name__}.")
    if "subject" not in dataset.column_names:
        raise InvalidOptionError(f"split_by_node needs a 'subject' column to keep subjects whole; this dataset has "
                                 f"{dataset.column_names}.")
    column = list(dataset.with_format(None).select_columns(["subject"])["subject"])
    mine = set(sorted(set(column))[rank::world_size])
    return dataset.select([i for i, subject in enumerate(column) if subject in mine])


def load_dataset(
    name: str = "umd",
    config: str = DEFAULT_CONFIG,
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
            use into `umd_dataset.release.resolve.default_mini_root`), or the path of a release folder.
        config: ``petct``, ``petmri`` or ``paired`` (one row per subject with both studies).
        split: ``train``, ``validation`` or ``test``; None returns a dict of all splits.
        data_dir: the release folder (default for ``"umd"``: ``$UMD_DATA_DIR``).
        version: the data version you expect (e.g. ``"1.0.0"``), compared exactly; another version
            raises, naming the versions there are (see `umd_dataset.release.resolve.check_version`).
        organs: keep only the scans (paired: subjects) whose label maps contain all these organs.
        streaming: return an `IterableDataset` (one shard per subject: see `split_by_node`).
        hub_repo: a Hub repository holding an `export_hf` copy, loaded with `datasets.load_dataset`
            (needs the network).

    Raises:
        ReleaseNotFoundError: no release where one was expected; the message says how to get one.
        ReleaseVersionError: the release is not the `version` asked for.
        InvalidOptionError: `version` with `hub_repo` (a Hub copy's version is its git revision).

    Example:
        >>> train = load_dataset("umd-mini", "paired", split="train")   # doctest: +SKIP
        >>> train[0]["ct"].shape                                         # doctest: +SKIP
    """
    _check_config(config)
    if hub_repo is not None:
        if version is not None:
            raise InvalidOptionError(
                f"version={version!r} cannot be checked on the Hub copy {hub_repo!r}: its version is the git revision of the "
                f"repository. Leave version out, or download the {version} release and {spell('pass data_dir=', 'give its folder')}."
            )
        return _from_hub(hub_repo, config, split, streaming)
    release = resolve_release(name, data_dir, version=version)
    return to_hf(release, config, split=split, organs=organs, streaming=streaming)


def _from_hub(repo: str, config: str, split: str | None, streaming: bool):
    import datasets
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise ReleaseNotFoundError(
            f"Cannot load the Hub copy {repo!r}: HF_HUB_OFFLINE is set. Unset it on a machine with network access, "
            "or pass data_dir= to a local release."
        )
    return datasets.load_dataset(repo, config, split=split, streaming=streaming)
