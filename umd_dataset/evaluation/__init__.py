"""The evaluation part: any model on the splits of a release, per organ and domain, with paired
statistics, plots and a report (`evaluate`).

- `case`: the model protocol (`Case`, automatic and promptable models, output checks);
- `prompts`: simulated prompts, seeded;
- `metrics`: Dice, NSD, HD95, ASSD on the surfels of DeepMind's reference;
- `adapters`: wrappers that make any model callable by `evaluate`, and the models of the paper;
- `protocol`: the UMD paper's protocol as a preset (its prompts, its reported scores);
- `baselines`: region growing, the noisy oracle, the demo's voxel classifier, the U-Net of the training example;
- `runner`: `evaluate`, resumable and sharded;
- `stats`: per organ x domain summaries and paired comparisons;
- `report`: Markdown and HTML report with plots.
"""

from __future__ import annotations

from umd_dataset.evaluation.runner import EvalConfig, EvalResult, evaluate, merge_results

__all__ = ["evaluate", "EvalConfig", "EvalResult", "merge_results"]
