"""The evaluation runner: any model over the scans of a release, per organ and domain, resumable.

For every scan of the chosen split and domains, the model runs once (automatic) or once per organ
and prompt round (promptable); metrics are computed in a thread pool while the model works on the
next scan. A model that raises, times out, or returns the wrong grid, dtype, NaN or labels outside
the schema is recorded as a failure with its reason, scored as an empty prediction (see the
edge-case table of `umd_dataset.evaluation.metrics`), and the run goes on.

Each scan's rows are appended as one JSON line, flushed and synced, so a killed run loses at most
the scan in progress; running again skips the scans already written and gives the same final
table. With shards (``torchrun``'s RANK and WORLD_SIZE, or `EvalConfig.shard`) every process
scores its share into its own file, and the last one to finish merges them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from umd_dataset.errors import ModelOutputError, UMDError
from umd_dataset.evaluation.metrics import METRIC_DEFINITION, case_metrics, organ_metrics
from umd_dataset.evaluation.models import Case, model_kind
from umd_dataset.evaluation.prompts import PromptConfig, correction_click, make_prompt, prompt_rng
from umd_dataset.io import read_json, read_nifti, write_json
from umd_dataset.modalities import modalities

__all__ = ["EvalConfig", "EvalResult", "evaluate", "merge_results"]

RESULTS = "results"
KEY = ["subject", "study", "scan", "organ_id", "iteration"]


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how.

    Attributes:
        split: the split to score (None: every split).
        domains: evaluation domains (default the four of the paper).
        organs: organ slugs (default all).
        prompt: prompt simulation for promptable models.
        tolerances_mm: NSD tolerances.
        timeout_s: seconds a model may take per call.
        metric_workers: threads computing metrics while the model runs.
        shard: (index, count) of this process's share; None takes RANK/WORLD_SIZE, else (0, 1).
    """

    split: str | None = "test"
    domains: tuple[str, ...] = ("ct", "petct_pet", "mri", "petmri_pet")
    organs: tuple[str, ...] | None = None
    prompt: PromptConfig = field(default_factory=PromptConfig)
    tolerances_mm: tuple[float, ...] = (1.0, 2.0)
    timeout_s: float = 600.0
    metric_workers: int = 1
    shard: tuple[int, int] | None = None

    def resolved_shard(self) -> tuple[int, int]:
        if self.shard is not None:
            return self.shard
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))

    def identity(self) -> dict:
        data = asdict(self)
        data.pop("shard"), data.pop("metric_workers"), data.pop("timeout_s")
        return json.loads(json.dumps(data))


@dataclass
class EvalResult:
    """Where the results are, and the table once every shard finished (None before)."""

    out: Path
    table: object | None
    complete: bool
    scans_scored: int
    scans_skipped: int


class _Timeout(Exception):
    pass


def _call(model, args: tuple, timeout_s: float):
    """Run a model call with a time limit (the call continues in the background if it overruns)."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = model(*args)
        except BaseException as error:  # noqa: BLE001 - any failure of user code is recorded, not raised
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise _Timeout(f"timed out after {timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _as_array(output, case: Case, what: str) -> np.ndarray:
    """The model output as an array on the case's grid; raises `ModelOutputError` naming the problem."""
    if hasattr(output, "affine") and hasattr(output, "dataobj"):  # a nibabel image: check its grid
        from umd_dataset.io import Geometry

        given, expected = Geometry(output.shape, output.affine), Geometry(case.image.shape, case.affine)
        if not given.matches(expected):
            raise ModelOutputError(f"{what} is on another grid: expected {expected.describe()}, given {given.describe()}")
        output = np.asanyarray(output.dataobj)
    if hasattr(output, "detach"):  # a torch tensor
        output = output.detach().cpu().numpy()
    if not isinstance(output, np.ndarray):
        raise ModelOutputError(f"{what} is a {type(output).__name__}, not an array")
    if output.shape != case.image.shape:
        spacing = ", ".join(f"{s:.4g}" for s in case.spacing_mm)
        raise ModelOutputError(
            f"{what} has shape {output.shape}; expected shape {case.image.shape} (spacing ({spacing}) mm), the scan's own grid. "
            "Resample predictions back onto the scan before returning them."
        )
    if output.dtype.kind == "f":
        if not np.isfinite(output).all():
            raise ModelOutputError(f"{what} contains NaN or infinite values")
        if not np.array_equal(output, np.rint(output)):
            raise ModelOutputError(f"{what} has non-integer values (probabilities?); return labels")
    elif output.dtype.kind not in "biu":
        raise ModelOutputError(f"{what} has dtype {output.dtype}; return integer labels or a bool mask")
    return output


def _label_map(output, case: Case, schema) -> np.ndarray:
    if isinstance(output, Mapping):
        labels = np.zeros(case.image.shape, dtype=np.uint8)
        for slug, mask in output.items():
            organ = schema.organ(slug)
            mask = _as_array(mask, case, f"the mask of {slug}").astype(bool)
            if (labels[mask] != 0).any():
                raise ModelOutputError(f"the masks of {slug} and another organ overlap")
            labels[mask] = organ.id
        return labels
    labels = _as_array(output, case, "the label map")
    values = np.unique(labels)
    bad = [int(v) for v in values if v < 0 or v > len(schema)]
    if bad:
        raise ModelOutputError(f"the label map holds {bad}, not organ ids of {schema.key} (0..{len(schema)})")
    return labels.astype(np.uint8)


def _mask(output, case: Case, organ: str) -> np.ndarray:
    mask = _as_array(output, case, f"the mask of {organ}")
    values = set(np.unique(mask).tolist())
    if not values <= {0, 1, True, False}:
        raise ModelOutputError(f"the mask of {organ} holds values {sorted(values)[:5]}, not 0/1")
    return mask.astype(bool)


def _rows_for(record, organs, metrics: dict, base: dict, prompts: dict | None = None, iteration: int = 0) -> list[dict]:
    rows = []
    for organ in organs:
        m = metrics[organ.id]
        row = {**base, "organ": organ.slug, "organ_id": organ.id, "iteration": iteration, **m.as_row()}
        row["prompt"] = (prompts or {}).get(organ.id, "")
        rows.append(row)
    return rows


def _run_model(model, kind: str, record, release, config: EvalConfig, organs, model_name: str):
    """Run the model on one scan (in the caller's thread) and return a function that computes the
    scan's rows (run in the metric thread pool, while the model works on the next scan)."""
    image, affine = read_nifti(release.image_path(record))
    reference, _ = read_nifti(release.label_path(record))
    reference = np.asarray(reference)
    spec = modalities().scan(record.scan)
    case = Case(np.asarray(image), affine, record.spacing_mm, record.subject, record.study, record.scan, record.domain,
                spec.modality, spec.units, tuple(record.organs), reference if getattr(model, "needs_reference", False) else None)
    base = {"model": model_name, "subject": record.subject, "study": record.study, "scan": record.scan, "domain": record.domain,
            "split": record.split, "status": "ok", "failure": "", "seconds_model": 0.0}
    schema = release.schema
    if kind == "automatic":
        start = time.perf_counter()
        try:
            prediction = _label_map(_call(model, (case,), config.timeout_s), case, schema)
        except (Exception, _Timeout) as error:  # noqa: BLE001 - recorded per case
            prediction = np.zeros(reference.shape, dtype=np.uint8)
            base.update(status="failed", failure=f"{type(error).__name__}: {error}")
        base["seconds_model"] = time.perf_counter() - start

        def rows() -> list[dict]:
            metrics = organ_metrics(reference, prediction, record.spacing_mm, [o.id for o in organs], config.tolerances_mm)
            return _rows_for(record, organs, metrics, base)

        return rows
    work = []  # (organ, iteration, prompt json, truth, mask, row base)
    for organ in organs:
        truth = reference == organ.id
        if not truth.any():  # no prompt without an object: the organ is absent from this scan
            work.append((organ, 0, "", truth[:1, :1, :1], truth[:1, :1, :1], {**base, "status": "absent"}))
            continue
        rng = prompt_rng(config.prompt.seed, record.subject, record.study, record.scan, organ.slug)
        prompt = make_prompt(truth, organ.slug, organ.id, config.prompt, record.spacing_mm, schema, rng)
        for iteration in range(config.prompt.iterations + 1):
            start = time.perf_counter()
            row_base = dict(base)
            try:
                mask = _mask(_call(model, (case, prompt), config.timeout_s), case, organ.slug)
            except (Exception, _Timeout) as error:  # noqa: BLE001 - recorded per case
                mask = np.zeros(truth.shape, dtype=bool)
                row_base.update(status="failed", failure=f"{type(error).__name__}: {error}")
            row_base["seconds_model"] = time.perf_counter() - start
            work.append((organ, iteration, prompt.to_json(), truth, mask, row_base))
            if iteration < config.prompt.iterations:
                click = correction_click(truth, mask, record.spacing_mm)
                if click is None:
                    break
                prompt = prompt.with_click(click[0], click[1], iteration + 1)

    def rows() -> list[dict]:
        result = []
        for organ, iteration, prompt_json, truth, mask, row_base in work:
            metrics = {organ.id: case_metrics(truth, mask, record.spacing_mm, config.tolerances_mm)}
            result += _rows_for(record, [organ], metrics, row_base, {organ.id: prompt_json}, iteration)
        return result

    return rows


def _read_lines(path: Path) -> list[list[dict]]:
    """The complete lines of a results file (a line cut by a kill is dropped)."""
    if not path.is_file():
        return []
    lines = []
    with open(path, "rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break
            lines.append(json.loads(raw))
    return lines


def evaluate(
    model,
    release="umd-mini",
    out: str | os.PathLike = "umd-evaluation",
    *,
    config: EvalConfig | None = None,
    name: str | None = None,
    reported: Mapping[str, float] | None = None,
    progress: bool = True,
) -> EvalResult:
    """Score a model on a release, per organ and domain, and write the results table and report.

    Args:
        model: any callable (see `umd_dataset.evaluation.models`).
        release: a `Release`, a release folder, ``"umd"`` or ``"umd-mini"``.
        out: the run folder (new, or an interrupted run of the same model and settings).
        config: `EvalConfig`.
        name: the model's name in the results (default: its ``name`` attribute).
        reported: the model's reported benchmark Dice, per domain key (e.g. ``{"ct": 0.91}``), to
            compare with its score here.

    Returns:
        `EvalResult`; its table is set once every shard is done.

    Example:
        >>> from umd_dataset.evaluation.models import NoisyOracle
        >>> result = evaluate(NoisyOracle(), "umd-mini", "runs/oracle")   # doctest: +SKIP
    """
    from umd_dataset import __version__
    from umd_dataset.hf import resolve_release
    from umd_dataset.index import Release

    config = config or EvalConfig()
    release = release if isinstance(release, Release) else resolve_release(str(release))
    kind = model_kind(model)
    name = name or getattr(model, "name", type(model).__name__)
    out = Path(out)
    (out / RESULTS).mkdir(parents=True, exist_ok=True)
    run = {
        "model": name, "kind": kind, "release": {"name": release.info.name, "version": release.info.version,
        "manifest_sha256": release.info.files["manifest.parquet"], "label_schema": release.info.label_schema},
        "config": config.identity(), "metrics": METRIC_DEFINITION, "umd_dataset": __version__, "reported": dict(reported or {}),
    }
    config_path = out / "config.json"
    if config_path.is_file():
        previous = read_json(config_path)
        if previous != json.loads(json.dumps(run)):
            raise UMDError(
                f"{out} holds a run with other settings ({previous['model']}, {previous['config']}); use another folder to "
                "start a new run, or the same settings to resume that one."
            )
    else:
        write_json(config_path, run)
    index, count = config.resolved_shard()
    organs = [release.schema.organ(o) for o in (config.organs or release.schema.slugs)]
    records = [r for r in release.select(split=config.split, domain=list(config.domains))][index::count]
    path = out / RESULTS / f"shard-{index:03d}-of-{count:03d}.jsonl"
    done = {(row[0]["subject"], row[0]["study"], row[0]["scan"]) for row in _read_lines(path) if row}
    todo = [r for r in records if (r.subject, r.study, r.scan) not in done]
    if path.is_file():  # drop a line cut by a kill before appending (truncating never touches the complete lines)
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            os.truncate(path, data.rfind(b"\n") + 1)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(records), initial=len(records) - len(todo), desc=f"evaluate {name}", unit="scan")
    with open(path, "ab") as handle, ThreadPoolExecutor(max(1, config.metric_workers)) as pool:
        pending = []

        def flush(limit: int) -> None:
            while len(pending) > limit:
                rows = pending.pop(0).result()
                handle.write(json.dumps(rows).encode() + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
                if bar is not None:
                    bar.update(1)

        try:
            for record in todo:
                rows = _run_model(model, kind, record, release, config, organs, name)  # the model, in this thread
                pending.append(pool.submit(rows))  # its metrics, in the pool
                flush(max(1, config.metric_workers))
        finally:  # also on Ctrl-C: the scans whose model run finished are scored and kept
            flush(0)
    if bar is not None:
        bar.close()
    (out / RESULTS / f"shard-{index:03d}-of-{count:03d}.done").write_text("done\n")
    complete = all((out / RESULTS / f"shard-{i:03d}-of-{count:03d}.done").is_file() for i in range(count))
    table = merge_results(out, count) if complete else None
    return EvalResult(out, table, complete, len(todo), len(records) - len(todo))


def merge_results(out: str | os.PathLike, shards: int | None = None):
    """Merge the shard files of a run into ``results.parquet`` and ``results.csv``, and write the report.

    The table is sorted by subject, study, scan, organ and prompt round, so an interrupted and
    resumed run, or a sharded one, gives the same table as a single uninterrupted run.
    """
    import pandas as pd

    from umd_dataset.evaluation.report import write_report
    from umd_dataset.io import atomic_path

    out = Path(out)
    files = sorted((out / RESULTS).glob("shard-*.jsonl"))
    if shards is not None:
        files = [f for f in files if f.name.endswith(f"-of-{shards:03d}.jsonl")]
    rows = [row for f in files for line in _read_lines(f) for row in line]
    if not rows:
        raise UMDError(f"{out}: no results to merge.")
    table = pd.DataFrame(rows).sort_values(KEY, kind="stable").drop_duplicates(KEY, keep="last").reset_index(drop=True)
    with atomic_path(out / "results.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(out / "results.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_report(out, table, read_json(out / "config.json"))
    return table
