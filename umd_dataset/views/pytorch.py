"""PyTorch, torchio and MONAI views of a release: thin wrappers over the release index.

- `ScanDataset`: map-style, one scan per item (image and label map tensors, affine, metadata);
- `PairedDataset`: one subject per item, with every scan of both studies;
- `subjects_dataset`: a `torchio.SubjectsDataset` of `ScalarImage`/`LabelMap` (lazy, by path), for
  `tio.Queue` and its samplers;
- `monai_dicts`: the list of dicts MONAI's `Dataset`/`CacheDataset` take;
- `SubjectSampler`: a distributed sampler that gives each rank whole subjects.

Every view reads the same index (`Release.select`), so they agree on which scans exist and which
split they are in. Items are plain dicts, collated by the default `DataLoader` collate.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from umd_dataset.errors import InvalidOptionError
from umd_dataset.release.format import ScanRecord
from umd_dataset.release.index import Release
from umd_dataset.release.resolve import resolve_release

__all__ = ["ScanDataset", "PairedDataset", "SubjectSampler", "TorchioReader", "subjects_dataset", "monai_dicts", "load_scan"]


def _release(release: Release | str | os.PathLike) -> Release:
    return resolve_release(release)


def load_scan(release: Release, record: ScanRecord, image_dtype: torch.dtype = torch.float32) -> dict:
    """One scan as tensors: image (1, X, Y, Z), label (1, X, Y, Z, uint8), affine (4, 4, float64), metadata.

    Both files are read verified (`Release.read`): bytes that differ from the manifest raise.
    """
    image, affine = release.read(record, "image")
    labels, _ = release.read(record, "label")
    return {
        "image": torch.from_numpy(np.asarray(image, dtype=np.dtype(str(image_dtype).replace("torch.", "")))[None]),
        "label": torch.from_numpy(np.asarray(labels, dtype=np.uint8)[None]),
        "affine": torch.from_numpy(np.asarray(affine, dtype=np.float64)),
        "subject": record.subject,
        "study": record.study,
        "scan": record.scan,
        "domain": record.domain,
        "split": record.split,
        "spacing_mm": torch.tensor(record.spacing_mm, dtype=torch.float64),
    }


class ScanDataset(torch.utils.data.Dataset):
    """Map-style dataset of scans: one item per scan, in index order.

    Args:
        release: an opened `Release` or its folder.
        study, scan, split, organ, domain: filters, as in `Release.select`.
        transform: called on each item (a dict) before it is returned.
        image_dtype: dtype of the image tensor (default float32; CT HU and MR values are exact).

    Example:
        >>> loader = DataLoader(ScanDataset("umd-mini", split="train", scan="pet"), batch_size=1, num_workers=2)  # doctest: +SKIP
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
        transform: Callable[[dict], dict] | None = None,
        image_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.release = _release(release)
        self.records = self.release.select(study=study, scan=scan, split=split, organ=organ, domain=domain)
        self.transform = transform
        self.image_dtype = image_dtype

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        item = load_scan(self.release, self.records[index], self.image_dtype)
        return self.transform(item) if self.transform is not None else item

    def subjects(self) -> list[str]:
        """The subject of each item, for `SubjectSampler`."""
        return [r.subject for r in self.records]


class PairedDataset(torch.utils.data.Dataset):
    """One subject with both studies per item: ``{"subject", "split", "ct": {...}, "petct_pet": {...},
    "mri": {...}, "petmri_pet": {...}}``, each scan as `load_scan` gives it.

    Only subjects with both a PET/CT and a PET/MRI study are included (`Release.pairs`).
    """

    def __init__(self, release: Release | str | os.PathLike, *, split=None, transform=None, image_dtype=torch.float32) -> None:
        self.release = _release(release)
        self.subjects = self.release.pairs(split=split)
        self.transform = transform
        self.image_dtype = image_dtype

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, index: int) -> dict:
        subject = self.subjects[index]
        item = {"subject": subject.id, "split": subject.split}
        for record in subject.scans:
            item[record.domain] = load_scan(self.release, record, self.image_dtype)
        return self.transform(item) if self.transform is not None else item


class SubjectSampler(torch.utils.data.Sampler):
    """A distributed sampler over items, that gives each rank whole subjects.

    `torch.utils.data.DistributedSampler` splits items; when several items belong to one subject
    (the CT and PET of a study), it can put them on two ranks. This sampler assigns subjects to
    ranks (round robin over a seeded shuffle), then yields the items of that rank's subjects.
    Ranks may get slightly different numbers of items; call `set_epoch` every epoch.

    Args:
        subjects: the subject of each item (e.g. `ScanDataset.subjects()`).
    """

    def __init__(self, subjects: list[str], num_replicas: int | None = None, rank: int | None = None, *, shuffle: bool = True, seed: int = 0):
        if num_replicas is None or rank is None:
            import torch.distributed as dist

            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise InvalidOptionError(f"rank {rank} is not in [0, {num_replicas})")
        self.subjects, self.num_replicas, self.rank, self.shuffle, self.seed, self.epoch = subjects, num_replicas, rank, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _mine(self) -> list[int]:
        names = sorted(set(self.subjects))
        if self.shuffle:
            order = torch.randperm(len(names), generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
            names = [names[i] for i in order]
        mine = set(names[self.rank :: self.num_replicas])
        return [i for i, s in enumerate(self.subjects) if s in mine]

    def __iter__(self) -> Iterator[int]:
        indices = self._mine()
        if self.shuffle:
            order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(self.seed + self.epoch + 1)).tolist()
            indices = [indices[i] for i in order]
        return iter(indices)

    def __len__(self) -> int:
        return len(self._mine())


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

    Works in a `tio.Queue` with its samplers (e.g. `tio.LabelSampler`).
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
    manifest: run ``umd verify`` on the release first, or use `ScanDataset` (verified reads).
    """
    release = _release(release)
    return [
        {
            "image": str(release.image_path(r)), "label": str(release.label_path(r)), "subject": r.subject, "study": r.study,
            "scan": r.scan, "domain": r.domain, "split": r.split, "spacing_mm": list(r.spacing_mm),
        }
        for r in release.select(study=study, scan=scan, split=split, organ=organ)
    ]
