"""Golden tests for the alias tables of annotation sources and for free-text name resolution."""

from __future__ import annotations

import pytest

from umd_dataset import UnknownNameError, load_schema
from umd_dataset.errors import UnknownLabelError
from umd_dataset.schema.names import name_index, normalize
from umd_dataset.schema.sources import list_sources, load_source

EXPECTED_SOURCES = {
    "totalsegmentator_total", "totalsegmentator_total_v1", "totalsegmentator_total_mr_v2_2_1", "totalsegmentator_total_mr_v2_5_0",
    "moose_clin_ct_organs_v2_1_7", "moose_clin_ct_organs_v2_6_3", "moose_clin_ct_cardiac_v2_2_29", "moose_clin_ct_cardiac_v2_6_3",
    "moose_clin_ct_digestive", "moose_clin_ct_lungs", "moose_clin_ct_peripheral_bones_v2_2_27",
    "moose_clin_ct_peripheral_bones_v2_6_3", "moose_clin_ct_puma_v2_2_39", "moose_clin_ct_puma_v2_4_8", "moose_clin_ct_puma_v2_4_10",
    "autopet_organ", "amos22", "btcv", "flare21", "flare22", "abdomenatlas",
}
EXPECTED_FAMILIES = {
    "totalsegmentator_total": 1, "totalsegmentator_total_v1": 1, "totalsegmentator_total_mr": 2, "moose_clin_ct_organs": 2,
    "moose_clin_ct_cardiac": 2, "moose_clin_ct_digestive": 1, "moose_clin_ct_lungs": 1, "moose_clin_ct_peripheral_bones": 2,
    "moose_clin_ct_puma": 3,
}


def test_every_named_source_has_a_table():
    from umd_dataset.schema.sources import families

    assert EXPECTED_SOURCES <= set(list_sources())
    assert {f: len(keys) for f, keys in families().items()} == EXPECTED_FAMILIES


@pytest.mark.parametrize("key", list_sources())
def test_table_is_complete_and_unambiguous(key):
    schema = load_schema()
    table = load_source(key)  # validates: each organ in exactly one of organs/unavailable, names exist, no name twice
    assert set(table.organs) | set(table.unavailable) == set(schema.slugs)
    assert not set(table.organs) & set(table.unavailable)
    assert table.reference and table.title
    lut = table.lookup_table(schema)
    for slug, names in table.organs.items():
        for name in names:
            assert lut[table.id_of(name)] == schema.organ(slug).id


@pytest.mark.parametrize("key", list_sources())
def test_laterality_is_never_swapped(key):
    """A source name under kidney_left says left (or is an abbreviation the index knows as left)."""
    table = load_source(key)
    index = name_index()
    for slug in ("kidney_left", "kidney_right"):
        side, other = slug.split("_")[1], {"left": "right", "right": "left"}[slug.split("_")[1]]
        for name in table.organs.get(slug, ()):
            words = normalize(name, index.vocabulary)
            assert side in words or index.resolve(name).organ == slug, (key, name)
            assert other not in words, (key, name)


@pytest.mark.parametrize(
    ("key", "label_id", "organ"),
    [
        ("totalsegmentator_total", 21, "urinary_bladder"),
        ("totalsegmentator_total", 5, "liver"),
        ("totalsegmentator_total", 3, "kidney_left"),
        ("totalsegmentator_total", 51, "heart"),
        ("totalsegmentator_total", 52, "aorta"),
        ("totalsegmentator_total", 90, "brain"),
        ("totalsegmentator_total", 10, "lung"),
        ("totalsegmentator_total", 4, None),  # gallbladder
        ("totalsegmentator_total_v1", 104, "urinary_bladder"),
        ("totalsegmentator_total_v1", 44, "heart"),  # heart_myocardium: a part of the heart
        ("totalsegmentator_total_v1", 7, "aorta"),
        ("totalsegmentator_total_mr_v2_5_0", 50, "brain"),
        ("totalsegmentator_total_mr_v2_2_1", 56, "brain"),
        ("moose_clin_ct_organs_v2_1_7", 4, None),  # gallbladder
        ("moose_clin_ct_organs_v2_6_3", 5, None),  # gallbladder, renumbered in 2.6.3
        ("moose_clin_ct_organs_v2_6_3", 3, "urinary_bladder"),
        ("moose_clin_ct_organs_v2_6_3", 7, "kidney_right"),
        ("amos22", 8, "aorta"),  # spelled 'arota' by AMOS
        ("amos22", 9, None),  # 'postcava': the inferior vena cava, not the aorta
        ("flare22", 13, "kidney_left"),
        ("autopet_organ", 12, "lung"),  # the second id of the right middle lobe
        ("btcv", 2, "kidney_right"),
    ],
)
def test_pinned_examples(key, label_id, organ):
    assert load_source(key).organ_of(label_id) == organ


def test_sources_state_what_they_cannot_provide():
    assert "brain" in load_source("amos22").unavailable
    v1 = load_source("totalsegmentator_total_v1")
    assert "heart" not in v1.labels.values()  # no single heart label in v1 ...
    assert set(v1.organs["heart"]) >= {"heart_myocardium", "heart_ventricle_left"}  # ... its parts form it
    assert "pulmonary_artery" not in v1.organs["heart"]
    assert "Kidneys" in load_source("moose_clin_ct_puma", version="2.4.10").lossy


def test_unknown_source_and_label():
    with pytest.raises(UnknownNameError, match="Did you mean 'totalsegmentator_total'"):
        load_source("totalsegmentator_totl")
    with pytest.raises(UnknownLabelError, match="Label id 300 is not in source totalsegmentator_total"):
        load_source("totalsegmentator_total").organ_of(300)


@pytest.mark.parametrize(
    ("name", "organ"),
    [
        ("Lt Kidney", "kidney_left"),
        ("L_kidney", "kidney_left"),
        ("kidney (left)", "kidney_left"),
        ("KIDNEY-L", "kidney_left"),
        ("left kidneys", "kidney_left"),
        ("RightKidney", "kidney_right"),
        ("Rt. kidney", "kidney_right"),
        ("Bladder", "urinary_bladder"),
        ("urinary bladder", "urinary_bladder"),
        ("Oesophagus", "esophagus"),
        ("Lungs", "lung"),
        ("right lung", "lung"),
        ("lung_middle_lobe_right", "lung"),
        ("heart_atrium_left", "heart"),
        ("liver_mask.nii.gz", "liver"),
        ("Large bowel", "colon"),
        ("arota", "aorta"),
        ("LK", "kidney_left"),
    ],
)
def test_free_text_names(name, organ):
    assert name_index().organ(name) == organ


@pytest.mark.parametrize(
    ("name", "kind"),
    [("gallbladder", "outside_schema"), ("Gall bladder", "outside_schema"), ("postcava", "outside_schema"),
     ("Kidneys", "lossy"), ("background", "background")],
)
def test_known_structures_outside_the_schema(name, kind):
    assert name_index().resolve(name).kind == kind


def test_unknown_name_raises_with_the_closest_organs():
    with pytest.raises(UnknownLabelError, match=r"'kidny lft' \(in masks/kidny lft\.nii\.gz\).*Closest organs: kidney_left"):
        name_index().resolve("kidny lft", where="masks/kidny lft.nii.gz")
    with pytest.raises(UnknownLabelError, match="aliases="):
        name_index().resolve("tumour")
