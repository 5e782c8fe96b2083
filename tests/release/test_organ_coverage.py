"""Organ coverage of a release, from the manifest alone."""

from __future__ import annotations

import csv

from umd_dataset.release.organ_coverage import coverage


def test_coverage_counts_label_maps_per_organ_and_scan(small_release, tmp_path):
    report = coverage(small_release)
    assert len(report.rows) == 13 * 4
    assert report.organ_masks == sum(len(r.organs) for r in small_release.scans)
    assert report.by_organ() == small_release.summary().organ_totals()
    liver_ct = next(r for r in report.rows if (r.organ, r.study, r.scan) == ("liver", "petct", "ct"))
    assert liver_ct.scans == 5 and liver_ct.label_maps == 5 and liver_ct.fraction == 1.0
    assert 1000 < liver_ct.median_volume_ml < 3000  # an adult liver, in mL
    text = report.to_markdown()
    assert "| liver | 5/5" in text and f"Organ masks in all: {report.organ_masks}" in text
    report.write_csv(tmp_path / "coverage.csv")
    rows = list(csv.DictReader(open(tmp_path / "coverage.csv")))
    assert len(rows) == 52 and rows[0]["organ"] == "liver"
