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
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from umd_dataset._version import __version__
from umd_dataset.errors import (
    InvalidOptionError,
    ModelError,
    JobMismatchError,
    OutputExistsError,
    ReleaseDataError,
    ResultsError,
    UMDError,
    UnknownNameError,
    check_choice,
    did_you_mean,
    spell,
)
from umd_dataset.evaluation.calling import ISOLATIONS, ModelCaller, format_failure
from umd_dataset.evaluation.case import Case, as_label_map, as_mask, model_kind
from umd_dataset.evaluation.metrics import METRIC_DEFINITION, case_metrics, organ_metrics
from umd_dataset.evaluation.prompts import PromptConfig, correction_click, make_prompt, prompt_rng
from umd_dataset.io.files import atomic_path, read_json, write_json
from umd_dataset.io.jobs import Progress, lock_open_file, setting_differences
from umd_dataset.release.format import DESCRIPTOR, MANIFEST
from umd_dataset.release.resolve import resolve_release
from umd_dataset.schema.organs import SCHEMA_VERSIONS, load_schema
from umd_dataset.schema.studies import modalities

__all__ = ["EvalConfig", "EvalResult", "evaluate", "merge_results"]

RESULTS = "results"
#: The status and edge case of the rows of a scan whose release files are damaged (never scored).
RELEASE_ERROR = "release_error"
KEY = ["subject", "study", "scan", "organ_id", "iteration"]


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how. Every value is checked when the config is made.

    Attributes:
        split: the split to score (None: every split).
        domains: evaluation domains (default: every domain of the schema, the four of the paper).
        organs: organ slugs (default all).
        prompt: prompt simulation for promptable models.
        tolerances_mm: NSD tolerances.
        timeout_s: seconds a model may take per call.
        isolation: ``thread`` (the model runs in this process, on read-only arrays) or ``process``
            (a worker process, killed when a call runs past `timeout_s`); see
            `umd_dataset.evaluation.calling`.
        metric_workers: threads computing the metrics of a scan's organs (None: one per CPU).
        shard: (index, count) of this process's share; None takes RANK/WORLD_SIZE, else (0, 1).

    Raises:
        UnknownNameError: an unknown split, domain or organ (with the closest ones).
        InvalidOptionError: a tolerance, time limit, worker count or shard out of range.
    """

    split: str | None = "test"
    domains: tuple[str, ...] = field(default_factory=lambda: modalities().domain_keys)
    organs: tuple[str, ...] | None = None
    prompt: PromptConfig = field(default_factory=PromptConfig)
    tolerances_mm: tuple[float, ...] = (1.0, 2.0)
    timeout_s: float = 600.0
    isolation: str = "thread"
    metric_workers: int | None = None
    shard: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        spec = modalities()
        if self.split is not None:
            spec.check_split(self.split)
        object.__setattr__(self, "domains", spec.check_domains(self.domains))
        if not self.domains:
            raise InvalidOptionError("domains must name at least one evaluation domain")
        if self.organs is not None:
            slugs = sorted({o.slug for version in SCHEMA_VERSIONS for o in load_schema(version)})
            object.__setattr__(self, "organs", tuple(self.organs))
            for organ in self.organs:
                if organ not in slugs:
                    raise UnknownNameError(did_you_mean(organ, slugs, "organ"))
        object.__setattr__(self, "tolerances_mm", tuple(float(t) for t in self.tolerances_mm))
        if not self.tolerances_mm or min(self.tolerances_mm) <= 0:
            raise InvalidOptionError(f"tolerances_mm must be positive distances, got {self.tolerances_mm}")
        if not self.timeout_s > 0:
            raise InvalidOptionError(f"timeout_s must be positive, got {self.timeout_s}")
        check_choice(self.isolation, ISOLATIONS, "isolation")
        if self.metric_workers is not None and int(self.metric_workers) < 1:
            raise InvalidOptionError(f"metric_workers must be at least 1, got {self.metric_workers}")
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise InvalidOptionError(f"shard must be (index, count) with 0 <= index < count, got {self.shard}")

    def resolved_shard(self) -> tuple[int, int]:
        if self.shard is not None:
            return self.shard
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))

    def identity(self) -> dict:
        data = asdict(self)
        for how in ("shard", "metric_workers", "timeout_s", "isolation"):  # how the run is done, not what it measures
            data.pop(how)
        return json.loads(json.dumps(data))


@dataclass
class EvalResult:
    """Where the results are, and the table once every shard finished (None before)."""

    out: Path
    table: object | None
    complete: bool
    scans_scored: int
    scans_skipped: int


def _rows_for(record, organs, metrics: dict, base: dict, prompts: dict | None = None, iteration: int = 0) -> list[dict]:
    rows = []
    for organ in organs:
        m = metrics[organ.id]
        row = {**base, "organ": organ.slug, "organ_id": organ.id, "iteration": iteration, **m.as_row()}
        row["prompt"] = (prompts or {}).get(organ.id, "")
        rows.append(row)
    return rows


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    array.setflags(write=False)
    return array


def _fingerprint(array: np.ndarray) -> int:
    """CRC-32 of an array's bytes (about 2 GB/s)."""
    import zlib

    return zlib.crc32(array.T if array.flags.f_contiguous and not array.flags.c_contiguous else np.ascontiguousarray(array))


def _load_case(release, record) -> tuple[Case, np.ndarray]:
    """The case a model sees and the reference it is scored against (never handed to the model),
    both read verified and checked.

    Raises:
        ReleaseNotFoundError, CorruptFileError: a missing or damaged file (see `Release.read`).
        ReleaseDataError: label values that are no organ id, or NaN / infinite image voxels.
    """
    image, affine = release.read(record, "image")
    reference, _ = release.read(record, "label")
    reference = np.asarray(reference)
    invalid = release.schema.count_voxels(reference).invalid
    if invalid:
        raise ReleaseDataError(
            f"{release.label_path(record)}: label values {list(invalid)} are not organ ids of {release.schema.key} "
            f"(1..{len(release.schema)}): the release's label map is invalid. Run `umd verify {release.root} --deep`."
        )
    image = np.asarray(image)
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        raise ReleaseDataError(
            f"{release.image_path(record)}: {bad} voxels are NaN or infinite: the release's image is invalid. "
            f"Run `umd verify {release.root} --deep`."
        )
    spec = modalities().scan(record.scan)
    case = Case(_read_only(image), affine, record.spacing_mm, record.subject, record.study, record.scan, record.domain,
                spec.modality, spec.units, tuple(record.organs))
    return case, _read_only(reference)


def _release_error_rows(record, organs, base: dict, error: Exception, tolerances_mm) -> list[dict]:
    """Rows of a scan whose files are damaged: recorded apart from model failures, never scored."""
    nan = float("nan")
    metrics = {"dice": nan, "hd95_mm": nan, "assd_mm": nan, "assd_mean_of_means_mm": nan, **{f"nsd_{t:g}mm": nan for t in tolerances_mm}}
    counts = {"tp": 0, "fp": 0, "fn": 0, "n_ref": 0, "n_pred": 0, "surface_ref_mm2": nan, "surface_pred_mm2": nan}
    return [
        {**base, "status": RELEASE_ERROR, "failure": format_failure(error), "organ": o.slug, "organ_id": o.id, "iteration": 0,
         **metrics, **counts, "edge_case": RELEASE_ERROR, "prompt": ""}
        for o in organs
    ]


def _score_scan(caller: ModelCaller, model, kind: str, record, release, config: EvalConfig, organs, model_name: str) -> list[dict]:
    """The rows of one scan: the model run on it (once, or once per organ and prompt round), scored."""
    base = {"model": model_name, "subject": record.subject, "study": record.study, "scan": record.scan, "domain": record.domain,
            "split": record.split, "status": "ok", "failure": "", "seconds_model": 0.0, "spacing_min_mm": float(min(record.spacing_mm))}
    try:
        case, reference = _load_case(release, record)
    except UMDError as error:  # a damaged release file: the release's fault, recorded as such
        return _release_error_rows(record, organs, base, error, config.tolerances_mm)
    if getattr(model, "needs_reference", False):
        case = replace(case, reference=_read_only(reference.copy()))  # a copy: scoring uses its own
    caller.set_case(case)
    schema = release.schema
    if kind == "automatic":
        start = time.perf_counter()
        try:
            prediction = as_label_map(caller(), case, schema)
        except Exception as error:  # noqa: BLE001 - any failure of the model is recorded per case
            prediction = np.zeros(reference.shape, dtype=np.uint8)
            base.update(status="failed", failure=format_failure(error))
        base["seconds_model"] = time.perf_counter() - start
        metrics = organ_metrics(reference, prediction, record.spacing_mm, [o.id for o in organs], config.tolerances_mm,
                                workers=config.metric_workers)
        return _rows_for(record, organs, metrics, base)
    rows = []
    fingerprint = _fingerprint(case.image)  # a promptable model sees one image for every organ: it must stay intact
    for organ in organs:
        truth = reference == organ.id
        if not truth.any():  # no prompt without an object: the organ is absent from this scan
            metrics = {organ.id: case_metrics(truth[:1, :1, :1], truth[:1, :1, :1], record.spacing_mm, config.tolerances_mm)}
            rows += _rows_for(record, [organ], metrics, {**base, "status": "absent"}, {organ.id: ""}, 0)
            continue
        rng = prompt_rng(config.prompt.seed, record.subject, record.study, record.scan, organ.slug)
        prompt = make_prompt(truth, organ.slug, organ.id, config.prompt, record.spacing_mm, schema, rng)
        for iteration in range(config.prompt.iterations + 1):
            start = time.perf_counter()
            row_base = dict(base)
            try:
                mask = as_mask(caller(prompt), case, organ.slug)
                if caller.isolation == "thread" and _fingerprint(case.image) != fingerprint:
                    case, _ = _load_case(release, record)  # the next organs see the image as the release holds it
                    caller.set_case(case)
                    raise ModelError("the model modified its input image in place (it had made it writeable): copy it first")
            except Exception as error:  # noqa: BLE001 - any failure of the model is recorded per case
                mask = np.zeros(truth.shape, dtype=bool)
                row_base.update(status="failed", failure=format_failure(error))
            row_base["seconds_model"] = time.perf_counter() - start
            metrics = {organ.id: case_metrics(truth, mask, record.spacing_mm, config.tolerances_mm)}
            rows += _rows_for(record, [organ], metrics, row_base, {organ.id: prompt.to_json()}, iteration)
            if iteration < config.prompt.iterations:
                click = correction_click(truth, mask, record.spacing_mm)
                if click is None:
                    break
                prompt = prompt.with_click(click[0], click[1], iteration + 1)
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
    protocol: str | None = None,
    progress: bool = True,
) -> EvalResult:
    """Score a model on a release, per organ and domain, and write the results table and report.

    Args:
        model: any callable (see `umd_dataset.evaluation.case` for the protocol and `adapters` for wrappers).
        release: a `Release`, a release folder, ``"umd"`` or ``"umd-mini"``.
        out: the run folder (new, or an interrupted run of the same model and settings).
        config: `EvalConfig`.
        name: the model's name in the results (default: its ``name`` attribute).
        reported: the model's reported benchmark Dice, per domain key (e.g. ``{"ct": 0.91}``), to
            compare with its score here.
        protocol: ``"paper"``: the UMD paper's protocol for a model of the adapter registry (its
            prompt, every organ and domain, the test split) and the scores the paper reported for
            it (see `umd_dataset.evaluation.protocol`); `config` gives only how the run is done
            (time limit, isolation, workers, shards).

    Returns:
        `EvalResult`; its table is set once every shard is done.

    Raises:
        JobMismatchError: `out` holds a run with other settings (the message names them).
        FolderBusyError: another process is evaluating the same shard into `out`.
        OutputExistsError: `out` is the release folder itself.

    Example:
        >>> from umd_dataset.evaluation.baselines import NoisyOracle
        >>> result = evaluate(NoisyOracle(), "umd-mini", "runs/oracle")   # doctest: +SKIP
    """
    config = config or EvalConfig()
    release = resolve_release(release)
    kind = model_kind(model)
    name = name or getattr(model, "name", type(model).__name__)
    protocol_note = None
    if protocol is not None:
        from umd_dataset.evaluation.protocol import protocol_config

        key = getattr(model, "name", name).partition(":")[0]
        config, paper_scores, protocol_note = protocol_config(protocol, key, config)
        reported = {**paper_scores, **(reported or {})}
    out = Path(out)
    root = Path(release.root).resolve()
    if (root / DESCRIPTOR).is_file() and out.resolve() == root:
        raise OutputExistsError(f"{out} is the release itself: give the evaluation a folder of its own (e.g. runs/{name}).")
    if (root / DESCRIPTOR).is_file() and root in out.resolve().parents:  # `umd verify` would list its files as orphans
        raise OutputExistsError(f"{out} lies inside the release {release.root}: give the evaluation a folder outside it "
                                f"(e.g. runs/{name}).")
    index, count = config.resolved_shard()
    organs = [release.schema.organ(o) for o in (config.organs or release.schema.slugs)]  # checked before anything is written
    selected = list(release.select(split=config.split, domain=list(config.domains)))
    if not selected:
        where = "any split" if config.split is None else f"the {config.split} split"
        counts = ", ".join(f"{split}: {len(list(release.select(split=split)))} scans" for split in release.splits)
        raise InvalidOptionError(
            f"{release.root} holds no scan of {', '.join(config.domains)} in {where} ({counts}): choose another "
            f"{spell('split=', '--split')} or release (a bigger synthetic one: umd synth FOLDER --subjects 12)."
        )
    (out / RESULTS).mkdir(parents=True, exist_ok=True)
    run = {
        "model": name, "kind": kind, "release": {"name": release.info.name, "version": release.info.version,
        "manifest_sha256": release.info.files[MANIFEST], "label_schema": release.info.label_schema},
        "config": config.identity(), "metrics": METRIC_DEFINITION, "umd_dataset": __version__, "reported": dict(reported or {}),
    }
    if protocol is not None:
        run["protocol"] = {"name": protocol, "note": protocol_note}
    if getattr(model, "about", None):
        run["about"] = str(model.about)
    config_path = out / "config.json"
    if config_path.is_file():
        differences = setting_differences(read_json(config_path), run, name=_setting_name)
        if differences:
            raise JobMismatchError(
                f"{out} holds a run with other settings (" + "; ".join(differences) + "); use another folder to start "
                "a new run, or the same settings to resume that one.",
                differences,
            )
    else:
        write_json(config_path, run)
    records = selected[index::count]
    path = out / RESULTS / f"shard-{index:03d}-of-{count:03d}.jsonl"
    with open(path, "ab") as handle:
        lock_open_file(handle, "an evaluation of this shard")  # a second run of the same shard is refused at once
        return _score(model, kind, release, out, config, name, progress, records, organs, path, handle, (index, count))


_FLAGS = {"config.split": "--split", "config.domains": "--domains", "config.organs": "--organs", "config.prompt.kind": "--prompt",
          "config.prompt.point": "--point", "config.prompt.k": "--k", "config.prompt.box_jitter_mm": "--box-jitter-mm",
          "config.prompt.iterations": "--iterations", "config.prompt.seed": "--seed", "model": "--model (or --name)",
          "kind": "--kind"}


def _setting_name(key: str) -> str:
    """A setting of config.json as the error names it: its field for Python, its flag for the command line."""
    if key in _FLAGS:
        return spell(key, _FLAGS[key])
    if key.startswith("reported."):
        return spell(key, f"--reported {key.split('.', 1)[1]}=")
    if key.startswith("protocol."):
        return spell(key, "--protocol")
    if key.startswith("release."):
        return spell(key, f"the release ({key})")
    return key


def _score(model, kind, release, out: Path, config: EvalConfig, name: str, progress: bool, records, organs, path: Path,
           handle, shard: tuple[int, int]) -> EvalResult:
    """Score the scans of this shard not scored yet, appending one durable line per scan to `handle`."""
    index, count = shard
    done = {(row[0]["subject"], row[0]["study"], row[0]["scan"]) for row in _read_lines(path) if row}
    todo = [r for r in records if (r.subject, r.study, r.scan) not in done]
    if path.is_file():  # drop a line cut by a kill before appending (truncating never touches the complete lines)
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            os.truncate(path, data.rfind(b"\n") + 1)
    bar = Progress(len(records), initial=len(records) - len(todo), desc=f"evaluate {name}", unit="scan", enabled=progress)
    with bar, ModelCaller(model, isolation=config.isolation, timeout_s=config.timeout_s) as caller:
        for record in todo:
            rows = _score_scan(caller, model, kind, record, release, config, organs, name)
            # durable before the next model call: a model that kills the process loses no finished scan
            handle.write(json.dumps(rows).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
            bar.update()
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

    out = Path(out)
    files = sorted((out / RESULTS).glob("shard-*.jsonl"))
    if shards is not None:
        files = [f for f in files if f.name.endswith(f"-of-{shards:03d}.jsonl")]
    rows = [row for f in files for line in _read_lines(f) for row in line]
    if not rows:
        raise ResultsError(f"{out}: no results to merge.")
    table = pd.DataFrame(rows).sort_values(KEY, kind="stable").drop_duplicates(KEY, keep="last").reset_index(drop=True)
    with atomic_path(out / "results.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(out / "results.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_report(out, table, read_json(out / "config.json"))
    return table
