"""The label schema: canonical organs with stable ids, loaded from a versioned data file.

This module imports neither torch nor nibabel: the CLI, the loaders and the evaluator all read the
same `LabelSchema` object.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Literal

import numpy as np

from umd_dataset.errors import UMDError, UnknownNameError, did_you_mean

__all__ = [
    "Organ",
    "LabelSchema",
    "load_schema",
    "SCHEMA_VERSIONS",
    "LATEST_SCHEMA_VERSION",
    "SchemaConversion",
    "load_conversions",
    "convert_label_map",
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
            raise UMDError(f"Label schema {self.key}: organ ids must be 1..n in order, got {ids}")
        slugs = [o.slug for o in self.organs]
        if len(set(slugs)) != len(slugs):
            raise UMDError(f"Label schema {self.key}: duplicate organ slugs in {slugs}")
        for slug in slugs:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", slug):
                raise UMDError(f"Label schema {self.key}: slug {slug!r} is not lower_snake_case")

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
            raise UMDError(f"Malformed label schema data: {error!r}") from error

    def lookup_table(self, dtype: np.dtype | type = np.uint8) -> np.ndarray:
        """An array ``lut`` with ``lut[id] = id`` for every valid id and 0 elsewhere (256 entries)."""
        lut = np.zeros(256, dtype=dtype)
        lut[list(self.ids)] = self.ids
        return lut


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
            UMDError: naming the missing or unknown ids.
        """
        if (source.key, target.key) != (self.source, self.target):
            raise UMDError(f"Conversion {self.source}->{self.target} applied to schemas {source.key}->{target.key}.")
        missing = sorted(set(source.ids) - set(self.mapping))
        extra = sorted(set(self.mapping) - set(source.ids))
        bad = sorted(v for v in self.mapping.values() if v != 0 and v not in target.ids)
        if missing or extra or bad:
            raise UMDError(
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
        UMDError: no chain of conversions links the two schemas, a conversion is incomplete, or the
            label map holds values that are not ids of `source`.
    """
    labels = np.asarray(labels)
    if labels.size and int(labels.max()) > len(source):
        raise UMDError(f"Label map values above {len(source)} are not ids of {source.key}.")
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
        raise UMDError(f"No conversion from label schema {source.key} to {target.key} (known conversions: {listed}).")
    lut = np.arange(256, dtype=np.uint8)
    for conversion in paths[target.key]:
        if conversion.target not in known:
            raise UMDError(f"Schema {conversion.target} (a step from {source.key} to {target.key}) is unknown; pass it in schemas=.")
        conversion.validate(known[conversion.source], known[conversion.target])
        lut = conversion.lookup_table()[lut]
    return lut[labels]
