"""Golden tests for label schema v1: the ids, slugs and codes are a published contract."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from umd_dataset import LabelSchema, UnknownNameError, load_schema

GOLDEN = [
    (1, "liver", "10200004", None),
    (2, "spleen", "78961009", None),
    (3, "kidney_left", "64033007", "left"),
    (4, "kidney_right", "64033007", "right"),
    (5, "pancreas", "15776009", None),
    (6, "stomach", "69695003", None),
    (7, "esophagus", "32849002", None),
    (8, "colon", "71854001", None),
    (9, "urinary_bladder", "89837001", None),
    (10, "heart", "80891009", None),
    (11, "aorta", "15825003", None),
    (12, "lung", "39607008", "both"),
    (13, "brain", "12738006", None),
]


def test_schema_v1_is_pinned():
    schema = load_schema(1)
    assert schema.key == "umd-v1"
    assert [(o.id, o.slug, o.snomed_code, o.laterality) for o in schema] == GOLDEN
    assert len({o.color for o in schema}) == len(schema), "display colours must differ"
    assert all(len(o.color) == 3 and all(0 <= c <= 255 for c in o.color) for o in schema)
    assert schema.laterality_codes["left"] == ("7771000", "Left", "G-A101")
    assert schema.organ("liver").srt_code == "T-62000" and schema.organ("brain").srt_code == "T-A0100"


def test_lookup_by_id_and_slug():
    schema = load_schema()
    assert schema.organ("urinary_bladder").id == 9
    assert schema.organ(np.int64(3)).slug == "kidney_left"
    assert schema.id_of("brain") == 13


@pytest.mark.parametrize(
    ("key", "pattern"),
    [
        ("livr", r"Unknown organ .*'livr'.*Did you mean 'liver'"),
        ("kidney-left", r"Did you mean 'kidney_left'"),
        (0, r"no organ id 0.*0 is background"),
        (14, r"no organ id 14; ids are 1\.\.13"),
    ],
)
def test_unknown_organ_names_the_value_and_suggests(key, pattern):
    with pytest.raises(UnknownNameError, match=pattern):
        load_schema().organ(key)


def test_round_trip_and_immutability():
    schema = load_schema()
    again = LabelSchema.from_dict(schema.to_dict())
    assert again == schema
    with pytest.raises(AttributeError):
        schema.organs[0].id = 5  # frozen


def test_unknown_schema_version():
    with pytest.raises(UnknownNameError, match="ships versions"):
        load_schema(99)


def test_lookup_table_maps_ids_to_themselves():
    lut = load_schema().lookup_table()
    assert lut[:14].tolist() == list(range(14)) and lut[14:].max() == 0


def test_schema_modules_import_nothing_heavy():
    code = (
        "import sys, umd_dataset.schema, umd_dataset.schema.organs, umd_dataset.schema.studies, umd_dataset.schema.sources, umd_dataset.schema.names, umd_dataset.errors;"
        "heavy = [m for m in ('torch', 'nibabel', 'torchio', 'datasets', 'monai', 'pyarrow') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("shape", [(5, 6, 7), (1,), (0,), (64, 64, 65)])
def test_voxel_counts_equal_a_bincount_for_every_layout_and_value(shape):
    """uint8 maps are counted two voxels at a time (issue 13: five counts of one study took 0.6 s of an
    ingest); the counts and the invalid values are a plain bincount's, odd sizes, F order, strides and
    bool masks included."""
    import numpy as np

    schema = load_schema()
    rng = np.random.default_rng(sum(shape))
    for top in (14, 40, 256):
        values = rng.integers(0, top, size=shape, dtype=np.uint8)
        for array in (values, np.asfortranarray(values), values[::2], values.astype(np.int16)):
            counted = schema.count_voxels(array)
            expected = np.bincount(np.asarray(array, dtype=np.int64).ravel(), minlength=256)
            assert counted.by_id == tuple(int(c) for c in expected[: len(schema) + 1])
            assert counted.invalid == tuple(int(v) for v in np.flatnonzero(expected[len(schema) + 1 :]) + len(schema) + 1)
    mask = rng.random(shape) > 0.5
    assert schema.count_voxels(mask).by_id[:2] == (int((~mask).sum()), int(mask.sum()))
