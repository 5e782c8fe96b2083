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

__all__ = ["METRICS", "UNSCORED", "PENALISED", "comparisons", "scored_rows", "summary", "paired", "holm", "reported_gap", "by_round",
           "distance_summary", "nsd_resolution"]

METRICS = ("dice", "nsd_1mm", "nsd_2mm", "hd95_mm", "assd_mm")


def comparisons() -> tuple[tuple[str, str], ...]:
    """The paired comparisons of the schema (``modalities.json``): structural vs functional in each
    study, and CT vs MRI across studies, as (first, second) domain keys."""
    return tuple((c.first, c.second) for c in modalities().comparisons)


def _first_round(table):
    return table[table["iteration"] == 0] if "iteration" in table else table


#: Edge cases that are never scored.
UNSCORED = ("absent", "release_error")
#: Edge cases whose HD95 and ASSD are the image diagonal (see `umd_dataset.evaluation.metrics`).
PENALISED = ("missed", "false_positive")


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


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN entries are not tests: left NaN)."""
    values = np.asarray(pvalues, dtype=float)
    adjusted = np.full(values.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(values))
    order = tested[np.argsort(values[tested], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, (len(order) - rank) * values[index])
        adjusted[index] = min(1.0, running)
    return adjusted


def paired(table, metric: str = "dice", pairs=None, resamples: int = 2000, seed: int = 0):
    """Paired differences (second domain minus first) on the subjects scored in both domains.

    Per organ, and over all organs (each subject's mean over the organs scored in both). Columns:
    n subjects; median and mean of each domain and of the difference; 95% bootstrap CI of the
    median difference (resampling subjects); Wilcoxon signed-rank p-value (NaN with fewer than two
    subjects or no difference) and the same Holm-adjusted, in two families: the "all organs" rows
    (one per comparison), and the per-organ rows together.
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
            some = len(differences) > 0
            rows.append({
                "pair": f"{first} vs {second}", "first": first, "second": second, "organ": organ, "n_subjects": int(len(differences)),
                "median_first": float(group["a"].median()) if some else float("nan"),
                "median_second": float(group["b"].median()) if some else float("nan"),
                "median_difference": float(np.median(differences)) if some else float("nan"),
                "ci95_low": low, "ci95_high": high,
                "mean_first": float(group["a"].mean()) if some else float("nan"),
                "mean_second": float(group["b"].mean()) if some else float("nan"),
                "mean_difference": float(np.mean(differences)) if some else float("nan"),
                "wilcoxon_p": p,
            })
    result = pd.DataFrame(rows)
    if len(result):
        result["p_holm"] = np.nan
        overall = result["organ"] == "all organs"
        for family in (overall, ~overall):
            result.loc[family, "p_holm"] = holm(result.loc[family, "wilcoxon_p"].to_numpy())
    return result


def distance_summary(table, metric: str = "hd95_mm"):
    """Per organ and domain: median and mean of a distance metric, how many cases carry the
    missed-organ penalty (the image diagonal), and whether those cases make up most of the mean
    (``penalty_share`` > 0.5: then the mean says how often the organ was missed, not how far off
    the boundaries were; read the median, or the mean without them)."""
    import pandas as pd

    rows = []
    for (organ, domain), group in scored_rows(table).groupby(["organ", "domain"], sort=False):
        values = group[metric].astype(float)
        penalised = group["edge_case"].isin(PENALISED)
        total = float(values.sum())
        share = float(values[penalised].sum()) / total if total > 0 else 0.0
        rows.append({
            "organ": organ, "domain": domain, "n": int(len(values)), "median": float(values.median()), "mean": float(values.mean()),
            "mean_without_penalised": float(values[~penalised].mean()) if (~penalised).any() else float("nan"),
            "penalised": int(penalised.sum()), "penalty_share": share, "mean_driven_by_penalty": bool(share > 0.5),
        })
    return pd.DataFrame(rows)


def nsd_resolution(table, tolerances_mm) -> list[dict]:
    """For each NSD tolerance and domain: the finest voxel size of the domain's scans, whether the
    tolerance is below it (then NSD counts only boundaries that coincide exactly, whatever the
    tolerance), and whether two tolerances give identical values."""
    findings = []
    scored = scored_rows(table)
    if "spacing_min_mm" not in scored:
        return findings
    columns = [f"nsd_{t:g}mm" for t in tolerances_mm if f"nsd_{t:g}mm" in scored]
    for domain, group in scored.groupby("domain", sort=False):
        finest = float(group["spacing_min_mm"].min())
        for tolerance in tolerances_mm:
            findings.append({"domain": domain, "tolerance_mm": float(tolerance), "finest_voxel_mm": finest,
                             "below_voxel": bool(tolerance < finest)})
        for a, b in zip(columns, columns[1:]):
            if np.allclose(group[a].to_numpy(float), group[b].to_numpy(float), equal_nan=True):
                findings.append({"domain": domain, "identical": (a, b), "finest_voxel_mm": finest})
    return findings


def reported_gap(table, reported: dict, metric: str = "dice"):
    """The model's reported score per domain next to its mean (and median) score here, over the
    organ cases scored in that domain."""
    import pandas as pd

    scored = _scored(table)
    rows = []
    for domain, value in reported.items():
        values = scored[scored["domain"] == domain][metric].astype(float)
        measured = float(values.mean())
        rows.append({"domain": domain, "reported": float(value), "measured": measured, "measured_median": float(values.median()),
                     "n_cases": int(len(values)), "gap": float(value) - measured})
    return pd.DataFrame(rows)
