"""Generic adapters: any function, torch `nn.Module`, folder of prediction files or command-line
program, wrapped as a model that `umd_dataset.evaluate` runs (see `umd_dataset.evaluation.case`).

`FunctionModel` (a plain function), `TorchModel` (an `nn.Module`, sliding-window inference,
optional mixed precision; `TorchModel.from_checkpoint` loads the training example's U-Net),
`FolderModel` (a folder of prediction files, nnU-Net style) and `CommandModel` (a program that
reads and writes NIfTI).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from umd_dataset.errors import InvalidOptionError, ModelError, PredictionNotFoundError, check_choice
from umd_dataset.evaluation.case import MODEL_KINDS, Case
from umd_dataset.io.nifti import load_nifti, write_nifti

__all__ = ["FunctionModel", "TorchModel", "FolderModel", "CommandModel"]


class FunctionModel:
    """Wrap a function as a model: ``f(case) -> label map`` or ``f(case, prompt) -> mask``."""

    def __init__(self, function: Callable, kind: str = "automatic", name: str | None = None) -> None:
        self.function, self.name = function, name or getattr(function, "__name__", "function")
        self.kind = check_choice(kind, MODEL_KINDS, "model kind")
        self.needs_reference = getattr(function, "needs_reference", False)

    def __call__(self, case: Case, prompt=None):
        return self.function(case) if self.kind == "automatic" else self.function(case, prompt)


class TorchModel:
    """An `nn.Module` that maps a normalized (N, 1, X, Y, Z) patch to (N, classes, X, Y, Z) logits,
    run by sliding window over the whole scan (windows overlapping by `overlap`, logits averaged).

    Args:
        module: the network.
        normalization: intensities -> network input (e.g. `umd_dataset.evaluation.baselines.unet.NORMALIZATIONS["ct"]`).
        patch_size: window size in voxels.
        device, amp: where to run; `amp` uses bfloat16 autocast (CPU) or float16 (CUDA).
    """

    kind = "automatic"

    def __init__(self, module, normalization, patch_size, *, device: str = "cpu", amp: bool = False, overlap: float = 0.5, name: str = "torch") -> None:
        self.module, self.normalization, self.device, self.amp, self.overlap, self.name = module, normalization, device, amp, overlap, name
        self.patch_size = np.broadcast_to(np.asarray(patch_size, int), (3,)).copy()

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: str = "cpu", amp: bool = False) -> TorchModel:
        from umd_dataset.evaluation.baselines.unet import load_checkpoint

        module, meta = load_checkpoint(path, device)
        return cls(module, meta["normalization"], meta["patch_size"], device=device, amp=amp, name=f"unet:{Path(path).name}")

    def __call__(self, case: Case, prompt=None) -> np.ndarray:
        import torch

        image = torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32))
        image = self.normalization(image)
        shape = np.asarray(image.shape)
        size = np.minimum(self.patch_size, shape)
        divisor = getattr(self.module, "divisor", 1)
        size = np.maximum((size // divisor) * divisor, divisor)
        pad = np.maximum(size - shape, 0)
        if pad.any():
            image = torch.nn.functional.pad(image, (0, int(pad[2]), 0, int(pad[1]), 0, int(pad[0])))
        padded = np.asarray(image.shape)
        step = np.maximum((size * (1 - self.overlap)).astype(int), 1)
        starts = [sorted(set(list(range(0, p - s + 1, st)) + [p - s])) for p, s, st in zip(padded, size, step)]
        logits = None
        counts = torch.zeros(tuple(padded), dtype=torch.float32)
        dtype = torch.bfloat16 if self.device == "cpu" else torch.float16
        with torch.no_grad(), torch.autocast(device_type=str(self.device).split(":")[0], dtype=dtype, enabled=self.amp):
            for x in starts[0]:
                for y in starts[1]:
                    for z in starts[2]:
                        window = image[x : x + size[0], y : y + size[1], z : z + size[2]][None, None].to(self.device)
                        out = self.module(window).float().cpu()[0]
                        if logits is None:
                            logits = torch.zeros((out.shape[0], *padded), dtype=torch.float32)
                        logits[:, x : x + size[0], y : y + size[1], z : z + size[2]] += out
                        counts[x : x + size[0], y : y + size[1], z : z + size[2]] += 1
        labels = (logits / counts).argmax(dim=0).numpy().astype(np.uint8)
        return labels[: shape[0], : shape[1], : shape[2]]


class FolderModel:
    """Predictions already on disk: ``<folder>/<pattern>`` per scan (default nnU-Net style
    ``{subject}_{study}_{scan}.nii.gz``), label maps with canonical ids. The file's affine must be
    the scan's, or the case fails with both grids named."""

    kind = "automatic"

    def __init__(self, folder: str | os.PathLike, pattern: str = "{subject}_{study}_{scan}.nii.gz", name: str | None = None) -> None:
        self.folder, self.pattern, self.name = Path(folder), pattern, name or f"folder:{Path(folder).name}"

    def __call__(self, case: Case, prompt=None):
        path = self.folder / self.pattern.format(subject=case.subject, study=case.study, scan=case.scan, domain=case.domain)
        if not path.is_file():
            raise PredictionNotFoundError(f"no prediction file {path}")
        image = load_nifti(path)
        return image  # a nibabel image: the runner checks its grid against the scan's


class CommandModel:
    """A program that reads a NIfTI scan and writes a NIfTI label map: ``command`` holds ``{input}``
    and ``{output}`` placeholders, e.g. ``"mymodel --in {input} --out {output}"``.

    The placeholders are replaced by shell-quoted paths before the command is split into
    arguments, so a path with spaces or shell characters stays one argument, also inside
    ``sh -c "..."``. The program runs in its own process group; past its time limit (`timeout_s`,
    else the evaluation's ``timeout_s``) the whole group is killed, children included.

    Raises (when called):
        ModelError: the program exited with an error, or ran past its time limit.
    """

    kind = "automatic"

    def __init__(self, command: str, timeout_s: float | None = None, name: str | None = None) -> None:
        if "{input}" not in command or "{output}" not in command:
            raise InvalidOptionError(f"The command {command!r} must hold the placeholders {{input}} and {{output}}.")
        self.command, self.timeout_s, self.name = command, timeout_s, name or f"command:{shlex.split(command)[0]}"

    def words(self, source: Path, target: Path) -> list[str]:
        """The program's arguments for one scan."""
        return shlex.split(self.command.replace("{input}", shlex.quote(str(source))).replace("{output}", shlex.quote(str(target))))

    def __call__(self, case: Case, prompt=None):
        import signal

        limits = [t for t in (self.timeout_s, case.timeout_s) if t is not None]
        limit = min(limits) if limits else None
        with tempfile.TemporaryDirectory() as tmp:
            source, target = Path(tmp) / "image.nii.gz", Path(tmp) / "labels.nii.gz"
            write_nifti(source, case.image, case.affine)
            words = self.words(source, target)
            process = subprocess.Popen(words, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
            try:
                _, stderr = process.communicate(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the program and every child it started
                process.communicate()
                raise ModelError(f"{words[0]} ran past its time limit of {limit:g} s; its process group was killed") from None
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            if process.returncode != 0:
                raise ModelError(f"{words[0]} exited with {process.returncode}: {stderr.strip()[-500:]}")
            if not target.is_file():
                raise ModelError(f"{words[0]} exited without writing its output {{output}} ({target.name})")
            image = load_nifti(target)
            return type(image)(np.asanyarray(image.dataobj).copy(), image.affine)
