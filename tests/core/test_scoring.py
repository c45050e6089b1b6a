"""Batch scoring engine, local engine: exactly-once output, resume, fingerprint, quarantine,
worker crash, and SIGKILL of the whole scoring process (on real S&P 500 price files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from core.config import RunConfig, parse_config
from core.scoring import (
    WORK_ITEM_COLUMN,
    JobMismatchError,
    ScoringConfig,
    ScoringError,
    file_items,
    job_status,
    read_output,
    read_quarantine,
    row_range_items,
    run_job,
)
from tests.scoring_support import PriceFileScorer, committed_markers, output_checksum

REPO = Path(__file__).resolve().parents[2]


def _reference(price_files) -> pd.DataFrame:
    """What the output must be: every file scored directly, in item order."""
    s = PriceFileScorer()
    s.load()
    frames = []
    for it in file_items(price_files):
        df = s.score(it)
        df.insert(0, WORK_ITEM_COLUMN, it.id)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def test_output_is_every_row_once_in_item_order(price_files, tmp_path):
    summary = run_job(file_items(price_files), PriceFileScorer(), tmp_path / "out", items_per_chunk=3, progress=False)
    out = read_output(tmp_path / "out", verify=True)
    ref = _reference(price_files)
    pd.testing.assert_frame_equal(out, ref)
    assert (summary.chunks_total, summary.chunks_done, summary.chunks_skipped) == (7, 7, 0)
    assert summary.rows == summary.rows_total == len(ref) == 20 * 400
    assert summary.items_scored == 20 and summary.items_quarantined == 0
    # the folder is also a plain Parquet data set (underscore files are ignored by readers)
    assert len(pd.read_parquet(tmp_path / "out")) == len(ref)
    assert json.loads((tmp_path / "out" / "_SUCCESS.json").read_text())["rows_total"] == len(ref)


def test_rerun_skips_committed_chunks_and_redoes_uncommitted(price_files, tmp_path):
    out = tmp_path / "out"
    items = file_items(price_files)
    run_job(items, PriceFileScorer(), out, items_per_chunk=2, progress=False)
    reference = output_checksum(out)
    kept = out / "part-000000.parquet"
    kept_mtime = kept.stat().st_mtime_ns
    # a crash after chunk 4's part was written but before its marker; chunk 7 never started
    (out / "_done" / "chunk-000004.json").unlink()
    (out / "_done" / "chunk-000007.json").unlink()
    (out / "part-000007.parquet").unlink()
    assert len(read_output(out)) == 16 * 400  # uncommitted chunks are not visible
    status = job_status(out)
    assert (status["chunks_committed"], status["chunks_total"], status["complete"], status["rows"]) == (8, 10, False, 16 * 400)
    summary = run_job(items, PriceFileScorer(), out, items_per_chunk=2, progress=False)
    assert (summary.chunks_done, summary.chunks_skipped) == (2, 8)
    assert summary.items_scored == 4 and summary.rows == 4 * 400 and summary.rows_total == 20 * 400
    assert kept.stat().st_mtime_ns == kept_mtime  # committed chunks are not rewritten
    assert output_checksum(out) == reference
    # nothing left to do: a third run is a no-op
    again = run_job(items, PriceFileScorer(), out, items_per_chunk=2, progress=False)
    assert (again.chunks_done, again.chunks_skipped, again.rows) == (0, 10, 0)


def test_other_job_in_same_folder_is_refused_until_overwrite(price_files, tmp_path):
    out = tmp_path / "out"
    items = file_items(price_files)
    run_job(items, PriceFileScorer(), out, items_per_chunk=4, progress=False)
    with pytest.raises(JobMismatchError, match="input items differ"):
        run_job(items[:-1], PriceFileScorer(), out, items_per_chunk=4, progress=False)
    with pytest.raises(JobMismatchError, match="scorer or its config differs"):
        run_job(items, PriceFileScorer(work=1), out, items_per_chunk=4, progress=False)
    with pytest.raises(JobMismatchError, match="items-per-chunk"):
        run_job(items, PriceFileScorer(), out, items_per_chunk=5, progress=False)
    # an input file rewritten in place is another job too
    price_files[0].write_text(price_files[0].read_text().replace("date,close", "date,close", 1) + "\n")
    with pytest.raises(JobMismatchError, match="--overwrite"):
        run_job(items, PriceFileScorer(), out, items_per_chunk=4, progress=False)
    summary = run_job(items[:-1], PriceFileScorer(), out, items_per_chunk=4, progress=False, overwrite=True)
    assert summary.chunks_skipped == 0 and summary.rows_total == 19 * 400
    assert read_output(out)[WORK_ITEM_COLUMN].nunique() == 19


def test_refuses_to_write_into_or_delete_a_foreign_folder(price_files, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(ScoringError, match="not empty"):
        run_job(file_items(price_files), PriceFileScorer(), foreign, progress=False)
    with pytest.raises(ScoringError, match="refusing to delete"):
        run_job(file_items(price_files), PriceFileScorer(), foreign, progress=False, overwrite=True)
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_corrupt_and_missing_inputs_are_quarantined_and_the_rest_scored(price_files, tmp_path, capsys):
    corrupt = price_files[3]
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n\x00garbage\x00\xff" * 10)
    negative = price_files[7]
    df = pd.read_csv(negative)
    df.loc[5, "close"] = -1.0
    df.to_csv(negative, index=False)
    items = file_items(price_files) + [file_items([tmp_path / "missing.csv"])[0]]
    summary = run_job(items, PriceFileScorer(fail_ids=("MSFT.csv",)), tmp_path / "out", items_per_chunk=4, progress=False)
    q = read_quarantine(tmp_path / "out").set_index("item_id")
    assert sorted(q.index) == sorted([corrupt.name, negative.name, "missing.csv", "MSFT.csv"])
    assert "not a readable CSV" in q.loc[corrupt.name, "reason"]
    assert "positive" in q.loc[negative.name, "reason"]
    assert q.loc["missing.csv", "error_type"] == "FileNotFoundError"
    assert q.loc["MSFT.csv", "reason"].endswith("rejected by fail_ids")
    assert summary.items_quarantined == 4 and summary.items_scored == 17
    out = read_output(tmp_path / "out")
    assert set(out[WORK_ITEM_COLUMN]) == {p.name for p in price_files} - set(q.index)
    assert len(out) == 17 * 400
    assert job_status(tmp_path / "out")["items_quarantined"] == 4 and job_status(tmp_path / "out")["complete"]
    from core.scoring.__main__ import main as inspect_main

    assert inspect_main(["quarantine", str(tmp_path / "out")]) == 0
    assert "rejected by fail_ids" in capsys.readouterr().out
    assert inspect_main(["status", str(tmp_path)]) == 2  # not a scoring folder: one-line error
    assert "not a scoring output folder" in capsys.readouterr().err


def test_two_worker_processes_write_the_same_bytes_as_one(price_files, tmp_path):
    items = file_items(price_files)
    run_job(items, PriceFileScorer(), tmp_path / "one", workers=1, items_per_chunk=3, progress=False)
    s2 = run_job(items, PriceFileScorer(), tmp_path / "two", workers=2, items_per_chunk=3, progress=False)
    assert s2.workers == 2 and s2.chunks_done == 7
    for p in sorted((tmp_path / "one").glob("part-*.parquet")):
        assert p.read_bytes() == (tmp_path / "two" / p.name).read_bytes(), p.name
    workers = {m["worker"] for m in committed_markers(tmp_path / "two")}
    assert len(workers) >= 1 and all(str(os.getpid()) not in w.split(":")[1] for w in workers)


def test_a_worker_process_killed_mid_chunk_is_replaced_and_the_chunk_rescored(price_files, tmp_path):
    items = file_items(price_files)
    run_job(items, PriceFileScorer(), tmp_path / "ref", items_per_chunk=2, progress=False)
    scorer = PriceFileScorer(crash_id=items[9].id, crash_once_dir=str(tmp_path))
    summary = run_job(items, scorer, tmp_path / "out", workers=2, items_per_chunk=2, progress=False)
    assert (tmp_path / "crashed").exists()  # the worker really died with SIGKILL
    assert summary.worker_restarts == 1 and summary.chunks_done == 10
    assert output_checksum(tmp_path / "out") == output_checksum(tmp_path / "ref")


def test_sigkill_of_the_scoring_process_then_rerun_gives_every_row_once(price_files, tmp_path):
    items_dir = price_files[0].parent
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    run_job(file_items(sorted(items_dir.glob("*.csv"))), PriceFileScorer(), ref_out, items_per_chunk=2, progress=False)
    cmd = [sys.executable, "-m", "tests.scoring_support", "--items-dir", str(items_dir), "--out", str(out),
           "--items-per-chunk", "2", "--workers", "2", "--sleep", "0.3", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(committed_markers(out)) < 3:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-run
    finally:
        proc.wait(timeout=30)
    # the markers the engine counts: a SIGKILL mid-write can leave a temp marker (.chunk-…json), removed and re-scored on rerun
    committed = len(committed_markers(out))
    assert 3 <= committed < 10, f"kill landed after {committed} chunks; expected mid-run"
    # rerun in-process: the CLI's job (scorer class of a `python -m` run) is recognised as the same job
    again = run_job(file_items(sorted(items_dir.glob("*.csv"))), PriceFileScorer(), out, workers=2, items_per_chunk=2, progress=False)
    assert (again.chunks_skipped, again.chunks_done) == (committed, 10 - committed)
    out_df = read_output(out, verify=True)
    assert len(out_df) == 20 * 400
    assert not out_df.duplicated([WORK_ITEM_COLUMN, "date"]).any()
    assert output_checksum(out) == output_checksum(ref_out)
    assert not list(out.rglob(".*.tmp"))  # half-written files of the killed run were cleaned up


def test_row_range_items_partition_one_file(price_files, tmp_path):
    items = row_range_items(price_files[0], n_rows=400, rows_per_item=64)
    assert [(i.start, i.stop) for i in items][-1] == (384, 400) and len(items) == 7
    run_job(items, PriceFileScorer(), tmp_path / "out", items_per_chunk=2, progress=False)
    out = read_output(tmp_path / "out")
    assert len(out) == 400 and out["date"].is_unique
    assert out["date"].tolist() == pd.read_csv(price_files[0])["date"].tolist()


def test_scoring_config_adds_the_standard_flags():
    @dataclass
    class ScoreConfig(ScoringConfig, RunConfig):
        checkpoint: str | None = None

    cfg = parse_config(ScoreConfig, ["--engine", "ray", "--workers", "3", "--address", "127.0.0.1:6379", "--out", "/x",
                                     "--items-per-chunk", "5", "--overwrite", "--name", "n"])
    assert (cfg.engine, cfg.workers, cfg.address, cfg.out, cfg.items_per_chunk, cfg.overwrite, cfg.name) == ("ray", 3, "127.0.0.1:6379", "/x", 5, True, "n")
    with pytest.raises(SystemExit):
        parse_config(ScoreConfig, ["--engine", "spark"])


def test_cli_reports_a_job_mismatch_in_one_line(price_files, tmp_path):
    items_dir = price_files[0].parent
    cmd = [sys.executable, "-m", "tests.scoring_support", "--items-dir", str(items_dir), "--out", str(tmp_path / "o"), "--no-progress"]
    assert subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=60).returncode == 0
    price_files[0].unlink()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "error:" in r.stderr and "--overwrite" in r.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_model_load_stops_the_job_with_its_reason(price_files, tmp_path, workers):
    from core.scoring import ScorerLoadError

    with pytest.raises(ScorerLoadError, match=r"PriceFileScorer.load\(\) failed: FileNotFoundError: work=-1: no such model"):
        run_job(file_items(price_files), PriceFileScorer(work=-1), tmp_path / "out", workers=workers, progress=False)
    assert not committed_markers(tmp_path / "out")


def test_unreachable_ray_address_fails_fast_with_a_clear_error(price_files, tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t0 = time.monotonic()
    with pytest.raises(ScoringError, match=f"--address 127.0.0.1:{port}: no Ray head node reachable"):
        run_job(file_items(price_files), PriceFileScorer(), tmp_path / "out", engine="ray", address=f"127.0.0.1:{port}", progress=False)
    assert time.monotonic() - t0 < 10
    with pytest.raises(ScoringError, match="only applies to --engine ray"):
        run_job(file_items(price_files), PriceFileScorer(), tmp_path / "out2", address=f"127.0.0.1:{port}", progress=False)


def test_a_second_concurrent_run_into_the_same_folder_is_refused(price_files, tmp_path):
    from core.scoring.job import job_lock

    out = tmp_path / "out"
    with job_lock(out):  # as if another scoring process were writing here
        with pytest.raises(ScoringError, match=f"another scoring run \\(pid {os.getpid()}\\)"):
            run_job(file_items(price_files), PriceFileScorer(), out, progress=False)
    assert run_job(file_items(price_files), PriceFileScorer(), out, progress=False).chunks_done == 2  # lock released


def test_work_items_must_be_unique_with_json_meta_and_valid_ranges(price_files, tmp_path):
    from core.scoring import WorkItem

    good = file_items(price_files)
    with pytest.raises(ScoringError, match="unique"):
        run_job(good + good[:1], PriceFileScorer(), tmp_path / "a", progress=False)
    with pytest.raises(ScoringError, match="JSON-serialisable"):
        run_job([WorkItem("x", str(price_files[0]), meta={"when": object()})], PriceFileScorer(), tmp_path / "b", progress=False)
    with pytest.raises(ScoringError, match="not a valid range"):
        run_job([WorkItem("x", str(price_files[0]), start=10, stop=5)], PriceFileScorer(), tmp_path / "c", progress=False)
    assert not (tmp_path / "a").exists()  # nothing written for a refused job


class _MeasuringScorer(PriceFileScorer):
    def load(self) -> None:
        super().load()
        self._load_info = {"loaded_by": os.getpid()}


@pytest.mark.parametrize("workers", [1, 2])
def test_what_load_measures_reaches_the_summary_per_worker(price_files, tmp_path, workers):
    from core.scoring import run_job

    items = file_items(price_files)
    s = run_job(items, _MeasuringScorer(), tmp_path / "out", workers=workers, items_per_chunk=1, progress=False)
    assert 1 <= len(s.worker_load_info) <= workers
    assert all(set(info) == {"loaded_by"} for info in s.worker_load_info.values())
    if workers == 2:  # separate worker processes, not the driver
        assert os.getpid() not in {info["loaded_by"] for info in s.worker_load_info.values()}
    again = run_job(items, _MeasuringScorer(), tmp_path / "out", workers=workers, items_per_chunk=1, progress=False)
    assert again.worker_load_info == {}  # nothing left to score: no worker loaded anything
