"""The `umd` command: a thin layer over the public API. Heavy imports live inside the commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from umd_dataset.errors import UMDError

app = typer.Typer(
    name="umd",
    help="The UMD whole-body PET/CT and PET/MRI dataset: make, inspect and verify releases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder to write the release into (new, empty, or an interrupted job)."),
    subjects: int = typer.Option(12, help="Number of subjects."),
    preset: str = typer.Option("mini", help="Grid sizes: 'mini' (small, for tests) or 'full' (whole-body sizes)."),
    seed: int = typer.Option(0, help="Random seed; the same settings give the same bytes."),
    name: Optional[str] = typer.Option(None, help="Release name (default: UMD-mini, or UMD-synthetic-full)."),
    workers: int = typer.Option(1, help="Processes generating studies in parallel."),
    overwrite: bool = typer.Option(False, help="Replace an existing release or an interrupted job with other settings."),
) -> None:
    """Generate a synthetic release in the exact UMD format (resumable: run again to finish)."""
    from umd_dataset.synthetic import SynthConfig, synthesize

    default_name = "UMD-mini" if preset == "mini" else f"UMD-synthetic-{preset}"
    config = SynthConfig(subjects=subjects, preset=preset, seed=seed, name=name or default_name)
    release = synthesize(out, config, overwrite=overwrite, workers=workers, progress=True)
    typer.echo(f"wrote {release!r}")


@app.command()
def info(
    root: Path = typer.Argument(..., help="Release folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Counts per study, scan, split and organ. Reads the index only, no image."""
    from umd_dataset.index import open_release

    release = open_release(root)
    summary = release.summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(format_summary(summary, root))


def format_summary(summary: dict, root: Path) -> str:
    lines = [
        f"{summary['name']} {summary['version']} at {root} (label schema {summary['label_schema']})",
        f"subjects: {summary['subjects']}  (with both studies: {summary['paired_subjects']})",
        "studies:  " + "  ".join(f"{k}: {v}" for k, v in summary["studies"].items()),
        "scans:    " + "  ".join(f"{k}: {v}" for k, v in summary["scans"].items()),
        "",
        f"{'split':<12}{'subjects':>10}{'studies':>10}{'scans':>8}",
    ]
    for split, counts in summary["splits"].items():
        lines.append(f"{split:<12}{counts['subjects']:>10}{counts['studies']:>10}{counts['scans']:>8}")
    domains = list(summary["label_maps_with_organ_by_scan"])
    lines += ["", "label maps containing each organ:", f"{'organ':<18}" + "".join(f"{d:>13}" for d in domains) + f"{'total':>8}"]
    for organ, total in summary["label_maps_with_organ"].items():
        row = "".join(f"{summary['label_maps_with_organ_by_scan'][d][organ]:>13}" for d in domains)
        lines.append(f"{organ:<18}{row}{total:>8}")
    lines.append(f"{'all organs':<18}" + " " * 13 * len(domains) + f"{sum(summary['label_maps_with_organ'].values()):>8}")
    return "\n".join(lines)


@app.command()
def verify(
    root: Path = typer.Argument(..., help="Release folder."),
    deep: bool = typer.Option(False, help="Also decode every volume: label values and organ voxel counts."),
    workers: Optional[int] = typer.Option(None, help="Threads for hashing and decoding."),
) -> None:
    """Check every file against the manifest (checksums, geometry); list every problem found."""
    from umd_dataset.index import open_release

    report = open_release(root).verify(deep=deep, workers=workers, progress=True)
    typer.echo(str(report))
    if not report.ok:
        raise typer.Exit(1)


def main() -> None:
    """Entry point of the `umd` console script: package errors print as one message, exit code 2."""
    try:
        app()
    except UMDError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
