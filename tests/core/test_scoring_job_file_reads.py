"""A score command reads its --out's _job.json once before the lock (check_scoring_job, whose record run_job reuses)
and once under it (what a concurrent run may have changed); the rest of the job uses that record. Before, a rerun
into a folder holding the job read the file 7 times (each check twice, then again to count the chunks)."""

import pytest

from core.scoring import JobMismatchError, ScoringConfig, check_scoring_job, digest_items, job_status, run_job, run_job_from_config
from core.scoring import job as scoring_job
from tests.scoring_support import PriceFileScorer, file_items, main as score_prices_main


@pytest.fixture
def job_reads(monkeypatch):
    """The output folders whose _job.json was read (core.scoring.job.read_job, the one reader of it)."""
    seen: list[str] = []
    real = scoring_job.read_job

    def counting(out):
        seen.append(str(out))
        return real(out)

    monkeypatch.setattr(scoring_job, "read_job", counting)
    return seen


def test_a_score_command_rerun_reads_the_job_file_once_before_the_lock_and_once_under_it(price_files, tmp_path, job_reads):
    out = tmp_path / "out"
    args = ["--items-dir", str(price_files[0].parent), "--runs-dir", str(tmp_path / "runs"), "--items-per-chunk", "5", "--no-progress", "--out", str(out)]
    assert score_prices_main(args) == 0
    assert job_reads == []  # a new folder: the job file is written, never read back
    assert score_prices_main(args) == 0  # the rerun: every chunk committed, all skipped
    assert job_reads == [str(out)] * 2  # the old code: 7


def test_run_job_alone_reads_it_once_per_check_and_status_once(price_files, tmp_path, job_reads):
    items = file_items(price_files)
    out = tmp_path / "out"
    run_job(items, PriceFileScorer(), out, items_per_chunk=5, progress=False)
    job_reads.clear()
    summary = run_job(items, PriceFileScorer(), out, items_per_chunk=5, progress=False)
    assert summary.chunks_skipped == 4 and len(job_reads) == 2  # before the lock and under it (the old code: 5)
    job_reads.clear()
    assert job_status(out)["complete"] and len(job_reads) == 1  # the old code: 2


def test_a_job_written_after_the_command_checked_is_still_refused_under_the_lock(price_files, tmp_path):
    """The record the command passes on is not trusted under the lock: another run that put another job into --out
    meanwhile is still refused, and its folder kept."""
    items = file_items(price_files)
    out = tmp_path / "out"
    run_job(items, PriceFileScorer(), out, items_per_chunk=5, progress=False)
    cfg = ScoringConfig(out=str(out), items_per_chunk=5, progress=False)
    digest = digest_items(items)
    job = check_scoring_job(cfg, items, PriceFileScorer(), digest)
    assert job is not None and job["description"]["n_items"] == len(items)
    run_job(items[:4], PriceFileScorer(), out, items_per_chunk=5, progress=False, overwrite=True)  # another run, meanwhile
    with pytest.raises(JobMismatchError, match="input items differ"):
        run_job_from_config(items, PriceFileScorer(), cfg, digest=digest, job=job)
    assert job_status(out)["items"] == 4
