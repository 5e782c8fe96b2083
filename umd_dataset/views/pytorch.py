"""PyTorch, torchio and MONAI views of a release (thin wrappers over the release index), the formats of
their items, a subject-level distributed sampler and the collates that batch scans of different shapes.

- `ScanDataset`: map-style, one scan per item;
- `PairedDataset`: one subject per item, with every scan of both studies (nested or flat keys);
- `subjects_dataset`: a `torchio.SubjectsDataset` of `ScalarImage`/`LabelMap` (lazy, by path), for
  `tio.Queue` and its samplers;
- `monai_dicts`: the list of dicts MONAI's `Dataset`/`CacheDataset` take (MONAI reads the files);
- `SubjectSampler`: a distributed sampler that gives each rank whole subjects, and every rank the
  same number of items (padded or dropped, as `DistributedSampler` does);
- `PadCollate` and `list_collate`: `DataLoader` collates for scans of different shapes (a CT and a
  PET), padding them to the largest shape of the batch, or keeping them in lists.

Every view reads the same index (`Release.select`), so they agree on which scans exist and which
split they are in. Voxels come from verified reads (`Release.read`) as C-contiguous tensors: one
blocked copy of the file's Fortran-ordered array, converted to the requested dtype on the way.

Item formats (``item_format=`` of `ScanDataset`, `PairedDataset` and `load_scan`):

=========== ============================================================================================
``dict``    (the default) plain tensors: ``image`` (1, X, Y, Z) of `image_dtype`, ``label`` (1, X, Y, Z)
            uint8, ``affine`` (4, 4) float64, ``spacing_mm`` (3,) float64, and ``subject``, ``study``,
            ``scan``, ``domain``, ``split``. MONAI transforms take a plain tensor's affine to be the
            identity (``Orientationd`` then flips nothing, ``Spacingd`` gets the grid wrong) and torchio
            transforms refuse dicts: for them, use one of the two formats below.
``monai``   ``image`` and ``label`` are `monai.data.MetaTensor`s carrying what ``LoadImaged`` +
            ``EnsureChannelFirstd`` attach and what the spatial transforms, ``Invertd`` and
            ``SaveImage`` read: ``affine`` (the release's NIfTI RAS affine, as MONAI's NibabelReader
            gives it; ``space`` = ``"RAS"``), ``original_affine``, ``spatial_shape``,
            ``filename_or_obj`` (the file's path) and ``original_channel_dim`` = 0 (items are channel
            first, so an ``EnsureChannelFirstd`` in a chain changes nothing); the label map stays uint8
            (``LoadImaged`` casts it to float32; the values are the same). Beside them ``subject``,
            ``study``, ``scan``, ``domain``, ``split``. There are no ``affine``/``spacing_mm`` keys, which
            a spatial transform would leave stale: read ``item["image"].affine`` and ``.pixdim``. Batch
            them with `monai.data.DataLoader`, ``collate_fn=monai.data.list_data_collate`` or
            `PadCollate`: torch's default collate keeps the first item's affine for the whole batch.
``torchio`` a `torchio.Subject` with ``image`` (`ScalarImage`) and ``label`` (`LabelMap`) built from
            the tensors and the affine, and ``subject``, ``study``, ``scan``, ``domain``, ``split``.
            torchio's own loader keeps the stored dtype (int16 CT and MRI) and SimpleITK resamples an
            integer image into integers: ``image_dtype=None`` gives exactly what
            ``tio.ScalarImage(path)`` gives through any transform; the float32 default interpolates
            without rounding (results differ from it by the rounding, at most 1). One exception: an
            oblique affine whose entries float32 cannot hold is read ~1e-7 mm apart by SimpleITK
            (pixdim and a direction) and nibabel (the stored sform; MONAI's reader, this package's),
            which can move a resampled shape by a voxel on a rounding tie; items carry nibabel's.
=========== ============================================================================================

Paired items (`PairedDataset`): nested, ``{"subject", "split", "<domain>": {<a scan item>}}``, or flat,
where every field of a scan is a top-level key ``"<domain>_<field>"``: ``ct_image``, ``ct_label``,
``petct_pet_image``, ``mri_label``, ``petmri_pet_affine``, ... (the domains are ``ct``,
``petct_pet``, ``mri``, ``petmri_pet``); ``study``, ``scan`` and ``domain`` are implied by the prefix.
MONAI dict transforms need the flat keys (``RandFlipd(keys=["ct_image", "ct_label"])``), and a
`torchio.Subject` holds its images at the top level: flat is the default of those two formats.
"""

from __future__ import annotations

import heapq
import math
import numbers
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from umd_dataset.errors import InvalidOptionError, check_choice
from umd_dataset.release.format import ScanRecord
from umd_dataset.release.index import Release
from umd_dataset.release.reading import read_c_order
from umd_dataset.release.resolve import resolve_release
from umd_dataset.schema.studies import modalities

__all__ = [
    "ITEM_FORMATS", "ScanDataset", "PairedDataset", "SubjectSampler", "PadCollate", "list_collate", "unpad",
    "TorchioReader", "subjects_dataset", "monai_dicts", "load_scan",
]

#: The values of ``item_format=`` (see the module docstring).
ITEM_FORMATS = ("dict", "monai", "torchio")


def _release(release: Release | str | os.PathLike) -> Release:
    return resolve_release(release)


def _check_format(item_format: str) -> str:
    check_choice(item_format, ITEM_FORMATS, "item format (item_format=)")
    if item_format == "monai":
        try:
            import monai.data  # noqa: F401
        except ImportError as error:
            raise InvalidOptionError(
                f"item_format='monai' needs MONAI, which is not installed here ({error}): pip install monai"
            ) from error
    return item_format


def _numpy_dtype(image_dtype: torch.dtype | None) -> np.dtype | None:
    """The numpy dtype of a torch dtype (None: keep the stored dtype)."""
    if image_dtype is None:
        return None
    if not isinstance(image_dtype, torch.dtype):
        raise InvalidOptionError(
            f"image_dtype={image_dtype!r} is not a torch dtype: pass e.g. torch.float32, or None for the stored dtype."
        )
    try:
        return torch.empty(0, dtype=image_dtype).numpy().dtype
    except TypeError:
        raise InvalidOptionError(
            f"image_dtype={image_dtype} has no numpy equivalent to decode into: pass torch.float32 (or float16, float64, an "
            "integer dtype for integer scans) and convert in a transform."
        ) from None


def _target_dtype(record: ScanRecord, image_dtype: torch.dtype | None) -> np.dtype:
    """The dtype a scan's image is decoded into; refuses a conversion that would change values (a float
    PET to integers, int16 HU to uint8)."""
    stored = np.dtype(record.dtype)
    target = _numpy_dtype(image_dtype)
    if target is None:  # torch has few operations on uint16/uint32: widen them, as torchio does
        return {np.dtype(np.uint16): np.dtype(np.int32), np.dtype(np.uint32): np.dtype(np.int64)}.get(stored, stored)
    if not np.can_cast(stored, target, "same_kind"):
        raise InvalidOptionError(
            f"image_dtype={image_dtype} cannot hold the {stored} voxels of {record.key} without changing them: pass a "
            "floating dtype (torch.float32, the default) or image_dtype=None for the stored dtype."
        )
    return target


def _voxels(release: Release, record: ScanRecord, image_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(image (1, X, Y, Z), label (1, X, Y, Z) uint8, affine) of a scan, verified, C-contiguous.

    NIfTI stores voxels in Fortran order; a Fortran-strided tensor makes `torch.stack` in the
    collate 5-6x slower, so both files are decoded straight into C order (`read_c_order`)."""
    image, affine = read_c_order(release, record, "image", _target_dtype(record, image_dtype))
    labels, _ = read_c_order(release, record, "label", np.uint8)
    return torch.from_numpy(image[None]), torch.from_numpy(labels[None]), np.array(affine, dtype=np.float64)


def _meta_tensor(tensor: torch.Tensor, affine: np.ndarray, path: Path):
    """A MetaTensor with the metadata MONAI's LoadImaged + EnsureChannelFirstd attach to a NIfTI file."""
    from monai.data import MetaTensor
    from monai.utils import MetaKeys, SpaceKeys

    meta = {
        MetaKeys.ORIGINAL_AFFINE: affine.copy(),
        MetaKeys.SPATIAL_SHAPE: np.asarray(tensor.shape[1:], dtype=np.int64),
        MetaKeys.SPACE: SpaceKeys.RAS,
        MetaKeys.ORIGINAL_CHANNEL_DIM: 0,
        "filename_or_obj": str(path),
    }
    return MetaTensor(tensor, affine=torch.from_numpy(affine.copy()), meta=meta)


def _scan_fields(release: Release, record: ScanRecord, image_dtype: torch.dtype | None, item_format: str) -> dict:
    """The voxel fields of one scan in an item format (a flat paired item prefixes them with the domain)."""
    image, label, affine = _voxels(release, record, image_dtype)
    if item_format == "monai":
        return {"image": _meta_tensor(image, affine, release.image_path(record)),
                "label": _meta_tensor(label, affine, release.label_path(record))}
    if item_format == "torchio":
        import torchio as tio

        return {"image": tio.ScalarImage(tensor=image, affine=affine), "label": tio.LabelMap(tensor=label, affine=affine)}
    return {"image": image, "label": label, "affine": torch.from_numpy(affine),
            "spacing_mm": torch.tensor(record.spacing_mm, dtype=torch.float64)}


def _scan_metadata(record: ScanRecord) -> dict:
    return {"subject": record.subject, "study": record.study, "scan": record.scan, "domain": record.domain, "split": record.split}


def load_scan(release: Release, record: ScanRecord, image_dtype: torch.dtype | None = torch.float32, *, item_format: str = "dict"):
    """One scan as an item of `item_format` (see the module docstring): image (1, X, Y, Z) of
    `image_dtype` (None: the stored dtype), label map (1, X, Y, Z) uint8, the affine and the metadata.

    Both files are read verified (`Release.read`): bytes that differ from the manifest raise.

    Raises:
        UnknownNameError: an unknown `item_format`.
        InvalidOptionError: an `image_dtype` that would change the voxel values; MONAI missing for ``"monai"``.
        CorruptFileError: a file that does not match the manifest.
    """
    _check_format(item_format)
    fields = _scan_fields(release, record, image_dtype, item_format)
    if item_format == "torchio":
        import torchio as tio

        return tio.Subject(**fields, **_scan_metadata(record))
    if item_format == "monai":
        return {**fields, **_scan_metadata(record)}
    return {"image": fields["image"], "label": fields["label"], "affine": fields["affine"], **_scan_metadata(record),
            "spacing_mm": fields["spacing_mm"]}


class ScanDataset(torch.utils.data.Dataset):
    """Map-style dataset of scans: one item per scan, in index order.

    Args:
        release: an opened `Release` or its folder.
        study, scan, split, organ, domain: filters, as in `Release.select`.
        transform: called on each item (a dict, or a `tio.Subject`) before it is returned: a MONAI
            ``Compose`` of dict transforms, a torchio transform, `umd_dataset.views.transforms.ModalityNormalize`.
        image_dtype: dtype of the image tensor (default float32: CT HU and MR values are exact);
            None keeps the stored dtype (int16 CT and MRI, float32 PET).
        item_format: ``"dict"`` (plain tensors), ``"monai"`` (MetaTensors) or ``"torchio"``
            (`tio.Subject`); see the module docstring.

    Raises:
        UnknownNameError: an unknown filter value or `item_format`.
        InvalidOptionError: an `image_dtype` that cannot hold a selected scan's voxels unchanged.

    Example:
        >>> loader = DataLoader(ScanDataset("umd-mini", split="train", scan="pet"), batch_size=1, num_workers=2)  # doctest: +SKIP
        >>> chain = Compose([Orientationd(["image", "label"], "RAS"), Spacingd(["image", "label"], 2.0, mode=("bilinear", "nearest"))])  # doctest: +SKIP
        >>> ScanDataset("umd-mini", scan="ct", item_format="monai", transform=chain)[0]["image"].affine  # doctest: +SKIP
    """

    def __init__(
        self,
        release: Release | str | os.PathLike,
        *,
        study=None,
        scan=None,
        split=None,
        organ=None,
        domain=None,
        transform: Callable | None = None,
        image_dtype: torch.dtype | None = torch.float32,
        item_format: str = "dict",
    ) -> None:
        self.item_format = _check_format(item_format)
        self.release = _release(release)
        self.records = self.release.select(study=study, scan=scan, split=split, organ=organ, domain=domain)
        for record in self.records:  # a dtype that would change voxels fails here, not in a worker
            _target_dtype(record, image_dtype)
        self.transform = transform
        self.image_dtype = image_dtype

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        item = load_scan(self.release, self.records[index], self.image_dtype, item_format=self.item_format)
        return self.transform(item) if self.transform is not None else item

    def subjects(self) -> list[str]:
        """The subject of each item, for `SubjectSampler`."""
        return [r.subject for r in self.records]


class PairedDataset(torch.utils.data.Dataset):
    """One subject with both studies per item; only subjects with both a PET/CT and a PET/MRI study
    are included (`Release.pairs`).

    Nested (``flat=False``): ``{"subject", "split", "ct": {...}, "petct_pet": {...}, "mri": {...},
    "petmri_pet": {...}}``, each scan as `load_scan` gives it. Flat (``flat=True``): the fields of each
    scan as top-level keys ``"<domain>_<field>"`` (``ct_image``, ``ct_label``, ``petct_pet_image``, ...)
    beside ``subject`` and ``split``; with ``item_format="torchio"``, one `tio.Subject` holding the
    eight images (on four grids: ``tio.Resample("ct_image")`` puts them on the CT's).

    Args:
        release: an opened `Release` or its folder.
        split: keep the subjects of these splits.
        transform: called on each item before it is returned.
        image_dtype: as in `ScanDataset`.
        item_format: ``"dict"``, ``"monai"`` or ``"torchio"`` (see the module docstring).
        flat: flat keys; None (the default) means nested for ``"dict"`` (the layout of earlier
            versions) and flat for ``"monai"`` and ``"torchio"``, whose transforms need them.

    Raises:
        UnknownNameError: an unknown split or `item_format`.
        InvalidOptionError: ``flat=False`` with ``item_format="torchio"``; an `image_dtype` that
            cannot hold a scan's voxels unchanged.

    Example:
        >>> pairs = PairedDataset("umd-mini", item_format="monai", transform=RandFlipd(["ct_image", "ct_label"], prob=0.5))  # doctest: +SKIP
    """

    def __init__(
        self,
        release: Release | str | os.PathLike,
        *,
        split=None,
        transform: Callable | None = None,
        image_dtype: torch.dtype | None = torch.float32,
        item_format: str = "dict",
        flat: bool | None = None,
    ) -> None:
        self.item_format = _check_format(item_format)
        if flat is None:
            flat = item_format != "dict"
        if not flat and item_format == "torchio":
            raise InvalidOptionError(
                "flat=False with item_format='torchio': a tio.Subject holds its images at the top level, not in nested "
                "dicts. Leave flat unset (its images are then named ct_image, ct_label, petct_pet_image, ...)."
            )
        self.flat = bool(flat)
        self.release = _release(release)
        self.subjects = self.release.pairs(split=split)
        for subject in self.subjects:
            for record in subject.scans:
                _target_dtype(record, image_dtype)
        self.transform = transform
        self.image_dtype = image_dtype

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, index: int):
        subject = self.subjects[index]
        item = {"subject": subject.id, "split": subject.split}
        for record in subject.scans:
            if self.flat:
                fields = _scan_fields(self.release, record, self.image_dtype, self.item_format)
                item.update({f"{record.domain}_{name}": value for name, value in fields.items()})
            else:
                item[record.domain] = load_scan(self.release, record, self.image_dtype, item_format=self.item_format)
        if self.item_format == "torchio":
            import torchio as tio

            item = tio.Subject(item)
        return self.transform(item) if self.transform is not None else item


class SubjectSampler(torch.utils.data.Sampler):
    """A distributed sampler over items that gives each rank whole subjects, and every rank the same
    number of items.

    `torch.utils.data.DistributedSampler` splits items; when several items belong to one subject
    (the CT and PET of a study, the patches of a scan), it can put them on two ranks. This sampler
    assigns subjects to ranks (a seeded shuffle, then each subject, largest first, to the rank with
    the fewest items so far), then yields the items of that rank's subjects, shuffled.

    DDP needs equal lengths on every rank (a rank with fewer batches leaves the others waiting in
    all-reduce forever), so, as `DistributedSampler` does:

    - ``drop_last=False`` (the default) pads every rank to the length of the longest by repeating
      its own items from the start of its order: subjects stay on one rank, and some items are
      seen twice in an epoch. Only a rank without any subject (fewer subjects than ranks) repeats
      items of other ranks' subjects.
    - ``drop_last=True`` cuts every rank to the length of the shortest: some items of an epoch are
      not seen (others in the next epoch, when shuffling).

    Call `set_epoch` at the start of every epoch, on every rank, to reshuffle.

    Args:
        subjects: the subject of each item (e.g. `ScanDataset.subjects()`, `PatchDataset.subjects()`).
        num_replicas, rank: the number of ranks and this one's; by default read from an initialised
            `torch.distributed` process group.
        shuffle: shuffle subjects between ranks and items within a rank, per epoch.
        seed: the shuffle's seed; the same on every rank.
        drop_last: drop items instead of repeating some (see above).

    Raises:
        InvalidOptionError: no items, a subject that is not a string, ranks out of range, no process
            group to read them from, or ``drop_last=True`` leaving a rank without items.
    """

    def __init__(self, subjects: Sequence[str], num_replicas: int | None = None, rank: int | None = None, *, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        subjects = list(subjects)
        if not subjects:
            raise InvalidOptionError("SubjectSampler got no items: pass the subject of each item (e.g. dataset.subjects()).")
        odd = next((s for s in subjects if not isinstance(s, str)), None)
        if odd is not None:
            raise InvalidOptionError(f"SubjectSampler takes the subject id (a string) of each item, got {odd!r}: pass dataset.subjects().")
        if num_replicas is None or rank is None:
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized()):
                raise InvalidOptionError(
                    "SubjectSampler: no torch.distributed process group is initialised to read num_replicas and rank from: "
                    "call torch.distributed.init_process_group first, or pass num_replicas= and rank=."
                )
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, numbers.Integral) or num_replicas < 1:
            raise InvalidOptionError(f"SubjectSampler: num_replicas={num_replicas!r} must be a whole number of ranks, 1 or more.")
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or not 0 <= rank < num_replicas:
            raise InvalidOptionError(f"rank {rank} is not in [0, {num_replicas}) (num_replicas={num_replicas}): ranks count from 0.")
        self.subjects, self.num_replicas, self.rank = subjects, int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last, self.epoch = bool(shuffle), int(seed), bool(drop_last), 0
        self._counts: dict[str, int] = {}
        for s in subjects:
            self._counts[s] = self._counts.get(s, 0) + 1
        loads = sorted(self._loads(sorted(self._counts)))  # the loads do not depend on the shuffle (see `_assign`)
        self._length = loads[0] if drop_last else loads[-1]
        if self._length == 0:
            raise InvalidOptionError(
                f"SubjectSampler: drop_last=True with {len(self._counts)} subjects on {num_replicas} ranks leaves a rank "
                "without items, so every rank would get none: use drop_last=False (a rank then repeats other items) or fewer ranks."
            )

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle of `epoch` (call it on every rank before each epoch)."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise InvalidOptionError(f"set_epoch({epoch!r}): the epoch is a whole number, 0 or more.")
        self.epoch = int(epoch)

    def _loads(self, names: list[str]) -> list[int]:
        return [sum(self._counts[n] for n in mine) for mine in self._assign(names)]

    def _assign(self, names: list[str]) -> list[list[str]]:
        """The subjects of each rank: largest first (a stable sort, so `names`' order decides between
        subjects of one size), each to the rank with the fewest items (the lowest rank on a tie).
        Subjects of one size are interchangeable here, so the loads depend only on the sizes."""
        ranks: list[list[str]] = [[] for _ in range(self.num_replicas)]
        heap = [(0, r) for r in range(self.num_replicas)]
        for name in sorted(names, key=lambda n: -self._counts[n]):
            load, r = heapq.heappop(heap)
            ranks[r].append(name)
            heapq.heappush(heap, (load + self._counts[name], r))
        return ranks

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + self.epoch)

    def __iter__(self) -> Iterator[int]:
        generator = self._generator()
        names = sorted(self._counts)
        if self.shuffle:
            names = [names[i] for i in torch.randperm(len(names), generator=generator).tolist()]
        mine = set(self._assign(names)[self.rank])
        indices = [i for i, s in enumerate(self.subjects) if s in mine]
        if self.shuffle:
            indices = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
        if not indices:  # fewer subjects than ranks: repeat items of the others
            indices = torch.randperm(len(self.subjects), generator=generator).tolist() if self.shuffle else list(range(len(self.subjects)))
        if len(indices) < self._length:
            indices = (indices * math.ceil(self._length / len(indices)))[: self._length]
        return iter(indices[: self._length])

    def __len__(self) -> int:
        return self._length


# Collates. An item's volumes are its keys "image" and "label" and, in a flat paired item, "<domain>_image"
# and "<domain>_label": a prefix ("" or "<domain>_") names one scan, whose image and label map share a grid.


def _volume_prefix(key) -> str | None:
    """``""`` for ``image``/``label``, ``"ct_"`` for ``ct_image``/``ct_label``; None for other keys."""
    if not isinstance(key, str):
        return None
    for field in ("image", "label"):
        if key == field:
            return ""
        if key.endswith("_" + field):
            return key[: -len(field)]
    return None


def _scan_of(item: Mapping, prefix: str) -> str | None:
    """The scan kind (``ct``, ``pet``, ``mri``) of the volumes under `prefix` in an item, if known."""
    if prefix == "":
        scan = item.get("scan")
        return scan if isinstance(scan, str) else None
    domain = prefix[:-1]
    if domain in modalities().domain_keys:
        return modalities().domain(domain).scan
    return None


def _is_tio_image(value) -> bool:
    tio = sys.modules.get("torchio")
    return tio is not None and isinstance(value, tio.Image)


def _is_meta_tensor(value) -> bool:
    module = sys.modules.get("monai.data.meta_tensor")
    return module is not None and isinstance(value, module.MetaTensor)


def _same_keys(items: Sequence[Mapping], where: str) -> list:
    keys = list(items[0])
    for i, item in enumerate(items[1:], 1):
        if set(item) != set(keys):
            raise InvalidOptionError(
                f"{where}: item {i} of the batch has keys {sorted(map(str, item))}, item 0 {sorted(map(str, keys))}: batch items "
                "of one dataset (the same item_format and flat option)."
            )
    return keys


def _fill_value(value: float | Mapping[str, float], scan: str | None, key: str) -> float:
    if not isinstance(value, Mapping):
        return float(value)
    if scan is None:
        raise InvalidOptionError(
            f"PadCollate: image_value is per scan kind, but the scan of {key!r} is unknown (no 'scan' key): pass one number."
        )
    if scan not in value:
        raise InvalidOptionError(f"PadCollate: image_value={dict(value)!r} has no value for {key!r}, a {scan} scan: add {scan!r}.")
    return float(value[scan])


def _check_fill(value: float, dtype: torch.dtype, what: str) -> None:
    if dtype.is_floating_point or dtype.is_complex:
        return
    if torch.tensor(value, dtype=torch.float64).to(dtype).double().item() != value:  # -1 in uint8 would be 255
        raise InvalidOptionError(f"PadCollate: {what}={value} is not a value of the {dtype} volumes it would pad: choose one that is.")


def _padded(volumes: Sequence[torch.Tensor], fills: Sequence[float], key: str) -> torch.Tensor:
    """Volumes (C, X, Y, Z) stacked into (B, C, X', Y', Z') of the largest spatial shape, each in the
    low corner (so its affine still holds) and `fills[i]` beyond it: one copy."""
    first = volumes[0]
    for v in volumes:
        if not isinstance(v, torch.Tensor) or v.ndim != 4:
            shape = tuple(getattr(v, "shape", ()))
            raise InvalidOptionError(f"PadCollate: {key!r} holds {type(v).__name__} {shape}, not a (channels, X, Y, Z) tensor.")
        if v.shape[0] != first.shape[0] or v.dtype != first.dtype:
            raise InvalidOptionError(
                f"PadCollate: {key!r} has {v.shape[0]} channels of {v.dtype} in one item and {first.shape[0]} of {first.dtype} in "
                "another: only the spatial shape may differ."
            )
    shape = tuple(max(int(v.shape[a]) for v in volumes) for a in range(1, 4))
    out = torch.empty((len(volumes), first.shape[0], *shape), dtype=first.dtype)
    for i, (v, fill) in enumerate(zip(volumes, fills)):
        _check_fill(fill, v.dtype, "label_value" if key.endswith("label") else "image_value")
        x, y, z = v.shape[1:]
        if (x, y, z) != shape:
            out[i].fill_(fill)
        out[i, :, :x, :y, :z] = v.as_tensor() if _is_meta_tensor(v) else v
    return out


def _as_meta_batch(padded: torch.Tensor, items: Sequence):
    """A batched MetaTensor of the padded voxels, with the metadata MONAI's own collate gives the
    items (affines (B, 4, 4), meta collated, applied operations per item): padding at the far end
    of each axis moves no voxel, so every affine still holds."""
    from monai.data import MetaTensor
    from monai.data.utils import collate_meta_tensor

    carriers = [MetaTensor(torch.empty(0), meta=dict(v.meta), applied_operations=list(v.applied_operations)) for v in items]
    collated = collate_meta_tensor(carriers)
    batch = MetaTensor(padded)  # then the batch's metadata, as MONAI's collate sets it
    batch.meta, batch.applied_operations, batch.is_batch = collated.meta, collated.applied_operations, True
    return batch


class PadCollate:
    """A `DataLoader` collate for scans of different shapes (a CT and a PET): each image and label map
    is padded at the far end of each axis to the largest shape in the batch, then stacked.

    The volumes are the keys ``image`` and ``label`` of an item and, in a flat paired item,
    ``<domain>_image`` and ``<domain>_label`` (nested paired items are collated per domain). Beside
    each scan's volumes the batch gets ``shape`` (``<domain>_shape``): the spatial shape of each item
    before padding, (B, 3) int64, and ``mask`` (``<domain>_mask``): True on the voxels that are the
    scan's, (B, 1, X, Y, Z) bool; mask a loss with it. Other keys are collated by torch's default
    collate (the affines stack into (B, 4, 4)).

    Padding at the far end moves no voxel, so each item's affine still maps its voxels to the world;
    MetaTensors stay MetaTensors, batched as MONAI's own collate batches them. `unpad` cuts a batch of
    outputs back to each scan's shape (do that before MONAI's ``Invertd``). `tio.Subject` items: each
    image becomes ``{"data", "affine", "shape", "mask"}``, as torchio's ``SubjectsLoader`` collates it.

    Args:
        image_value: the value of padded image voxels: one number, or one per scan kind (e.g.
            ``{"ct": -1024, "pet": 0, "mri": 0}``: air in HU; with one number, a raw CT is padded with
            water at 0 HU). After a normalisation (`umd_dataset.views.transforms`) 0 is its minimum.
        label_value: the value of padded label voxels (0, background, by default; e.g. 255 for a
            loss's ignore index).
        mask: add the ``mask`` keys (1 byte per voxel); ``shape`` is always there.

    Raises:
        InvalidOptionError: items with different keys, volumes that differ in more than their spatial
            shape, a fill value the volumes cannot hold, a key ``shape``/``mask`` already in an item.

    Example:
        >>> loader = DataLoader(ScanDataset("umd-mini", split="train"), batch_size=4, collate_fn=PadCollate({"ct": -1024, "pet": 0, "mri": 0}))  # doctest: +SKIP
    """

    def __init__(self, image_value: float | Mapping[str, float] = 0.0, label_value: int = 0, *, mask: bool = True) -> None:
        values = list(image_value.values()) if isinstance(image_value, Mapping) else [image_value]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise InvalidOptionError(f"PadCollate: image_value={image_value!r} must be a finite number, or one per scan kind.")
        if isinstance(image_value, Mapping):
            for scan in image_value:
                check_choice(scan, list(modalities().scans), "scan kind (of image_value=)")
        if isinstance(label_value, bool) or not isinstance(label_value, int):
            raise InvalidOptionError(f"PadCollate: label_value={label_value!r} must be a whole number (0: background).")
        self.image_value, self.label_value, self.mask = image_value, label_value, bool(mask)

    def __call__(self, batch: Sequence) -> dict:
        batch = list(batch)
        if not batch:
            raise InvalidOptionError("PadCollate got an empty batch.")
        if not all(isinstance(item, Mapping) for item in batch):
            raise InvalidOptionError(f"PadCollate collates dict items (or tio.Subject), got {type(batch[0]).__name__}: use list_collate.")
        return self._collate(batch)

    def _collate(self, items: Sequence[Mapping]) -> dict:
        keys = _same_keys(items, "PadCollate")
        prefixes = {}
        for key in keys:
            prefix = _volume_prefix(key)
            if prefix is not None and isinstance(items[0][key], torch.Tensor):
                prefixes.setdefault(prefix, []).append(key)
        out: dict = {}
        done: set[str] = set()
        for key in keys:
            values = [item[key] for item in items]
            prefix = _volume_prefix(key)
            if prefix in prefixes and key in prefixes[prefix]:
                if prefix not in done:
                    self._scan(items, prefix, prefixes[prefix], out)
                    done.add(prefix)
            elif _is_tio_image(values[0]):
                out[key] = self._tio_images(items, key)
            elif all(type(v) is dict for v in values):
                out[key] = self._collate(values)
            else:
                out[key] = torch.utils.data.default_collate(values)
        return out

    def _scan(self, items: Sequence[Mapping], prefix: str, keys: list[str], out: dict) -> None:
        for extra in ("shape", "mask") if self.mask else ("shape",):
            if prefix + extra in items[0]:
                raise InvalidOptionError(f"PadCollate: the items already hold a key {prefix + extra!r}, which the padding adds: rename it.")
        shapes = None
        for key in keys:
            volumes = [item[key] for item in items]
            here = [tuple(int(s) for s in v.shape[1:]) for v in volumes]
            if shapes is not None and here != shapes:
                raise InvalidOptionError(f"PadCollate: {key!r} and {keys[0]!r} of one item lie on different grids ({here} vs {shapes}).")
            shapes = here
            if key.endswith("label"):
                fills = [float(self.label_value)] * len(items)
            else:
                fills = [_fill_value(self.image_value, _scan_of(item, prefix), key) for item in items]
            padded = _padded(volumes, fills, key)
            out[key] = _as_meta_batch(padded, volumes) if _is_meta_tensor(volumes[0]) else padded
        out[prefix + "shape"] = torch.tensor(shapes, dtype=torch.int64)
        if self.mask:
            out[prefix + "mask"] = _valid_mask(shapes)

    def _tio_images(self, items: Sequence[Mapping], key: str) -> dict:
        import torchio as tio

        images = [item[key] for item in items]
        prefix = _volume_prefix(key) or ""
        if images[0].type == tio.LABEL:
            fills = [float(self.label_value)] * len(items)
        else:
            fills = [_fill_value(self.image_value, _scan_of(item, prefix), key) for item in items]
        data = _padded([image.data for image in images], fills, key)
        shapes = [tuple(int(s) for s in image.spatial_shape) for image in images]
        out = {tio.DATA: data, tio.AFFINE: torch.from_numpy(np.stack([image.affine for image in images])),
               "shape": torch.tensor(shapes, dtype=torch.int64)}
        if self.mask:
            out["mask"] = _valid_mask(shapes)
        return out


def _valid_mask(shapes: Sequence[tuple[int, int, int]]) -> torch.Tensor:
    full = tuple(max(s[a] for s in shapes) for a in range(3))
    mask = torch.zeros((len(shapes), 1, *full), dtype=torch.bool)
    for i, (x, y, z) in enumerate(shapes):
        mask[i, :, :x, :y, :z] = True
    return mask


def unpad(batch: torch.Tensor, shapes: torch.Tensor | Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """The items of a padded batch (B, C, X, Y, Z), each cut back to its spatial shape (`PadCollate`'s
    ``shape``): a list of (C, x, y, z) views. A batched MetaTensor gives each item's MetaTensor, with
    its own affine and metadata.

    Raises:
        InvalidOptionError: `shapes` does not give one (x, y, z) per item, or one larger than the batch.
    """
    shapes = [tuple(int(s) for s in shape) for shape in (shapes.tolist() if isinstance(shapes, torch.Tensor) else shapes)]
    if batch.ndim != 5 or len(shapes) != batch.shape[0] or any(len(s) != 3 for s in shapes):
        raise InvalidOptionError(f"unpad: a batch {tuple(batch.shape)} and shapes {shapes} do not match: pass the batch's 'shape' entry.")
    if any(s > b for shape in shapes for s, b in zip(shape, batch.shape[2:])):
        raise InvalidOptionError(f"unpad: shapes {shapes} exceed the batch's spatial shape {tuple(batch.shape[2:])}.")
    return [batch[i, :, :x, :y, :z] for i, (x, y, z) in enumerate(shapes)]


def list_collate(batch: Sequence):
    """A `DataLoader` collate that stacks nothing: dict items (and `tio.Subject`) give a dict of lists,
    ``{"image": [tensor, ...], "subject": [str, ...]}`` (nested dicts of paired items too); other items
    a list. For scans of different shapes when a model takes them one by one.

    Raises:
        InvalidOptionError: dict items with different keys.
    """
    batch = list(batch)
    if batch and all(isinstance(item, Mapping) for item in batch):
        return _lists(batch)
    return batch


def _lists(items: Sequence[Mapping]) -> dict:
    out = {}
    for key in _same_keys(items, "list_collate"):
        values = [item[key] for item in items]
        out[key] = _lists(values) if all(type(v) is dict for v in values) else values
    return out


def subjects_dataset(
    release: Release | str | os.PathLike,
    *,
    study=None,
    scan=None,
    split=None,
    organ=None,
    transform=None,
):
    """A `torchio.SubjectsDataset`, one `tio.Subject` per scan, with ``image`` (`ScalarImage`) and
    ``label`` (`LabelMap`) read lazily, when torchio first needs the voxels, through the package's
    verified reader (`Release.read`), and the scan's metadata.

    Works in a `tio.Queue` with its samplers (e.g. `tio.LabelSampler`). For subjects built from
    tensors (every voxel read at once), use ``ScanDataset(..., item_format="torchio")``.
    """
    import torchio as tio

    release = _release(release)
    reader = TorchioReader(release)
    subjects = [
        tio.Subject(
            image=tio.ScalarImage(release.image_path(r), reader=reader),
            label=tio.LabelMap(release.label_path(r), reader=reader),
            subject=r.subject, study=r.study, scan=r.scan, domain=r.domain, split=r.split,
            organs=list(r.organs),
        )
        for r in release.select(study=study, scan=scan, split=split, organ=organ)
    ]
    return tio.SubjectsDataset(subjects, transform=transform)


class TorchioReader:
    """A torchio image reader that reads release files verified: ``reader(path) -> (tensor, affine)``.

    Picklable (it holds the release index), so DataLoader workers can use it.
    """

    def __init__(self, release: Release) -> None:
        self.release = release

    def __call__(self, path) -> tuple[torch.Tensor, np.ndarray]:
        relative = Path(path).resolve().relative_to(Path(self.release.root).resolve()).as_posix()
        record, which = self.release.record_of(relative)
        array, affine = self.release.read(record, which)
        return torch.from_numpy(np.asarray(array)[None]), affine


def monai_dicts(release: Release | str | os.PathLike, *, study=None, scan=None, split=None, organ=None) -> list[dict]:
    """``[{"image": path, "label": path, "subject": ..., ...}]`` for MONAI's datasets and `LoadImaged`.

    MONAI reads these paths with its own readers, which do not check the files against the
    manifest: run ``umd verify`` on the release first, or use ``ScanDataset(..., item_format="monai")``
    (verified reads, the same MetaTensors).
    """
    release = _release(release)
    return [
        {
            "image": str(release.image_path(r)), "label": str(release.label_path(r)), "subject": r.subject, "study": r.study,
            "scan": r.scan, "domain": r.domain, "split": r.split, "spacing_mm": list(r.spacing_mm),
        }
        for r in release.select(study=study, scan=scan, split=split, organ=organ)
    ]

