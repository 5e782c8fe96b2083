"""A chunked, compressed copy of a release for fast random patches, and the patch datasets over it.

``umd cache build`` writes every scan and label map as a Blosc2 NDArray in 64^3 chunks (32^3
blocks, byte shuffle, LZ4 level 5 by default: on CT it decompresses a 128^3 patch about 2.7x faster
than Zstd level 1, for 40% more disk), so a patch reads and decompresses only the chunks it
touches, and an index of organ voxels for organ-weighted sampling. ``cache.json`` records the
release it was built from (manifest checksum) and each scan's checksums: a cache whose release
changed is refused with the fix, and rebuilding redoes only the scans that changed. Building is a
resumable job (`umd_dataset.io.jobs.JobFolder`); a build with another codec or chunk size starts
the cache over.

Two map-style `torch.utils.data.Dataset` classes read patches from a cache (only the chunks a patch
touches, never a whole volume):

- `PatchDataset`: one patch of one scan per item (``image``, ``label``, ``affine``, ``start``,
  ``organ``, metadata).
- `PairedPatchDataset`: one study per item, a patch of its structural scan (CT or MRI) and the
  same world-space box of its PET, either on the PET's own grid (``functional_grid="native"``) or
  resampled onto the structural patch's grid (``functional_grid="structural"``: linear for the
  PET's intensities, nearest neighbour for the PET's own label map); `onto_native_grid` takes
  values on the structural patch grid (a prediction) back onto the PET's grid.

Both draw patch ``i`` from a generator seeded by (seed, epoch, i): a rerun of an epoch gives the
same patches, and `set_epoch` gives new ones. The epoch lives in shared memory, read by every
``__getitem__``, so it reaches DataLoader workers, persistent ones included (call `set_epoch`
before iterating the loader for that epoch, as with `DistributedSampler`). Both have
``subjects()`` (the subject of each item), for `umd_dataset.views.pytorch.SubjectSampler`.

The ``"organ"`` sampler centres each patch on a voxel of an organ (organs drawn with equal
probability). A scan without any of the requested organs is never silently sampled uniformly:
by default it raises `InvalidOptionError` when the dataset is made (naming the scans and organs);
``no_organ="uniform"`` keeps such scans with uniform patches (listed in ``.uniform_scans``, a
warning says so, and their items have ``organ == 0``), ``no_organ="skip"`` leaves them out
(listed in ``.skipped``, with a warning).

Example:
    >>> cache = open_cache(open_release("umd-small"))  # doctest: +SKIP
    >>> pairs = PairedPatchDataset(cache, patch_size=64, study="petct", functional_grid="structural")  # doctest: +SKIP
    >>> item = pairs[0]; item["structural"]["image"].shape, item["functional"]["image"].shape  # doctest: +SKIP
    (torch.Size([1, 64, 64, 64]), torch.Size([1, 64, 64, 64]))
"""

from __future__ import annotations

import os
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch

from umd_dataset.errors import InvalidOptionError, StaleCacheError, UMDError, check_choice
from umd_dataset.io.geometry import resample_onto, shifted, to_voxel, to_world
from umd_dataset.io.files import read_json, write_json
from umd_dataset.io.jobs import FolderLock, JobFolder, Progress, run_items
from umd_dataset.release.format import MANIFEST, PARTIAL_DIR, ScanRecord, safe_relative_path
from umd_dataset.release.index import Release, Study
from umd_dataset.release.reading import read_c_order
from umd_dataset.schema.studies import modalities

__all__ = ["CACHE_FORMAT", "CODECS", "SAMPLERS", "NO_ORGAN", "FUNCTIONAL_GRIDS", "build_cache", "open_cache", "PatchCache",
           "PatchDataset", "PairedPatchDataset", "onto_native_grid"]

CACHE_FORMAT = 1
CACHE_FILE = "cache.json"
ORGAN_POINTS = 4096  # voxels kept per organ and scan for organ-weighted sampling
SAMPLERS = ("uniform", "organ")
NO_ORGAN = ("error", "uniform", "skip")  # what the organ sampler does with a scan that has none of the organs
FUNCTIONAL_GRIDS = ("native", "structural")  # the grid of the PET patch of a PairedPatchDataset item


def default_cache_dir(release: Release) -> Path:
    return Path(release.root) / ".umd-cache"


CODECS = {"lz4": ("LZ4", 5), "zstd": ("ZSTD", 1)}


def _cparams(typesize: int, codec: str):
    import blosc2

    name, level = CODECS[codec]
    # one thread: Blosc2's thread pool does not survive a fork, and DataLoader workers fork; the
    # parallelism comes from processes (build workers, DataLoader workers) instead
    return blosc2.CParams(codec=getattr(blosc2.Codec, name), clevel=level, typesize=typesize, filters=[blosc2.Filter.SHUFFLE], nthreads=1)


def _write_scan(cache_dir: str, release: Release, record: ScanRecord, chunks: tuple[int, int, int], codec: str,
                organ_ids: list[int]) -> dict:
    """Write one scan's image, label map and organ index into the cache (read verified from the
    release; written only below `cache_dir`); return its cache entry."""
    import blosc2

    folder = safe_relative_path(Path(cache_dir), f"{record.subject}/{record.study}")
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"image_sha256": record.image_sha256, "label_sha256": record.label_sha256}
    for which in ("image", "label"):
        array, _ = read_c_order(release, record, which)  # the cache stores C order
        target = folder / f"{record.scan}_{which}.b2nd"
        tmp = target.with_name(target.name + ".tmp")
        blocks = tuple(min(32, c) for c in chunks)
        blosc2.asarray(array, chunks=chunks, blocks=blocks, urlpath=str(tmp), mode="w", cparams=_cparams(array.dtype.itemsize, codec))
        os.replace(tmp, target)
        entry[which] = str(target.relative_to(cache_dir))
        if which == "label":
            rng = np.random.default_rng(int(record.label_sha256[:8], 16))
            points = {}
            for organ_id in organ_ids:  # the organs the manifest lists for this label map
                where = np.argwhere(array == organ_id)
                keep = where if len(where) <= ORGAN_POINTS else where[rng.choice(len(where), ORGAN_POINTS, replace=False)]
                points[str(int(organ_id))] = keep.astype(np.int32)
            index = folder / f"{record.scan}_organs.npz"
            np.savez(index.with_name(index.name + ".tmp.npz"), **points)
            os.replace(index.with_name(index.name + ".tmp.npz"), index)
            entry["organs"] = str(index.relative_to(cache_dir))
    entry["shape"], entry["dtype"] = list(record.shape), record.dtype
    return entry


def _write_item(cache_dir: str, release: Release, chunks: tuple[int, int, int], codec: str, record: ScanRecord) -> dict:
    return _write_scan(cache_dir, release, record, chunks, codec, [release.schema.organ(slug).id for slug in record.organs])


def _inside(folder: Path, relative: str) -> bool:
    """True if `relative` names an existing file inside `folder` (a cache entry pointing elsewhere is dropped)."""
    try:
        return safe_relative_path(folder, relative).is_file()
    except UMDError:
        return False


def build_cache(
    release: Release,
    out: str | os.PathLike | None = None,
    *,
    chunks: tuple[int, int, int] = (64, 64, 64),
    codec: str = "lz4",
    workers: int = 1,
    progress: bool = False,
) -> PatchCache:
    """Build (or bring up to date) the patch cache of a release; resumable.

    Scans whose checksums match the cache's record are kept; the others are (re)written, and
    entries of scans no longer in the release are dropped. A cache built with another codec or
    chunk size is started over.

    Raises:
        UnknownNameError: an unknown codec (with the closest one).
        FolderBusyError: another process is building the same cache.
    """
    check_choice(codec, CODECS, "cache codec")
    chunks = tuple(int(c) for c in chunks)
    out = Path(out) if out is not None else default_cache_dir(release)
    with FolderLock(out, "a patch cache build"):
        return _build(release, out, chunks, codec, workers, progress)


def _build(release: Release, out: Path, chunks: tuple[int, int, int], codec: str, workers: int, progress: bool) -> PatchCache:
    settings = {"format": CACHE_FORMAT, "chunks": list(chunks), "codec": codec}
    state_path = out / CACHE_FILE
    state = read_json(state_path) if state_path.is_file() else {}
    kept = state.get("scans", {}) if {k: state.get(k) for k in settings} == settings else {}
    if state:
        write_json(state_path, {**state, "complete": False})  # not a finished cache while it is rebuilt
    job = JobFolder(out / PARTIAL_DIR, settings, what="cache build", fix="", on_other_settings="restart")
    scans = {r.key: r for r in release.scans}
    entries = {**kept, **job.finished}
    entries = {
        k: v for k, v in entries.items()
        if k in scans and v["image_sha256"] == scans[k].image_sha256 and v["label_sha256"] == scans[k].label_sha256
        and all(_inside(out, v[f]) for f in ("image", "label", "organs"))
    }
    todo = [r for k, r in scans.items() if k not in entries]
    with Progress(len(scans), initial=len(scans) - len(todo), desc="cache", unit="scan", enabled=progress) as bar:

        def done(record: ScanRecord, entry: dict) -> None:
            entries[record.key] = entry
            job.record(record.key, entry)  # after every scan: an interrupted build resumes here
            bar.update()

        run_items(todo, partial(_write_item, str(out), release, chunks, codec), done, workers=workers)
    release_state = {"root": str(Path(release.root).resolve()), "name": release.info.name,
                     "version": release.info.version, "manifest_sha256": release.info.files[MANIFEST]}
    write_json(state_path, {**settings, "release": release_state, "scans": dict(sorted(entries.items())), "complete": True})
    job.remove()
    return PatchCache(out, release)


def open_cache(release: Release, path: str | os.PathLike | None = None, *, rebuild: bool = True, progress: bool = False) -> PatchCache:
    """The release's patch cache, up to date: opened if it matches the release, else (with
    `rebuild`) brought up to date first, rewriting only the scans that changed."""
    path = Path(path) if path is not None else default_cache_dir(release)
    try:
        return PatchCache(path, release)
    except StaleCacheError:
        if not rebuild:
            raise
        state = read_json(path / CACHE_FILE) if (path / CACHE_FILE).is_file() else {}
        return build_cache(release, path, codec=state.get("codec", "lz4"), progress=progress)


class PatchCache:
    """An opened patch cache, checked against its release.

    Raises:
        StaleCacheError: the cache is missing, unfinished, or built from another state of the
            release; the message says to run ``umd cache build``.
    """

    def __init__(self, path: str | os.PathLike, release: Release) -> None:
        self.path = Path(path)
        self.release = release
        state_path = self.path / CACHE_FILE
        fix = f"Run `umd cache build {release.root}` (or umd_dataset.views.cache.build_cache) to build or update it."
        if not state_path.is_file():
            raise StaleCacheError(f"No patch cache at {self.path}. {fix}")
        state = read_json(state_path)
        if not state.get("complete"):
            raise StaleCacheError(f"The patch cache at {self.path} was not finished. {fix}")
        if state["release"]["manifest_sha256"] != release.info.files[MANIFEST]:
            raise StaleCacheError(f"The patch cache at {self.path} was built from another state of the release {release.root}. {fix}")
        missing = [r.key for r in release.scans if r.key not in state["scans"]]
        if missing:
            raise StaleCacheError(f"The patch cache at {self.path} lacks {len(missing)} scans (e.g. {missing[0]}). {fix}")
        self.state = state
        self._open: dict = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:  # open arrays are not sent to DataLoader workers
        return {**self.__dict__, "_open": {}}

    def _handles(self) -> dict:
        """Open arrays of this process (a forked DataLoader worker opens its own)."""
        if self._pid != os.getpid():
            self._open, self._pid = {}, os.getpid()
        return self._open

    def _array(self, key: str, which: str):
        handle = self._handles().get((key, which))
        if handle is None:
            import blosc2

            handle = blosc2.open(str(self._file(key, which)), mode="r", dparams=blosc2.DParams(nthreads=1))
            self._handles()[(key, which)] = handle
        return handle

    def _file(self, key: str, which: str) -> Path:
        """A file of the cache, refusing any path in ``cache.json`` that leaves the cache folder."""
        return safe_relative_path(self.path, self.state["scans"][key][which])

    def organ_points(self, key: str, organ_id: int) -> np.ndarray:
        """Up to 4096 voxel indices (n, 3) of an organ in a scan (empty if absent)."""
        cached = self._handles().get((key, "organs"))
        if cached is None:
            with np.load(self._file(key, "organs")) as data:
                cached = {int(k): data[k] for k in data.files}
            self._handles()[(key, "organs")] = cached
        return cached.get(int(organ_id), np.zeros((0, 3), np.int32))

    def read(self, key: str, start, size) -> tuple[np.ndarray, np.ndarray]:
        """(image, label) patch of `size` voxels from `start`; parts outside the volume are filled
        with the image minimum and background."""
        return self.read_array(key, "image", start, size), self.read_array(key, "label", start, size)

    def read_array(self, key: str, which: str, start, size) -> np.ndarray:
        """One patch of the ``image`` or the ``label`` map of a scan (see `read`); a patch may lie
        partly or wholly outside the volume."""
        shape = self.state["scans"][key]["shape"]
        start, size = np.asarray(start, int), np.asarray(size, int)
        lo = np.minimum(np.maximum(start, 0), shape)
        hi = np.maximum(np.minimum(start + size, shape), lo)  # never a negative index (it would count from the end)
        patch = self._array(key, which)[tuple(slice(a, b) for a, b in zip(lo, hi))]
        if np.array_equal(lo, start) and np.array_equal(hi, start + size):
            return patch
        where = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
        fill = (patch.min() if patch.size else 0) if which == "image" else 0
        full = np.full(size, fill, dtype=patch.dtype)
        full[where] = patch
        return full


def _key_list(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


class _Patches(torch.utils.data.Dataset):
    """What the two patch datasets share: the patch size, the sampler (uniform or organ-centred, on
    the voxels of one "anchor" scan per unit), the epoch in shared memory and the subjects."""

    def _setup(self, cache: PatchCache, patch_size, samples: int, sampler: str, organs, no_organ: str, seed: int, what: str) -> None:
        check_choice(sampler, SAMPLERS, "patch sampler")
        check_choice(no_organ, NO_ORGAN, "no_organ policy")
        self.patch_size = np.broadcast_to(np.asarray(patch_size, int), (3,)).copy()
        if (self.patch_size < 1).any():
            raise InvalidOptionError(f"patch_size={patch_size!r}: every axis needs at least one voxel.")
        if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
            raise InvalidOptionError(f"{what}={samples!r}: give a whole number of patches, at least 1.")
        self.cache, self.sampler, self.seed, self.no_organ = cache, sampler, int(seed), no_organ
        self.organ_ids = None if organs is None else [cache.release.schema.organ(o).id for o in organs]
        self.uniform_scans: list[str] = []  # scans whose patches are drawn anywhere although the sampler is "organ"
        self.skipped: list[str] = []  # scans left out for lack of the organs (no_organ="skip")
        # one int64 in shared memory: DataLoader workers (forked, spawned, persistent) read the same value
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if not self._epoch.is_shared():  # a copy (copy.deepcopy, pickle to a file) gets its own shared counter
            self._epoch = self._epoch.clone().share_memory_()

    @property
    def epoch(self) -> int:
        """The epoch patches are drawn for (shared with DataLoader workers); set it with `set_epoch`."""
        return int(self._epoch[0])

    @epoch.setter
    def epoch(self, epoch: int) -> None:
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Draw the patches of `epoch` from now on, in this process and in every DataLoader worker
        (persistent ones included). Call it before iterating the loader for that epoch."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise InvalidOptionError(f"set_epoch({epoch!r}): the epoch is a whole number, 0 or more.")
        self._epoch[0] = int(epoch)

    def _organ_choices(self, anchor: ScanRecord) -> list[int]:
        schema = self.cache.release.schema
        present = [schema.organ(o).id for o in anchor.organs]
        return [o for o in present if self.organ_ids is None or o in self.organ_ids]

    def _check_organs(self, units: list, anchor_of) -> list:
        """The units to keep under the organ sampler's `no_organ` policy (all of them for the
        uniform sampler); raises, or records and warns, for anchors without any of the organs."""
        if self.sampler != "organ":
            return units
        lacking = [u for u in units if not self._organ_choices(anchor_of(u))]
        if not lacking:
            return units
        keys = [anchor_of(u).key for u in lacking]
        schema = self.cache.release.schema
        wanted = "any organ" if self.organ_ids is None else "any of the organs " + ", ".join(schema.organ(i).slug for i in self.organ_ids)
        message = f"{len(lacking)} of {len(units)} scans have no voxel of {wanted} in their label map: {_key_list(keys)}"
        if self.no_organ == "error":
            raise InvalidOptionError(
                f"sampler='organ': {message}. Pass no_organ='uniform' to draw their patches anywhere (listed in "
                ".uniform_scans; their items have organ 0), no_organ='skip' to leave them out (listed in .skipped), "
                "or select scans that contain the organs (Release.select(organ=...))."
            )
        if self.no_organ == "uniform":
            self.uniform_scans = keys
            warnings.warn(f"sampler='organ': {message}; their patches are drawn uniformly (no_organ='uniform', see .uniform_scans).", stacklevel=3)
            return units
        self.skipped = keys
        warnings.warn(f"sampler='organ': {message}; they are left out (no_organ='skip', see .skipped).", stacklevel=3)
        return [u for u in units if self._organ_choices(anchor_of(u))]

    def _draw(self, anchor: ScanRecord, index: int) -> tuple[np.ndarray, int]:
        """(corner in voxels of `anchor`, id of the organ the patch is centred on or 0) of patch `index`."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        shape = np.asarray(anchor.shape)
        if self.sampler == "organ":
            choices = self._organ_choices(anchor)
            if choices:  # else: a scan of .uniform_scans (no_organ="uniform")
                organ_id = choices[rng.integers(len(choices))]
                points = self.cache.organ_points(anchor.key, organ_id)
                if not len(points):
                    raise StaleCacheError(
                        f"The patch cache at {self.cache.path} holds no voxel of organ {organ_id} for {anchor.key}, which "
                        f"the manifest lists. Rebuild it: `umd cache build {self.cache.release.root}`."
                    )
                centre = points[rng.integers(len(points))]
                low, high = np.minimum(0, shape - self.patch_size), np.maximum(0, shape - self.patch_size)
                return np.clip(centre - self.patch_size // 2, low, high), int(organ_id)
        high = np.maximum(shape - self.patch_size, 0)
        return np.array([rng.integers(0, h + 1) for h in high]), 0

    def _check_index(self, index: int) -> int:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return int(index)


class PatchDataset(_Patches):
    """Random patches of scans from a patch cache, for a `torch.utils.data.DataLoader` (map-style).

    Item ``i`` is patch ``i % samples_per_volume`` of scan ``i // samples_per_volume``; its position
    is drawn from a generator seeded by (seed, epoch, i), so a run is reproducible and every epoch
    (`set_epoch`, which reaches DataLoader workers, persistent ones too) draws new patches.

    An item: ``image`` (1, X, Y, Z) float32, ``label`` (1, X, Y, Z) uint8, ``start`` (its corner in
    voxels of the scan), ``affine`` (the patch's voxel-to-world matrix), ``organ`` (the id of the
    organ it is centred on; 0 for a uniform draw), ``subject``, ``study``, ``scan``, ``domain``.
    Parts of a patch outside the volume hold the image's minimum and background.

    Args:
        cache: an opened `PatchCache`.
        patch_size: voxels per axis.
        samples_per_volume: patches per scan and epoch.
        sampler: ``"uniform"`` (anywhere in the volume) or ``"organ"`` (centred on a voxel of an
            organ, organs drawn with equal probability: small organs get seen).
        organs: for the organ sampler, the organs to draw from (default: all present).
        no_organ: for the organ sampler, a scan with none of `organs`: ``"error"`` (default: raise
            when the dataset is made), ``"uniform"`` (uniform patches; listed in ``.uniform_scans``,
            with a warning) or ``"skip"`` (left out; listed in ``.skipped``, with a warning).
        study, scan, split, domain: which scans, as in `Release.select`.
        seed: the seed of every draw.
        transform: called on each item (a dict) before it is returned.

    Raises:
        UnknownNameError: an unknown sampler, policy, organ or filter value.
        InvalidOptionError: a patch size or count below 1, or (``no_organ="error"``) scans without the organs.
    """

    def __init__(
        self,
        cache: PatchCache,
        *,
        patch_size=(96, 96, 96),
        samples_per_volume: int = 8,
        sampler: str = "uniform",
        organs=None,
        no_organ: str = "error",
        study=None,
        scan=None,
        split=None,
        domain=None,
        seed: int = 0,
        transform=None,
    ) -> None:
        self._setup(cache, patch_size, samples_per_volume, sampler, organs, no_organ, seed, "samples_per_volume")
        self.samples_per_volume, self.transform = int(samples_per_volume), transform
        self.records = self._check_organs(cache.release.select(study=study, scan=scan, split=split, domain=domain), lambda r: r)

    def __len__(self) -> int:
        return len(self.records) * self.samples_per_volume

    def subjects(self) -> list[str]:
        """The subject of each item, for `umd_dataset.views.pytorch.SubjectSampler`."""
        return [r.subject for r in self.records for _ in range(self.samples_per_volume)]

    def start_of(self, index: int) -> np.ndarray:
        """The corner of patch `index` (in voxels of its scan)."""
        return self._draw(self.records[index // self.samples_per_volume], index)[0]

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        record = self.records[index // self.samples_per_volume]
        start, organ_id = self._draw(record, index)
        image, label = self.cache.read(record.key, start, self.patch_size)
        item = {
            "image": torch.from_numpy(np.asarray(image, dtype=np.float32)[None]),
            "label": torch.from_numpy(np.asarray(label, dtype=np.uint8)[None]),
            "start": torch.from_numpy(start.astype(np.int64)),
            "affine": torch.from_numpy(shifted(record.affine_matrix, start)),
            "organ": organ_id,
            "subject": record.subject, "study": record.study, "scan": record.scan, "domain": record.domain,
        }
        return self.transform(item) if self.transform is not None else item


def _box_in(structural: ScanRecord, functional: ScanRecord, start, size) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) corners, in voxel coordinates of `functional`, of the world box covered by the
    `size` voxels of `structural` from `start` (out to their outer faces); for grids that are not
    parallel, the bounding box of its eight corners."""
    start, size = np.asarray(start, np.float64), np.asarray(size, np.float64)
    faces = (start - 0.5, start + size - 0.5)
    corners = np.array([[faces[b][axis] for axis, b in enumerate(bits)] for bits in np.ndindex(2, 2, 2)])
    inside = to_voxel(functional.affine_matrix, to_world(structural.affine_matrix, corners))
    return inside.min(axis=0), inside.max(axis=0)


def _covering_size(structural: ScanRecord, functional: ScanRecord, size) -> np.ndarray:
    """Voxels per axis of the functional block that covers any structural patch of `size` voxels:
    a box `l` functional voxels long meets at most ceil(l) + 1 of them."""
    low, high = _box_in(structural, functional, np.zeros(3), size)
    return np.ceil(high - low - 1e-6).astype(int) + 1


class PairedPatchDataset(_Patches):
    """The same world-space region of the two scans of a study: a patch of its structural scan (CT
    or MRI) and of its PET, for cross-modal training (map-style, over a patch cache).

    Item ``i`` is patch ``i % samples_per_study`` of study ``i // samples_per_study``. The
    structural patch has `patch_size` voxels, drawn (uniform or organ-centred, on the structural
    scan's label map) from a generator seeded by (seed, epoch, i), as in `PatchDataset`. Its world
    box is what its voxels cover, out to their outer faces. The PET side covers that box:

    - on the PET's own grid (``functional_grid="native"``): the block of ``ceil(l) + 1`` PET voxels
      per axis (``l``: the box's length in PET voxels; the bounding box in PET voxel coordinates
      if the grids are not parallel) centred, to the nearest voxel, on the box's centre. Every
      world point of the box lies in one of its voxels (up to one PET voxel of margin on a side).
      The size is fixed per study (it depends on the two spacings only); `functional_size` makes it
      the same for every study, so that batches can mix studies with other PET spacings.
    - resampled onto the structural patch's grid (``functional_grid="structural"``): the PET's
      intensities linearly interpolated, and the PET's *own* label map (each scan of a release has
      its own label map, drawn on its own grid) by nearest neighbour, so its ids stay ids of that
      map. Only the covering block (plus one voxel for interpolation) is read and resampled.

    Parts outside a volume hold that patch's minimum and background (`PatchCache.read`). Only
    the chunks a patch touches are read, never a whole volume.

    An item: ``{"subject", "study", "split", "organ", "structural": {...}, "functional": {...}}``;
    ``structural`` holds ``image`` (1, X, Y, Z) float32, ``label`` (1, X, Y, Z) uint8, ``affine``
    (voxel to world), ``start`` (corner, in voxels of the scan), ``scan``, ``domain``;
    ``functional`` holds ``image``, ``label``, ``affine`` (of the grid they lie on: the PET block,
    or the structural patch's), ``scan``, ``domain``, and ``native_start``, ``native_shape``,
    ``native_affine``: the covering block of the PET's own grid, which `onto_native_grid` maps
    values on the item's functional grid (e.g. a prediction) back onto. ``organ`` is the id the
    patch is centred on (0 for a uniform draw).

    Args:
        cache: an opened `PatchCache`.
        patch_size: voxels per axis of the structural patch.
        samples_per_study: patches per study and epoch.
        sampler, organs, no_organ: as in `PatchDataset`, on the structural scan.
        study, split: which studies (``petct``, ``petmri``; splits), as in `Release.studies`.
        functional_grid: ``"native"`` or ``"structural"`` (see above).
        functional_size: for ``"native"``, PET voxels per axis for every study (at least what
            each study needs; `functional_sizes` lists those); default: each study's own.
        seed: the seed of every draw.
        transform: called on each item (a dict) before it is returned.

    Raises:
        UnknownNameError: an unknown sampler, policy, grid, organ, study kind or split.
        InvalidOptionError: a size or count below 1, a `functional_size` too small to cover the
            box of some study, or (``no_organ="error"``) structural scans without the organs.

    Example:
        >>> pairs = PairedPatchDataset(cache, patch_size=96, study="petct", sampler="organ")  # doctest: +SKIP
        >>> item = pairs[0]; item["functional"]["image"].shape  # doctest: +SKIP
        torch.Size([1, 25, 25, 25])
    """

    def __init__(
        self,
        cache: PatchCache,
        *,
        patch_size=(96, 96, 96),
        samples_per_study: int = 8,
        sampler: str = "uniform",
        organs=None,
        no_organ: str = "error",
        study=None,
        split=None,
        functional_grid: str = "native",
        functional_size=None,
        seed: int = 0,
        transform=None,
    ) -> None:
        self._setup(cache, patch_size, samples_per_study, sampler, organs, no_organ, seed, "samples_per_study")
        self.functional_grid = check_choice(functional_grid, FUNCTIONAL_GRIDS, "functional grid")
        self.samples_per_study, self.transform = int(samples_per_study), transform
        self.studies: list[Study] = self._check_organs(cache.release.studies(study=study, split=split), self.structural_of)
        #: PET voxels per axis that cover a structural patch, by study ("<subject>/<study>")
        self.functional_sizes = {
            f"{s.subject}/{s.study}": tuple(int(v) for v in _covering_size(self.structural_of(s), self.functional_of(s), self.patch_size))
            for s in self.studies
        }
        self.functional_size = None
        if functional_size is not None:
            if functional_grid != "native":
                raise InvalidOptionError(f"functional_size={functional_size!r} is for functional_grid='native'; resampled "
                                         "PET patches have patch_size voxels.")
            fixed = np.broadcast_to(np.asarray(functional_size, int), (3,))
            short = {k: v for k, v in self.functional_sizes.items() if (fixed < v).any()}
            if short:
                key, need = next(iter(short.items()))
                largest = np.max(list(self.functional_sizes.values()), axis=0)
                raise InvalidOptionError(
                    f"functional_size={functional_size!r} does not cover a {tuple(int(v) for v in self.patch_size)}-voxel "
                    f"patch in {len(short)} studies (e.g. {key} needs {need} PET voxels). Give at least "
                    f"{tuple(int(v) for v in largest)}, or leave functional_size=None (each study its own)."
                )
            self.functional_size = tuple(int(v) for v in fixed)

    @staticmethod
    def structural_of(study: Study) -> ScanRecord:
        return study.scans[modalities().study(study.study).structural]

    @staticmethod
    def functional_of(study: Study) -> ScanRecord:
        return study.scans[modalities().study(study.study).functional]

    def __len__(self) -> int:
        return len(self.studies) * self.samples_per_study

    def subjects(self) -> list[str]:
        """The subject of each item, for `umd_dataset.views.pytorch.SubjectSampler`."""
        return [s.subject for s in self.studies for _ in range(self.samples_per_study)]

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        study = self.studies[index // self.samples_per_study]
        start, organ_id = self._draw(self.structural_of(study), index)
        item = self.pair(study, start)
        item["organ"] = organ_id
        return self.transform(item) if self.transform is not None else item

    def pair(self, study: Study, start) -> dict:
        """The item (without ``organ``; no transform) of `study` whose structural patch starts at voxel `start`."""
        structural, functional = self.structural_of(study), self.functional_of(study)
        start = np.asarray(start, int)
        patch_affine = shifted(structural.affine_matrix, start)
        image, label = self.cache.read(structural.key, start, self.patch_size)
        low, high = _box_in(structural, functional, start, self.patch_size)
        size = np.asarray(self.functional_size or self.functional_sizes[f"{study.subject}/{study.study}"])
        native_start = np.floor((low + high) / 2 - (size - 1) / 2 + 0.5).astype(int)
        native_affine = shifted(functional.affine_matrix, native_start)
        if self.functional_grid == "native":
            pet, pet_label = self.cache.read(functional.key, native_start, size)
            pet_affine = native_affine
        else:  # one more voxel on every side, for linear interpolation out to the box's faces
            block_start = native_start - 1
            pet, pet_label = self.cache.read(functional.key, block_start, size + 2)
            block_affine = shifted(functional.affine_matrix, block_start)
            pet = resample_onto(np.asarray(pet, np.float32), block_affine, self.patch_size, patch_affine, order=1, support=False)
            pet_label = resample_onto(pet_label, block_affine, self.patch_size, patch_affine, order=0)
            pet_affine = patch_affine
        return {
            "subject": study.subject, "study": study.study, "split": study.split,
            "structural": {
                "image": torch.from_numpy(np.asarray(image, dtype=np.float32)[None]),
                "label": torch.from_numpy(np.asarray(label, dtype=np.uint8)[None]),
                "affine": torch.from_numpy(patch_affine),
                "start": torch.from_numpy(start.astype(np.int64)),
                "scan": structural.scan, "domain": structural.domain,
            },
            "functional": {
                "image": torch.from_numpy(np.ascontiguousarray(pet, dtype=np.float32)[None]),
                "label": torch.from_numpy(np.ascontiguousarray(pet_label, dtype=np.uint8)[None]),
                "affine": torch.from_numpy(pet_affine),
                "native_start": torch.from_numpy(native_start.astype(np.int64)),
                "native_shape": torch.from_numpy(size.astype(np.int64)),
                "native_affine": torch.from_numpy(native_affine),
                "scan": functional.scan, "domain": functional.domain,
            },
        }


def onto_native_grid(values, item: dict, *, order: int = 0, batch_index: int | None = None) -> np.ndarray:
    """Values on the functional grid of a `PairedPatchDataset` item (a prediction on the structural
    patch grid, with ``functional_grid="structural"``) resampled onto the PET's own grid: the
    block ``item["functional"]["native_*"]`` (its corner ``native_start`` in voxels of the PET).

    Args:
        values: (X, Y, Z) or (1, X, Y, Z) array or tensor on the grid of ``item["functional"]["affine"]``.
        item: the item, or a batch of them with `batch_index`.
        order: 0 nearest neighbour (labels: ids are kept), 1 linear (intensities, probabilities).
        batch_index: which item of a collated batch.

    Raises:
        InvalidOptionError: values whose shape is not the item's functional grid, a batch without
            `batch_index`, or an order other than 0 and 1.
    """
    if order not in (0, 1):
        raise InvalidOptionError(f"order={order!r}: 0 (nearest neighbour, labels) or 1 (linear).")
    part = item["functional"]
    affine, native_shape, native_affine = (np.asarray(part[k]) for k in ("affine", "native_shape", "native_affine"))
    if affine.ndim == 3:
        if batch_index is None:
            raise InvalidOptionError(f"item is a batch of {affine.shape[0]} items: give batch_index=.")
        affine, native_shape, native_affine = affine[batch_index], native_shape[batch_index], native_affine[batch_index]
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    values = np.asarray(values)
    grid = tuple(np.asarray(part["image"].shape[-3:]))
    if values.shape not in (grid, (1, *grid)):
        raise InvalidOptionError(f"values of shape {values.shape}: expected {grid} (the item's functional grid), or (1, {', '.join(map(str, grid))}).")
    values = values.reshape(grid)
    return resample_onto(values, affine, tuple(int(v) for v in native_shape), native_affine, order=order, support=order == 0)
