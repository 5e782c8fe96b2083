"""The bad-input matrix: a corrupted release, misbehaving models, interruptions and bad headers,
one test per case (numbered as in the trust issue). Nothing may give a silently wrong number, leak a
secret or an identifier, or write outside its folder.

| #  | case                                                           | expected                                         |
|----|----------------------------------------------------------------|--------------------------------------------------|
| 1  | a flipped byte in a scan (any read path)                       | CorruptFileError naming the file and `umd verify` |
| 1b | a broken gzip stream whose checksum was re-signed              | CorruptFileError (the CRC is checked)            |
| 2  | a model modifies the reference or the image                    | a failure of that case; scores unchanged         |
| 3  | label id 99 / label map on another grid / NaN PET (signed)      | release errors, recorded apart, exit 1           |
| 4  | tool versions whose label ids moved                             | the version picks the table; unchecked: refused  |
| 5  | NSD ties                                                       | see tests/evaluation/test_metrics.py             |
| 6  | a study lacking a scan; a file no row names                    | refused on open; listed by verify                |
| 7  | unsafe ids in the manifest; cache paths leaving the cache       | refused; nothing written outside                 |
| 8  | the pseudonym key and identifiers                              | never in files or terminal output                |
| 9  | {input}/{output} under sh -c                                   | quoted                                           |
| 10 | models past their deadline                                     | killed (process isolation, process group)        |
| 11 | sys.exit / os._exit in a model                                 | a failure; finished scans kept                   |
| 12 | truncated / missing files, full disk, two writers              | one-line messages; resume; lock                  |
| 13 | concurrent writers of the same settings                        | the same bytes                                   |
| 14 | a report where every row is absent                             | written, saying nothing was scored               |
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from helpers import edit_manifest
from umd_dataset import (
    CorruptFileError,
    FolderBusyError,
    ReleaseFormatError,
    ReleaseNotFoundError,
    SourceVersionError,
    UnsafePathError,
    open_release,
)
from umd_dataset.evaluation import EvalConfig, evaluate
from umd_dataset.evaluation.adapters import CommandModel, FunctionModel
from umd_dataset.io.files import sha256_file
from umd_dataset.io.nifti import write_nifti

CT_LIVER = EvalConfig(split=None, domains=("ct",), organs=("liver", "kidney_left", "kidney_right"))


def umd(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "umd_dataset.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})})


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _resign(root: Path, record, which: str) -> None:
    """Update the manifest row of a file that was rewritten on purpose (so only its content is bad)."""
    path = root / (record.image if which == "image" else record.label)

    def change(rows):
        for row in rows:
            if (row["subject"], row["study"], row["scan"]) == (record.subject, record.study, record.scan):
                row[f"{which}_sha256"], row[f"{which}_bytes"] = sha256_file(path), path.stat().st_size

    edit_manifest(root, change)


def reference_model(release):
    def predict(case):
        record = release.subject(case.subject).studies[case.study].scans[case.scan]
        return np.asarray(nib.load(release.label_path(record)).dataobj)

    return FunctionModel(predict, name="perfect")


# --- 1: a flipped byte --------------------------------------------------------------------------


@pytest.fixture
def flipped(release_copy):
    release = open_release(release_copy)
    record = release.select(study="petct", scan="pet")[0]
    _flip_byte(release.image_path(record))
    return release_copy, release, record


def test_01_a_flipped_byte_is_caught_by_the_hugging_face_view(flipped):
    from umd_dataset import load_dataset

    root, release, record = flipped
    rows = load_dataset(str(root), "petct", split=record.split)
    keys = list(zip(rows["subject"], rows["scan"]))  # plain columns: no file is read
    index = keys.index((record.subject, "pet"))
    image = rows[index]["image"]  # affine, shape and dtype from the manifest; voxels read when used
    assert image.shape == record.shape and np.allclose(image.affine, record.affine_matrix)
    with pytest.raises(CorruptFileError, match=rf"{record.image}.*does not match its manifest checksum.*umd verify"):
        image.get_fdata()
    streamed = load_dataset(str(root), "petct", split=record.split, streaming=True)
    with pytest.raises(CorruptFileError, match="does not match its manifest checksum"):
        list(streamed)


def test_01_a_flipped_byte_is_caught_by_the_torch_and_torchio_views(flipped):
    from umd_dataset.views.pytorch import ScanDataset, subjects_dataset

    root, release, record = flipped
    scans = ScanDataset(release, scan="pet", study="petct")
    index = [r.key for r in scans.records].index(record.key)
    with pytest.raises(CorruptFileError, match="umd verify"):
        scans[index]
    subjects = subjects_dataset(release, scan="pet", study="petct")
    with pytest.raises(CorruptFileError, match="umd verify"):
        subjects[index]["image"].load()


def test_01_a_flipped_byte_is_caught_by_export_cache_and_evaluation(flipped, tmp_path):
    from umd_dataset.views.cache import build_cache
    from umd_dataset.views.export import export_hf

    root, release, record = flipped
    with pytest.raises(CorruptFileError):
        export_hf(release, tmp_path / "hub", min_shards=1)
    assert not (tmp_path / "hub").exists()
    with pytest.raises(CorruptFileError):
        build_cache(release, tmp_path / "cache")
    table = evaluate(reference_model(release), release, tmp_path / "run", config=EvalConfig(split=None, domains=("petct_pet",)),
                     progress=False).table
    damaged = table[table["subject"] == record.subject]
    assert (damaged["status"] == "release_error").all() and damaged["dice"].isna().all()
    assert "does not match its manifest checksum" in damaged["failure"].iloc[0] and "umd verify" in damaged["failure"].iloc[0]
    others = table[table["subject"] != record.subject]
    assert (others[others["edge_case"] == ""]["dice"] == 1.0).all()


def test_01b_a_broken_gzip_stream_with_a_valid_checksum_is_caught(release_copy):
    release = open_release(release_copy)
    record = release.select(scan="ct")[0]
    _flip_byte(release.image_path(record))
    _resign(release_copy, record, "image")
    fresh = open_release(release_copy)
    same = fresh.subject(record.subject).studies[record.study].scans[record.scan]
    with pytest.raises(CorruptFileError, match="not a readable NIfTI file.*CRC"):
        fresh.read(same, "image")
    from umd_dataset.views.pytorch import ScanDataset  # decodes while it decompresses, on a second thread

    scans = ScanDataset(fresh, scan="ct")
    with pytest.raises(CorruptFileError, match=rf"{record.image} is not a readable NIfTI file.*umd verify"):
        scans[[r.key for r in scans.records].index(record.key)]


# --- 2: models that change their inputs -------------------------------------------------------


def test_02_a_model_cannot_change_the_reference_it_is_scored_against(small_release, tmp_path):
    def merge(case):
        case.reference[case.reference == 4] = 3  # both kidneys as the left one
        return case.reference

    merge.needs_reference = True
    table = evaluate(FunctionModel(merge), small_release, tmp_path / "plain", config=CT_LIVER, progress=False).table
    assert (table["status"] == "failed").all() and table["failure"].str.contains("modify its input in place").all()

    def sneaky(case):
        case.reference.setflags(write=True)  # the copy it holds is its own to spoil
        case.reference[case.reference == 4] = 3
        return case.reference

    sneaky.needs_reference = True
    table = evaluate(FunctionModel(sneaky), small_release, tmp_path / "sneaky", config=CT_LIVER, progress=False).table
    right = table[table["organ"] == "kidney_right"]
    assert (right["edge_case"] == "missed").all() and (right["dice"] == 0).all()  # scored against the true reference
    assert (table[table["organ"] == "kidney_left"]["dice"] < 1).all()


def test_02_the_reference_reaches_only_models_that_declare_they_need_it(small_release, tmp_path):
    seen = []

    def look(case):
        seen.append(case.reference)
        return np.zeros(case.image.shape, np.uint8)

    evaluate(FunctionModel(look), small_release, tmp_path / "run", config=CT_LIVER, progress=False)
    assert seen and all(r is None for r in seen)


def test_02_a_promptable_model_cannot_spoil_the_image_of_the_next_organs(small_release, tmp_path):
    from umd_dataset.evaluation.baselines import RegionGrowing

    config = EvalConfig(split="test", domains=("petct_pet",), organs=("liver", "brain", "heart"))
    clean = evaluate(RegionGrowing(), small_release, tmp_path / "clean", config=config, progress=False).table
    grower = RegionGrowing()

    def spoil_once(case, prompt):
        mask = grower(case, prompt)
        if prompt.organ == "liver":
            case.image.setflags(write=True)
            case.image[...] = 0
        return mask

    spoiled = evaluate(FunctionModel(spoil_once, kind="promptable"), small_release, tmp_path / "spoiled", config=config,
                       progress=False).table
    liver = spoiled[spoiled["organ"] == "liver"]
    assert (liver["status"] == "failed").all() and liver["failure"].str.contains("modified its input image").all()
    for organ in ("brain", "heart"):  # later organs see the image the release holds
        assert list(spoiled[spoiled["organ"] == organ]["dice"]) == list(clean[clean["organ"] == organ]["dice"])


# --- 3: the reference data is checked ---------------------------------------------------------


def _damage(root: Path, kind: str):
    release = open_release(root)
    record = release.select(scan="pet", study="petct")[0]
    if kind == "label id 99":
        labels, affine = release.read(record, "label")
        labels = np.asarray(labels).copy()
        labels[labels == 1] = 99
        write_nifti(release.label_path(record), labels, affine)
        _resign(root, record, "label")
        return record, r"label values \[99\] are not organ ids"
    if kind == "label map on another grid":
        labels, affine = release.read(record, "label")
        shifted = affine.copy()
        shifted[:3, 3] += 7.0
        write_nifti(release.label_path(record), np.asarray(labels), shifted)
        _resign(root, record, "label")
        return record, "disagrees with its manifest row.*affine"
    image, affine = release.read(record, "image")
    image = np.asarray(image).copy()
    image[5:10, 5:10, 5:10] = np.nan
    write_nifti(release.image_path(record), image, affine)
    _resign(root, record, "image")
    return record, "125 voxels are NaN or infinite"


@pytest.mark.parametrize("kind", ["label id 99", "label map on another grid", "NaN in a PET image"])
def test_03_damaged_reference_data_is_a_release_error_recorded_apart(release_copy, tmp_path, kind):
    record, message = _damage(release_copy, kind)
    release = open_release(release_copy)
    table = evaluate(reference_model(release), release, tmp_path / "run", config=EvalConfig(split=None, domains=("petct_pet",)),
                     progress=False).table
    damaged = table[table["subject"] == record.subject]
    assert (damaged["status"] == "release_error").all() and damaged["failure"].str.contains(message).all()
    assert str(record.subject) in damaged["failure"].iloc[0]  # the file is named
    assert not (table["status"] == "failed").any()  # never blamed on the model
    assert (table[(table["subject"] != record.subject) & (table["edge_case"] == "")]["dice"] == 1.0).all()
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Release errors" in report and record.subject in report.split("## Release errors")[1]
    cli = umd("evaluate", str(release_copy), str(tmp_path / "cli"), "--model", "oracle", "--split", "test", "--domains", "petct_pet")
    if record.split == "test":
        assert cli.returncode == 1 and "not scored because their release files are damaged" in cli.stderr


# --- 4: label tables of tool versions ---------------------------------------------------------


def _moose_2_6_4_organs_map() -> np.ndarray:
    """A clin_ct_organs label map as moosez 2.6.3+ numbers it: 5 gallbladder, 3 bladder, 7 kidney_right, 8 liver."""
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[0:2] = 5
    labels[2:4] = 3
    labels[4:6] = 7
    labels[6:8] = 8
    return labels


def test_04_the_tool_version_chooses_the_table_and_unchecked_versions_are_refused():
    from umd_dataset.labels.harmonize import harmonize_label_map

    labels = _moose_2_6_4_organs_map()
    result = harmonize_label_map(labels, np.eye(4), "moose_clin_ct_organs", source_version="2.6.4")
    assert result.provenance.organ_voxels == {"liver": 200, "kidney_right": 200, "urinary_bladder": 200}
    with pytest.raises(SourceVersionError, match=r"changed between versions of moosez.*2\.1\.7.*2\.6\.4"):
        harmonize_label_map(labels, np.eye(4), "moose_clin_ct_organs")
    with pytest.raises(SourceVersionError, match=r"moosez 2\.7\.0 was not checked.*Checked versions: 2\.1\.7"):
        harmonize_label_map(labels, np.eye(4), "moose_clin_ct_organs", source_version="2.7.0")
    with pytest.raises(SourceVersionError, match="2.5.0"):
        harmonize_label_map(labels, np.eye(4), "moose_clin_ct_organs", source_version="2.5.0")  # never released


def test_04_totalsegmentator_total_mr_from_2_5_has_50_classes():
    from umd_dataset.schema.sources import load_source

    assert load_source("totalsegmentator_total_mr", version="2.5.0").id_of("brain") == 50
    assert load_source("totalsegmentator_total_mr", version="2.4.0").id_of("brain") == 56


def test_04_totalsegmentator_2_1_files_whose_ribs_differ_are_accepted_and_recorded(tmp_path):
    from umd_dataset.labels.harmonize import harmonize
    from umd_dataset.schema.sources import load_source

    table = load_source("totalsegmentator_total")
    names = dict(table.labels)
    names[92], names[106] = names[106], names[92]  # 2.0-2.1 numbered the ribs differently
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[:2], labels[2:4], labels[4:] = 5, 92, 21  # liver, a rib, the bladder
    xml = "<CaretExtension><LabelTable>" + "".join(
        f'<Label Key="{i}"><![CDATA[{n}]]></Label>' for i, n in names.items()) + "</LabelTable></CaretExtension>"
    image = nib.Nifti1Image(labels, np.eye(4))
    image.header.extensions.append(nib.nifti1.Nifti1Extension(0, xml.encode()))
    nib.save(image, tmp_path / "ml.nii.gz")
    result = harmonize(tmp_path / "ml.nii.gz", "totalsegmentator_total")
    assert result.provenance.organ_voxels == {"liver": 72, "urinary_bladder": 72}
    assert any("every organ id agrees, accepted" in note for note in result.provenance.notes)
    names[5] = "spleen"  # an organ disagreeing is still refused
    xml = xml.replace("<![CDATA[liver]]>", "<![CDATA[spleen]]>")
    image = nib.Nifti1Image(labels, np.eye(4))
    image.header.extensions.append(nib.nifti1.Nifti1Extension(0, xml.encode()))
    nib.save(image, tmp_path / "wrong.nii.gz")
    with pytest.raises(Exception, match="disagree with source totalsegmentator_total on organs"):
        harmonize(tmp_path / "wrong.nii.gz", "totalsegmentator_total")


def test_04_a_label_table_is_read_from_an_nnunet_dataset_json(tmp_path):
    from umd_dataset.labels.harmonize import harmonize_label_map

    (tmp_path / "dataset.json").write_text(json.dumps({
        "name": "Dataset301_MOOSE", "labels": {"background": 0, "liver": 1, "Left Kidney": 2, "gallbladder": 3, "Kidneys": 4},
    }))
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[0], labels[1], labels[2] = 1, 2, 3
    result = harmonize_label_map(labels, np.eye(4), str(tmp_path / "dataset.json"))
    assert result.provenance.organ_voxels == {"liver": 16, "kidney_left": 16}


# --- 6: incomplete studies and orphans --------------------------------------------------------


def test_06_a_study_lacking_a_scan_is_refused_when_the_release_opens(release_copy):
    victim = open_release(release_copy).select(study="petmri", scan="pet")[0]

    def drop(rows):
        kept = [r for r in rows if (r["subject"], r["study"], r["scan"]) != (victim.subject, "petmri", "pet")]
        return kept

    edit_manifest(release_copy, drop)

    def recount(data):
        data["counts"]["scans"]["petmri_pet"] -= 1

    from helpers import edit_descriptor

    edit_descriptor(release_copy, recount)
    with pytest.raises(ReleaseFormatError, match=rf"studies without all their scans: {victim.subject}/petmri \(lacks pet\)"):
        open_release(release_copy)


def test_06_verify_lists_files_no_manifest_row_names(release_copy):
    (release_copy / "subjects" / "stray.nii.gz").write_bytes(b"x")
    (release_copy / ".umd-partial").mkdir()
    report = open_release(release_copy).verify()
    kinds = {(p.path, p.kind) for p in report.problems}
    assert ("subjects/stray.nii.gz", "orphan") in kinds and (".umd-partial", "leftover") in kinds


# --- 7: unsafe ids and paths ------------------------------------------------------------------


def test_07_a_subject_id_that_leaves_the_release_is_refused_on_open(release_copy, tmp_path):
    def escape(rows):
        rows[0]["subject"] = "../../x"

    edit_manifest(release_copy, escape)
    with pytest.raises(ReleaseFormatError, match=r"Invalid subject id '\.\./\.\./x'"):
        open_release(release_copy)
    result = umd("cache", "build", str(release_copy))
    assert result.returncode == 2 and "Invalid subject id" in result.stderr
    assert not (release_copy.parent / "x").exists() and not (tmp_path / "x").exists()


def test_07_cache_paths_are_confined_to_the_cache(small_release, tmp_path):
    from umd_dataset.views.cache import PatchCache, build_cache

    build_cache(small_release, tmp_path / "cache")
    state = json.loads((tmp_path / "cache" / "cache.json").read_text())
    key = sorted(state["scans"])[0]
    state["scans"][key]["image"] = "../../outside.b2nd"
    (tmp_path / "cache" / "cache.json").write_text(json.dumps(state))
    with pytest.raises(UnsafePathError):
        PatchCache(tmp_path / "cache", small_release).read(key, (0, 0, 0), (4, 4, 4))
    rebuilt = build_cache(small_release, tmp_path / "cache")  # the bad entry is dropped and rewritten inside
    assert not rebuilt.state["scans"][key]["image"].startswith("..")


# --- 8: no secret, no identifier --------------------------------------------------------------


def test_08_the_key_and_the_identifiers_are_never_written_or_printed(small_release, tmp_path):
    from umd_dataset.synthetic.dicom import DicomPatient, write_dicom_study

    key, patient = "correct horse battery staple", DicomPatient(name="Zeta^Quincy", patient_id="MRN-990011", birth_date="19441106")
    subject = small_release.pairs()[0]
    for study in ("petct", "petmri"):
        write_dicom_study(small_release, subject.id, study, tmp_path / "raw", patient=patient)
    broken = sorted((tmp_path / "raw" / patient.patient_id / "petmri" / "PT_ac").glob("*.dcm"))[3]
    saved = broken.read_bytes()
    broken.unlink()  # a missing slice: the PET/MRI study fails, the job stays interrupted
    out = tmp_path / "release"
    first = umd("ingest", str(tmp_path / "raw"), str(out), "--secret", key)
    assert first.returncode == 2 and "missing slice" in first.stderr
    other = umd("ingest", str(tmp_path / "raw"), str(out), "--secret", "another key")
    assert other.returncode == 2 and "key_fingerprint: differs (value not shown)" in other.stderr
    interrupted = {f"interrupted {p}": p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file()}
    assert any(".umd-partial" in where for where in interrupted)  # the job folder of the interrupted job is checked
    broken.write_bytes(saved)
    final = umd("ingest", str(tmp_path / "raw"), str(out), env={"UMD_PSEUDONYM_KEY": key})
    assert final.returncode == 0, final.stderr
    secrets = [key, patient.patient_id, "Zeta", "Quincy", patient.birth_date]
    texts = {"terminal": first.stdout + first.stderr + other.stdout + other.stderr + final.stdout + final.stderr, **interrupted}
    for path in out.rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    leaks = [(where, s) for where, text in texts.items() for s in secrets if s.lower() in text.lower()]
    assert leaks == []
    assert not (out / ".umd-partial").exists()
    without = umd("ingest", str(tmp_path / "raw"), str(tmp_path / "nokey"))
    assert without.returncode == 2 and "needs their key" in without.stderr and not (tmp_path / "nokey").exists()


# --- 9: command models are quoted -------------------------------------------------------------


def test_09_placeholders_are_shell_quoted(small_release, tmp_path, monkeypatch):
    import tempfile

    hostile = tmp_path / "a b;touch PWNED"
    hostile.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(hostile))
    script = tmp_path / "copy_labels.py"
    script.write_text(textwrap.dedent("""
        import sys, nibabel as nib, numpy as np
        image = nib.load(sys.argv[1])
        nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), sys.argv[2])
    """))
    model = CommandModel(f'sh -c "{sys.executable} {script} {{input}} {{output}}"')
    assert model.words(Path("/x/a b;c/image.nii.gz"), Path("/y"))[2].endswith("'/x/a b;c/image.nii.gz' /y")
    table = evaluate(model, small_release, tmp_path / "run", config=CT_LIVER, progress=False).table
    assert (table["status"] == "ok").all()
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()


# --- 10: models past their deadline are stopped -----------------------------------------------


def _alive(pid: int) -> bool:
    """True if the process runs (a zombie, killed and waiting to be reaped by init, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def test_10_a_command_past_its_time_limit_loses_its_whole_process_group(small_release, tmp_path):
    script = tmp_path / "hang.sh"
    script.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {tmp_path}/child.pid\nwait\n")
    script.chmod(0o755)
    config = EvalConfig(split="test", domains=("ct",), organs=("liver",), timeout_s=1.5)
    table = evaluate(CommandModel(f"{script} {{input}} {{output}}"), small_release, tmp_path / "run", config=config,
                     progress=False).table
    assert table["failure"].str.contains("ran past its time limit of 1.5 s").all()
    time.sleep(0.5)
    assert not _alive(int((tmp_path / "child.pid").read_text()))


def test_10_process_isolation_kills_a_model_past_its_deadline(small_release, tmp_path, monkeypatch):
    from helpers import hang

    monkeypatch.setenv("UMD_TEST_PID_FILE", str(tmp_path / "worker.pid"))
    config = EvalConfig(split="test", domains=("ct",), organs=("liver",), timeout_s=2.0, isolation="process")
    start = time.monotonic()
    table = evaluate(FunctionModel(hang, name="hang"), small_release, tmp_path / "run", config=config, progress=False).table
    assert table["failure"].str.contains(r"timed out after 2 s \(its worker process was killed\)").all()
    assert time.monotonic() - start < 60
    assert not _alive(int((tmp_path / "worker.pid").read_text()))


def test_10_timeout_reaches_command_models_from_the_command_line(small_release_root, tmp_path):
    script = tmp_path / "slow.sh"
    script.write_text("#!/bin/sh\nsleep 300\n")
    script.chmod(0o755)
    result = umd("evaluate", str(small_release_root), str(tmp_path / "run"), "--model", f"command:{script} {{input}} {{output}}",
                 "--domains", "ct", "--organs", "liver", "--timeout-s", "1")
    assert result.returncode == 1 and "error: the model failed on every case" in result.stderr, result.stderr
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert table["failure"].str.contains("time limit of 1 s").all()


# --- 11: a model that exits ---------------------------------------------------------------------


def test_11_sys_exit_is_that_case_s_failure(small_release, tmp_path):
    from helpers import exits

    for isolation in ("thread", "process"):
        config = EvalConfig(split="test", domains=("ct",), organs=("liver",), isolation=isolation)
        table = evaluate(FunctionModel(exits, name="exits"), small_release, tmp_path / isolation, config=config, progress=False).table
        assert len(table) == len(small_release.select(split="test", scan="ct"))
        assert table["failure"].str.contains(r"called sys.exit\(3\)").all()


def test_11_os_exit_loses_no_finished_scan_and_is_a_failure_under_process_isolation(small_release_root, tmp_path):
    module = tmp_path / "killer.py"
    module.write_text(textwrap.dedent("""
        import os, numpy as np
        seen = []
        def predict(case):
            seen.append(case.subject)
            if len(seen) == 2:
                os._exit(9)
            return np.zeros(case.image.shape, np.uint8)
    """))
    env = {"PYTHONPATH": str(tmp_path)}
    result = umd("evaluate", str(small_release_root), str(tmp_path / "run"), "--model", "python:killer:predict", "--split", "test",
                 "--domains", "ct,petct_pet", env=env)
    assert result.returncode == 9
    lines = (tmp_path / "run" / "results" / "shard-000-of-001.jsonl").read_text().splitlines()
    assert len(lines) == 1  # the scan finished before the model killed the process is kept

    isolated = tmp_path / "killer_process.py"
    isolated.write_text(textwrap.dedent("""
        import os
        def predict(case):
            os._exit(9)
    """))
    result = umd("evaluate", str(small_release_root), str(tmp_path / "isolated"), "--model", "python:killer_process:predict",
                 "--split", "test", "--domains", "ct,petct_pet", "--isolation", "process", env=env)
    assert result.returncode == 1 and "error: the model failed on every case" in result.stderr, result.stderr
    table = pd.read_csv(tmp_path / "isolated" / "results.csv")
    assert table["failure"].str.contains("worker process ended .exit code 9.").all()


# --- 12: clear messages, a full disk, two writers ---------------------------------------------


def test_12_a_truncated_or_missing_file_is_a_one_line_message(release_copy):
    release = open_release(release_copy)
    record = release.select(scan="ct")[0]
    path = release.image_path(record)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    result = umd("cache", "build", str(release_copy))
    assert result.returncode == 2 and "Aborted" not in result.stderr and "Traceback" not in result.stderr
    assert f"{path} has" in result.stderr and "truncated" in result.stderr and "umd verify" in result.stderr
    release.label_path(record).unlink()
    with pytest.raises(ReleaseNotFoundError, match=r"_labels.nii.gz is missing: the manifest lists it"):
        release.read(record, "label")


def test_12_a_full_disk_is_a_message_and_the_same_command_resumes(small_release, tmp_path, monkeypatch, capsys):
    import umd_dataset.io.files as files
    from umd_dataset import cli

    real = files.atomic_path
    calls = {"n": 0}

    def full_after_ten(target, tmp_dir=None):
        calls["n"] += 1
        if calls["n"] > 10:
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        return real(target, tmp_dir)

    monkeypatch.setattr(files, "atomic_path", full_after_ten)
    import umd_dataset.io.nifti as nifti

    monkeypatch.setattr(nifti, "atomic_path", full_after_ten)
    monkeypatch.setattr(sys, "argv", ["umd", "synth", str(tmp_path / "r"), "--subjects", "6", "--seed", "7", "--name", "UMD-test"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "no space left on the device while writing" in err and "run the same command again: it resumes" in err
    monkeypatch.setattr(files, "atomic_path", real)
    monkeypatch.setattr(nifti, "atomic_path", real)
    with pytest.raises(SystemExit) as finished:
        cli.main()
    assert finished.value.code == 0
    assert open_release(tmp_path / "r").scans == small_release.scans


def test_12_a_second_writer_of_the_same_folder_is_refused_at_once(tmp_path):
    first = subprocess.Popen([sys.executable, "-m", "umd_dataset.cli", "synth", str(tmp_path / "r"), "--subjects", "8"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "r" / ".umd-partial").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    second = umd("synth", str(tmp_path / "r"), "--subjects", "8")
    assert first.wait(120) == 0
    assert second.returncode == 2 and "is being written by another process" in second.stderr
    assert open_release(tmp_path / "r").verify().ok
    with pytest.raises(FolderBusyError):
        from umd_dataset.io.jobs import FolderLock

        with FolderLock(tmp_path / "lock", "a test"):
            FolderLock(tmp_path / "lock", "a second test")


# --- 13: the same settings give the same bytes ------------------------------------------------


@pytest.mark.slow
def test_13_concurrent_runs_of_the_same_settings_write_the_same_bytes(tmp_path):
    """Four `umd synth` at once used to compress some files differently (ISA-L level 1 keeps state
    in a buffer python-isal leaves uninitialised); the bytes must not depend on what else runs."""
    sums = []
    for round_ in range(2):
        runs = [subprocess.Popen([sys.executable, "-m", "umd_dataset.cli", "synth", str(tmp_path / f"r{round_}-{i}"), "--subjects",
                                  "12", "--seed", "3"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(4)]
        assert [r.wait(300) for r in runs] == [0, 0, 0, 0]
        for i in range(4):
            root = tmp_path / f"r{round_}-{i}"
            sums.append({p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*.nii.gz"))})
    assert all(s == sums[0] for s in sums[1:])


# --- 14: a report with nothing to score ---------------------------------------------------------


def test_14_a_report_where_every_row_is_absent_is_written(tmp_path):
    from umd_dataset.evaluation.report import write_report

    table = pd.DataFrame([
        {"model": "m", "subject": f"S{i}", "study": "petct", "scan": "ct", "domain": "ct", "split": "test", "organ": "brain",
         "organ_id": 13, "iteration": 0, "status": "absent", "failure": "", "dice": np.nan, "nsd_1mm": np.nan, "nsd_2mm": np.nan,
         "hd95_mm": np.nan, "assd_mm": np.nan, "edge_case": "absent", "prompt": ""}
        for i in range(3)
    ])
    run = {"model": "m", "kind": "automatic", "release": {"name": "UMD-test", "version": "1.0.0", "label_schema": "umd-v1"},
           "config": {"split": "test"}, "umd_dataset": "0.1.0"}
    md, html = write_report(tmp_path, table, run)
    assert "No case was scored" in md.read_text() and html.is_file()
