"""Evaluation: any model on the splits of a release, per organ and domain, with paired statistics,
plots and a report. See `umd_dataset.evaluation.runner.evaluate`."""

from __future__ import annotations

from umd_dataset.evaluation.runner import EvalConfig, EvalResult, evaluate, merge_results

__all__ = ["evaluate", "EvalConfig", "EvalResult", "merge_results"]
