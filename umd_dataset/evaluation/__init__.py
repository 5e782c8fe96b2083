"""The evaluation part: any model on the splits of a release, per organ and domain, with paired
statistics, plots and a report (`evaluate`).

- `case`: the model protocol (`Case`, automatic and promptable models, output checks);
- `prompts`: simulated prompts, seeded;
- `metrics`: Dice, NSD, HD95, ASSD on the surfels of DeepMind's reference;
- `surfels`: the loops under them, compiled with numba (surfels, exact nearest surfels);
- `adapters`: wrappers that make any model callable by `evaluate`, and the models of the paper;
- `protocol`: the UMD paper's protocol as a preset (its prompts, its reported scores);
- `baselines`: region growing, the noisy oracle, the demo's voxel classifier, the U-Net of the training example;
- `runner`: `evaluate`, resumable and sharded;
- `stats`: per organ x domain summaries and paired comparisons;
- `report`: Markdown and HTML report with plots.

The names below are resolved on first use, so that importing a submodule (``prompts`` for the
command line's help) does not import the runner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from umd_dataset.evaluation.runner import EvalConfig, EvalResult, evaluate, merge_results

__all__ = ["evaluate", "EvalConfig", "EvalResult", "merge_results"]


def __getattr__(name: str):
    if name in __all__:
        from umd_dataset.evaluation import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'umd_dataset.evaluation' has no attribute {name!r}")
