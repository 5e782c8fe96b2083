"""Croissant metadata: the ``croissant.json`` (MLCommons Croissant 1.1, JSON-LD) of a release and
of its Hugging Face export, the description that dataset venues and dataset search engines read.

A release's document describes its index files (``manifest.parquet``, ``labels.json``,
``splits.json``: `FileObject` with sha256) and its NIfTI files (two `FileSet`), and holds these
record sets: ``splits`` (a ``cr:Split`` set), ``organs`` (the label schema, read from
``labels.json``), ``subjects`` (subject -> split, the content of ``splits.json``) and ``scans``
(the manifest, one record per scan, its ``split`` joined from ``subjects``). An export's document
describes its Parquet shards (`FileObject` each, with sha256) and holds ``splits``, ``organs``
(inline) and one record set per config, read from the shards.

Only what ``release.json``, ``labels.json``, ``splits.json`` and the manifest already publish goes
in: pseudonymized subject ids, geometry, checksums, counts, licence and citation. Never a
``provenance.json`` (it holds doses and weights), never a host path. The documents are pure
functions of the release index (no date, no host), so the same release gives the same bytes.

`mlcroissant` (not a dependency of this package) validates these documents and iterates their
records offline; nothing here imports it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from umd_dataset.io.files import atomic_path, sha256_file
from umd_dataset.release.format import CROISSANT, LABELS, MANIFEST, SPLITS, ReleaseInfo, manifest_schema, safe_relative_path
from umd_dataset.schema.organs import LabelSchema
from umd_dataset.schema.studies import modalities

__all__ = ["CONFORMS_TO", "CONTEXT", "release_croissant", "export_croissant", "write_croissant", "croissant_problems"]

#: The Croissant version the documents conform to.
CONFORMS_TO = "http://mlcommons.org/croissant/1.1"

#: The standard JSON-LD ``@context`` of Croissant 1.1 (as `mlcroissant` writes it), inline: reading
#: the document never fetches a context from the network.
CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

_SPLIT_URLS = {"train": "cr:TrainingSplit", "validation": "cr:ValidationSplit", "test": "cr:TestSplit"}
_LICENSES = {"CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/"}
_PARQUET = "application/x-parquet"
_JSON = "application/json"
_NIFTI = "application/gzip"  # .nii.gz: a gzip stream of a NIfTI-1 file (NIfTI has no registered media type)

#: What each column means (manifest and export columns); the paired config's per-domain columns
#: are described from their suffix.
_COLUMNS = {
    "subject": "Pseudonymized subject id.",
    "study": "Kind of study: petct or petmri.",
    "scan": "Kind of scan within the study: ct, pet or mri.",
    "domain": "Evaluation domain: ct, petct_pet (PET of PET/CT), mri or petmri_pet (PET of PET/MRI).",
    "modality": "DICOM modality of the scan: CT, PT or MR.",
    "split": "The subject's split (both studies of a subject share it).",
    "image": "The scan: a gzipped NIfTI-1 file (RAS world coordinates in mm).",
    "label": "Its label map: a gzipped NIfTI-1 file of uint8 organ ids (0 is background), on the scan's grid.",
    "shape": "Voxels along the three array axes (the label map has the same).",
    "spacing_mm": "Voxel size along each array axis, in mm.",
    "affine": "The 4x4 voxel-to-world (RAS, mm) matrix, row-major, shared by scan and label map.",
    "dtype": "Stored data type of the scan (CT and MRI int16, PET float32 SUV).",
    "label_dtype": "Stored data type of the label map (uint8).",
    "image_sha256": "sha256 of the scan file.",
    "label_sha256": "sha256 of the label map file.",
    "image_bytes": "Size of the scan file in bytes.",
    "label_bytes": "Size of the label map file in bytes.",
    "organs": "Slugs of the organs present in the label map (at least one voxel).",
    "organ_voxels": "Voxel count of each organ in organs, same order.",
    "release": "Release name and data version.",
}


def _describe(column: str) -> str:
    if column in _COLUMNS:
        return _COLUMNS[column]
    for domain in modalities().domains:
        if column == domain.key:
            return f"The {domain.name} scan: a gzipped NIfTI-1 file."
        if column.startswith(domain.key + "_"):
            rest = column[len(domain.key) + 1 :]
            meaning = _COLUMNS["label"] if rest == "label" else _COLUMNS.get(rest, rest)
            return f"{domain.name}: {meaning[0].lower()}{meaning[1:]}"
    raise KeyError(f"no description for column {column!r}: add it to umd_dataset.release.croissant._COLUMNS")


def _ref(node_id: str) -> dict:
    return {"@id": node_id}


def _field(record_set: str, name: str, data_type, description: str, source: dict | None = None, **extra) -> dict:
    node = {"@type": "cr:Field", "@id": f"{record_set}/{name}", "name": name, "description": description,
            "dataType": data_type}
    if source is not None:
        node["source"] = source
    node.update(extra)
    return node


def _arrow_field(record_set: str, arrow, source_kind: str, source_id: str, references: Mapping[str, str]) -> dict:
    """A Croissant field for one Arrow column: scalars, fixed or variable lists, NIfTI structs."""
    import pyarrow as pa

    kind = arrow.type
    extra: dict = {}
    transform = None
    if pa.types.is_struct(kind) and {f.name for f in kind} == {"bytes", "path"}:  # a datasets.Nifti column
        data_type: object = ["sc:MediaObject", "sc:Text"]
        transform = {"jsonPath": "bytes"}
    else:
        if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind):
            extra["isArray"] = True
            if pa.types.is_fixed_size_list(kind):
                extra["arrayShape"] = str(kind.list_size)
            kind = kind.value_type
        data_type = _scalar_type(kind, arrow.name)
    source = {source_kind: _ref(source_id), "extract": {"column": arrow.name}}
    if transform is not None:
        source["transform"] = transform
    if arrow.name in references:
        extra["references"] = {"field": _ref(references[arrow.name])}
    return _field(record_set, arrow.name, data_type, _describe(arrow.name), source, **extra)


def _scalar_type(kind, name: str) -> str:
    import pyarrow as pa

    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "sc:Text"
    if pa.types.is_integer(kind):
        return "sc:Integer"
    if pa.types.is_floating(kind):
        return "sc:Float"
    if pa.types.is_boolean(kind):
        return "sc:Boolean"
    raise TypeError(f"column {name!r} has Arrow type {kind}, which has no Croissant data type here")


def _dataset(info: ReleaseInfo, description: str, distribution: list, record_sets: list) -> dict:
    """The Dataset node: name, version, licence, citation and description from the descriptor (a
    licence or a paper link only where the descriptor gives one)."""
    text = " ".join(part for part in (info.description, description) if part)
    node = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": info.name,
        "description": text,
        "version": info.version,
        "citeAs": info.citation or f"{info.name} {info.version}",
        "keywords": ["medical imaging", "PET/CT", "PET/MRI", "organ segmentation", "NIfTI"],
    }
    if info.license:
        node["license"] = _LICENSES.get(info.license, info.license)
    if paper := re.search(r"arXiv:\s*(\d{4}\.\d{4,5})", info.citation, flags=re.I):
        node["url"] = f"https://arxiv.org/abs/{paper.group(1)}"
    node["distribution"] = distribution
    node["recordSet"] = record_sets
    return node


def _splits_record_set() -> dict:
    rs = "splits"
    return {
        "@type": "cr:RecordSet",
        "@id": rs,
        "name": rs,
        "description": "The splits: assigned per subject, shipped as data (splits.json), never computed at load time.",
        "dataType": "cr:Split",
        "key": _ref(f"{rs}/name"),
        "field": [
            _field(rs, "name", "sc:Text", "Split name."),
            _field(rs, "url", "sc:URL", "The Croissant split it is."),
        ],
        "data": [{f"{rs}/name": s, f"{rs}/url": _SPLIT_URLS.get(s, s)} for s in modalities().splits],
    }


_ORGAN_COLUMNS = (
    ("id", "sc:Integer", "Value of the organ in label maps (1..n; 0 is background).", "id"),
    ("slug", "sc:Text", "Stable machine name of the organ.", "slug"),
    ("name", "sc:Text", "Display name.", "name"),
    ("laterality", "sc:Text", "left, right, both (a paired organ as one label) or empty.", "laterality"),
    ("snomed_code", "sc:Text", "SNOMED CT code of the anatomical structure.", "snomed.code"),
    ("snomed_meaning", "sc:Text", "SNOMED CT meaning of that code.", "snomed.meaning"),
)


def _organs_record_set(schema: LabelSchema, labels_file: str | None) -> dict:
    """The label schema: read from ``labels.json`` (`labels_file`), or inline when there is none."""
    rs = "organs"
    node = {
        "@type": "cr:RecordSet",
        "@id": rs,
        "name": rs,
        "description": f"The organs of label schema {schema.key}: the values of every label map (0 is background).",
        "key": _ref(f"{rs}/id"),
    }
    if labels_file is not None:
        node["field"] = [
            _field(rs, name, kind, text, {"fileObject": _ref(labels_file), "extract": {"jsonPath": f"$.organs[*].{path}"}})
            for name, kind, text, path in _ORGAN_COLUMNS
        ]
        return node
    node["field"] = [_field(rs, name, kind, text) for name, kind, text, _ in _ORGAN_COLUMNS]
    node["data"] = [
        {f"{rs}/id": o.id, f"{rs}/slug": o.slug, f"{rs}/name": o.name, f"{rs}/laterality": o.laterality or "",
         f"{rs}/snomed_code": o.snomed_code, f"{rs}/snomed_meaning": o.snomed_meaning}
        for o in schema
    ]
    return node


def _file_object(node_id: str, relative: str, encoding: str, sha256: str, description: str) -> dict:
    return {"@type": "cr:FileObject", "@id": node_id, "name": relative, "description": description,
            "contentUrl": relative, "encodingFormat": encoding, "sha256": sha256}


def release_croissant(
    info: ReleaseInfo, schema: LabelSchema, splits: Mapping[str, Sequence[str]], files: Mapping[str, str]
) -> dict:
    """The Croissant document of a release folder (written as ``croissant.json`` by `ReleaseWriter`).

    Args:
        info: the descriptor (its ``files`` need not be complete yet).
        schema: the label schema of the label maps.
        splits: split -> subject ids, as in ``splits.json``.
        files: sha256 of ``manifest.parquet``, ``labels.json`` and ``splits.json``.
    """
    spec = modalities()
    distribution = [
        _file_object(MANIFEST, MANIFEST, _PARQUET, files[MANIFEST], "The manifest: one row per scan, with geometry and checksums."),
        _file_object(LABELS, LABELS, _JSON, files[LABELS], f"The label schema {schema.key}."),
        _file_object(SPLITS, SPLITS, _JSON, files[SPLITS], "The splits: split -> subject ids."),
        {"@type": "cr:FileSet", "@id": "scan-files", "name": "scan-files", "encodingFormat": _NIFTI,
         "description": "The scans, subjects/<subject>/<study>/<scan>.nii.gz (gzipped NIfTI-1).",
         "includes": [f"subjects/*/*/{scan}.nii.gz" for scan in spec.scans]},
        {"@type": "cr:FileSet", "@id": "label-map-files", "name": "label-map-files", "encodingFormat": _NIFTI,
         "description": "The label maps, subjects/<subject>/<study>/<scan>_labels.nii.gz, on each scan's own grid.",
         "includes": [f"subjects/*/*/{scan}_labels.nii.gz" for scan in spec.scans]},
    ]
    subjects = "subjects"
    by_subject = sorted((s, name) for name, ids in splits.items() for s in ids)
    subject_set = {
        "@type": "cr:RecordSet",
        "@id": subjects,
        "name": subjects,
        "description": "Each subject and its split, as in splits.json.",
        "key": _ref(f"{subjects}/subject"),
        "field": [
            _field(subjects, "subject", "sc:Text", _COLUMNS["subject"]),
            # no `references` to ``splits`` here: mlcroissant 1.1 cannot join two inline record sets
            _field(subjects, "split", "sc:Text", _COLUMNS["split"] + " One of the names of the splits record set."),
        ],
        "data": [{f"{subjects}/subject": s, f"{subjects}/split": name} for s, name in by_subject],
    }
    scans = "scans"
    columns = [_arrow_field(scans, column, "fileObject", MANIFEST, {"subject": f"{subjects}/subject"}) for column in manifest_schema()]
    columns.append(_field(scans, "split", "sc:Text", _COLUMNS["split"], {"field": _ref(f"{subjects}/split")},
                          references={"field": _ref("splits/name")}))
    scan_set = {
        "@type": "cr:RecordSet",
        "@id": scans,
        "name": scans,
        "description": "One record per scan: the manifest, with each subject's split.",
        "key": [_ref(f"{scans}/subject"), _ref(f"{scans}/study"), _ref(f"{scans}/scan")],
        "field": columns,
    }
    counts = info.counts
    studies = ", ".join(f"{counts.studies.get(k, 0)} {spec.studies[k].name}" for k in spec.studies)
    domains = ", ".join(f"{counts.scans.get(d.key, 0)} {d.name}" for d in spec.domains)
    description = (
        f"A release in the umd-release format (version {info.format_version}), label schema {info.label_schema}: "
        f"{counts.subjects} subjects ({counts.paired_subjects} with both studies), studies: {studies}; scans: {domains}. "
        "Load it with umd_dataset (pip install umd-dataset): umd_dataset.load_dataset(folder, config)."
    )
    return _dataset(info, description, distribution,
                    [_splits_record_set(), _organs_record_set(schema, LABELS), subject_set, scan_set])


def export_croissant(
    info: ReleaseInfo,
    schema: LabelSchema,
    configs: Mapping[str, object],
    shards: Iterable[tuple[str, str]],
) -> dict:
    """The Croissant document of a Hugging Face export (``croissant.json`` beside its ``README.md``).

    Args:
        info: the descriptor of the exported release.
        schema: its label schema (described inline: an export has no ``labels.json``).
        configs: config -> the Arrow schema of its shards (``datasets.Features.arrow_schema``).
        shards: (path relative to the export folder, sha256) of every Parquet shard, as
            ``data/<config>/<split>-<i>-of-<n>.parquet``.
    """
    distribution = []
    shards = sorted(shards)
    for relative, sha256 in shards:
        distribution.append(_file_object(relative, relative, _PARQUET, sha256, "A Parquet shard (whole subjects)."))
    record_sets = [_splits_record_set(), _organs_record_set(schema, None)]
    for config, arrow in configs.items():
        files = f"{config}-shards"
        distribution.append({"@type": "cr:FileSet", "@id": files, "name": files, "encodingFormat": _PARQUET,
                             "description": f"The Parquet shards of config {config}.",
                             "includes": [f"data/{config}/*.parquet"]})
        what = "one record per subject with both studies" if "subject" in arrow.names and "scan" not in arrow.names else "one record per scan"
        record_sets.append({
            "@type": "cr:RecordSet",
            "@id": config,
            "name": config,
            "description": f"Config {config}: {what}.",
            "field": [_arrow_field(config, column, "fileSet", files, {"split": "splits/name"}) for column in arrow],
        })
    description = (
        f"The Hugging Face export of this release (label schema {info.label_schema}): Parquet shards with the NIfTI "
        "files embedded uncompressed (zstd shards), loadable with datasets.load_dataset(folder, config)."
    )
    return _dataset(info, description, distribution, record_sets)


def write_croissant(path: str | os.PathLike, document: Mapping, tmp_dir: str | os.PathLike | None = None) -> str:
    """Write a document atomically (indented JSON, keys in their order) and return its sha256."""
    with atomic_path(path, tmp_dir) as tmp:
        tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return sha256_file(path)


def croissant_problems(root: str | os.PathLike) -> list[tuple[str, str]]:
    """What is wrong with the ``croissant.json`` of a folder: (path, message) for a document that is
    no JSON, and for every file it names (`FileObject`) that is missing or whose sha256 differs
    (the document then describes other files: it is stale). Reads no NIfTI file."""
    root = Path(root)
    try:
        document = json.loads((root / CROISSANT).read_text(encoding="utf-8"))
        objects = [n for n in document.get("distribution", []) if n.get("@type") == "cr:FileObject"]
    except (OSError, ValueError, AttributeError, TypeError) as error:
        return [(CROISSANT, f"not a readable Croissant document ({error}).")]
    problems = []
    for node in objects:
        relative = str(node.get("contentUrl", ""))
        try:
            path = safe_relative_path(root, relative)
        except Exception as error:  # an unsafe path: report it, never follow it
            problems.append((CROISSANT, f"names {relative!r}: {error}"))
            continue
        if not path.is_file():
            problems.append((CROISSANT, f"names {relative}, which does not exist."))
        elif sha256_file(path) != node.get("sha256"):
            problems.append((CROISSANT, f"records sha256 {node.get('sha256')} for {relative}, but the file has "
                             f"{sha256_file(path)}: the document describes other files (stale)."))
    return problems
