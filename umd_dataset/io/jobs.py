"""Resumable jobs: a job folder that keeps a job's settings and one record per finished item, the
loop that runs the items (in this process or in worker processes), and progress bars.

Every long job of the package (writing a synthetic release, ingesting studies, building the patch
cache) is made of independent items. `JobFolder` makes such a job resumable: the folder holds the
job's settings (``job.json``) and one record per finished item, each written atomically as soon as
the item is done; a job started again with the same settings skips the finished items; one with
other settings is refused (`JobMismatchError`, naming the settings that differ) or, for derived
data such as a cache, started over. The folder is removed when the job is complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal, TypeVar

from umd_dataset.errors import FolderBusyError, JobMismatchError
from umd_dataset.io.files import read_json, write_json

__all__ = ["FolderLock", "lock_open_file", "JobFolder", "Progress", "track", "run_items", "setting_differences"]

T = TypeVar("T")
R = TypeVar("R")

JOB_FILE = "job.json"


def _jsonable(value: object) -> object:
    """The value as it reads back from JSON (tuples become lists), for comparing settings."""
    return json.loads(json.dumps(value, sort_keys=True))


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    """Dotted keys of the leaves (an empty mapping has none: ``reported: {}`` and no ``reported`` agree)."""
    if isinstance(value, Mapping):
        flat: dict[str, object] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


_UNSET = object()


def setting_differences(
    previous: Mapping, current: Mapping, private: Iterable[str] = (), name: Callable[[str], str] = str
) -> tuple[str, ...]:
    """One line per setting that differs: ``"subjects: 20 before, 6 now"``.

    Settings named in `private` (or below them, dotted) are named but their values never shown.
    `name` turns a dotted key into the words the line uses for it (e.g. `umd_dataset.errors.spell`
    of the key and its command-line flag).
    """
    before, now = _flatten(_jsonable(previous)), _flatten(_jsonable(current))
    hidden = tuple(private)
    lines = []
    for key in sorted(set(before) | set(now)):
        if before.get(key, _UNSET) == now.get(key, _UNSET):
            continue
        if any(key == p or key.startswith(p + ".") for p in hidden):
            lines.append(f"{name(key)}: differs (value not shown)")
        else:
            shown = ["not set" if side.get(key, _UNSET) is _UNSET else json.dumps(side[key]) for side in (before, now)]
            lines.append(f"{name(key)}: {shown[0]} before, {shown[1]} now")
    return tuple(lines)


class FolderLock:
    """An exclusive lock on a folder (created if needed), held until `release`: a second process
    that asks for it is refused at once with `FolderBusyError`, before it writes anything.

    The lock is an advisory `flock` on the folder itself (no lock file is left behind); it ends
    with the process that holds it, however that process ends. Where `fcntl` is missing
    (Windows) there is no lock.
    """

    def __init__(self, folder: str | os.PathLike, what: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusyError(
                f"{self.folder} is being written by another process ({what}); wait for it to finish, or stop it, "
                "then run the command again."
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_open_file(handle, what: str) -> None:
    """Lock an open file exclusively for as long as it stays open (see `FolderLock`).

    Raises:
        FolderBusyError: another process holds it.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise FolderBusyError(
            f"{handle.name} is being written by another process ({what}); wait for it to finish, or stop it, then run the "
            "command again."
        ) from None


class JobFolder:
    """The state of one resumable job: its settings and a record per finished item.

    Args:
        folder: where the state lives (created); e.g. ``<release>/.umd-partial``.
        settings: what identifies the job: a rerun must give the same settings to resume it.
        what: the job, for messages (``"synthetic release"``).
        fix: what to do when the settings differ (the command-line or Python way to start over).
        on_other_settings: ``"refuse"`` (raise `JobMismatchError`) or ``"restart"`` (discard the
            finished items, for derived data that is cheap to redo and never mixed).
        private: settings never shown in messages (dotted keys).

    Example:
        >>> job = JobFolder(root / ".umd-partial", {"seed": 0}, what="job", fix="...")  # doctest: +SKIP
        >>> if "S1__petct" not in job.finished:                                        # doctest: +SKIP
        ...     job.record("S1__petct", rows)
        >>> job.remove()                                                               # doctest: +SKIP
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        settings: Mapping,
        *,
        what: str,
        fix: str,
        on_other_settings: Literal["refuse", "restart"] = "refuse",
        private: Iterable[str] = (),
    ) -> None:
        self.folder = Path(folder)
        self.settings = _jsonable(dict(settings))
        self.private = tuple(private)
        self.restarted = False
        if self.folder.exists():
            previous = read_json(self.folder / JOB_FILE) if (self.folder / JOB_FILE).is_file() else {}
            differences = setting_differences(previous, self.settings, self.private)
            if differences and on_other_settings == "refuse":
                raise JobMismatchError(
                    f"{self.folder.parent} holds an interrupted {what} with other settings ("
                    + "; ".join(differences) + f"). Run it again with the same settings to finish it, or {fix}",
                    differences,
                )
            if differences:
                shutil.rmtree(self.folder)
                self.restarted = True
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)  # half-written temporary files of a killed run
        self._records.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        write_json(self.folder / JOB_FILE, self.settings, self.tmp)

    @property
    def _records(self) -> Path:
        return self.folder / "records"

    @property
    def tmp(self) -> Path:
        """Scratch folder for atomic writes of the job (on the same file system as its outputs)."""
        return self.folder / "tmp"

    @staticmethod
    def _file_name(key: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", key) + ".json"

    @property
    def finished(self) -> dict[str, object]:
        """Item key -> its record, for every item recorded so far."""
        done = {}
        for path in sorted(self._records.glob("*.json")):
            entry = read_json(path)
            done[entry["key"]] = entry["record"]
        return done

    def record(self, key: str, record: object) -> None:
        """Mark an item finished, atomically, once everything it wrote is in place."""
        write_json(self._records / self._file_name(key), {"key": key, "record": record}, self.tmp)

    def remove(self) -> None:
        """Remove the folder: the job is complete."""
        shutil.rmtree(self.folder)


class Progress:
    """A progress bar on standard error (tqdm), or nothing when `enabled` is False.

    Example:
        >>> with Progress(10, desc="synth", unit="study") as bar:   # doctest: +SKIP
        ...     bar.update()
    """

    def __init__(self, total: int | None, *, desc: str, unit: str, initial: int = 0, enabled: bool = True) -> None:
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            # on a terminal the bar redraws in place; in a log (no TTY) every redraw is a new line,
            # so redraw at most every 15 s there: a short job logs its start and its end, once each
            interval = 0.1 if sys.stderr.isatty() else 15.0
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, mininterval=interval)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], *, total: int | None, desc: str, unit: str, enabled: bool = True) -> Iterator[T]:
    """Yield `items`, advancing a progress bar (when `enabled`)."""
    with Progress(total, desc=desc, unit=unit, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.update()


def run_items(
    items: Sequence[T],
    work: Callable[[T], R],
    on_done: Callable[[T, R | BaseException], None],
    *,
    workers: int = 1,
    catch: bool = False,
) -> None:
    """Run `work` on every item and hand each result to `on_done`, in this process.

    With ``workers > 1`` the items run in that many spawned processes (`work` and the items must be
    picklable) and results arrive in completion order. With `catch`, an exception raised by one
    item is passed to `on_done` as its result and the others go on; otherwise it is raised (after
    `on_done` has run for every item finished before it). Ctrl-C stops the loop at once.
    """
    if workers <= 1:
        for item in items:
            try:
                result = work(item)
            except Exception as error:  # noqa: BLE001 - with catch, one item's failure is its result
                if not catch:
                    raise
                result = error
            on_done(item, result)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(work, item): item for item in items}
        for future in as_completed(futures):
            error = future.exception()
            if error is not None and not catch:
                raise error
            on_done(futures[future], error if error is not None else future.result())
