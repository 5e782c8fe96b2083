"""The report of an evaluation run: Markdown and a self-contained HTML page, with plots, that leads
with the finding.

Order: what was evaluated (and, for a baseline, what it is); the finding, one sentence and one
figure per paired comparison (median paired difference over subjects, its bootstrap CI, the
Wilcoxon p-value Holm-adjusted over the comparisons, n subjects); reported versus measured; the
scope; Dice per organ and domain (box plots, means and medians); the paired table; surface
distances with medians beside means and the missed-organ penalty flagged where it drives a mean;
NSD, flagged where a tolerance is below the voxel size; failures, release errors, the run's
configuration. Organs and domains go by their display names everywhere.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import numpy as np

from umd_dataset.evaluation.stats import (
    METRICS, by_round, comparisons, distance_summary, nsd_resolution, paired, reported_gap, scored_rows, summary,
)
from umd_dataset.io.files import atomic_path
from umd_dataset.schema.organs import load_schema
from umd_dataset.schema.studies import modalities

__all__ = ["write_report"]


def _names() -> tuple[dict[str, str], dict[str, str]]:
    """Display names of organs and domains, by key."""
    return {o.slug: o.name for o in load_schema()}, {d.key: d.name for d in modalities().domains}


def _pair_plot(path: Path, scored, first: str, second: str, row, domains: dict[str, str]) -> None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(3.9, 3.3))
    means = scored.groupby(["subject", "domain"])["dice"].mean().unstack()
    if first in means and second in means:
        both = means[[first, second]].dropna()
        for _, values in both.iterrows():
            axis.plot([0, 1], [values[first], values[second]], marker="o", color="tab:blue", alpha=0.5, linewidth=1)
        if len(both):
            axis.plot([0, 1], [both[first].median(), both[second].median()], color="black", linewidth=2.5, marker="D", label="median")
            axis.legend(loc="upper right", fontsize=7, frameon=False)
    axis.set_xticks([0, 1], [domains[first], domains[second]])
    axis.set_xlim(-0.35, 1.35)
    axis.set_ylim(0, 1)
    axis.set_ylabel("subject's mean Dice over organs")
    if row is not None and np.isfinite(row["median_difference"]):
        ci = f" [{row['ci95_low']:+.2f}, {row['ci95_high']:+.2f}]" if np.isfinite(row["ci95_low"]) else ""
        axis.set_title(f"median difference {row['median_difference']:+.2f}{ci}\nn = {row['n_subjects']} subjects", fontsize=9)
    else:
        axis.set_title("no subject scored in both", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _plots(out: Path, table, pairs) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patheffects as effects
    import matplotlib.pyplot as plt

    folder = out / "plots"
    folder.mkdir(exist_ok=True)
    for stale in folder.glob("*.png"):
        stale.unlink()
    scored = scored_rows(table)
    if scored.empty:  # nothing was scored (every organ absent, or every scan a release error): no plot to draw
        return {}
    organ_names, domain_names = _names()
    domains = [d.key for d in modalities().domains if d.key in set(scored["domain"])]
    organs = list(dict.fromkeys(scored["organ"]))
    files = {}
    overall = pairs[pairs["organ"] == "all organs"] if len(pairs) else pairs
    for first, second in comparisons():
        match = overall[(overall["first"] == first) & (overall["second"] == second)] if len(overall) else overall
        path = folder / f"paired_{first}_vs_{second}.png"
        _pair_plot(path, scored, first, second, match.iloc[0] if len(match) else None, domain_names)
        files[f"paired_{first}_vs_{second}"] = path

    figure, axis = plt.subplots(figsize=(max(8, 0.9 * len(organs)) + 1.8, 4.5))
    width = 0.8 / max(1, len(domains))
    colours = plt.cm.tab10(np.arange(len(domains)))
    median_style = {"color": "black", "linewidth": 1.8, "path_effects": [effects.withStroke(linewidth=3.5, foreground="white")]}
    for d, domain in enumerate(domains):
        data = [scored[(scored["organ"] == o) & (scored["domain"] == domain)]["dice"].astype(float).to_numpy() for o in organs]
        positions = np.arange(len(organs)) + (d - (len(domains) - 1) / 2) * width
        parts = axis.boxplot([x if len(x) else [np.nan] for x in data], positions=positions, widths=width * 0.9, patch_artist=True,
                             showfliers=False, medianprops=median_style)
        for box in parts["boxes"]:
            box.set_facecolor(colours[d])
        axis.plot([], [], color=colours[d], linewidth=8, label=domain_names[domain])
    axis.set_xticks(np.arange(len(organs)), [organ_names.get(o, o) for o in organs], rotation=45, ha="right")
    axis.set_ylabel("Dice")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="domain (line: median)", title_fontsize=8)
    axis.set_title("Dice per organ and domain")
    figure.tight_layout()
    files["boxplots"] = folder / "dice_by_organ_and_domain.png"
    figure.savefig(files["boxplots"], dpi=90)
    plt.close(figure)

    grid = scored.groupby(["domain", "organ"])["dice"].mean().unstack().reindex(index=domains, columns=organs)
    figure, axis = plt.subplots(figsize=(max(6, 0.7 * len(organs)) + 1.5, 0.6 * len(domains) + 1.8))
    image = axis.imshow(grid.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axis.set_xticks(np.arange(len(organs)), [organ_names.get(o, o) for o in organs], rotation=45, ha="right")
    axis.set_yticks(np.arange(len(domains)), [domain_names[d] for d in domains])
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


def _cell(value, digits: int) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else ""
    if isinstance(value, (float, np.floating)):
        return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _markdown_table(frame, digits: int = 3) -> str:
    columns = list(frame.columns)
    lines = ["| " + " | ".join(str(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_cell(v, digits) for v in row.tolist()) + " |")
    return "\n".join(lines)


def _p(value) -> str:
    if not np.isfinite(value):
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _finding(row, domains: dict[str, str], tests: int) -> str:
    """One sentence for one paired comparison ("all organs" row of `paired`)."""
    first, second = domains[row["first"]], domains[row["second"]]
    n = int(row["n_subjects"])
    if n == 0:
        return f"- **{first} vs {second}**: no subject was scored in both domains."
    change = row["median_second"] - row["median_first"]
    verb = "fell" if change < 0 else ("rose" if change > 0 else "stayed")
    sentence = (f"- **{first} vs {second}** ({n} subject{'s' if n != 1 else ''} scored in both): the subjects' mean Dice over the "
                f"organs {verb} from a median of {row['median_first']:.3f} on {first} to {row['median_second']:.3f} on {second}; "
                f"median paired difference {row['median_difference']:+.3f}")
    if np.isfinite(row["ci95_low"]):
        sentence += f" (95% CI {row['ci95_low']:+.3f} to {row['ci95_high']:+.3f}"
    else:
        sentence += " (no CI: fewer than two subjects"
    if np.isfinite(row["wilcoxon_p"]):
        sentence += f"; Wilcoxon p = {_p(row['wilcoxon_p'])}, Holm-adjusted over the {tests} comparisons p = {_p(row['p_holm'])})"
        floor = 2.0 / 2**n  # the smallest two-sided p of an exact signed-rank test on n subjects
        sentence += f"; with {n} subjects no p-value can be below {floor:.3f}." if floor > 0.05 else "."
    else:
        sentence += "; no test: fewer than two subjects or no difference)."
    return sentence


def write_report(out: str | Path, table, run: dict) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (plots embedded) into the run folder."""
    out = Path(out)
    organ_names, domain_names = _names()
    pairs = paired(table)
    plots = _plots(out, table, pairs)
    scored_count = len(scored_rows(table, first_round=False))
    split = run["config"].get("split")
    scope = "all splits" if split is None else f"the {split} split"
    damaged = table[table["edge_case"] == "release_error"].drop_duplicates(["subject", "study", "scan"])
    failures = table[table["status"] == "failed"][["subject", "study", "scan", "organ", "failure"]]

    def named(frame, columns=("organ", "domain")):
        frame = frame.copy()
        if "organ" in columns and "organ" in frame:
            frame["organ"] = [organ_names.get(o, o) for o in frame["organ"]]
        if "domain" in columns and "domain" in frame:
            frame["domain"] = [domain_names.get(d, d) for d in frame["domain"]]
        return frame

    title = f"# Evaluation of {run['model']} on {run['release']['name']} {run['release']['version']}"
    intro = []
    if run.get("about"):
        intro.append(f"The model: {run['about']}.")
    if run.get("protocol"):
        intro.append(run["protocol"]["note"])
    overall = pairs[pairs["organ"] == "all organs"] if len(pairs) else pairs
    finding = ["## Finding"]
    if len(overall) and scored_count:
        finding.append("\n".join(_finding(row, domain_names, len(overall)) for _, row in overall.iterrows()))
        finding.append(f"Mean Dice over the organs per subject, on {scope}. p-values: Wilcoxon signed-rank over subjects, "
                       f"Holm-adjusted over the {len(overall)} comparisons; CIs: bootstrap over subjects (2000 resamples).")
        finding.append("\n".join(f"![{name}](plots/{path.name})" for name, path in plots.items() if name.startswith("paired_")))
    else:
        finding.append("No case was scored: every organ is absent from the reference, or every scan's files are damaged.")
    sections = [title, *intro, *finding]
    if run.get("reported"):
        gap = named(reported_gap(table, run["reported"]), ("domain",))
        gap.columns = ["domain", "reported", "measured mean", "measured median", "cases", "reported - measured"]
        source = run["protocol"]["note"].split("Reported scores: ", 1)[-1] if run.get("protocol") else "as given by the user (`reported=`)"
        sections += ["## Reported versus measured (mean Dice over organ cases)", _markdown_table(gap), f"Reported: {source}"]
    sections += [
        "## Scope",
        f"Model kind: {run['kind']}. Scored on {scope} of {run['release']['name']} {run['release']['version']}; label schema "
        f"{run['release']['label_schema']}; umd_dataset {run['umd_dataset']}. Cases scored: {scored_count}, failed: "
        f"{int((table['status'] == 'failed').sum())} (scored as empty predictions), organs absent: "
        f"{int((table['edge_case'] == 'absent').sum())}, scans with damaged release files: {len(damaged)}.",
    ]
    per_organ = summary(table)
    sections.append("## Dice per organ and domain")
    if "boxplots" in plots:
        sections.append(f"![boxplots](plots/{plots['boxplots'].name})")
    if per_organ.empty or per_organ["n"].sum() == 0:
        sections.append("No case was scored.")
    else:
        order = [d.key for d in modalities().domains if d.key in set(per_organ["domain"])]
        for statistic in ("mean", "median"):
            pivot = per_organ.pivot_table(index="organ", columns="domain", values=statistic, sort=False, dropna=False)[order]
            pivot.index = [organ_names.get(o, o) for o in pivot.index]
            pivot.columns = [domain_names[d] for d in pivot.columns]
            sections += [f"### {statistic.capitalize()} Dice", _markdown_table(pivot.reset_index().rename(columns={"index": "organ"}))]
        if "heatmap" in plots:
            sections.append(f"![heatmap](plots/{plots['heatmap'].name})")
    if len(pairs):
        table_pairs = pairs.drop(columns=["pair"]).copy()
        table_pairs["first"] = [domain_names[d] for d in table_pairs["first"]]
        table_pairs["second"] = [domain_names[d] for d in table_pairs["second"]]
        table_pairs["organ"] = [organ_names.get(o, o) for o in table_pairs["organ"]]
        sections += ["## Paired comparisons (second minus first, same subjects; Dice)",
                     "Medians and means of the same subjects' scores; the CI is that of the median difference. p_holm: Holm-adjusted "
                     "within the 'all organs' rows, and within the per-organ rows.", _markdown_table(table_pairs)]
    sections.append("## Surface distances (mm)")
    sections.append("A missed organ (or one predicted where the reference has none) scores the image diagonal as its HD95 and ASSD. "
                    "Where those cases make up most of a mean, the mean counts misses, not boundary errors: it is flagged, and the "
                    "median and the mean without them stand beside it.")
    for metric in ("hd95_mm", "assd_mm"):
        if metric in table:
            frame = named(distance_summary(table, metric))
            if frame.empty:
                sections += [f"### {metric.removesuffix('_mm').upper()}", "No case was scored."]
                continue
            driven = frame[frame["mean_driven_by_penalty"]]
            note = (f"The mean is driven by the missed-organ penalty in {len(driven)} organ-domain cell{'s' if len(driven) != 1 else ''}: "
                    + ", ".join(f"{r.organ} on {r.domain}" for r in driven.itertuples()) + ".") if len(driven) else "No mean is driven by the penalty."
            sections += [f"### {metric.removesuffix('_mm').upper()}", note, _markdown_table(frame)]
    tolerances = run["config"].get("tolerances_mm", [1.0, 2.0])
    findings = nsd_resolution(table, tolerances)
    flags = []
    for f in findings:
        if f.get("below_voxel"):
            flags.append(f"- NSD at {f['tolerance_mm']:g} mm on {domain_names.get(f['domain'], f['domain'])}: the tolerance is below the "
                         f"finest voxel size of its scans ({f['finest_voxel_mm']:.3g} mm), so only boundaries that coincide exactly count.")
        elif "identical" in f:
            a, b = f["identical"]
            flags.append(f"- {a} and {b} are identical on {domain_names.get(f['domain'], f['domain'])} (finest voxel "
                         f"{f['finest_voxel_mm']:.3g} mm): the scans are too coarse to tell these tolerances apart.")
    sections += ["## Normalized surface Dice", "\n".join(flags) if flags else "Every tolerance is at least the voxel size of the scans."]
    for metric in [m for m in METRICS if m.startswith("nsd_") and m in table]:
        sections += [f"### {metric}", _markdown_table(named(summary(table, metric)))]
    if table["iteration"].max() > 0:
        rounds = by_round(table).reset_index()
        rounds["domain"] = [domain_names.get(d, d) for d in rounds["domain"]]
        rounds.columns = [str(c) for c in rounds.columns]
        sections += ["## Mean Dice per prompt round (0 = first prompt, then corrective clicks)", _markdown_table(rounds)]
    sections += [
        "## Failures", _markdown_table(failures) if len(failures) else "None.",
        "## Release errors (damaged files of the release, not scored; run `umd verify`)",
        _markdown_table(damaged[["subject", "study", "scan", "failure"]]) if len(damaged) else "None.",
        "## Run configuration", "```json\n" + json.dumps(run, indent=2) + "\n```",
    ]
    markdown = "\n\n".join(sections) + "\n"
    md_path, html_path = out / "report.md", out / "report.html"
    with atomic_path(md_path) as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    images = {path.name: base64.b64encode(path.read_bytes()).decode() for path in plots.values()}
    body = _markdown_to_html(markdown, images)
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html.escape(run["model"]) + " on UMD</title>"
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}pre{background:#f5f5f5;padding:1em;overflow:auto}"
        "img{max-width:100%}img.pair{width:32%;margin-right:1%}li{margin-bottom:0.4em}</style></head><body>" + body + "</body></html>"
    )
    with atomic_path(html_path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return md_path, html_path


def _inline(text: str) -> str:
    """Escaped text with **bold** and `code`."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _markdown_to_html(markdown: str, images: dict[str, str]) -> str:
    """The small Markdown subset the report uses: headings, lists, tables, code blocks, images, paragraphs."""
    parts, table, items, code = [], [], [], None
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
        if line.startswith("- "):
            items.append(line[2:])
            continue
        if items:
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items = []
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            parts.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("![") and "](" in line:
            name = line.split("](", 1)[1].rstrip(")").split("/")[-1]
            css = " class='pair'" if name.startswith("paired_") else ""
            parts.append(f"<img{css} alt='{html.escape(name)}' src='data:image/png;base64,{images.get(name, '')}'>")
        elif line.strip():
            parts.append(f"<p>{_inline(line)}</p>")
    return "\n".join(parts)
