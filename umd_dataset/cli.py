"""The `umd` command line: a thin layer over the parts' Python API. Heavy imports live inside the
commands, so that ``umd --help`` is instant."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperArgument

from umd_dataset.errors import UMDError, did_you_mean
from umd_dataset.evaluation.prompts import KINDS, POINT_RULES
from umd_dataset.schema.studies import modalities


def _usage_name(argument) -> str:
    """Usage lines as users read them everywhere: ``umd evaluate RELEASE OUT`` (Typer writes ``{RELEASE}``)."""
    name = argument.display_name_raw if argument.required else f"[{argument.display_name_raw}]"
    return name + ("..." if argument.nargs != 1 else "")


TyperArgument._usage_display_name = _usage_name
_SPEC = modalities()

app = typer.Typer(
    name="umd",
    help="The UMD whole-body PET/CT and PET/MRI dataset: make, inspect, verify and export releases, harmonize labels, and "
    "evaluate models per organ and domain. Start with `umd demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"max_content_width": 100, "terminal_width": 100},
)


@app.command()
def synth(
    out: Path = typer.Argument(..., metavar="OUT", help="Folder to write the release into (new, empty, or an interrupted job)."),
    subjects: int = typer.Option(12, help="Number of subjects."),
    preset: str = typer.Option("mini", help="Grid sizes: 'mini' (small, for tests) or 'full' (whole-body sizes)."),
    seed: int = typer.Option(0, help="Random seed; the same settings give the same bytes."),
    name: Optional[str] = typer.Option(None, help="Release name (default: UMD-mini, or UMD-synthetic-full)."),
    workers: int = typer.Option(1, help="Processes generating studies in parallel."),
    overwrite: bool = typer.Option(False, help="Replace an existing release or an interrupted job with other settings."),
) -> None:
    """Generate a synthetic release in the exact UMD format (resumable: run again to finish)."""
    from umd_dataset.synthetic.release import SynthConfig, synthesize

    default_name = "UMD-mini" if preset == "mini" else f"UMD-synthetic-{preset}"
    config = SynthConfig(subjects=subjects, preset=preset, seed=seed, name=name or default_name)
    release = synthesize(out, config, overwrite=overwrite, workers=workers, progress=True)
    typer.echo(f"wrote {release!r}")


@app.command()
def info(
    root: Path = typer.Argument(..., metavar="ROOT", help="Release folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Counts per study, scan, split and organ. Reads the index only, no image."""
    from umd_dataset.release.index import open_release

    summary = open_release(root).summary()
    typer.echo(json.dumps(summary.to_dict(), indent=2) if as_json else str(summary))


@app.command()
def verify(
    root: Path = typer.Argument(..., metavar="ROOT", help="Release folder."),
    deep: bool = typer.Option(False, help="Also decode every volume: label values and organ voxel counts."),
    workers: Optional[int] = typer.Option(None, help="Threads for hashing and decoding."),
) -> None:
    """Check every file against the manifest (checksums, geometry); list every problem found."""
    from umd_dataset.release.index import open_release

    report = open_release(root).verify(deep=deep, workers=workers, progress=True)
    typer.echo(str(report))
    if not report.ok:
        raise typer.Exit(1)


@app.command("synth-dicom")
def synth_dicom(
    root: Path = typer.Argument(..., metavar="ROOT", help="A synthetic release (from `umd synth`)."),
    out: Path = typer.Argument(..., metavar="OUT", help="Folder to write the DICOM studies into (one folder per patient and study)."),
    extras: bool = typer.Option(False, help="Also write series ingest must leave out: localizer, PET without AC, dose report."),
) -> None:
    """Write every study of a synthetic release as DICOM series (CT/MR, PET in Bq/ml, SEG), for `umd ingest`."""
    from umd_dataset.release.index import open_release
    from umd_dataset.io.jobs import track
    from umd_dataset.synthetic.dicom import DicomPatient, write_dicom_study

    release = open_release(root)
    studies = [(s, st) for s in release.subjects.values() for st in s.studies]
    numbers = {subject: i for i, subject in enumerate(sorted(release.subjects))}  # one fake patient per subject
    for subject, study in track(studies, total=len(studies), desc="write DICOM", unit="study"):
        index = numbers[subject.id]
        patient = DicomPatient(name=f"Synthetic^Patient{index:04d}", patient_id=f"SYN{index:06d}", birth_date="19700101")
        write_dicom_study(release, subject.id, study, out, patient=patient, extras=extras)
    typer.echo(f"wrote {len(studies)} studies under {out}")


@app.command()
def ingest(
    source: Path = typer.Argument(..., metavar="SOURCE", help="A DICOM folder tree, a CSV mapping of NIfTI files, or an nnU-Net raw folder."),
    out: Path = typer.Argument(..., metavar="OUT", help="Release folder to write (new, or an interrupted ingest of the same input)."),
    input_format: str = typer.Option("auto", "--format", help="dicom, nifti, nnunet, or auto."),
    name: str = typer.Option("UMD", help="Release name."),
    version: str = typer.Option("1.0.0", help="Semantic version of the data."),
    secret: Optional[str] = typer.Option(None, envvar="UMD_PSEUDONYM_KEY", help="Pseudonym key; the same key gives the same subject ids."),
    write_mapping: Optional[Path] = typer.Option(None, help="Write identity -> subject id here (CSV). Keep it away from the release."),
    splits: Optional[Path] = typer.Option(None, help="CSV subject,split; other subjects are placed by keyed hash (60/20/20)."),
    suv_overrides: Optional[Path] = typer.Option(None, help="CSV patient,weight_kg,injected_dose_bq,half_life_s for headers that lack them."),
    workers: int = typer.Option(1, help="Processes converting studies in parallel."),
    skip_failed: bool = typer.Option(False, help="Finish the release without the studies that failed (listed)."),
    allow_unlabelled: bool = typer.Option(False, help="Write empty label maps for studies without labels."),
    overlap: str = typer.Option("error", help="Voxels claimed by two organs: error, smallest or largest."),
    unknown: str = typer.Option("error", help="Labels that are no organ nor known structure: error or drop."),
    drop: list[str] = typer.Option([], metavar="LABEL", help="Source label to leave out on purpose, e.g. a lesion label (repeatable)."),
    keep_ids: bool = typer.Option(False, help="NIfTI/nnU-Net inputs: keep their subject ids instead of pseudonyms."),
) -> None:
    """Turn raw PET/CT and PET/MRI studies into a verified release (resumable: run again to finish)."""
    from umd_dataset.ingest import IngestOptions
    from umd_dataset.ingest import ingest as run
    from umd_dataset.ingest.plan import overrides_from_csv
    from umd_dataset.labels.harmonize import HarmonizeOptions

    options = IngestOptions(
        name=name, version=version, secret=secret, mapping_path=str(write_mapping) if write_mapping else None,
        splits_path=str(splits) if splits else None, workers=workers, skip_failed=skip_failed,
        allow_unlabelled=allow_unlabelled, labels=HarmonizeOptions(overlap=overlap, unknown=unknown, drop=tuple(drop)),
        suv_overrides=overrides_from_csv(suv_overrides) if suv_overrides else {},
    )
    release, report = run(source, out, options=options, input_format=input_format, keep_ids=keep_ids, progress=True)
    typer.echo(report.for_cli())
    typer.echo(f"wrote {release!r}; verified.")


@app.command("export-hf")
def export_hf(
    root: Path = typer.Argument(..., metavar="ROOT", help="Release folder."),
    out: Path = typer.Argument(..., metavar="OUT", help="Output folder: Parquet shards with the NIfTI files embedded (uncompressed, zstd shards), and a dataset card."),
    min_shards: int = typer.Option(16, help="Shards per split: a multiple of this (one per subject if fewer subjects); every shard holds whole subjects, so streaming split_dataset_by_node gives whole subjects on any number of nodes dividing it (umd_dataset.split_by_node on any number)."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
) -> None:
    """Write a Hub-ready copy (Parquet shards of whole subjects, dataset card, croissant.json) that stock `datasets.load_dataset(OUT)` loads."""
    from umd_dataset.views.export import export_hf as run
    from umd_dataset.release.index import open_release

    path = run(open_release(root), out, min_shards=min_shards, overwrite=overwrite, progress=True)
    typer.echo(f"wrote {path}: load it with datasets.load_dataset({str(path)!r})  # config petct by default; petmri, paired")


cache_app = typer.Typer(help="The chunked patch cache of a release.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("build")
def cache_build(
    root: Path = typer.Argument(..., metavar="ROOT", help="Release folder."),
    out: Optional[Path] = typer.Option(None, help="Cache folder (default: ROOT/.umd-cache)."),
    codec: str = typer.Option("lz4", help="lz4 (fastest reads) or zstd (smaller)."),
    workers: int = typer.Option(1, help="Processes writing scans in parallel."),
) -> None:
    """Build or update the patch cache (resumable; only changed scans are rewritten)."""
    from umd_dataset.views.cache import build_cache
    from umd_dataset.release.index import open_release

    cache = build_cache(open_release(root), out, codec=codec, workers=workers, progress=True)
    typer.echo(f"patch cache at {cache.path}: {len(cache.state['scans'])} scans, {cache.state['codec']}, chunks {cache.state['chunks']}")


def _model(spec: str, kind: str, device: str = "cpu", options: list[str] | None = None):
    """A model from its CLI name: an adapter of the registry (``vista3d[:WEIGHTS]``, see `umd models`),
    oracle, region-growing, unet:CHECKPOINT, folder:PATH, command:"CMD {input} {output}", or
    python:module:function (with --kind)."""
    from umd_dataset.evaluation import adapters, baselines
    from umd_dataset.evaluation.adapters.base import adapter_specs, make_adapter

    prefix, _, rest = spec.partition(":")
    settings = _model_options(options or [])
    if prefix in adapter_specs():
        return make_adapter(prefix, rest or None, device=device, **settings)
    if settings:
        raise typer.BadParameter(f"--model-option is for the adapters of `umd models`, not for {prefix!r}")
    if spec in ("oracle", "noisy-oracle"):  # it is named noisy-oracle in the results
        return baselines.NoisyOracle()
    if spec == "region-growing":
        return baselines.RegionGrowing()
    if prefix == "unet":
        return adapters.TorchModel.from_checkpoint(rest, device=device)
    if prefix == "folder":
        return adapters.FolderModel(rest)
    if prefix == "command":
        return adapters.CommandModel(rest)
    if prefix == "python":
        return adapters.FunctionModel(_python_function(rest), kind=kind, name=rest.rpartition(":")[2])
    import difflib

    names = ", ".join(adapter_specs())
    close = difflib.get_close_matches(prefix, [*adapter_specs(), "oracle", "region-growing", "unet", "folder", "command", "python"], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise typer.BadParameter(
        f"unknown model {spec!r}.{hint} Use an adapter ({names}; `umd models` lists them), oracle, region-growing, unet:PATH, "
        "folder:PATH, command:CMD or python:module:function"
    )


def _python_function(spec: str):
    """The function of ``--model python:MODULE:FUNCTION``, or a one-line error naming what is missing."""
    import importlib

    module, _, function = spec.rpartition(":")
    if not module or not function:
        raise typer.BadParameter(f"--model python:{spec}: write python:MODULE:FUNCTION, e.g. python:mypackage.models:segment")
    try:
        found = importlib.import_module(module)
    except ImportError as error:
        raise typer.BadParameter(f"--model python:{spec}: cannot import the module {module!r} ({error}); is it installed, or on PYTHONPATH?") from None
    if not callable(getattr(found, function, None)):
        names = [n for n in dir(found) if not n.startswith("_") and callable(getattr(found, n))]
        raise typer.BadParameter(f"--model python:{spec}: {did_you_mean(function, names, f'function of {module}')}")
    return getattr(found, function)


def _reported(text: str | None) -> dict | None:
    """``--reported ct=0.91,petct_pet=0.88`` as {domain: Dice}, or a one-line error naming the bad item."""
    from umd_dataset.schema.studies import modalities

    if not text:
        return None
    scores = {}
    for item in text.split(","):
        domain, equals, value = item.partition("=")
        try:
            number = float(value) if equals else None
        except ValueError:
            number = None
        if number is None or not 0 <= number <= 1:
            raise typer.BadParameter(f"--reported {item!r}: write DOMAIN=DICE with a Dice between 0 and 1, e.g. --reported ct=0.91,petct_pet=0.88")
        modalities().check_domains((domain.strip(),))
        scores[domain.strip()] = number
    return scores


def _model_options(items: list[str]) -> dict:
    """``--model-option NAME=VALUE`` pairs; values are JSON (true, 4, [1, 2]) or plain strings."""
    settings = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise typer.BadParameter(f"--model-option {item!r}: write NAME=VALUE, e.g. --model-option trust_remote_code=true")
        try:
            settings[name.strip()] = json.loads(value)
        except ValueError:
            settings[name.strip()] = value
    return settings


@app.command()
def models() -> None:
    """List the model adapters: prompt kinds, install extra, weights, licence, and whether each can run here now."""
    from umd_dataset.evaluation.adapters.base import adapter_specs, availability

    for spec in adapter_specs().values():
        state = availability(spec.key)
        if state["ready"]:
            now = "ready"
        elif not state["installed"]:
            now = f"not installed ({spec.install})"
        else:
            now = "installed; weights not found" + (f" (set {spec.weights_env})" if spec.weights_env else "")
        typer.echo(f"{spec.key:<17} {spec.title}")
        typer.echo(f"  kind: {spec.kind}; prompts: {', '.join(spec.prompts) or 'none'}; extra: {spec.extra}; now: {now}")
        typer.echo(f"  weights: {spec.weights}" + (f" (--model {spec.key}:PATH or ${spec.weights_env})" if spec.weights_env else ""))
        typer.echo(f"  licence: {spec.licence}")
        if spec.paper:
            typer.echo(f"  paper protocol: {spec.paper['prompt'] or 'no prompt'}" + (f", point rule {spec.paper['point']}" if spec.paper["point"] else "")
                       + f" ({spec.paper['why']})")


@app.command()
def evaluate(
    release: str = typer.Argument(..., metavar="RELEASE", help="Release folder, 'umd' or 'umd-mini'."),
    out: Path = typer.Argument(..., metavar="OUT", help="Run folder (new, or an interrupted run to resume)."),
    model: str = typer.Option(..., help="An adapter (`umd models`: vista3d:WEIGHTS, sam-med3d:WEIGHTS, ...), oracle, region-growing, unet:CHECKPOINT, folder:PATH, command:'prog {input} {output}', python:module:function."),
    kind: str = typer.Option("automatic", help="For python: models: automatic or promptable."),
    device: str = typer.Option("cpu", help="Where adapters and unet: models run: cpu, cuda, cuda:N."),
    model_option: Optional[list[str]] = typer.Option(None, metavar="NAME=VALUE", help="An adapter option NAME=VALUE (repeatable), e.g. trust_remote_code=true."),
    protocol: Optional[str] = typer.Option(None, help="paper: the UMD paper's prompt for this adapter, every organ and domain, the test split, and its reported Dice."),
    split: Optional[str] = typer.Option(None, help=f"Split to score: {', '.join(_SPEC.splits)} or all (default: test)."),
    domains: Optional[str] = typer.Option(None, help=f"Comma-separated evaluation domains, of {', '.join(_SPEC.domain_keys)} (default: all)."),
    organs: Optional[str] = typer.Option(None, help="Comma-separated organ slugs (default: all; `umd labels schema` lists them)."),
    prompt: Optional[str] = typer.Option(None, help=f"Promptable models: {', '.join(KINDS)} (default: point)."),
    point: Optional[str] = typer.Option(None, help=f"Point rule: {', '.join(POINT_RULES)} (default: center, the largest inscribed sphere's)."),
    k: Optional[int] = typer.Option(None, help="Points for --prompt points (default 1)."),
    box_jitter_mm: Optional[float] = typer.Option(None, help="Box prompts: face jitter (mm; default 0)."),
    iterations: Optional[int] = typer.Option(None, help="Corrective clicks after the first prediction (default 0)."),
    seed: Optional[int] = typer.Option(None, help="Prompt seed (default 0)."),
    timeout_s: float = typer.Option(600.0, help="Seconds per model call."),
    isolation: str = typer.Option("thread", help="thread (the model runs in this process) or process (a worker process, killed past --timeout-s)."),
    name: Optional[str] = typer.Option(None, help="Model name in the results."),
    reported: Optional[str] = typer.Option(None, help="Reported Dice per domain, e.g. ct=0.91,petct_pet=0.88."),
) -> None:
    """Score a model per organ and domain; resumable; sharded under torchrun (RANK/WORLD_SIZE)."""
    from umd_dataset.evaluation import EvalConfig
    from umd_dataset.evaluation import evaluate as run
    from umd_dataset.evaluation.prompts import PromptConfig

    what = {"--split": split, "--domains": domains, "--organs": organs, "--prompt": prompt, "--point": point, "--k": k,
            "--box-jitter-mm": box_jitter_mm, "--iterations": iterations, "--seed": seed}
    fixed = [flag for flag, value in what.items() if value is not None]
    if protocol is not None and fixed:
        raise typer.BadParameter(f"--protocol {protocol} fixes the split, domains, organs and prompt; leave out {', '.join(fixed)}")
    prompt_settings = {"kind": prompt, "point": point, "k": k, "box_jitter_mm": box_jitter_mm, "iterations": iterations, "seed": seed}
    config = EvalConfig(
        split=None if split == "all" else (split or "test"), **({"domains": tuple(d.strip() for d in domains.split(","))} if domains else {}),
        organs=tuple(o.strip() for o in organs.split(",")) if organs else None,
        prompt=PromptConfig(**{key: value for key, value in prompt_settings.items() if value is not None}),
        timeout_s=timeout_s, isolation=isolation,
    )
    scores = _reported(reported)
    result = run(_model(model, kind, device, model_option), release, out, config=config, name=name, reported=scores, protocol=protocol)
    if not result.complete:
        typer.echo(f"this shard is done ({result.scans_scored} scans scored); the last shard to finish merges the table")
        return
    typer.echo(_dice_table(result.table))
    typer.echo(f"results: {out / 'results.parquet'}, {out / 'results.csv'}; report: {out / 'report.html'}, {out / 'report.md'}")
    table = result.table
    damaged = table[table["status"] == "release_error"].drop_duplicates(["subject", "study", "scan"])
    attempted = table[~table["status"].isin(["absent", "release_error"])]
    failed = attempted[attempted["status"] == "failed"]
    if len(failed):
        reasons = failed["failure"].value_counts()
        shown = "; ".join(f"{reason} ({n} case{'s' if n != 1 else ''})" for reason, n in reasons.head(3).items())
        typer.echo(f"{len(failed)} of {len(attempted)} cases failed (scored as empty predictions); first reasons: {shown}. "
                   f"All failures: {out / 'report.md'}, section Failures.", err=True)
    if len(damaged):
        typer.echo(f"error: {len(damaged)} scans were not scored because their release files are damaged (first: "
                   f"{damaged['failure'].iloc[0]}). Run `umd verify {release} --deep`.", err=True)
        raise typer.Exit(1)
    if len(attempted) and len(failed) == len(attempted):
        typer.echo("error: the model failed on every case: the scores above are those of empty predictions.", err=True)
        raise typer.Exit(1)


def _dice_table(table) -> str:
    from umd_dataset.evaluation.stats import scored_rows
    from umd_dataset.schema.studies import modalities

    scored = scored_rows(table, first_round=False)
    means = scored.groupby("domain")["dice"].mean()
    return "mean Dice: " + "  ".join(f"{d.name}: {means[d.key]:.3f}" for d in modalities().domains if d.key in means)


@app.command()
def demo(
    out: Path = typer.Argument(Path("umd-demo"), metavar="OUT", help="Folder for UMD-mini, the trained model and the two evaluation runs."),
) -> None:
    """The main job on the embedded default: generate UMD-mini, train a small model (a voxel
    classifier) on the CT scans of its training split only, score it on all four domains of the
    test split, and write its report: the CT-to-PET drop it shows is measured. A noisy oracle (the
    reference, degraded alike on every scan) is scored too, as a check of the pipeline."""
    from umd_dataset.evaluation import EvalConfig
    from umd_dataset.evaluation import evaluate as run
    from umd_dataset.evaluation.baselines import NoisyOracle
    from umd_dataset.evaluation.baselines.voxel import VoxelClassifier
    from umd_dataset.release.format import DESCRIPTOR
    from umd_dataset.release.index import open_release
    from umd_dataset.synthetic.release import SynthConfig, synthesize

    typer.echo(f"umd demo: writing into {out.resolve()}: UMD-mini (about 20 MB), the trained model and two evaluation runs")
    root = out / "umd-mini"
    release = open_release(root) if (root / DESCRIPTOR).is_file() else synthesize(root, SynthConfig(), progress=True)
    typer.echo(str(release.summary()))
    checkpoint = out / "voxel-classifier-ct.pt"
    if checkpoint.is_file():
        model = VoxelClassifier.load(checkpoint)
        typer.echo(f"\nthe model trained on CT before: {checkpoint}")
    else:
        typer.echo("\ntraining a voxel classifier on the CT scans of the training split only")
        model = VoxelClassifier.train(release, scan="ct", split="train", progress=True)
        model.save(checkpoint)
    runs = ((model, "trained on the CT of the training split only"), (NoisyOracle(), "a check of the pipeline, not a model"))
    for each, what in runs:
        result = run(each, release, out / each.name, config=EvalConfig(split="test"))
        typer.echo(f"\n{each.name} ({what}): " + _dice_table(result.table))
        typer.echo(f"  report: {out / each.name / 'report.html'}")


labels_app = typer.Typer(
    help="The label schema, the alias tables of annotation sources, harmonization and coverage.",
    no_args_is_help=True,
)
app.add_typer(labels_app, name="labels")


@labels_app.command("schema")
def labels_schema(
    version: Optional[int] = typer.Option(None, help="Schema version (default: the latest)."),
    as_json: bool = typer.Option(False, "--json", help="Print the schema as JSON."),
) -> None:
    """List the organs of the label schema: id, slug, name, laterality, SNOMED CT code."""
    from umd_dataset.schema.organs import load_schema

    schema = load_schema(version)
    if as_json:
        typer.echo(json.dumps(schema.to_dict(), indent=2))
        return
    typer.echo(f"label schema {schema.key} (0 = background)")
    typer.echo(f"{'id':>3}  {'slug':<16} {'name':<16} {'laterality':<10} {'SNOMED CT':<10} synonyms")
    for o in schema:
        typer.echo(f"{o.id:>3}  {o.slug:<16} {o.name:<16} {o.laterality or '':<10} {o.snomed_code:<10} {', '.join(o.synonyms)}")


@labels_app.command("sources")
def labels_sources() -> None:
    """List the annotation sources with an alias table."""
    from umd_dataset.schema.organs import load_schema
    from umd_dataset.schema.sources import list_sources, load_source

    organs = len(load_schema())
    for key in list_sources():
        table = load_source(key)
        flag = "" if table.verified else "  (not verified against the source)"
        versions = f"  [{table.tool} {table.versions[0]}-{table.versions[-1]}]" if table.versions else ""
        typer.echo(f"{key:<38} {len(table.labels):>4} labels  {len(table.organs):>2}/{organs} organs  {table.title}{versions}{flag}")


@labels_app.command("source")
def labels_source(
    key: str = typer.Argument(..., metavar="KEY", help="Source key, e.g. totalsegmentator_total (see `umd labels sources`)."),
    all_labels: bool = typer.Option(False, "--all", help="Also list the labels outside the schema."),
) -> None:
    """Show a source's table: which source ids and names form each organ, and what it cannot provide."""
    from umd_dataset.schema.organs import load_schema
    from umd_dataset.schema.sources import load_source

    table = load_source(key)
    schema = load_schema()
    typer.echo(f"{table.title}\nversion: {table.version}\nread from: {table.reference}\nverified: {table.verified}")
    if table.note:
        typer.echo(f"note: {table.note}")
    typer.echo(f"\n{'organ':<16} <- source labels (id name)")
    for organ in schema:
        if organ.slug in table.organs:
            members = ", ".join(f"{table.id_of(n)} {n}" for n in table.organs[organ.slug])
            typer.echo(f"{organ.slug:<16} <- {members}")
        else:
            typer.echo(f"{organ.slug:<16}    not provided: {table.unavailable[organ.slug]}")
    for name, why in table.lossy.items():
        typer.echo(f"lossy: {table.id_of(name)} {name}: {why}")
    if all_labels:
        mapped = table.name_to_organ
        others = [f"{i} {n}" for i, n in table.labels.items() if n not in mapped and n not in table.lossy]
        typer.echo("outside the schema: " + ", ".join(others))


@labels_app.command("resolve")
def labels_resolve(names: list[str] = typer.Argument(..., metavar="NAME...", help="Label names as typed, e.g. 'Lt Kidney'.")) -> None:
    """Show which organ each free-text label name means (every name is resolved; exit 1 if one is unknown)."""
    from umd_dataset.errors import UnknownLabelError
    from umd_dataset.schema.names import name_index

    index = name_index()
    unknown = 0
    for name in names:
        try:
            found = index.resolve(name)
        except UnknownLabelError as error:
            unknown += 1
            typer.echo(f"{name!r:<30} -> unknown: {error.for_cli()}")
            continue
        typer.echo(f"{name!r:<30} -> {found.organ or found.kind}{'  (' + found.reason + ')' if found.reason else ''}")
    if unknown:
        typer.echo(f"error: {unknown} of {len(names)} names are unknown.", err=True)
        raise typer.Exit(1)


@labels_app.command("harmonize")
def labels_harmonize(
    input: Path = typer.Argument(..., metavar="INPUT", help="A multi-label NIfTI, a folder of per-organ masks, or a DICOM SEG file."),
    out: Path = typer.Argument(..., metavar="OUT", help="Output label map (.nii.gz) with canonical organ ids."),
    source: Optional[str] = typer.Option(None, help="Source table or family of the input's labels (see `umd labels sources`), or a model's nnU-Net dataset.json."),
    source_version: Optional[str] = typer.Option(None, help="Version of the tool that wrote the labels, where its ids changed between versions (e.g. moosez 2.6.4)."),
    target: Optional[Path] = typer.Option(None, help="NIfTI scan whose grid the result must lie on."),
    overlap: str = typer.Option("error", help="Voxels claimed by two organs: error, smallest, largest, or a comma-separated priority list of organs."),
    drop: list[str] = typer.Option([], metavar="LABEL", help="Source label to leave out on purpose (repeatable)."),
    alias: list[str] = typer.Option([], metavar="NAME=ORGAN", help="NAME=ORGAN for a name the package does not know (repeatable)."),
    unknown: str = typer.Option("error", help="Unknown labels: error or drop."),
    provenance: Optional[Path] = typer.Option(None, help="Write the provenance record (JSON) here (default: OUT with .provenance.json)."),
) -> None:
    """Map any annotation source onto the label schema and write the canonical label map."""
    from umd_dataset.labels.harmonize import HarmonizeOptions, harmonize

    policy = overlap if overlap in ("error", "smallest", "largest") else tuple(p.strip() for p in overlap.split(","))
    aliases = {}
    for item in alias:
        name, _, organ = item.partition("=")
        if not organ:
            raise typer.BadParameter(f"--alias takes NAME=ORGAN, got {item!r}")
        aliases[name] = organ
    options = HarmonizeOptions(overlap=policy, drop=tuple(drop), aliases=aliases, unknown=unknown)
    result = harmonize(input, source, source_version=source_version, target=target, options=options)
    record = provenance or out.with_name(out.name.replace(".nii.gz", "").replace(".nii", "") + ".provenance.json")
    result.save(out, record)
    typer.echo(result.provenance.summary())
    typer.echo(f"wrote {out} and {record}")


@labels_app.command("coverage")
def labels_coverage(
    root: Path = typer.Argument(..., metavar="ROOT", help="Release folder."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Also write the table as CSV."),
) -> None:
    """Per organ, per study and scan: how many label maps contain it (reads the index only)."""
    from umd_dataset.release.organ_coverage import coverage
    from umd_dataset.release.index import open_release

    report = coverage(open_release(root))
    typer.echo(report.to_markdown())
    if csv_path is not None:
        report.write_csv(csv_path)


def main() -> None:
    """Entry point of the `umd` console script. Package errors print as one message (exit 2); an
    interruption (exit 130) and a full disk (exit 2) say that the same command resumes the job."""
    import errno

    try:
        code = app(standalone_mode=False, prog_name="umd")  # also under `python -m umd_dataset.cli`
    except (typer.Abort, KeyboardInterrupt):  # Ctrl-C
        _interrupted()
    except typer.BadParameter as error:  # a value the command cannot use: one line, naming the value and the fix
        if type(error).__name__ == "MissingParameter":  # typer's vendored click: a missing one is shown with the usage
            error.show()
        else:
            typer.echo(f"error: {error.format_message()}", err=True)
        sys.exit(2)
    except typer.TyperException as error:  # other usage errors (a missing argument, an unknown flag): with the usage
        if hasattr(error, "show"):
            error.show()
        sys.exit(getattr(error, "exit_code", 2))
    except UMDError as error:
        typer.echo(f"error: {error.for_cli()}", err=True)
        sys.exit(2)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" while writing {error.filename}" if error.filename else ""
            typer.echo(
                f"error: no space left on the device{where}. Free some space and run the same command again: it resumes "
                "where it stopped (every finished study, scan or shard is kept, nothing half-written is used).",
                err=True,
            )
            sys.exit(2)
        raise
    sys.exit(code if isinstance(code, int) else 0)


def _interrupted() -> None:
    typer.echo("interrupted: run the same command again to resume (finished work is kept).", err=True)
    sys.exit(130)


if __name__ == "__main__":
    main()
