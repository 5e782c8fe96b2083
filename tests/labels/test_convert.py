"""Label maps converted between schema versions: explicit, complete, chained conversions only."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import schema_v2 as _v2
from umd_dataset.errors import ConversionError
from umd_dataset.labels.convert import convert_label_map
from umd_dataset.schema.organs import SchemaConversion, load_conversions, load_schema


UP = SchemaConversion("umd-v1", "umd-v2", {i: i for i in range(1, 14)}, "gallbladder added")
DOWN = SchemaConversion("umd-v2", "umd-v1", {**{i: i for i in range(1, 14)}, 14: 0}, "gallbladder dropped")


def test_conversion_between_versions_is_explicit_and_lossless_where_it_can_be():
    v1, v2 = load_schema(1), _v2()
    labels = np.array([[[0, 1, 9, 13]]], dtype=np.uint8)
    up = convert_label_map(labels, v1, v2, conversions=(UP, DOWN))
    assert np.array_equal(up, labels)
    with_gallbladder = up.copy()
    with_gallbladder[0, 0, 0] = 14
    down = convert_label_map(with_gallbladder, v2, v1, conversions=(UP, DOWN))
    assert down.tolist() == [[[0, 1, 9, 13]]]


def test_conversion_must_map_every_id():
    incomplete = SchemaConversion("umd-v1", "umd-v2", {i: i for i in range(1, 13)})
    with pytest.raises(ConversionError, match=r"source ids without a mapping \[13\]"):
        convert_label_map(np.zeros((1, 1, 1), np.uint8), load_schema(1), _v2(), conversions=(incomplete,))


def test_no_conversion_path():
    with pytest.raises(ConversionError, match="No conversion from label schema umd-v1 to umd-v2"):
        convert_label_map(np.zeros((1, 1, 1), np.uint8), load_schema(1), _v2())
    assert load_conversions() == ()  # umd-v1 is the first schema: nothing ships yet
    same = convert_label_map(np.ones((2, 2, 2), np.uint8), load_schema(1), load_schema(1))
    assert same.sum() == 8


def test_label_values_outside_the_source_schema_are_refused():
    with pytest.raises(ConversionError, match=r"values \[14\] are not ids of umd-v1"):
        convert_label_map(np.full((1, 1, 1), 14, np.uint8), load_schema(1), _v2(), conversions=(UP, DOWN))
