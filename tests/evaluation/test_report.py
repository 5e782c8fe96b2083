"""The report of a run: every section, the domains by name, failures listed, plots written as
valid PNGs and embedded in a self-contained HTML page."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd

from umd_dataset.evaluation.report import write_report

PNG = b"\x89PNG\r\n\x1a\n"


def _table() -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(1)
    for i in range(4):
        for domain, base in (("ct", 0.85), ("petct_pet", 0.6), ("mri", 0.8), ("petmri_pet", 0.5)):
            for organ, organ_id in (("liver", 1), ("kidney_left", 3)):
                dice = float(np.clip(base + rng.normal(0, 0.05), 0, 1))
                rows.append({"model": "m", "subject": f"S{i}", "study": "petct" if domain in ("ct", "petct_pet") else "petmri",
                             "scan": domain.split("_")[-1] if "pet" in domain else domain, "domain": domain, "split": "test",
                             "organ": organ, "organ_id": organ_id, "iteration": 0, "status": "ok", "failure": "",
                             "dice": dice, "nsd_1mm": dice, "nsd_2mm": dice, "hd95_mm": 5.0, "assd_mm": 2.0, "edge_case": "",
                             "prompt": ""})
    rows[0].update(status="failed", failure="ModelOutputError: the label map holds [99]", dice=0.0, edge_case="missed")
    return pd.DataFrame(rows)


RUN = {"model": "m", "kind": "automatic", "release": {"name": "UMD-test", "version": "1.0.0", "label_schema": "umd-v1"},
       "config": {"split": "test"}, "umd_dataset": "0.1.0", "reported": {"ct": 0.9}}


def test_report_sections_plots_and_html(tmp_path):
    md_path, html_path = write_report(tmp_path, _table(), RUN)
    markdown = md_path.read_text()
    for heading in ("# Evaluation of m on UMD-test 1.0.0", "## Mean Dice per organ and domain", "## Paired comparisons",
                    "## All metrics per organ and domain", "## Reported versus measured", "## Failures", "## Run configuration"):
        assert heading in markdown
    assert "Cases scored: 32, failed: 1" in markdown
    assert "ModelOutputError: the label map holds [99]" in markdown
    plots = sorted((tmp_path / "plots").glob("*.png"))
    assert [p.name for p in plots] == ["dice_by_organ_and_domain.png", "heatmap.png", "paired_subjects.png"]
    assert all(p.read_bytes().startswith(PNG) for p in plots)
    page = html_path.read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 3 and all(base64.b64decode(i).startswith(PNG) for i in images)
    assert "<table>" in page and "<h1>Evaluation of m on UMD-test 1.0.0</h1>" in page
