"""The UMD paper's protocol as a preset: for a model of the registry, the prompt the paper gave it,
Dice over the 13 organs in the four domains, and the mean Dice the paper reported for it.

What the preset fixes (`paper_config`):

- the prompt of the registry's ``paper`` entry: a class id (VISTA3D), the organ's name and the
  modality (SAT-Pro), one point (nnInteractive, SAM-Med3D-turbo; SegVol with the organ's name as
  text too), none (nnU-Net);
- the point rule: ``random``, one uniformly drawn voxel of the organ, seed 233. The paper's own
  methods text is not available here; its first author's related evaluation (SegAnyPET) uses
  SAM-Med3D's script (``utils/infer_utils.py``, ``random_sample_next_click``: a uniformly random
  ground-truth voxel, ``np.random`` seeded with 233), so that is the rule used. The voxels drawn
  here are not the same as theirs (another generator), and a random voxel can lie on an organ's
  rim; ``center`` (the centre of the largest inscribed sphere) is the stable alternative
  (`PromptConfig(point="center")`);
- every organ and every domain, the ``test`` split (the paper's nnU-Net baseline is trained on
  other subjects), one prompt round;
- the reported scores: `umd_dataset.evaluation.adapters.base.reported_scores` (package data,
  marked as reported by the paper and read from a secondary summary).
"""

from __future__ import annotations

from dataclasses import replace

from umd_dataset.errors import InvalidOptionError, check_choice
from umd_dataset.evaluation.adapters.base import adapter_spec, reported_scores, reported_source
from umd_dataset.evaluation.prompts import PromptConfig
from umd_dataset.schema.studies import modalities

__all__ = ["PROTOCOLS", "PAPER_SEED", "paper_config", "protocol_config"]

PROTOCOLS = ("paper",)
#: the seed of SAM-Med3D's evaluation script (``validate_paired_img_gt(..., seed=233)``)
PAPER_SEED = 233


def paper_config(key: str, config):
    """(config, reported scores, note) of the paper's protocol for the adapter `key`: `config` (an
    `EvalConfig`) with what the protocol fixes replaced.

    Raises:
        UnknownNameError: `key` is no adapter of the registry.
        InvalidOptionError: the paper did not evaluate that model.
    """
    spec = adapter_spec(key)
    if spec.paper is None:
        raise InvalidOptionError(f"The UMD paper did not evaluate {spec.title}: there is no paper protocol for it (leave out --protocol).")
    paper = spec.paper
    prompt = config.prompt
    if paper["prompt"] is not None:
        prompt = PromptConfig(kind=paper["prompt"], point=paper["point"] or "center", seed=PAPER_SEED)
    config = replace(config, split="test", organs=None, prompt=prompt, domains=modalities().domain_keys)
    note = (f"The UMD paper's protocol for {spec.title}: {paper['why']}"
            + (f"; point rule {paper['point']} (seed {PAPER_SEED})" if paper["point"] else "")
            + f". Reported scores: {reported_source()}.")
    return config, reported_scores(paper["row"]), note


def protocol_config(protocol: str, key: str, config):
    """(config, reported, note) of a named protocol (``paper``) for the adapter `key`."""
    check_choice(protocol, PROTOCOLS, "protocol")
    return paper_config(key, config)
