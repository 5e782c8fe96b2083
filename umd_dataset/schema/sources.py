"""Alias tables of annotation sources: each source's own ids and names, and which of them form
each organ of the schema. Pure data from ``schema/sources/*.json``; imports nothing heavy.

Tools renumber their labels between releases (moosez 2.6.3 renumbered ``clin_ct_organs``;
TotalSegmentator's ``total_mr`` went from 56 to 50 classes in 2.5.0), so a table records the exact
tool versions whose released files it was checked against (`SourceTable.versions`). A *family*
(``moose_clin_ct_organs``) groups the tables of one tool model; where its ids changed, choosing a
table needs the version (``load_source("moose_clin_ct_organs", version="2.6.4")``), and a version
nobody checked is refused with the list of checked ones. An nnU-Net ``dataset.json`` (how moosez
3.x and every nnU-Net model ship their label names) reads into a table too
(`umd_dataset.schema.names.table_from_dataset_json`).

Example:
    >>> table = load_source("totalsegmentator_total")
    >>> table.organ_of(21)
    'urinary_bladder'
    >>> load_source("totalsegmentator_total_v1").id_of("urinary_bladder")
    104
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from umd_dataset.errors import SchemaError, SourceVersionError, UnknownLabelError, UnknownNameError, did_you_mean, spell
from umd_dataset.schema.organs import LabelSchema, load_schema

__all__ = ["SourceTable", "load_source", "list_sources", "families"]

_BACKGROUND_NAMES = {"background", "bg", "clear label", "none"}


@dataclass(frozen=True)
class SourceTable:
    """The label table of one annotation source and version, and its map onto the schema.

    Attributes:
        key: file name of the table, e.g. ``"totalsegmentator_total"``.
        title, version, reference, note: what the table is and where it was read from.
        family, tool, model: the tool model the table belongs to (``moose_clin_ct_organs``,
            ``moosez``, ``clin_ct_organs``); empty for datasets.
        versions: the tool versions whose released files hold exactly this table.
        compatible_versions, compatible_note: versions whose ids differ only for labels outside
            the schema (TotalSegmentator 2.0-2.1 ``total``: the ribs), and how.
        verified: True if read from the source's own files.
        output: ``"multilabel"``, ``"per_class_files"`` or ``"both"``.
        labels: source id -> source name, complete (every class of the source).
        organs: schema slug -> the source names that form it (many-to-one where the source is finer).
        unavailable: schema slug -> why the source cannot provide it.
        lossy: source name -> why it cannot be mapped although it holds schema organs
            (e.g. both kidneys in one label); harmonizing such a label raises unless dropped on purpose.
    """

    key: str
    title: str
    version: str
    reference: str
    verified: bool
    note: str
    output: str
    labels: Mapping[int, str]
    organs: Mapping[str, tuple[str, ...]]
    unavailable: Mapping[str, str]
    lossy: Mapping[str, str]
    family: str = ""
    tool: str = ""
    model: str = ""
    versions: tuple[str, ...] = ()
    compatible_versions: tuple[str, ...] = ()
    compatible_note: str = ""

    def covers(self, version: str) -> bool:
        """True if the table was checked against this tool version (exactly, or as compatible)."""
        return version in self.versions or version in self.compatible_versions

    @property
    def name_to_organ(self) -> dict[str, str]:
        return {name: slug for slug, names in self.organs.items() for name in names}

    def organ_of(self, label: int | str) -> str | None:
        """The schema organ a source label (id or name) belongs to, or None if it is outside the schema.

        Raises:
            UnknownLabelError: the id or name is not in this source's table.
        """
        name = self.name_of(label) if not isinstance(label, str) else label
        if name not in self.labels.values():
            raise UnknownLabelError(did_you_mean(name, self.labels.values(), f"label of source {self.key}"))
        return self.name_to_organ.get(name)

    def name_of(self, label_id: int) -> str:
        try:
            return self.labels[int(label_id)]
        except KeyError:
            raise UnknownLabelError(
                f"Label id {int(label_id)} is not in source {self.key} ({self.title}); its ids are "
                f"{min(self.labels)}..{max(self.labels)}. Is this the right source and version?"
            ) from None

    def id_of(self, name: str) -> int:
        for label_id, label_name in self.labels.items():
            if label_name == name:
                return label_id
        raise UnknownLabelError(did_you_mean(name, self.labels.values(), f"label of source {self.key}"))

    def is_background(self, label_id: int) -> bool:
        return int(label_id) == 0 or self.labels.get(int(label_id), "").lower() in _BACKGROUND_NAMES

    def lookup_table(self, schema: LabelSchema) -> np.ndarray:
        """``lut[source_id] = schema id`` (0 for background and labels outside the schema)."""
        lut = np.zeros(max(self.labels) + 1, dtype=np.uint8)
        for label_id, name in self.labels.items():
            slug = self.name_to_organ.get(name)
            if slug is not None:
                lut[label_id] = schema.organ(slug).id
        return lut

    def validate(self, schema: LabelSchema) -> None:
        """Check the table is complete and unambiguous against `schema`.

        Raises:
            SchemaError: listing every inconsistency found.
        """
        problems = []
        names = list(self.labels.values())
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            problems.append(f"names used by two ids: {duplicates}")
        covered = set(self.organs) | set(self.unavailable)
        for slug in schema.slugs:
            if (slug in self.organs) == (slug in self.unavailable):
                problems.append(f"organ {slug!r} must be in exactly one of 'organs' and 'unavailable'")
        unknown = sorted(covered - set(schema.slugs))
        if unknown:
            problems.append(f"organs not in schema {schema.key}: {unknown}")
        seen: dict[str, str] = {}
        for slug, members in self.organs.items():
            if not members:
                problems.append(f"organ {slug!r} maps to no source label")
            for name in members:
                if name not in names:
                    problems.append(f"organ {slug!r} lists {name!r}, which is not a label of the source")
                if name in seen:
                    problems.append(f"{name!r} is mapped to both {seen[name]!r} and {slug!r}")
                seen[name] = slug
        for name in self.lossy:
            if name not in names:
                problems.append(f"lossy label {name!r} is not a label of the source")
            if name in seen:
                problems.append(f"lossy label {name!r} is also mapped to {seen[name]!r}")
        if any(i < 0 or i > 255 for i in self.labels):
            problems.append("ids must lie in 0..255")
        if problems:
            raise SchemaError(f"Source table {self.key}: " + "; ".join(problems))


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in version.replace("-", ".").split("."))


@lru_cache(maxsize=None)
def list_sources() -> tuple[str, ...]:
    """Keys of every source table that ships with the package."""
    folder = resources.files("umd_dataset.schema").joinpath("sources")
    return tuple(sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json")))


@lru_cache(maxsize=None)
def families() -> dict[str, tuple[str, ...]]:
    """Family -> the keys of its tables, oldest first (tables of tools; datasets have none)."""
    grouped: dict[str, list[SourceTable]] = {}
    for key in list_sources():
        table = _read_table(key)
        if table.family:
            grouped.setdefault(table.family, []).append(table)
    return {f: tuple(t.key for t in sorted(ts, key=lambda t: _version_key(t.versions[0]))) for f, ts in sorted(grouped.items())}


def _read_table(key: str) -> SourceTable:
    text = resources.files("umd_dataset.schema").joinpath("sources", f"{key}.json").read_text("utf-8")
    data = json.loads(text)
    compatible = data.get("compatible_versions") or {}
    table = SourceTable(
        key=data["source"],
        title=data["title"],
        version=str(data["version"]),
        reference=data["reference"],
        verified=bool(data["verified"]),
        note=data.get("note", ""),
        output=data.get("output", "multilabel"),
        labels={int(k): str(v) for k, v in data["labels"].items()},
        organs={k: tuple(v) for k, v in data["organs"].items()},
        unavailable=dict(data.get("unavailable", {})),
        lossy=dict(data.get("lossy", {})),
        family=data.get("family", ""),
        tool=data.get("tool", ""),
        model=data.get("model", ""),
        versions=tuple(data.get("versions", ())),
        compatible_versions=tuple(compatible.get("versions", ())),
        compatible_note=compatible.get("note", ""),
    )
    if table.key != key:
        raise SchemaError(f"Source table file {key}.json declares source {table.key!r}")
    return table


def _checked_versions(keys) -> list[str]:
    tables = [_read_table(k) for k in keys]
    return sorted({v for t in tables for v in (*t.versions, *t.compatible_versions)}, key=_version_key)


@lru_cache(maxsize=None)
def load_source(key: str, *, version: str | None = None, schema_version: int | None = None) -> SourceTable:
    """Load and validate a source table: by its own key, or by its family and the tool's version.

    Args:
        key: a table key (see `list_sources`) or a family (``"moose_clin_ct_organs"``, see `families`).
        version: the version of the tool that wrote the labels (``"2.6.4"``). Needed for a family
            whose ids changed between versions; checked against the table's versions otherwise.
        schema_version: the label schema to validate against (default: the latest).

    Raises:
        UnknownNameError: no table or family has this key; the message lists the closest ones.
        SourceVersionError: the family's ids changed between versions and none was given, or the
            version was never checked (the message lists the checked ones).
    """
    groups = families()
    if key in groups and key not in list_sources():
        keys = groups[key]
        if version is None:
            if len(keys) > 1:
                raise SourceVersionError(
                    f"The label ids of {key} changed between versions of {_read_table(keys[0]).tool}: give the version that "
                    f"wrote your labels ({spell('source_version=', '--source-version')}). Checked versions: {', '.join(_checked_versions(keys))}."
                )
            table = _read_table(keys[0])
        else:
            matching = [k for k in keys if _read_table(k).covers(version)]
            if not matching:
                raise SourceVersionError(
                    f"{_read_table(keys[0]).tool} {version} was not checked for {key}: its label ids may differ from every "
                    f"table here. Checked versions: {', '.join(_checked_versions(keys))}. Read the ids from that version's "
                    "released files, or give the model's nnU-Net dataset.json."
                )
            table = _read_table(matching[0])
    elif key in list_sources():
        table = _read_table(key)
        if version is not None and table.versions and not table.covers(version):
            raise SourceVersionError(
                f"{table.tool} {version} was not checked for {key} (checked: {', '.join(_checked_versions([key]))})."
            )
    else:
        raise UnknownNameError(did_you_mean(key, sorted({*list_sources(), *groups}), "annotation source"))
    table.validate(load_schema(schema_version))
    return table
