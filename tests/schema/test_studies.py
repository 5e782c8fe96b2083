"""Studies, scans, domains, comparisons and splits come from ``modalities.json`` and nowhere else."""

from __future__ import annotations

import pytest

from umd_dataset import UnknownNameError, modalities


def test_the_four_domains_of_the_paper_and_their_names():
    spec = modalities()
    assert spec.domain_keys == ("ct", "petct_pet", "mri", "petmri_pet")
    assert [d.name for d in spec.domains] == ["CT", "PET of PET/CT", "MRI", "PET of PET/MRI"]
    assert spec.domain_of("petmri", "pet").key == "petmri_pet"
    assert spec.domain("petct_pet").study == "petct"


def test_each_study_has_one_structural_and_one_functional_scan():
    spec = modalities()
    assert {k: (s.structural, s.functional) for k, s in spec.studies.items()} == {"petct": ("ct", "pet"), "petmri": ("mri", "pet")}
    assert [s.key for s in spec.scans.values() if s.functional] == ["pet"]
    assert spec.scan_of_modality("PT").key == "pet" and spec.scan_of_modality("US") is None


def test_paired_comparisons_are_data():
    assert [(c.first, c.second) for c in modalities().comparisons] == [("ct", "petct_pet"), ("mri", "petmri_pet"), ("ct", "mri")]


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda s: s.study("pet_ct"), r"Unknown study 'pet_ct'\. Did you mean 'petct'\?"),
        (lambda s: s.scan("PET"), r"Unknown scan 'PET'"),
        (lambda s: s.domain("petct/pet"), r"Unknown domain 'petct/pet'\. Did you mean 'petct_pet'"),
        (lambda s: s.check_split("tset"), r"Unknown split 'tset'\. Did you mean 'test'\?"),
        (lambda s: s.check_domains(["ct", "mr"]), r"Unknown domain 'mr'\. Did you mean 'mri'\?"),
    ],
)
def test_unknown_names_suggest_the_closest(call, pattern):
    with pytest.raises(UnknownNameError, match=pattern):
        call(modalities())
