"""The report of an evaluation run: Markdown and self-contained HTML, with plots.

Plots: per-organ box plots of Dice by domain, paired slope plots (each subject's mean Dice in two
domains), and a domain x organ heat map. The run's configuration, package and release versions and
the metric definitions are written into the report.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from umd_dataset.evaluation.stats import METRICS, by_round, comparisons, paired, reported_gap, scored_rows, summary
from umd_dataset.io.files import atomic_path
from umd_dataset.schema.studies import modalities

__all__ = ["write_report"]


def _plots(out: Path, table) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out / "plots"
    folder.mkdir(exist_ok=True)
    scored = scored_rows(table)
    if scored.empty:  # nothing was scored (every organ absent, or every scan a release error): no plot to draw
        return {}
    domains = [d.key for d in modalities().domains if d.key in set(scored["domain"])]
    names = {d.key: d.name for d in modalities().domains}
    organs = list(dict.fromkeys(scored["organ"]))
    files = {}

    figure, axis = plt.subplots(figsize=(max(8, 0.9 * len(organs)), 4.5))
    width = 0.8 / max(1, len(domains))
    colours = plt.cm.tab10(np.arange(len(domains)))
    for d, domain in enumerate(domains):
        data = [scored[(scored["organ"] == o) & (scored["domain"] == domain)]["dice"].astype(float).to_numpy() for o in organs]
        positions = np.arange(len(organs)) + (d - (len(domains) - 1) / 2) * width
        parts = axis.boxplot([x if len(x) else [np.nan] for x in data], positions=positions, widths=width * 0.9, patch_artist=True, showfliers=False)
        for box in parts["boxes"]:
            box.set_facecolor(colours[d])
        axis.plot([], [], color=colours[d], linewidth=8, label=names[domain])
    axis.set_xticks(np.arange(len(organs)), organs, rotation=45, ha="right")
    axis.set_ylabel("Dice")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=8, ncol=len(domains))
    axis.set_title("Dice per organ and domain")
    figure.tight_layout()
    files["boxplots"] = folder / "dice_by_organ_and_domain.png"
    figure.savefig(files["boxplots"], dpi=90)
    plt.close(figure)

    pairs = comparisons()
    figure, axes = plt.subplots(1, len(pairs), figsize=(4 * len(pairs), 4), squeeze=False)
    for axis, (first, second) in zip(axes[0], pairs):
        means = scored.groupby(["subject", "domain"])["dice"].mean().unstack()
        if first in means and second in means:
            both = means[[first, second]].dropna()
            for _, row in both.iterrows():
                axis.plot([0, 1], [row[first], row[second]], marker="o", color="tab:blue", alpha=0.6)
        axis.set_xticks([0, 1], [names[first], names[second]])
        axis.set_xlim(-0.3, 1.3)
        axis.set_ylim(0, 1)
        axis.set_ylabel("mean Dice over organs")
        axis.set_title(f"{names[first]} vs {names[second]}")
    figure.tight_layout()
    files["paired"] = folder / "paired_subjects.png"
    figure.savefig(files["paired"], dpi=90)
    plt.close(figure)

    grid = scored.groupby(["domain", "organ"])["dice"].mean().unstack().reindex(index=domains, columns=organs)
    figure, axis = plt.subplots(figsize=(max(6, 0.7 * len(organs)), 0.6 * len(domains) + 1.8))
    image = axis.imshow(grid.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axis.set_xticks(np.arange(len(organs)), organs, rotation=45, ha="right")
    axis.set_yticks(np.arange(len(domains)), [names[d] for d in domains])
    for i in range(len(domains)):
        for j in range(len(organs)):
            value = grid.iloc[i, j]
            if np.isfinite(value):
                axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 0.6 else "black")
    figure.colorbar(image, ax=axis, label="mean Dice")
    axis.set_title("Mean Dice, domain x organ")
    figure.tight_layout()
    files["heatmap"] = folder / "heatmap.png"
    figure.savefig(files["heatmap"], dpi=90)
    plt.close(figure)
    return files


def _markdown_table(frame, digits: int = 3) -> str:
    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(out: str | Path, table, run: dict) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (plots embedded) into the run folder."""
    out = Path(out)
    plots = _plots(out, table)
    per_organ = summary(table)
    if per_organ.empty or per_organ["n"].sum() == 0:
        by_domain_text = "No case was scored: every organ is absent from the reference, or every scan's files are damaged."
    else:
        by_domain = per_organ.pivot_table(index="organ", columns="domain", values="mean", sort=False, dropna=False)
        order = [d.key for d in modalities().domains if d.key in by_domain.columns]
        by_domain_text = _markdown_table(by_domain[order].reset_index())
    comparisons = paired(table)
    failures = table[table["status"] == "failed"][["subject", "study", "scan", "organ", "failure"]]
    damaged = table[table["edge_case"] == "release_error"].drop_duplicates(["subject", "study", "scan"])
    scored = len(scored_rows(table, first_round=False))
    sections = [
        f"# Evaluation of {run['model']} on {run['release']['name']} {run['release']['version']}",
        f"Model kind: {run['kind']}. Split: {run['config']['split']}. umd_dataset {run['umd_dataset']}, label schema "
        f"{run['release']['label_schema']}. Cases scored: {scored}, failed: "
        f"{int((table['status'] == 'failed').sum())}, organs absent: {int((table['edge_case'] == 'absent').sum())}, "
        f"scans with damaged release files: {len(damaged)}.",
        "## Mean Dice per organ and domain", by_domain_text,
        "## Paired comparisons (second minus first, same subjects; Dice)",
        _markdown_table(comparisons),
        "## All metrics per organ and domain",
        "\n\n".join(f"### {metric}\n\n" + _markdown_table(summary(table, metric)) for metric in METRICS if metric in table),
    ]
    if table["iteration"].max() > 0:
        rounds = by_round(table).reset_index()
        rounds.columns = [str(c) for c in rounds.columns]
        sections += ["## Mean Dice per prompt round (0 = first prompt, then corrective clicks)", _markdown_table(rounds)]
    if run.get("reported"):
        sections += ["## Reported versus measured (mean Dice)", _markdown_table(reported_gap(table, run["reported"]))]
    sections += [
        "## Failures", _markdown_table(failures) if len(failures) else "None.",
        "## Release errors (damaged files of the release, not scored; run `umd verify`)",
        _markdown_table(damaged[["subject", "study", "scan", "failure"]]) if len(damaged) else "None.",
        "## Run configuration", "```json\n" + json.dumps(run, indent=2) + "\n```",
    ]
    plot_md = "\n\n".join(f"![{name}](plots/{path.name})" for name, path in plots.items())
    markdown = "\n\n".join(sections[:2] + ["## Plots", plot_md] + sections[2:]) + "\n"
    md_path, html_path = out / "report.md", out / "report.html"
    with atomic_path(md_path) as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    images = {path.name: base64.b64encode(path.read_bytes()).decode() for path in plots.values()}
    body = _markdown_to_html(markdown, images)
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html.escape(run["model"]) + " on UMD</title>"
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}pre{background:#f5f5f5;padding:1em;overflow:auto}"
        "img{max-width:100%}</style></head><body>" + body + "</body></html>"
    )
    with atomic_path(html_path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return md_path, html_path


def _markdown_to_html(markdown: str, images: dict[str, str]) -> str:
    """The small Markdown subset the report uses: headings, tables, code blocks, images, paragraphs."""
    parts, table, code = [], [], None
    for line in markdown.splitlines() + [""]:
        if code is not None:
            if line.startswith("```"):
                parts.append("<pre>" + html.escape("\n".join(code)) + "</pre>")
                code = None
            else:
                code.append(line)
            continue
        if line.startswith("```"):
            code = []
            continue
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            header = [c.strip() for c in table[0].strip("|").split("|")]
            rows = [[c.strip() for c in r.strip("|").split("|")] for r in table[2:]]
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")
            table = []
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            parts.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("![") and "](" in line:
            name = line.split("](", 1)[1].rstrip(")").split("/")[-1]
            parts.append(f"<img alt='{html.escape(name)}' src='data:image/png;base64,{images.get(name, '')}'>")
        elif line.strip():
            parts.append(f"<p>{html.escape(line)}</p>")
    return "\n".join(parts)
