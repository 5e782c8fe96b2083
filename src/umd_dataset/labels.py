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

__all__ = ["Organ", "LabelSchema", "load_schema", "SCHEMA_VERSIONS", "LATEST_SCHEMA_VERSION"]

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
        color: RGB display colour, 0-255.
        synonyms: other names a person may use for the organ.
    """

    id: int
    slug: str
    name: str
    laterality: Laterality
    snomed_code: str
    snomed_meaning: str
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
    laterality_codes: dict[str, tuple[str, str]] = field(default_factory=dict, compare=False)

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
            "laterality_codes": {k: {"code": c, "meaning": m} for k, (c, m) in self.laterality_codes.items()},
            "organs": [
                {
                    "id": o.id,
                    "slug": o.slug,
                    "name": o.name,
                    "laterality": o.laterality,
                    "snomed": {"code": o.snomed_code, "meaning": o.snomed_meaning},
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
                    color=tuple(int(c) for c in o["color"]),
                    synonyms=tuple(o.get("synonyms", ())),
                )
                for o in data["organs"]
            )
            codes = {k: (v["code"], v["meaning"]) for k, v in data.get("laterality_codes", {}).items()}
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
