"""The schema part: pure data and its loaders, importing nothing heavy (no torch, nibabel or pandas).

- `organs`: the label schema versions (``labels_v<N>.json``): organs, ids, SNOMED CT codes,
  laterality, colours, synonyms; the explicit id maps between versions (``conversions.json``);
- `studies`: studies, scans and their roles, evaluation domains, paired comparisons, splits
  (``modalities.json``);
- `sources`: the alias table of every annotation source and version (``sources/*.json``);
- `names`: free-text label names ("Lt Kidney") resolved to organs.
"""

from __future__ import annotations

from umd_dataset.schema.names import NameIndex, Resolution, name_index, normalize
from umd_dataset.schema.organs import LATEST_SCHEMA_VERSION, LabelSchema, Organ, VoxelCounts, load_schema
from umd_dataset.schema.sources import SourceTable, list_sources, load_source
from umd_dataset.schema.studies import Modalities, modalities

__all__ = [
    "LabelSchema", "Organ", "VoxelCounts", "load_schema", "LATEST_SCHEMA_VERSION", "Modalities", "modalities",
    "SourceTable", "load_source", "list_sources", "NameIndex", "Resolution", "name_index", "normalize",
]
