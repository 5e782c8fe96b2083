"""Analysis of a results table: per organ x domain summaries, paired comparisons on the same
subjects (Wilcoxon signed-rank, bootstrap over subjects), and the gap to a reported score.

Rows whose organ is absent from both reference and prediction (``edge_case == "absent"``), and
rows of scans whose release files are damaged (``edge_case == "release_error"``, a fault of the
release, not of the model), are left out of every statistic and counted; failed cases are scored as the edge-case table says
(an empty prediction) and counted too. With corrective clicks, statistics use the first round
(the one-prompt protocol of the UMD paper); `by_round` gives the mean of every round.
"""

from __future__ import annotations

import numpy as np

from umd_dataset.schema.studies import modalities

__all__ = ["METRICS", "UNSCORED", "comparisons", "scored_rows", "summary", "paired", "reported_gap", "by_round"]

METRICS = ("dice", "nsd_1mm", "nsd_2mm", "hd95_mm", "assd_mm")


def comparisons() -> tuple[tuple[str, str], ...]:
    """The paired comparisons of the schema (``modalities.json``): structural vs functional in each
    study, and CT vs MRI across studies, as (first, second) domain keys."""
    return tuple((c.first, c.second) for c in modalities().comparisons)


def _first_round(table):
    return table[table["iteration"] == 0] if "iteration" in table else table


#: Edge cases that are never scored.
UNSCORED = ("absent", "release_error")


def scored_rows(table, first_round: bool = True):
    """The rows that enter statistics: not absent, not a release error (first prompt round only by default)."""
    table = _first_round(table) if first_round else table
    return table[~table["edge_case"].isin(UNSCORED)]


def _scored(table):
    return scored_rows(table)


def by_round(table, metric: str = "dice"):
    """Mean of `metric` per domain and prompt round (rows: domains; columns: rounds)."""
    scored = scored_rows(table, first_round=False)
    return scored.groupby(["domain", "iteration"])[metric].mean().unstack()


def summary(table, metric: str = "dice"):
    """Per organ and domain: mean, median, IQR, n scored, failures and absent organs."""
    import pandas as pd

    rows = []
    for (organ, domain), group in _first_round(table).groupby(["organ", "domain"], sort=False):
        scored = _scored(group)[metric].astype(float)
        rows.append({
            "organ": organ, "domain": domain, "n": int(len(scored)), "mean": scored.mean(), "median": scored.median(),
            "q25": scored.quantile(0.25), "q75": scored.quantile(0.75),
            "failures": int((group["status"] == "failed").sum()), "absent": int((group["edge_case"] == "absent").sum()),
            "release_errors": int((group["edge_case"] == "release_error").sum()),
        })
    return pd.DataFrame(rows)


def _bootstrap(differences: np.ndarray, rng: np.random.Generator, resamples: int) -> tuple[float, float]:
    if len(differences) < 2:
        return float("nan"), float("nan")
    draws = rng.integers(0, len(differences), size=(resamples, len(differences)))
    medians = np.median(differences[draws], axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def paired(table, metric: str = "dice", pairs=None, resamples: int = 2000, seed: int = 0):
    """Paired differences (second domain minus first) on the subjects scored in both domains.

    Per organ, and over all organs (each subject's mean over the organs scored in both). Columns:
    n subjects, means, median difference, 95% bootstrap CI of the median difference (resampling
    subjects), Wilcoxon signed-rank p-value (NaN with fewer than two subjects or no difference).
    """
    import pandas as pd
    from scipy import stats

    scored = _scored(table)
    rows = []
    for first, second in pairs or comparisons():
        a = scored[scored["domain"] == first].set_index(["subject", "organ"])[metric]
        b = scored[scored["domain"] == second].set_index(["subject", "organ"])[metric]
        both = pd.concat({"a": a, "b": b}, axis=1, join="inner").astype(float)
        groups = [(organ, g) for organ, g in both.groupby(level="organ", sort=False)]
        groups.append(("all organs", both.groupby(level="subject").mean()))
        for organ, group in groups:
            differences = (group["b"] - group["a"]).to_numpy()
            rng = np.random.default_rng([seed, len(rows)])
            low, high = _bootstrap(differences, rng, resamples)
            p = float("nan")
            if len(differences) >= 2 and np.any(differences != 0):
                p = float(stats.wilcoxon(differences).pvalue)
            rows.append({
                "pair": f"{first} vs {second}", "organ": organ, "n_subjects": int(len(differences)),
                "mean_first": float(group["a"].mean()) if len(group) else float("nan"),
                "mean_second": float(group["b"].mean()) if len(group) else float("nan"),
                "median_difference": float(np.median(differences)) if len(differences) else float("nan"),
                "ci95_low": low, "ci95_high": high, "wilcoxon_p": p,
            })
    return pd.DataFrame(rows)


def reported_gap(table, reported: dict, metric: str = "dice"):
    """The model's reported score per domain (as given by the user) next to its mean score here."""
    import pandas as pd

    scored = _scored(table)
    rows = []
    for domain, value in reported.items():
        measured = float(scored[scored["domain"] == domain][metric].mean())
        rows.append({"domain": domain, "reported": float(value), "measured": measured, "gap": float(value) - measured})
    return pd.DataFrame(rows)
