"""core.scoring's items digest decides whether a score job's committed output can be reused: it must tell a changed input
(session 13). Before, each item's file was stamped by size and mtime only and a folder item by its own entry, so another
file of the same size and time at the same path, or a file rewritten inside a folder, reused the stale output; and a
digest handed on was checked against the items by their number only. A job recorded before is scored again."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from core.scoring import JobMismatchError, Scorer, WorkItem, digest_items, job_fingerprint, read_output, run_job
from core.scoring.job import FORMAT_VERSION, JOB_FILE


class TextScorer(Scorer):
    """One row per item: the text of its file, or of every file of its folder."""

    def __init__(self, tag: str = "a"):
        self.tag = tag

    def score(self, item: WorkItem) -> pd.DataFrame:
        p = Path(item.path)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        return pd.DataFrame({"text": ["".join(f.read_text() for f in files)]})


def _run(items, out, scorer=None, **kw):
    return run_job(items, scorer or TextScorer(), out, items_per_chunk=1, progress=False, **kw)


def _three_files_scored(tmp_path: Path) -> tuple[list[Path], list[WorkItem], Path]:
    """(files, their items, the output folder) of a job that scored three text files ``old 0`` .. ``old 2``."""
    files = [tmp_path / f"in{i}.txt" for i in range(3)]
    for i, f in enumerate(files):
        f.write_text(f"old {i}\n")
    items = [WorkItem(id=f.name, path=str(f)) for f in files]
    out = tmp_path / "out"
    _run(items, out)
    return files, items, out


def _replace_keeping_size_and_mtime(path: Path, text: str) -> None:
    """What ``cp -p`` / ``rsync -t`` / unpacking an archive again does: other bytes, the same size and modification time."""
    st = path.stat()
    assert len(text.encode()) == st.st_size
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_a_file_replaced_by_another_of_the_same_size_and_mtime_is_not_reused(tmp_path):
    files, items, out = _three_files_scored(tmp_path)
    _replace_keeping_size_and_mtime(files[1], "new 1\n")
    with pytest.raises(JobMismatchError, match="the input items differ"):  # the old stamp: every chunk skipped, 'old 1' served
        _run(items, out)
    _run(items, out, overwrite=True)
    assert read_output(out).sort_values("work_item")["text"].tolist() == ["old 0\n", "new 1\n", "old 2\n"]


def test_a_file_rewritten_inside_a_folder_item_is_not_reused(tmp_path):
    series = tmp_path / "series"  # a folder item (a DICOM series, a model run): its own entry does not change
    series.mkdir()
    (series / "a.dcm").write_text("slice a\n")
    (series / "b.dcm").write_text("slice b\n")
    items = [WorkItem(id="series", path=str(series))]
    before = digest_items(items)
    out = tmp_path / "out"
    _run(items, out)
    folder_mtime = series.stat().st_mtime_ns
    (series / "b.dcm").write_text("slice B\n")  # rewritten in place
    assert series.stat().st_mtime_ns == folder_mtime
    assert digest_items(items).sha256 != before.sha256
    with pytest.raises(JobMismatchError, match="the input items differ"):
        _run(items, out)
    assert digest_items(items).sha256 == digest_items(items).sha256  # nothing changed: the same digest (a rerun resumes)


def test_a_digest_handed_on_must_be_of_these_items_not_only_as_many(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("a\n")
    b.write_text("b\n")
    items_a, items_b = [WorkItem(id="x", path=str(a))], [WorkItem(id="x", path=str(b))]
    with pytest.raises(ValueError, match="not of these 1 items"):  # one item each: the count alone let b's job use a's digest
        job_fingerprint(items_b, TextScorer(), 1, digest_items(items_a))
    out = tmp_path / "out"
    _run(items_a, out)
    with pytest.raises(ValueError, match="not of these 1 items"):
        _run(items_b, out, digest=digest_items(items_a))
    assert job_fingerprint(list(items_a), TextScorer(), 1, digest_items(items_a))[0] == job_fingerprint(items_a, TextScorer(), 1)[0]  # equal items: fine


def _record_as_before(out: Path, items, scorer) -> None:
    """Rewrite ``out``'s job record as the code before the content digest wrote it (size + mtime per file, no
    ``items_digest``), fingerprint included."""
    h = hashlib.sha256()
    for it in items:
        st = os.stat(it.path)
        h.update(json.dumps([it.to_dict(), [st.st_size, st.st_mtime_ns]], sort_keys=True, default=str).encode() + b"\n")
    job = json.loads((out / JOB_FILE).read_text())
    desc = {k: v for k, v in job["description"].items() if k != "items_digest"}
    desc["items_sha256"] = h.hexdigest()
    assert desc["format"] == FORMAT_VERSION
    job.update(description=desc, fingerprint=hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest())
    (out / JOB_FILE).write_text(json.dumps(job))


def test_a_job_recorded_before_is_scored_again_and_another_job_still_refused(tmp_path, caplog):
    files, items, out = _three_files_scored(tmp_path)
    _record_as_before(out, items, TextScorer())
    _replace_keeping_size_and_mtime(files[2], "new 2\n")  # what the old record cannot tell
    summary = _run(items, out)
    assert summary.chunks_skipped == 0 and summary.chunks_done == 3  # not reused, not refused: scored again
    assert read_output(out).sort_values("work_item")["text"].tolist() == ["old 0\n", "old 1\n", "new 2\n"]
    assert "recorded before the inputs' files were stamped by content" in caplog.text and "3 committed chunk(s) are scored again" in caplog.text
    assert json.loads((out / JOB_FILE).read_text())["description"]["items_digest"] == 2
    assert _run(items, out).chunks_skipped == 3  # the new record: resumed as before
    _record_as_before(out, items, TextScorer())
    with pytest.raises(JobMismatchError, match="the scorer or its config differs"):  # an old record of another job: refused as before
        _run(items, out, scorer=TextScorer("b"))


def test_items_sharing_a_folder_stamp_it_once(tmp_path, monkeypatch):
    from core.scoring import job as scoring_job

    run = tmp_path / "run"  # e.g. a model run whose users are cut into ranges
    run.mkdir()
    (run / "w.bin").write_bytes(b"w")
    seen = []
    real = scoring_job._file_stamp
    monkeypatch.setattr(scoring_job, "_file_stamp", lambda p: seen.append(p) or real(p))
    digest_items([WorkItem(id=f"r{i}", path=str(run), start=i, stop=i + 1) for i in range(50)])
    assert seen == [str(run)]  # one walk of the folder, not one per item


def test_a_job_recorded_before_with_a_damaged_marker_folder_is_scored_again_too(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("x\n")
    items = [WorkItem(id="in", path=str(f))]
    out = tmp_path / "out"
    _run(items, out)
    _record_as_before(out, items, TextScorer())
    shutil.rmtree(out / "_done")
    (out / "_done").write_text("not a folder")  # counting its markers for the warning raised instead of starting over
    assert _run(items, out).chunks_done == 1
    assert read_output(out)["text"].tolist() == ["x\n"]
