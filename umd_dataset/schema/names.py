"""Resolving free-text label names ("Lt Kidney", "L_kidney", "kidney (left)", "Bladder") to organs.

A name is reduced to a bag of normalized words: case, separators and word order do not matter;
laterality abbreviations (l, lt, left, sin; r, rt, right, dx) become ``left`` / ``right``; plurals
become singular; filler words (mask, seg, label) go. The bag is looked up among every phrase the
package knows: the schema's slugs, names and synonyms, and every name of every source table.
A name that belongs to a source but to no organ of the schema (gallbladder, duodenum) is a known
structure *outside* the schema; anything else is unknown and raises with the closest organs.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from umd_dataset.errors import InputNotFoundError, SchemaError, UnknownLabelError, spell
from umd_dataset.schema.organs import LabelSchema, load_schema
from umd_dataset.schema.sources import SourceTable, list_sources, load_source

__all__ = ["normalize", "Resolution", "NameIndex", "name_index", "table_from_dataset_json"]

_LEFT = {"left", "l", "lt", "lft", "sin", "sinister", "sinistra", "links"}
_RIGHT = {"right", "r", "rt", "rgt", "dx", "dexter", "dextra", "rechts"}
_FILLER = {"the", "of", "mask", "masks", "seg", "segmentation", "label", "labels", "gt", "roi", "structure"}
_SUFFIXES = re.compile(r"\.(nii\.gz|nii|nrrd|mha|mhd|dcm)$", re.I)

Kind = Literal["organ", "outside_schema", "lossy", "background"]


@dataclass(frozen=True)
class Resolution:
    """What a label name means.

    Attributes:
        name: the name as given.
        kind: ``organ`` (one of the schema), ``outside_schema`` (a known structure the schema does
            not have, e.g. gallbladder), ``lossy`` (merges organs the schema keeps apart) or
            ``background``.
        organ: the organ slug when `kind` is ``organ``.
        reason: for ``lossy`` and ``outside_schema``, why and where from.
    """

    name: str
    kind: Kind
    organ: str | None = None
    reason: str = ""


def _words(name: str) -> list[str]:
    text = _SUFFIXES.sub("", name.strip())
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)  # camelCase -> camel Case
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def normalize(name: str, vocabulary: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """The normalized, sorted bag of words of a label name.

    Example:
        >>> normalize("Lt_Kidney") == normalize("kidney (left)") == ("kidney", "left")
        True
    """
    words = []
    for word in _words(name):
        if word in _LEFT:
            word = "left"
        elif word in _RIGHT:
            word = "right"
        elif word in _FILLER:
            continue
        elif len(word) > 3:
            if word.endswith("ies") and word[:-3] + "y" in vocabulary:
                word = word[:-3] + "y"
            elif word.endswith("s") and word[:-1] in vocabulary:
                word = word[:-1]
        words.append(word)
    return tuple(sorted(words))


class NameIndex:
    """Every phrase known to the package, by normalized bag of words. Build with `name_index`."""

    def __init__(self, schema: LabelSchema, entries: list[tuple[str, Resolution]]) -> None:
        self.schema = schema
        self.vocabulary = frozenset(w for phrase, _ in entries for w in _words(phrase))
        table: dict[tuple[str, ...], Resolution] = {}
        conflicts: dict[tuple[str, ...], set] = {}
        for phrase, meaning in entries:
            key = normalize(phrase, self.vocabulary)
            if not key:
                continue
            previous = table.get(key)
            if previous is None or (previous.kind, previous.organ) == (meaning.kind, meaning.organ):
                table.setdefault(key, meaning)
            elif meaning.kind == "organ" and previous.kind != "organ":
                table[key] = meaning  # a phrase that names an organ somewhere is that organ
            elif previous.kind == "organ" and meaning.kind != "organ":
                pass
            else:
                conflicts.setdefault(key, {(previous.kind, previous.organ)}).add((meaning.kind, meaning.organ))
        if conflicts:
            raise SchemaError(f"Ambiguous label phrases in the alias tables: {conflicts}")
        self._table = table
        self._organ_phrases = {" ".join(k): m.organ for k, m in table.items() if m.kind == "organ"}

    def resolve(self, name: str, *, where: str = "") -> Resolution:
        """What `name` means; see `Resolution`.

        Raises:
            UnknownLabelError: the name is neither an organ nor a known structure; the message
                gives the closest organs and names the file (`where`) it came from.
        """
        key = normalize(name, self.vocabulary)
        found = self._table.get(key)
        if found is not None:
            return Resolution(name, found.kind, found.organ, found.reason)
        close = difflib.get_close_matches(" ".join(key), list(self._organ_phrases), n=6, cutoff=0.5)
        organs = list(dict.fromkeys(self._organ_phrases[c] for c in close))[:3]
        hint = f" Closest organs: {', '.join(organs)}." if organs else ""
        origin = f" (in {where})" if where else ""
        alias = spell(f"aliases={{{name!r}: '<organ slug>'}}", f"--alias '{name}=ORGAN'")
        drop = spell(f"drop=[{name!r}]", f"--drop '{name}'")
        raise UnknownLabelError(
            f"Unknown label name {name!r}{origin}: it is no organ of {self.schema.key} and no structure of the "
            f"known annotation sources.{hint} Map it explicitly with {alias}, "
            f"or leave it out with {drop}. Organs: {', '.join(self.schema.slugs)}."
        )

    def organ(self, name: str, *, where: str = "") -> str:
        """The organ slug a name means; raises unless it names an organ of the schema."""
        found = self.resolve(name, where=where)
        if found.kind != "organ":
            origin = f" (in {where})" if where else ""
            raise UnknownLabelError(f"Label {name!r}{origin} is not an organ of {self.schema.key}: {found.kind} {found.reason}".strip())
        return found.organ


@lru_cache(maxsize=None)
def name_index(schema_version: int | None = None) -> NameIndex:
    """The index over the schema and every shipped source table."""
    schema = load_schema(schema_version)
    entries: list[tuple[str, Resolution]] = []
    for organ in schema:
        organ_meaning = Resolution(organ.slug, "organ", organ.slug)
        meaning = organ.snomed_meaning if organ.laterality in (None, "both") else f"{organ.laterality} {organ.snomed_meaning}"
        phrases = [organ.slug, organ.name, meaning, *organ.synonyms]
        for phrase in phrases:
            entries.append((phrase, organ_meaning))
            if organ.laterality == "both":  # a paired organ kept as one label: each side is part of it
                entries += [(f"left {phrase}", organ_meaning), (f"right {phrase}", organ_meaning)]
    for key in list_sources():
        table = load_source(key, schema_version=schema_version)
        for label_id, name in table.labels.items():
            slug = table.name_to_organ.get(name)
            if slug is not None:
                entries.append((name, Resolution(name, "organ", slug)))
            elif name in table.lossy:
                entries.append((name, Resolution(name, "lossy", None, f"{table.lossy[name]} ({key})")))
            elif table.is_background(label_id):
                entries.append((name, Resolution(name, "background")))
            else:
                entries.append((name, Resolution(name, "outside_schema", None, f"a label of {key}")))
    return NameIndex(schema, entries)


def table_from_dataset_json(path, schema_version: int | None = None) -> SourceTable:
    """The table of an nnU-Net ``dataset.json`` (``labels``: name -> id), its names resolved to organs as free text.

    Raises:
        InputNotFoundError: the file does not exist.
        SchemaError: it is no valid dataset.json (no ``labels``).
        UnknownLabelError: a label name that is no organ and no known structure (map it with aliases).
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path} does not exist.")
    try:
        data = json.loads(path.read_text("utf-8"))
        labels = {int(v[0] if isinstance(v, list) else v): str(k) for k, v in data["labels"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise SchemaError(f"{path} is not an nnU-Net dataset.json with labels {{name: id}} ({type(error).__name__}: {error}).") from error
    index, schema = name_index(schema_version), load_schema(schema_version)
    organs: dict[str, list[str]] = {}
    lossy: dict[str, str] = {}
    for label_id, name in sorted(labels.items()):
        if label_id == 0:
            continue
        meaning = index.resolve(name, where=str(path))
        if meaning.kind == "organ":
            organs.setdefault(meaning.organ, []).append(name)
        elif meaning.kind == "lossy":
            lossy[name] = meaning.reason
    table = SourceTable(
        key=f"dataset.json:{path.parent.name}", title=f"nnU-Net dataset {data.get('name', path.parent.name)}", version="from dataset.json",
        reference=str(path), verified=True, note="label names read from the model's dataset.json and resolved as free text",
        output="multilabel", labels=labels, organs={k: tuple(v) for k, v in organs.items()},
        unavailable={o.slug: "not among the dataset's labels" for o in schema if o.slug not in organs},
        lossy=lossy,
    )
    table.validate(schema)
    return table
