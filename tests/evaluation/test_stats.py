"""Statistics of a results table, checked by hand: summaries per organ and domain, paired
comparisons on the same subjects, the gap to a reported score, and prompt rounds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from umd_dataset.evaluation.stats import by_round, comparisons, paired, reported_gap, summary


def _row(subject, organ, domain, dice, edge_case="", status="ok", iteration=0):
    return {"subject": subject, "organ": organ, "domain": domain, "dice": dice, "edge_case": edge_case, "status": status,
            "iteration": iteration}


def test_summary_counts_scored_failed_and_absent_cases():
    table = pd.DataFrame([
        _row("S1", "liver", "ct", 0.9), _row("S2", "liver", "ct", 0.7), _row("S3", "liver", "ct", 0.0, "missed", "failed"),
        _row("S4", "liver", "ct", math.nan, "absent"), _row("S1", "liver", "ct", 0.95, iteration=1),
    ])
    row = summary(table).iloc[0]
    assert (row["organ"], row["domain"], row["n"], row["failures"], row["absent"]) == ("liver", "ct", 3, 1, 1)
    assert row["mean"] == pytest.approx((0.9 + 0.7 + 0.0) / 3)  # a failure is scored as an empty prediction
    assert row["median"] == pytest.approx(0.7)
    assert (row["q25"], row["q75"]) == (pytest.approx(0.35), pytest.approx(0.8))


def test_paired_differences_by_hand():
    rng = np.random.default_rng(0)
    ct = rng.uniform(0.7, 0.9, 12)
    pet = ct - rng.uniform(0.05, 0.2, 12)
    rows = [_row(f"S{i}", "liver", d, v) for i in range(12) for d, v in (("ct", ct[i]), ("petct_pet", pet[i]))]
    rows.append(_row("S99", "liver", "ct", 0.8))  # no PET: not paired, left out
    result = paired(pd.DataFrame(rows), pairs=(("ct", "petct_pet"),))
    liver = result[result["organ"] == "liver"].iloc[0]
    assert liver["pair"] == "ct vs petct_pet" and liver["n_subjects"] == 12
    assert liver["median_difference"] == pytest.approx(float(np.median(pet - ct)))
    assert liver["wilcoxon_p"] == pytest.approx(scipy_stats.wilcoxon(pet - ct).pvalue)
    assert liver["ci95_low"] <= liver["median_difference"] <= liver["ci95_high"] < 0
    assert set(result["organ"]) == {"liver", "all organs"}


def test_paired_comparisons_default_to_the_schema_and_average_organs_per_subject():
    rows = []
    for i, (ct, pet) in enumerate([(0.9, 0.5), (0.8, 0.6), (0.7, 0.7)]):
        rows += [_row(f"S{i}", "liver", "ct", ct), _row(f"S{i}", "liver", "petct_pet", pet)]
        rows += [_row(f"S{i}", "heart", "ct", ct - 0.1), _row(f"S{i}", "heart", "petct_pet", pet - 0.3)]
    result = paired(pd.DataFrame(rows))
    assert list(dict.fromkeys(result["pair"])) == [f"{a} vs {b}" for a, b in comparisons()]
    overall = result[(result["pair"] == "ct vs petct_pet") & (result["organ"] == "all organs")].iloc[0]
    per_subject = [((0.5 + 0.2) - (0.9 + 0.8)) / 2, ((0.6 + 0.3) - (0.8 + 0.7)) / 2, ((0.7 + 0.4) - (0.7 + 0.6)) / 2]
    assert overall["median_difference"] == pytest.approx(float(np.median(per_subject)))
    mri = result[result["pair"] == "mri vs petmri_pet"]
    assert (mri["n_subjects"] == 0).all()  # no MRI rows: no pairs, no invented numbers
    assert mri["median_difference"].isna().all()


def test_reported_gap_and_rounds():
    table = pd.DataFrame([
        _row("S1", "liver", "ct", 0.8), _row("S2", "liver", "ct", 0.6), _row("S1", "liver", "ct", 0.9, iteration=1),
        _row("S2", "liver", "ct", math.nan, "absent"),
    ])
    gap = reported_gap(table, {"ct": 0.95}).iloc[0]
    assert (gap["reported"], gap["measured"]) == (0.95, pytest.approx(0.7)) and gap["gap"] == pytest.approx(0.25)
    rounds = by_round(table)
    assert rounds.loc["ct", 0] == pytest.approx(0.7) and rounds.loc["ct", 1] == pytest.approx(0.9)
