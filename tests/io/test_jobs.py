"""Resumable jobs: settings kept and compared by name, finished items recorded one by one, private
settings never shown, derived jobs restarted, and the item loop in one or several processes."""

from __future__ import annotations

import pytest

from umd_dataset.errors import JobMismatchError
from umd_dataset.io.jobs import JobFolder, Progress, run_items, setting_differences, track


def test_a_job_resumes_with_its_finished_items(tmp_path):
    job = JobFolder(tmp_path / "job", {"seed": 1, "grid": [8, 8]}, what="test job", fix="delete it.")
    job.record("S1/petct", {"rows": 2})
    job.record("S2/petct", [1, 2, 3])
    again = JobFolder(tmp_path / "job", {"grid": (8, 8), "seed": 1}, what="test job", fix="delete it.")
    assert again.finished == {"S1/petct": {"rows": 2}, "S2/petct": [1, 2, 3]}
    again.remove()
    assert not (tmp_path / "job").exists()


def test_other_settings_are_refused_naming_each_difference(tmp_path):
    JobFolder(tmp_path / "job", {"subjects": 20, "seed": 3, "options": {"overlap": "error"}}, what="test job", fix="start over.")
    with pytest.raises(JobMismatchError) as caught:
        JobFolder(tmp_path / "job", {"subjects": 6, "seed": 3, "options": {"overlap": "smallest"}}, what="test job", fix="start over.")
    assert caught.value.differences == ('options.overlap: "error" before, "smallest" now', "subjects: 20 before, 6 now")
    assert "interrupted test job with other settings" in str(caught.value) and "start over." in str(caught.value)


def test_private_settings_are_named_but_never_shown(tmp_path):
    JobFolder(tmp_path / "job", {"secret": "hunter2", "name": "a"}, what="job", fix="", private=("secret",))
    with pytest.raises(JobMismatchError) as caught:
        JobFolder(tmp_path / "job", {"secret": "letmein", "name": "a"}, what="job", fix="", private=("secret",))
    assert "secret: differs (value not shown)" in str(caught.value)
    assert "hunter2" not in str(caught.value) and "letmein" not in str(caught.value)


def test_a_derived_job_with_other_settings_starts_over(tmp_path):
    job = JobFolder(tmp_path / "job", {"codec": "lz4"}, what="cache", fix="", on_other_settings="restart")
    job.record("a", 1)
    again = JobFolder(tmp_path / "job", {"codec": "zstd"}, what="cache", fix="", on_other_settings="restart")
    assert again.restarted and again.finished == {}


def test_half_written_temporaries_of_a_killed_run_are_removed(tmp_path):
    job = JobFolder(tmp_path / "job", {}, what="job", fix="")
    (job.tmp / ".scan.abc.tmp.nii.gz").write_bytes(b"half")
    JobFolder(tmp_path / "job", {}, what="job", fix="")
    assert list(job.tmp.iterdir()) == []


def test_setting_differences_of_nested_and_missing_keys():
    assert setting_differences({"a": {"b": 1}}, {"a": {"b": 1}, "c": True}) == ('c: not set before, true now',)
    assert setting_differences({"reported": {}}, {"reported": {"ct": 0.9}}) == ('reported.ct: not set before, 0.9 now',)  # one line, naming the setting
    assert setting_differences({"a": [1, 2]}, {"a": (1, 2)}) == ()


def _square(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_run_items_hands_every_result_back_and_can_collect_failures(workers):
    results = {}
    run_items([1, 2, 3, 4], _square, lambda item, result: results.__setitem__(item, result), workers=workers, catch=True)
    assert results[1] == 1 and results[2] == 4 and results[4] == 16
    assert isinstance(results[3], ValueError) and str(results[3]) == "three"
    with pytest.raises(ValueError, match="three"):
        run_items([3], _square, lambda item, result: None, workers=workers)


def test_progress_is_silent_when_disabled(capsys):
    with Progress(3, desc="x", unit="item", enabled=False) as bar:
        bar.update()
    assert list(track(range(3), total=3, desc="x", unit="item", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
