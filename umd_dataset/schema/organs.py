"""The label schema: canonical organs with stable ids, loaded from versioned data files, and the
explicit id maps between schema versions.

This module imports neither torch nor nibabel: the CLI, the loaders and the evaluator all read the
same `LabelSchema` object. `LabelSchema.count_voxels` is the one place where the voxels of a label
map are counted per organ and checked against the schema's ids.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Literal

import numpy as np

from umd_dataset.errors import ConversionError, MaskValueError, SchemaError, UnknownNameError, did_you_mean

__all__ = [
    "Organ",
    "LabelSchema",
    "VoxelCounts",
    "load_schema",
    "SCHEMA_VERSIONS",
    "LATEST_SCHEMA_VERSION",
    "SchemaConversion",
    "load_conversions",
]

Laterality = Literal["left", "right", "both"] | None

#: Schema versions that ship with the package, mapped to their data file.
SCHEMA_VERSIONS: dict[int, str] = {1: "labels_v1.json"}
LATEST_SCHEMA_VERSION = max(SCHEMA_VERSIONS)


@dataclass(frozen=True)
class Organ:
    """One canonical organ of a label schema.

    Attributes:
        id: integer value of the organ in label maps (1..n; 0 is background).
        slug: stable machine name, e.g. ``"kidney_left"``.
        name: display name, e.g. ``"Left kidney"``.
        laterality: ``"left"``, ``"right"``, ``"both"`` (a paired organ as one label) or None.
        snomed_code: SNOMED CT code of the anatomical structure.
        snomed_meaning: SNOMED CT meaning of that code.
        srt_code: the legacy SNOMED RT code of the same concept (older DICOM SEG files use it).
        color: RGB display colour, 0-255.
        synonyms: other names a person may use for the organ.
    """

    id: int
    slug: str
    name: str
    laterality: Laterality
    snomed_code: str
    snomed_meaning: str
    srt_code: str
    color: tuple[int, int, int]
    synonyms: tuple[str, ...] = ()

    @property
    def concept(self) -> str:
        """The organ as a concept, stable across schema versions: its SNOMED CT code, with
        ``:<laterality>`` for a lateral or paired organ (``"64033007:left"``)."""
        return f"{self.snomed_code}:{self.laterality}" if self.laterality else self.snomed_code


@dataclass(frozen=True)
class LabelSchema:
    """An immutable, versioned set of organs.

    Example:
        >>> schema = load_schema()
        >>> schema.organ("liver").id
        1
        >>> schema.organ(9).slug
        'urinary_bladder'
    """

    name: str
    version: int
    organs: tuple[Organ, ...]
    laterality_codes: dict[str, tuple[str, str, str]] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        ids = [o.id for o in self.organs]
        if ids != list(range(1, len(ids) + 1)):
            raise SchemaError(f"Label schema {self.key}: organ ids must be 1..n in order, got {ids}")
        slugs = [o.slug for o in self.organs]
        if len(set(slugs)) != len(slugs):
            raise SchemaError(f"Label schema {self.key}: duplicate organ slugs in {slugs}")
        for slug in slugs:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", slug):
                raise SchemaError(f"Label schema {self.key}: slug {slug!r} is not lower_snake_case")

    @property
    def key(self) -> str:
        """``"<name>-v<version>"``, as written in release descriptors."""
        return f"{self.name}-v{self.version}"

    @property
    def slugs(self) -> tuple[str, ...]:
        return tuple(o.slug for o in self.organs)

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(o.id for o in self.organs)

    def __len__(self) -> int:
        return len(self.organs)

    def __iter__(self):
        return iter(self.organs)

    def organ(self, key: str | int) -> Organ:
        """The organ with this slug or id.

        Raises:
            UnknownNameError: no organ has this slug or id; the message lists the closest slugs.
        """
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if 1 <= int(key) <= len(self.organs):
                return self.organs[int(key) - 1]
            raise UnknownNameError(
                f"Label schema {self.key} has no organ id {int(key)}; ids are 1..{len(self.organs)} "
                "(0 is background)."
            )
        for organ in self.organs:
            if organ.slug == key:
                return organ
        raise UnknownNameError(did_you_mean(str(key), self.slugs, f"organ in label schema {self.key}"))

    def id_of(self, key: str | int) -> int:
        return self.organ(key).id

    def to_dict(self) -> dict:
        """The schema as written to a release's ``labels.json`` (same shape as the shipped file)."""
        return {
            "name": self.name,
            "version": self.version,
            "laterality_codes": {k: {"code": c, "meaning": m, "srt": r} for k, (c, m, r) in self.laterality_codes.items()},
            "organs": [
                {
                    "id": o.id,
                    "slug": o.slug,
                    "name": o.name,
                    "laterality": o.laterality,
                    "snomed": {"code": o.snomed_code, "meaning": o.snomed_meaning, "srt": o.srt_code},
                    "color": list(o.color),
                    "synonyms": list(o.synonyms),
                }
                for o in self.organs
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> LabelSchema:
        """Build a schema from the dictionary form of `to_dict` (a release's ``labels.json``)."""
        try:
            organs = tuple(
                Organ(
                    id=int(o["id"]),
                    slug=str(o["slug"]),
                    name=str(o["name"]),
                    laterality=o.get("laterality"),
                    snomed_code=str(o["snomed"]["code"]),
                    snomed_meaning=str(o["snomed"]["meaning"]),
                    srt_code=str(o["snomed"].get("srt", "")),
                    color=tuple(int(c) for c in o["color"]),
                    synonyms=tuple(o.get("synonyms", ())),
                )
                for o in data["organs"]
            )
            codes = {k: (v["code"], v["meaning"], v.get("srt", "")) for k, v in data.get("laterality_codes", {}).items()}
            return cls(name=str(data["name"]), version=int(data["version"]), organs=organs, laterality_codes=codes)
        except (KeyError, TypeError, ValueError) as error:
            raise SchemaError(f"Malformed label schema data: {error!r}") from error

    def lookup_table(self, dtype: np.dtype | type = np.uint8) -> np.ndarray:
        """An array ``lut`` with ``lut[id] = id`` for every valid id and 0 elsewhere (256 entries)."""
        lut = np.zeros(256, dtype=dtype)
        lut[list(self.ids)] = self.ids
        return lut

    def count_voxels(self, labels: np.ndarray) -> VoxelCounts:
        """Voxels of each organ in a label map, and the values that are no id of this schema.

        One pass over the voxels (`numpy.bincount`; uint8 and bool maps two voxels at a time,
        `_count_bytes`). Negative values are reported as invalid.

        Raises:
            MaskValueError: the array is not an integer or bool array.
        """
        values = np.asarray(labels)
        if values.dtype == bool:
            values = values.view(np.uint8)
        if values.dtype.kind not in "ui":
            raise MaskValueError(f"A label map must be an integer array, got {values.dtype}.")
        flat = values.ravel(order="K")
        negative: tuple[int, ...] = ()
        if values.dtype.kind == "i" and flat.size and flat.min() < 0:
            negative = tuple(int(v) for v in np.unique(flat[flat < 0]))
            flat = flat[flat >= 0]
        if flat.dtype == np.uint8:
            counts = _count_bytes(flat)
        else:
            counts = np.zeros(max(len(self) + 1, 1), dtype=np.int64)
            for start in range(0, flat.size, 1 << 22):  # in blocks: bincount makes an intp copy of what it counts
                part = np.bincount(flat[start : start + (1 << 22)])
                if len(part) > len(counts):
                    counts = np.concatenate([counts, np.zeros(len(part) - len(counts), np.int64)])
                counts[: len(part)] += part
        above = tuple(int(v) for v in np.flatnonzero(counts[len(self) + 1 :]) + len(self) + 1)
        return VoxelCounts(self, tuple(int(c) for c in counts[: len(self) + 1]), negative + above)


def _count_bytes(flat: np.ndarray) -> np.ndarray:
    """How often each value 0..255 occurs in a contiguous uint8 array, counted two voxels at a time:
    its bytes read as uint16 pairs go into 65536 bins, and a value's count is the sum of its row and
    column of the pair table (twice as fast as a bincount of the bytes, whose intp copy dominates)."""
    counts = np.zeros(256, dtype=np.int64)
    even = flat.size - flat.size % 2
    if flat.size % 2:
        counts[flat[-1]] += 1
    pairs = np.ascontiguousarray(flat[:even]).view(np.uint16)
    table = np.zeros(1 << 16, dtype=np.int64)
    for start in range(0, pairs.size, 1 << 22):
        table += np.bincount(pairs[start : start + (1 << 22)], minlength=1 << 16)
    table = table.reshape(256, 256)
    return counts + table.sum(axis=0) + table.sum(axis=1)


@dataclass(frozen=True)
class VoxelCounts:
    """What `LabelSchema.count_voxels` found in a label map.

    Attributes:
        schema: the schema the ids belong to.
        by_id: voxel count of every id, 0 (background) to ``len(schema)``.
        invalid: values present that are no id of the schema (sorted; empty when the map is valid).
    """

    schema: LabelSchema = field(repr=False)
    by_id: tuple[int, ...]
    invalid: tuple[int, ...] = ()

    @property
    def present(self) -> dict[str, int]:
        """Slug -> voxel count of every organ with at least one voxel, in id order."""
        return {o.slug: self.by_id[o.id] for o in self.schema if self.by_id[o.id] > 0}

    def of(self, organ: str | int) -> int:
        return self.by_id[self.schema.organ(organ).id]


@lru_cache(maxsize=None)
def load_schema(version: int | None = None) -> LabelSchema:
    """Load a label schema that ships with the package.

    Args:
        version: schema version; None means the latest (`LATEST_SCHEMA_VERSION`).

    Raises:
        UnknownNameError: the version does not exist in this package.
    """
    version = LATEST_SCHEMA_VERSION if version is None else int(version)
    if version not in SCHEMA_VERSIONS:
        raise UnknownNameError(
            f"Unknown label schema version {version}; this package ships versions "
            f"{sorted(SCHEMA_VERSIONS)}. Upgrade umd-dataset for newer ones."
        )
    text = resources.files("umd_dataset.schema").joinpath(SCHEMA_VERSIONS[version]).read_text("utf-8")
    return LabelSchema.from_dict(json.loads(text))


@dataclass(frozen=True)
class SchemaConversion:
    """An explicit map from the ids of one schema version to those of another.

    Attributes:
        source, target: schema keys, e.g. ``"umd-v1"`` and ``"umd-v2"``.
        mapping: every id of the source schema -> an id of the target (0 drops the organ, and must
            be written down like any other mapping).
        note: why the schema changed.
    """

    source: str
    target: str
    mapping: dict[int, int]
    note: str = ""

    def validate(self, source: LabelSchema, target: LabelSchema) -> None:
        """The mapping covers every source id and points only at target ids.

        Raises:
            ConversionError: naming the missing or unknown ids.
        """
        if (source.key, target.key) != (self.source, self.target):
            raise ConversionError(f"Conversion {self.source}->{self.target} applied to schemas {source.key}->{target.key}.")
        missing = sorted(set(source.ids) - set(self.mapping))
        extra = sorted(set(self.mapping) - set(source.ids))
        bad = sorted(v for v in self.mapping.values() if v != 0 and v not in target.ids)
        if missing or extra or bad:
            raise ConversionError(
                f"Conversion {self.source}->{self.target}: source ids without a mapping {missing}, "
                f"mapped ids not in {self.source} {extra}, target ids not in {self.target} {bad}. "
                "Every id must be mapped explicitly (0 to drop it)."
            )

    def lookup_table(self) -> np.ndarray:
        lut = np.zeros(256, dtype=np.uint8)
        for old, new in self.mapping.items():
            lut[old] = new
        return lut

    @classmethod
    def from_dict(cls, data: dict) -> SchemaConversion:
        return cls(str(data["from"]), str(data["to"]), {int(k): int(v) for k, v in data["mapping"].items()}, data.get("note", ""))


@lru_cache(maxsize=None)
def load_conversions() -> tuple[SchemaConversion, ...]:
    """The conversions between schema versions that ship with the package (``schema/conversions.json``)."""
    text = resources.files("umd_dataset.schema").joinpath("conversions.json").read_text("utf-8")
    return tuple(SchemaConversion.from_dict(c) for c in json.loads(text)["conversions"])
