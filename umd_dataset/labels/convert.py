"""Converting a label map between label schema versions, through the explicit conversions that
ship with the schema (`umd_dataset.schema.organs.load_conversions`), chained into one lookup table.
"""

from __future__ import annotations

import numpy as np

from umd_dataset.errors import ConversionError
from umd_dataset.schema.organs import SCHEMA_VERSIONS, LabelSchema, SchemaConversion, load_conversions, load_schema

__all__ = ["convert_label_map"]


def convert_label_map(
    labels: np.ndarray,
    source: LabelSchema,
    target: LabelSchema,
    conversions: tuple[SchemaConversion, ...] | None = None,
    schemas: tuple[LabelSchema, ...] = (),
) -> np.ndarray:
    """Convert a label map written under one schema version to another, through explicit conversions.

    Conversions are chained when needed (v1 -> v2 -> v3), each validated against its two schemas,
    and composed into one lookup table, so the voxels are read once.

    Args:
        labels: the label map (ids of `source`).
        source, target: the two schemas.
        conversions: the conversions to search (default: those shipped, `load_conversions`).
        schemas: schemas of intermediate steps that do not ship with the package.

    Raises:
        ConversionError: no chain of conversions links the two schemas, a conversion is incomplete, or the
            label map holds values that are not ids of `source`.
    """
    labels = np.asarray(labels)
    invalid = source.count_voxels(labels).invalid
    if invalid:
        raise ConversionError(f"Label map values {list(invalid)} are not ids of {source.key}.")
    if source.key == target.key:
        return labels.copy()
    available = load_conversions() if conversions is None else conversions
    known = {s.key: s for s in (*(load_schema(v) for v in SCHEMA_VERSIONS), *schemas, source, target)}
    paths: dict[str, list[SchemaConversion]] = {source.key: []}
    frontier = [source.key]
    while frontier and target.key not in paths:
        key = frontier.pop(0)
        for conversion in available:
            if conversion.source == key and conversion.target not in paths:
                paths[conversion.target] = paths[key] + [conversion]
                frontier.append(conversion.target)
    if target.key not in paths:
        listed = ", ".join(f"{c.source}->{c.target}" for c in available) or "none"
        raise ConversionError(f"No conversion from label schema {source.key} to {target.key} (known conversions: {listed}).")
    lut = np.arange(256, dtype=np.uint8)
    for conversion in paths[target.key]:
        if conversion.target not in known:
            raise ConversionError(f"Schema {conversion.target} (a step from {source.key} to {target.key}) is unknown; pass it in schemas=.")
        conversion.validate(known[conversion.source], known[conversion.target])
        lut = conversion.lookup_table()[lut]
    return lut[labels]
