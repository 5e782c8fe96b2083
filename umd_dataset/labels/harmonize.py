"""Harmonization: any annotation source onto the release's label schema, with a provenance record.

Three inputs, one result (`Harmonized`: a uint8 label map with canonical ids, its affine, and a
`Provenance` record):

- a multi-label map plus its source (`harmonize_label_map`): one lookup-table pass over the voxels;
  TotalSegmentator ``--ml`` files carry their label names in a NIfTI header extension, which is read
  and checked against the source table;
- a folder (or mapping) of one binary mask per structure (`harmonize_masks`), named by the source's
  names or by free text ("Lt Kidney");
- a DICOM SEG file (`harmonize_dicom_seg`), matched by coded concept (SNOMED CT or SNOMED RT codes
  with laterality) before its segment label.

Declared behaviours (`HarmonizeOptions`), each reported in the provenance and never silent:

========================================  ==============================================================
case                                      behaviour
========================================  ==============================================================
label of a structure outside the schema   left out, recorded with its voxel count (``outside_schema``)
unknown label                             `UnknownLabelError` naming file and label (``unknown="drop"``
                                          leaves it out, recorded)
label merging organs (both kidneys)       `LossyLabelError`, unless listed in ``drop``
two organs claiming a voxel               ``overlap="error"``: `LabelOverlapError`; ``"smallest"`` /
                                          ``"largest"``: the organ of smaller / larger volume wins; a
                                          list of slugs: earlier wins. Never file order.
mask on another grid than the target      `GridMismatchError` naming both grids
mask with values other than 0 and 1       `MaskValueError` naming the file and values (never cast)
empty mask                                organ recorded absent (``empty="error"`` raises)
========================================  ==============================================================
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from umd_dataset.errors import (
    EmptyOrganError,
    GridMismatchError,
    InputNotFoundError,
    LabelInputError,
    LabelOverlapError,
    LossyLabelError,
    MaskValueError,
    UnknownLabelError,
    UnknownNameError,
    check_choice,
    did_you_mean,
    spell,
)
from umd_dataset.io.files import read_json, write_json
from umd_dataset.io.geometry import Geometry, support_box
from umd_dataset.io.nifti import load_nifti, nifti_label_names, to_c_order, write_nifti
from umd_dataset.schema.names import Resolution, name_index, table_from_dataset_json
from umd_dataset.schema.organs import SCHEMA_VERSIONS, LabelSchema, load_schema
from umd_dataset.schema.sources import SourceTable, families, load_source

__all__ = [
    "HarmonizeOptions",
    "LabelRecord",
    "OverlapRecord",
    "Provenance",
    "Harmonized",
    "harmonize",
    "harmonize_label_map",
    "harmonize_masks",
    "harmonize_dicom_seg",
    "read_provenance",
]

OverlapPolicy = Literal["error", "smallest", "largest"] | Sequence[str]
OVERLAP_POLICIES = ("error", "smallest", "largest")


@dataclass(frozen=True)
class HarmonizeOptions:
    """How harmonization treats the cases of the module's table.

    Attributes:
        overlap: ``"error"``, ``"smallest"``, ``"largest"``, or a priority list of organ slugs
            (earlier wins; organs not listed rank after, by id).
        empty: ``"absent"`` (record the organ as absent) or ``"error"``.
        unknown: ``"error"`` or ``"drop"`` (leave unknown labels out, recorded).
        drop: source labels (names, or ids as strings) to leave out on purpose.
        aliases: label name -> organ slug, for names the package does not know.
        fractional_threshold: DICOM SEG FRACTIONAL threshold (fraction of the maximum).
    """

    overlap: OverlapPolicy = "error"
    empty: Literal["absent", "error"] = "absent"
    unknown: Literal["error", "drop"] = "error"
    drop: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    fractional_threshold: float = 0.5

    def __post_init__(self) -> None:
        """Every value is checked here, when the options are made, with the closest valid values.

        Raises:
            UnknownNameError: an unknown policy, or an organ slug (in `overlap` or `aliases`) that
                no shipped schema version has.
        """
        slugs = sorted({o.slug for version in SCHEMA_VERSIONS for o in load_schema(version)})
        if isinstance(self.overlap, str):
            check_choice(self.overlap, OVERLAP_POLICIES, "overlap policy (or give a list of organ slugs, earlier wins)")
        else:
            object.__setattr__(self, "overlap", tuple(self.overlap))
            for slug in self.overlap:
                check_choice(slug, slugs, "organ in the overlap priority list")
        check_choice(self.empty, ("absent", "error"), "empty-mask policy")
        check_choice(self.unknown, ("error", "drop"), "unknown-label policy")
        for name, slug in self.aliases.items():
            if slug not in slugs:
                raise UnknownNameError(did_you_mean(slug, slugs, f"organ for the alias of {name!r}"))
        object.__setattr__(self, "drop", tuple(str(d) for d in self.drop))

    def policy(self) -> dict:
        data = asdict(self)
        data["overlap"] = self.overlap if isinstance(self.overlap, str) else list(self.overlap)
        data["drop"] = list(self.drop)
        data["aliases"] = dict(self.aliases)
        return data


@dataclass
class LabelRecord:
    """One source label and what became of it.

    Attributes:
        name: source label name (or segment label); ``source_id`` its id, where it has one.
        file: the file it came from.
        status: ``mapped``, ``outside_schema``, ``dropped`` (on purpose), ``unknown_dropped``,
            ``background`` or ``empty``.
        organ: the organ it was mapped to (``mapped``, ``empty``).
        voxels: its voxel count in the input; None for a mask file outside the schema, which is
            not read (a TotalSegmentator folder holds about a hundred of them).
    """

    name: str
    status: str
    voxels: int | None
    organ: str | None = None
    source_id: int | None = None
    file: str | None = None
    note: str = ""


@dataclass
class OverlapRecord:
    """Voxels claimed by two organs, and which one got them."""

    organs: tuple[str, str]
    voxels: int
    assigned_to: str
    files: tuple[str, ...] = ()


@dataclass
class Provenance:
    """Which source labels went into which organ, overlaps and how they were resolved, what is absent."""

    schema: str
    source: str | None
    inputs: list[str]
    policy: dict
    labels: list[LabelRecord] = field(default_factory=list)
    overlaps: list[OverlapRecord] = field(default_factory=list)
    organ_voxels: dict[str, int] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Provenance:
        data = dict(data)
        data["labels"] = [LabelRecord(**r) for r in data.get("labels", [])]
        data["overlaps"] = [OverlapRecord(tuple(o["organs"]), o["voxels"], o["assigned_to"], tuple(o.get("files", ()))) for o in data.get("overlaps", [])]
        return cls(**data)

    def summary(self) -> str:
        mapped = [r for r in self.labels if r.status == "mapped"]
        left_out = [r for r in self.labels if r.status in ("outside_schema", "dropped", "unknown_dropped")]
        lines = [f"{len(self.organ_voxels)} organs from {len(mapped)} source labels ({self.source or 'free text'} -> {self.schema})"]
        for organ, voxels in self.organ_voxels.items():
            members = ", ".join(r.name for r in mapped if r.organ == organ)
            lines.append(f"  {organ:<16} {voxels:>10} voxels  <- {members}")
        if left_out:
            lines.append("left out: " + ", ".join(
                f"{r.name} ({r.status}" + (f", {r.voxels} voxels)" if r.voxels is not None else ", not read)") for r in left_out
            ))
        for overlap in self.overlaps:
            lines.append(f"overlap {overlap.organs[0]} / {overlap.organs[1]}: {overlap.voxels} voxels -> {overlap.assigned_to}")
        if self.absent:
            lines.append("absent: " + ", ".join(self.absent))
        if self.unavailable:
            lines.append("not provided by the source: " + ", ".join(self.unavailable))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class Harmonized:
    """A canonical label map (uint8, schema ids) with its affine and provenance."""

    labels: np.ndarray
    affine: np.ndarray
    provenance: Provenance

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.labels.shape, self.affine)

    def save(self, path: str | os.PathLike, provenance_path: str | os.PathLike | None = None) -> None:
        """Write the label map (NIfTI) and, if asked, the provenance (JSON), atomically."""
        write_nifti(path, self.labels, self.affine)
        if provenance_path is not None:
            write_json(provenance_path, self.provenance.to_dict())


# ----------------------------------------------------------------------------------------------
# meanings of source labels


def _meaning(
    name: str,
    source: SourceTable | None,
    options: HarmonizeOptions,
    schema: LabelSchema,
    *,
    where: str,
    label_id: int | None = None,
) -> Resolution:
    """What a source label means, after the user's aliases and drops."""
    if name in options.drop or (label_id is not None and str(label_id) in options.drop):
        return Resolution(name, "dropped", None, "listed in drop")
    if name in options.aliases:
        return Resolution(name, "organ", schema.organ(options.aliases[name]).slug, "alias given by the user")
    if source is not None:
        if label_id is not None and source.is_background(label_id):
            return Resolution(name, "background")
        if name not in source.labels.values():
            if options.unknown == "drop":
                return Resolution(name, "unknown_dropped", None, f"not a label of {source.key}")
            raise UnknownLabelError(
                f"Label {name!r} (in {where}) is not a label of source {source.key} ({source.title}). "
                f"Check the source and its version, or map the name with {spell('aliases=', '--alias NAME=ORGAN')} / leave it out with {spell('drop=', '--drop NAME')}."
            )
        if name in source.lossy:
            return Resolution(name, "lossy", None, source.lossy[name])
        slug = source.name_to_organ.get(name)
        return Resolution(name, "organ", slug) if slug else Resolution(name, "outside_schema", None, f"a label of {source.key}")
    try:
        return name_index(schema.version).resolve(name, where=where)
    except UnknownLabelError:
        if options.unknown == "drop":
            return Resolution(name, "unknown_dropped", None, "unknown name")
        raise


def _record_meaning(meaning: Resolution, name: str, voxels: int, where: str, source_id: int | None = None) -> LabelRecord:
    if meaning.kind == "lossy":
        drop = spell(f"drop=[{name!r}]", f"--drop '{name}'")
        raise LossyLabelError(
            f"Label {name!r} (in {where}, {voxels} voxels) cannot be mapped: {meaning.reason}. Its voxels would be "
            f"lost; pass {drop} to leave it out on purpose (recorded in the provenance)."
        )
    status = {"organ": "mapped"}.get(meaning.kind, meaning.kind)
    return LabelRecord(name=name, status=status, voxels=int(voxels), organ=meaning.organ, source_id=source_id, file=where, note=meaning.reason)


def _check_target(found: Geometry, target: Geometry | None, where: str) -> None:
    if target is not None and not found.matches(target):
        raise GridMismatchError(
            f"{where} is on another grid than the target: {found.describe()}, expected {target.describe()}. "
            "Resample it onto the target grid in world coordinates (nearest neighbour) first, or harmonize it "
            "onto the grid it was drawn on."
        )


def _as_target(target) -> Geometry | None:
    if target is None or isinstance(target, Geometry):
        return target
    if isinstance(target, (str, os.PathLike)):
        return Geometry.of_nifti(target)
    shape, affine = target
    return Geometry(shape, affine)


# ----------------------------------------------------------------------------------------------
# multi-label maps


def _disagreements(table: SourceTable, names: Mapping[int, str]) -> tuple[list[int], list[int]]:
    """Ids whose name in the file differs from the table's: (those touching an organ, those outside the schema)."""
    touching, outside = [], []
    organ_names = set(table.name_to_organ) | set(table.lossy)
    for label_id, name in sorted(names.items()):
        expected = table.labels.get(label_id)
        if expected == name or table.is_background(label_id):
            continue
        (touching if (expected in organ_names or name in organ_names or expected is None) else outside).append(label_id)
    return touching, outside


def resolve_source(
    source: str | os.PathLike | SourceTable | None,
    version: str | None = None,
    names: Mapping[int, str] | None = None,
    schema: LabelSchema | None = None,
) -> tuple[SourceTable | None, list[str]]:
    """The table a `source` means, and notes on how it was chosen.

    `source` is a `SourceTable`, a table key or family (with the tool's `version` where the
    family's ids changed; a family without a version is matched against the `names` a file
    carries, when they single out one table), or the path of an nnU-Net ``dataset.json``.
    """
    if source is None or isinstance(source, SourceTable):
        return source, []
    text = os.fspath(source)
    if text.endswith(".json") and Path(text).is_file():
        return table_from_dataset_json(text, schema.version if schema else None), [f"label table read from {Path(text).name}"]
    keys = families().get(text, ())
    if version is None and len(keys) > 1 and names:
        fitting = [k for k in keys if not _disagreements(load_source(k), names)[0]]
        if len(fitting) == 1:
            return load_source(fitting[0]), [f"{text}: table {fitting[0]} chosen by the label names stored in the file"]
    return load_source(text, version=version), []


def harmonize_label_map(
    labels: np.ndarray,
    affine: np.ndarray,
    source: str | SourceTable | None = None,
    *,
    source_version: str | None = None,
    names: Mapping[int, str] | None = None,
    target=None,
    schema: LabelSchema | None = None,
    options: HarmonizeOptions | None = None,
    where: str = "<array>",
) -> Harmonized:
    """Map a multi-label map onto the schema with one lookup-table pass over the voxels.

    Args:
        labels: integer label map (values = source ids).
        affine: its voxel-to-world affine.
        source: the source table key or family (e.g. ``"totalsegmentator_total"``), or the path of
            an nnU-Net ``dataset.json`` (see `resolve_source`). Needed unless `names` is given.
        source_version: the version of the tool that wrote the labels, for a family whose ids
            changed between versions (``"2.6.4"`` for ``moose_clin_ct_organs``).
        names: source id -> label name, e.g. read from the file (`nifti_label_names`). With a
            `source`, every name is checked against the source's table: a disagreement on an organ
            raises; one on labels outside the schema only (TotalSegmentator 2.0-2.1 numbered the
            ribs differently) is accepted and recorded.
        target: the grid the label map must lie on (a NIfTI path, `Geometry` or (shape, affine)).
        schema, options: the label schema (default: latest) and the declared behaviours.
        where: the file name, for messages.

    Raises:
        MaskValueError: non-integer or negative values.
        UnknownLabelError: an id that is not in the source (or not named), unless ``unknown="drop"``.
        LossyLabelError: a label merging organs, unless dropped.
        GridMismatchError: not on `target`.
    """
    schema = schema or load_schema()
    options = options or HarmonizeOptions()
    table, notes = resolve_source(source, source_version, names, schema)
    if table is None and names is None:
        example = spell("source='totalsegmentator_total'", "--source totalsegmentator_total")
        raise LabelInputError(
            f"{where}: a multi-label map needs its source (e.g. {example}; see "
            "`umd labels sources`) or the names of its labels."
        )
    _check_target(Geometry(labels.shape, affine), _as_target(target), where)
    labels = _integer_labels(np.asanyarray(labels), where)
    provenance = Provenance(
        schema=schema.key, source=table.key if table else None, inputs=[where], policy=options.policy(),
        unavailable=dict(table.unavailable) if table else {}, notes=notes,
    )
    if table is not None and names is not None:
        touching, outside = _disagreements(table, names)
        if touching:
            shown = ", ".join(f"id {i} is {names[i]!r} in the file but {table.labels.get(i)!r} in {table.key}" for i in touching[:5])
            raise UnknownLabelError(
                f"{where}: the label names stored in the file disagree with source {table.key} on organs: {shown}. Is this "
                f"the right source and tool version? ({table.tool} versions of this table: {', '.join(table.versions) or 'n/a'})"
            )
        if outside:
            provenance.notes.append(
                f"the file names {len(outside)} ids outside the schema differently from {table.key} (ids {outside[0]}-{outside[-1]}; "
                "e.g. TotalSegmentator 2.0-2.1 numbered the ribs differently): every organ id agrees, accepted"
            )
    named = dict(table.labels) if table is not None else {}
    named.update(names or {})
    # the meaning of every id the source defines, before reading any voxel (a table of <= 65536 entries)
    meanings: dict[int, Resolution | UnknownLabelError] = {}
    for label_id, label_name in named.items():
        if label_id == 0:
            continue
        try:
            meanings[label_id] = _meaning(label_name, table, options, schema, where=where, label_id=label_id)
        except UnknownLabelError as error:  # raised only if the label occurs in the voxels
            meanings[label_id] = error
    lut = np.zeros(np.iinfo(labels.dtype).max + 1, dtype=np.uint8)
    for label_id, meaning in meanings.items():
        if isinstance(meaning, Resolution) and meaning.kind == "organ":
            lut[label_id] = schema.organ(meaning.organ).id
    canonical, counts = _apply_lut(labels, lut)  # the one pass over the voxels
    for label_id in np.flatnonzero(counts):
        label_id = int(label_id)
        if label_id == 0:
            continue
        if isinstance(meanings.get(label_id), UnknownLabelError):
            raise meanings[label_id]
        if label_id in meanings:
            record = _record_meaning(meanings[label_id], named[label_id], counts[label_id], where, label_id)
        elif options.unknown == "drop" or str(label_id) in options.drop:
            status = "dropped" if str(label_id) in options.drop else "unknown_dropped"
            record = LabelRecord(str(label_id), status, int(counts[label_id]), source_id=label_id, file=where)
        else:
            known = sorted(named)
            drop = spell(f"drop=['{label_id}']", f"--drop {label_id}")
            raise UnknownLabelError(
                f"{where}: label id {label_id} ({int(counts[label_id])} voxels) is not a label of "
                f"{table.key if table else 'the names given'} (ids {known[0]}..{known[-1]}). Is this the right source "
                f"and version? Leave it out with {drop} or {spell('unknown=' + repr('drop'), '--unknown drop')}."
            )
        provenance.labels.append(record)
    organ_counts = np.bincount(lut, weights=counts, minlength=len(schema) + 1).astype(np.int64)
    provenance.organ_voxels = {o.slug: int(organ_counts[o.id]) for o in schema if organ_counts[o.id] > 0}
    provided = set(table.organs) if table else {m.organ for m in meanings.values() if isinstance(m, Resolution) and m.organ}
    provenance.absent = [o.slug for o in schema if o.slug not in provenance.organ_voxels and o.slug in provided]
    if options.empty == "error" and provenance.absent:
        raise EmptyOrganError(f"{where}: organs absent from the label map: {provenance.absent} (empty='error').")
    return Harmonized(canonical, np.asarray(affine, dtype=np.float64), provenance)


def _apply_lut(labels: np.ndarray, lut: np.ndarray, block: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """``lut[labels]`` and the count of every value, in one pass over the voxels.

    Works block by block in the array's own memory order (NIfTI arrays are Fortran-ordered), so
    both the counting and the mapping stay in cache and no full-size temporary is made.
    """
    if not (labels.flags.c_contiguous or labels.flags.f_contiguous):
        labels = np.ascontiguousarray(labels)
    out = np.empty_like(labels, dtype=np.uint8)  # same memory order as `labels`
    source, target = labels.ravel(order="K"), out.ravel(order="K")  # views, in matching element order
    counts = np.zeros(lut.size, dtype=np.int64)
    for start in range(0, source.size, block):
        chunk = source[start : start + block]
        counts += np.bincount(chunk, minlength=lut.size)
        np.take(lut, chunk, out=target[start : start + block])
    return out, counts


def _integer_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """The label map as uint8 or uint16 (no copy when it already is one); raises on other values."""
    if labels.dtype in (np.uint8, np.uint16):
        return labels
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all() or not np.array_equal(labels, np.rint(labels)):
            sample = labels[~np.isfinite(labels) | (labels != np.rint(labels))][:3].tolist()
            raise MaskValueError(f"{where}: a label map must hold integers; found values such as {sample}.")
    elif not np.issubdtype(labels.dtype, np.integer):
        raise MaskValueError(f"{where}: label maps must be integer arrays, got {labels.dtype}.")
    low, high = (labels.min(), labels.max()) if labels.size else (0, 0)
    if low < 0:
        raise MaskValueError(f"{where}: negative label values ({low}) are not source ids.")
    if high > 65535:
        raise MaskValueError(f"{where}: label value {high} is larger than any source id.")
    return labels.astype(np.uint16 if high > 255 else np.uint8)


# ----------------------------------------------------------------------------------------------
# binary masks (folders of per-structure files, DICOM SEG segments)


def _binary(mask: np.ndarray, where: str) -> np.ndarray:
    """The mask as bool; raises on any value other than 0 and 1 (never cast)."""
    mask = np.asanyarray(mask)
    if mask.dtype == bool:
        return mask
    inside = mask == 1
    if not np.array_equal(inside | (mask == 0), np.ones(mask.shape, dtype=bool)):
        other = mask[(mask != 0) & (mask != 1)]
        raise MaskValueError(
            f"{where} is not a binary mask: values other than 0 and 1, e.g. {np.unique(other)[:5].tolist()} "
            f"({other.size} voxels). If it is a multi-label map, harmonize it with its source; if it is a "
            "probability map, threshold it yourself."
        )
    return inside


def _finish_masks(
    members: list[tuple[LabelRecord, np.ndarray | None]],
    geometry: Geometry,
    schema: LabelSchema,
    options: HarmonizeOptions,
    provenance: Provenance,
) -> Harmonized:
    """Union the masks of each organ, then resolve voxels claimed by two organs by the declared policy."""
    for record, _ in members:
        if record.status == "mapped" and record.voxels == 0:
            record.status = "empty"
            if options.empty == "error":
                raise EmptyOrganError(f"{record.file}: the mask of {record.name!r} ({record.organ}) is empty (empty='error').")
    provenance.labels = [r for r, _ in members]
    grouped: dict[str, list[np.ndarray]] = {}
    files: dict[str, list[str]] = {}
    for record, mask in members:
        if record.status != "mapped":
            continue
        grouped.setdefault(record.organ, []).append(mask)
        files.setdefault(record.organ, []).append(record.file or record.name)
    per_organ = {slug: _union_in_box(masks) for slug, masks in grouped.items()}  # (box, the union inside it)
    volumes = {slug: int(np.count_nonzero(mask)) for slug, (_, mask) in per_organ.items()}
    if isinstance(options.overlap, str) and options.overlap in ("error", "smallest", "largest"):
        sign = -1 if options.overlap == "largest" else 1
        order = sorted(per_organ, key=lambda s: (sign * volumes[s] if options.overlap != "error" else 0, schema.organ(s).id))
    else:
        priority = [schema.organ(s).slug for s in options.overlap]
        order = sorted(per_organ, key=lambda s: (priority.index(s) if s in priority else len(priority), schema.organ(s).id))
    canonical = np.zeros(geometry.shape, dtype=np.uint8)
    for slug in order:  # every step inside the organ's box: the rest of the volume is not its business
        box, mask = per_organ[slug]
        region = canonical[box]  # a view: writes land in `canonical`
        claimed = mask & (region != 0)
        if claimed.any():
            owners = np.bincount(region[claimed], minlength=len(schema) + 1)
            for owner_id in np.flatnonzero(owners):
                owner = schema.organ(int(owner_id)).slug
                provenance.overlaps.append(
                    OverlapRecord((owner, slug), int(owners[owner_id]), owner, tuple(files[owner] + files[slug]))
                )
        region[mask & (region == 0)] = schema.organ(slug).id
    if options.overlap == "error" and provenance.overlaps:
        shown = "; ".join(
            f"{o.organs[0]} and {o.organs[1]} share {o.voxels} voxels ({', '.join(o.files)})" for o in provenance.overlaps
        )
        policy = spell("overlap='smallest'", "--overlap smallest")
        raise LabelOverlapError(
            f"Overlapping organs: {shown}. Choose a policy: {policy} (the smaller organ keeps the voxels), "
            "'largest', or a priority list of organs."
        )
    provenance.organ_voxels = schema.count_voxels(canonical).present
    provided = {r.organ for r, _ in members if r.organ}
    provenance.absent = [o.slug for o in schema if o.slug in provided and o.slug not in provenance.organ_voxels]
    return Harmonized(canonical, geometry.affine, provenance)


def _union_in_box(masks: list[np.ndarray]) -> tuple[tuple[slice, ...], np.ndarray]:
    """The bounding box of the union of same-grid boolean masks, and the union inside it (an empty
    union: an empty box)."""
    boxes = [b for b in (support_box(m) for m in masks) if b is not None]
    if not boxes:
        return (slice(0, 0),) * masks[0].ndim, np.zeros((0,) * masks[0].ndim, dtype=bool)
    box = tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(len(boxes[0])))
    union = np.array(masks[0][box], order="K")  # a DICOM SEG's masks are Fortran-ordered (frames are planes)
    for mask in masks[1:]:
        union |= mask[box]
    return box, to_c_order(union)  # the layout of the canonical map it goes into


def _mask_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputNotFoundError(f"{folder} is not a folder of masks (it does not exist or is a file).")
    files = sorted(p for p in folder.iterdir() if p.is_file() and re.search(r"\.nii(\.gz)?$", p.name))
    if not files:
        raise LabelInputError(f"{folder} holds no NIfTI mask (*.nii.gz or *.nii).")
    return {re.sub(r"\.nii(\.gz)?$", "", p.name): p for p in files}


def harmonize_masks(
    masks: str | os.PathLike | Mapping[str, str | os.PathLike | tuple[np.ndarray, np.ndarray]],
    source: str | SourceTable | None = None,
    *,
    source_version: str | None = None,
    target=None,
    schema: LabelSchema | None = None,
    options: HarmonizeOptions | None = None,
) -> Harmonized:
    """Combine one binary mask per structure into a canonical label map.

    Args:
        masks: a folder of ``<name>.nii.gz`` files (TotalSegmentator's per-class output, a folder of
            annotator masks), or a mapping name -> file path or (array, affine).
        source: the source table whose names the files use; None resolves free text.
        target: the grid every mask must lie on (NIfTI path, `Geometry` or (shape, affine)); None:
            the masks must share one grid.
        schema, options: the label schema and the declared behaviours.

    Raises:
        MaskValueError, GridMismatchError, UnknownLabelError, LossyLabelError, LabelOverlapError:
            see the module's table.
    """
    schema = schema or load_schema()
    options = options or HarmonizeOptions()
    table, notes = resolve_source(source, source_version, None, schema)
    if isinstance(masks, (str, os.PathLike)):
        masks = _mask_files(Path(masks))
    expected = _as_target(target)
    provenance = Provenance(
        schema=schema.key, source=table.key if table else None, inputs=[], policy=options.policy(),
        unavailable=dict(table.unavailable) if table else {}, notes=notes,
    )
    members: list[tuple[LabelRecord, np.ndarray]] = []
    first_where = None
    for name in sorted(masks):
        value = masks[name]
        if isinstance(value, tuple):
            array, affine = value
            where = f"<mask {name}>"
        else:
            where = os.fspath(value)
            image = load_nifti(where)
            array, affine = np.asanyarray(image.dataobj), image.affine
        provenance.inputs.append(where)
        meaning = _meaning(name, table, options, schema, where=where)
        if meaning.kind in ("outside_schema", "dropped", "unknown_dropped", "background"):
            members.append((LabelRecord(name, meaning.kind, None, file=where, note=meaning.reason), None))
            continue
        geometry = Geometry(np.shape(array), affine)
        if expected is None:
            expected, first_where = geometry, where
        elif first_where is not None and not geometry.matches(expected):
            raise GridMismatchError(
                f"{where} ({geometry.describe()}) is not on the grid of {first_where} ({expected.describe()}); "
                "masks of one label map must share one grid. Pass target= to name the grid they must lie on."
            )
        _check_target(geometry, expected, where)
        mask = _binary(array, where)
        record = _record_meaning(meaning, name, np.count_nonzero(mask), where)
        members.append((record, mask))
    if expected is None:
        raise LabelInputError("No mask maps to an organ of the schema: " + ", ".join(f"{r.name} ({r.status})" for r, _ in members))
    return _finish_masks(members, expected, schema, options, provenance)


def harmonize_dicom_seg(
    path: str | os.PathLike,
    *,
    target=None,
    schema: LabelSchema | None = None,
    options: HarmonizeOptions | None = None,
) -> Harmonized:
    """Map the segments of a DICOM SEG onto the schema: by coded concept first, then by segment label.

    A segment whose SegmentedPropertyType is an organ's SNOMED CT (``SCT``) or legacy SNOMED RT
    (``SRT``) code is that organ; for lateral organs the laterality modifier (or, without one, the
    segment label) decides the side. Other segments are resolved by their label text.

    Args:
        path: the SEG file.
        target: the grid to place it on (the scan it was drawn on); None: the SEG's own grid.
    """
    from umd_dataset.labels.dicom_seg import read_dicom_seg

    schema = schema or load_schema()
    options = options or HarmonizeOptions()
    seg = read_dicom_seg(path, _as_target(target), options.fractional_threshold)
    provenance = Provenance(schema=schema.key, source="dicom_seg", inputs=[seg.path], policy=options.policy(), notes=list(seg.notes))
    members = []
    for segment in seg.segments:
        where = f"{seg.path} segment {segment.number}"
        name = segment.label or (segment.code[2] if segment.code else f"segment {segment.number}")
        meaning = _coded_meaning(segment, schema, options) or _meaning(name, None, options, schema, where=where)
        record = _record_meaning(meaning, name, np.count_nonzero(segment.mask), where, segment.number)
        if segment.code:
            record.note = (record.note + f"; {segment.code[1]} {segment.code[0]} ({segment.code[2]})").strip("; ")
        members.append((record, segment.mask if record.status == "mapped" else None))
    return _finish_masks(members, seg.geometry, schema, options, provenance)


def _coded_meaning(segment, schema: LabelSchema, options: HarmonizeOptions) -> Resolution | None:
    if segment.code is None or segment.label in options.drop or segment.label in options.aliases:
        return None
    value, scheme, _ = segment.code
    candidates = [
        o for o in schema
        if (scheme in ("SCT", "SNM3") and value == o.snomed_code) or (scheme in ("SRT", "SNM3") and value == o.srt_code)
    ]
    if not candidates:
        return None
    if len(candidates) == 1:
        return Resolution(segment.label, "organ", candidates[0].slug, "matched by code")
    if segment.laterality is not None:
        for organ in candidates:
            codes = schema.laterality_codes.get(organ.laterality or "", ())
            if segment.laterality[0] in codes:
                return Resolution(segment.label, "organ", organ.slug, "matched by code and laterality")
    return None  # a lateral organ without a usable modifier: let the segment label decide


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    with open(path, "rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def harmonize(
    path: str | os.PathLike,
    source: str | SourceTable | None = None,
    *,
    source_version: str | None = None,
    target=None,
    schema: LabelSchema | None = None,
    options: HarmonizeOptions | None = None,
) -> Harmonized:
    """Harmonize a file or folder, whatever it holds.

    - a folder: one binary mask per structure (`harmonize_masks`);
    - a DICOM file: a DICOM SEG (`harmonize_dicom_seg`);
    - a NIfTI file: a multi-label map of `source` (`harmonize_label_map`); label names stored in
      the file by TotalSegmentator ``--ml`` are read and checked.

    Example:
        >>> result = harmonize("ct_total.nii.gz", "totalsegmentator_total", target="ct.nii.gz")  # doctest: +SKIP
        >>> result.save("ct_labels.nii.gz", "ct_labels.provenance.json")                        # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path} does not exist: give a label map (.nii.gz), a folder of masks or a DICOM SEG.")
    if path.is_dir():
        return harmonize_masks(path, source, source_version=source_version, target=target, schema=schema, options=options)
    if _is_dicom(path):
        return harmonize_dicom_seg(path, target=target, schema=schema, options=options)
    try:
        image = load_nifti(path)
    except Exception as error:  # nibabel raises several types for unreadable files
        raise LabelInputError(f"{path} is neither a folder of masks, a DICOM SEG nor a readable NIfTI file: {error}") from error
    return harmonize_label_map(
        np.asanyarray(image.dataobj), image.affine, source, source_version=source_version, names=nifti_label_names(path), target=target,
        schema=schema, options=options, where=str(path),
    )


def read_provenance(path: str | os.PathLike) -> Provenance:
    return Provenance.from_dict(read_json(path))
