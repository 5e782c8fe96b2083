"""The report of a run: it opens with the finding (each paired gap with its CI and Holm-adjusted
p), shows reported versus measured near the top, names organs and domains for people, flags means
driven by the missed-organ penalty and NSD tolerances below the voxel size, and embeds its plots
in a self-contained HTML page."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd

from umd_dataset.evaluation.report import write_report
from umd_dataset.evaluation.stats import holm, paired

PNG = b"\x89PNG\r\n\x1a\n"


def _table(subjects: int = 6) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(1)
    for i in range(subjects):
        for domain, base, spacing in (("ct", 0.85, 0.8), ("petct_pet", 0.6, 4.0), ("mri", 0.8, 1.5), ("petmri_pet", 0.5, 4.0)):
            for organ, organ_id in (("liver", 1), ("kidney_left", 3)):
                dice = float(np.clip(base + rng.normal(0, 0.05), 0, 1))
                rows.append({"model": "m", "subject": f"S{i}", "study": "petct" if domain in ("ct", "petct_pet") else "petmri",
                             "scan": domain.split("_")[-1] if "pet" in domain else domain, "domain": domain, "split": "test",
                             "organ": organ, "organ_id": organ_id, "iteration": 0, "status": "ok", "failure": "",
                             "dice": dice, "nsd_1mm": dice * 0.9, "nsd_2mm": dice * (0.9 if spacing > 2 else 0.95), "hd95_mm": 5.0,
                             "assd_mm": 2.0, "edge_case": "", "prompt": "", "spacing_min_mm": spacing})
    frame = pd.DataFrame(rows)
    missed = (frame["domain"] == "petmri_pet") & (frame["organ"] == "kidney_left")
    frame.loc[missed & frame["subject"].isin(["S0", "S1"]), ["dice", "hd95_mm", "edge_case"]] = [0.0, 700.0, "missed"]
    frame.loc[0, ["status", "failure", "dice", "edge_case", "hd95_mm"]] = ["failed", "ModelOutputError: the label map holds [99]", 0.0, "missed", 700.0]
    return frame


RUN = {"model": "m", "kind": "automatic", "release": {"name": "UMD-test", "version": "1.0.0", "label_schema": "umd-v1"},
       "config": {"split": "test", "tolerances_mm": [1.0, 2.0]}, "umd_dataset": "0.1.0", "reported": {"ct": 0.9, "petct_pet": 0.7}}


def _first_screen(markdown: str) -> str:
    return markdown.split("## Scope")[0]


def test_the_report_opens_with_each_paired_gap_its_ci_and_holm_adjusted_p(tmp_path):
    table = _table()
    md_path, _ = write_report(tmp_path, table, RUN)
    markdown = md_path.read_text()
    top = _first_screen(markdown)
    assert top.index("## Finding") < top.index("## Reported versus measured")
    overall = paired(table)
    overall = overall[overall["organ"] == "all organs"]
    for row in overall.itertuples():
        names = {"ct": "CT", "petct_pet": "PET of PET/CT", "mri": "MRI", "petmri_pet": "PET of PET/MRI"}
        sentence = next(line for line in top.splitlines() if line.startswith(f"- **{names[row.first]} vs {names[row.second]}**"))
        assert f"median paired difference {row.median_difference:+.3f}" in sentence
        assert f"95% CI {row.ci95_low:+.3f} to {row.ci95_high:+.3f}" in sentence
        assert "Holm-adjusted over the 3 comparisons p = " in sentence and f"{row.n_subjects} subjects" in sentence
    assert "plots/paired_ct_vs_petct_pet.png" in top and "plots/paired_ct_vs_mri.png" in top
    assert "Reported: as given by the user" in top


def test_holm_by_hand_and_within_its_families():
    adjusted = holm([0.01, 0.04, float("nan"), 0.03])
    assert np.allclose(adjusted[[0, 1, 3]], [0.03, 0.06, 0.06]) and np.isnan(adjusted[2])  # 3*0.01, max(2*0.03, 1*0.04)
    result = paired(_table())
    overall = result[result["organ"] == "all organs"]
    assert np.allclose(overall["p_holm"], holm(overall["wilcoxon_p"]))
    organs = result[result["organ"] != "all organs"]
    assert np.allclose(organs["p_holm"], holm(organs["wilcoxon_p"]), equal_nan=True)
    assert {"median_first", "median_second", "median_difference", "mean_first", "mean_second", "mean_difference"} <= set(result)


def test_display_names_flags_and_scope(tmp_path):
    md_path, html_path = write_report(tmp_path, _table(), {**RUN, "config": {"split": None, "tolerances_mm": [1.0, 2.0]}})
    markdown = md_path.read_text()
    assert "Scored on all splits of UMD-test 1.0.0" in markdown and "Split: None" not in markdown
    assert "| Left kidney |" in markdown and "kidney_left" not in markdown.split("## Run configuration")[0]
    # the failed liver case (one of six) and two missed kidneys score the image diagonal: most of those means
    assert "The mean is driven by the missed-organ penalty in 2 organ-domain cells: Liver on CT, Left kidney on PET of PET/MRI." in markdown
    assert "NSD at 1 mm on CT: the tolerance is below" not in markdown  # CT voxels are 0.8 mm
    assert "NSD at 1 mm on PET of PET/CT: the tolerance is below the finest voxel size of its scans (4 mm)" in markdown
    assert "nsd_1mm and nsd_2mm are identical on PET of PET/MRI" in markdown
    assert "Cases scored: 48, failed: 1" in markdown and "ModelOutputError: the label map holds [99]" in markdown
    for heading in ("## Dice per organ and domain", "### Median Dice", "## Paired comparisons", "## Surface distances (mm)",
                    "### HD95", "## Normalized surface Dice", "## Failures", "## Run configuration"):
        assert heading in markdown
    plots = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert plots == ["dice_by_organ_and_domain.png", "heatmap.png", "paired_ct_vs_mri.png", "paired_ct_vs_petct_pet.png",
                     "paired_mri_vs_petmri_pet.png"]
    assert all((tmp_path / "plots" / p).read_bytes().startswith(PNG) for p in plots)
    page = html_path.read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 5 and all(base64.b64decode(i).startswith(PNG) for i in images)
    assert "<h1>Evaluation of m on UMD-test 1.0.0</h1>" in page and "<li><strong>CT vs PET of PET/CT</strong>" in page


def test_the_box_plot_legend_lies_outside_the_axes(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.figure

    boxes = []
    save = matplotlib.figure.Figure.savefig

    def keep(figure, path, *args, **kwargs):
        if str(path).endswith("dice_by_organ_and_domain.png"):
            figure.canvas.draw()
            axis = figure.axes[0]
            boxes.append((axis.get_legend().get_window_extent(), axis.get_window_extent()))
        return save(figure, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    write_report(tmp_path, _table(), RUN)
    legend, axes = boxes[0]
    assert legend.x0 >= axes.x1  # to the right of the data, never over it
