"""Evaluation and prompt settings are checked when they are made, with "did you mean"."""

from __future__ import annotations

import pytest

from umd_dataset.errors import InvalidOptionError, UnknownNameError
from umd_dataset.evaluation import EvalConfig
from umd_dataset.evaluation.adapters import FunctionModel
from umd_dataset.evaluation.case import model_kind
from umd_dataset.evaluation.prompts import PromptConfig


@pytest.mark.parametrize(
    ("make", "error", "pattern"),
    [
        (lambda: PromptConfig(kind="pont"), UnknownNameError, r"Unknown prompt kind 'pont'\. Did you mean 'point'"),
        (lambda: PromptConfig(point="centre"), UnknownNameError, r"Unknown point rule 'centre'\. Did you mean 'center'"),
        (lambda: PromptConfig(kind="points", k=0), InvalidOptionError, "k .* at least 1"),
        (lambda: PromptConfig(iterations=-1), InvalidOptionError, "iterations"),
        (lambda: PromptConfig(kind="box", box_jitter_mm=-2), InvalidOptionError, "box_jitter_mm"),
        (lambda: EvalConfig(split="tset"), UnknownNameError, r"Unknown split 'tset'\. Did you mean 'test'"),
        (lambda: EvalConfig(domains=("ct", "petct/pet")), UnknownNameError, r"Unknown domain 'petct/pet'\. Did you mean 'petct_pet'"),
        (lambda: EvalConfig(domains=()), InvalidOptionError, "at least one evaluation domain"),
        (lambda: EvalConfig(organs=("livr",)), UnknownNameError, r"Unknown organ 'livr'\. Did you mean 'liver'"),
        (lambda: EvalConfig(tolerances_mm=(0.0,)), InvalidOptionError, "tolerances_mm"),
        (lambda: EvalConfig(timeout_s=0), InvalidOptionError, "timeout_s"),
        (lambda: EvalConfig(shard=(2, 2)), InvalidOptionError, "shard"),
        (lambda: FunctionModel(lambda case: None, kind="automatc"), UnknownNameError, r"Did you mean 'automatic'"),
    ],
)
def test_settings_are_checked_at_creation(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def test_defaults_come_from_the_schema():
    assert EvalConfig().domains == ("ct", "petct_pet", "mri", "petmri_pet")
    assert EvalConfig(domains=["mri"]).domains == ("mri",)


def test_a_model_of_an_unknown_kind_is_refused():
    class Odd:
        kind = "interactive"

    with pytest.raises(UnknownNameError, match=r"Unknown model kind 'interactive'.*'automatic', 'promptable'"):
        model_kind(Odd())
