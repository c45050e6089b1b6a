"""One score command stats each input file once: the name, the --out check, the check before the lock and the
one under it share the items' digest (core.scoring.digest_items) instead of each taking it again."""

import pytest

from core.scoring import JobMismatchError, digest_items, job_fingerprint, run_job
from core.scoring import job as scoring_job
from tests.scoring_support import PriceFileScorer, file_items, main as score_prices_main


@pytest.fixture
def stamps(monkeypatch):
    """The paths whose size+mtime the fingerprint read (one os.stat each)."""
    seen: list[str] = []
    real = scoring_job._file_stamp

    def counting(path):
        seen.append(path)
        return real(path)

    monkeypatch.setattr(scoring_job, "_file_stamp", counting)
    return seen


def test_run_job_stats_each_input_once_also_when_resuming_a_folder(price_files, tmp_path, stamps):
    items = file_items(price_files)
    out = tmp_path / "out"
    run_job(items, PriceFileScorer(), out, items_per_chunk=5, progress=False)
    assert len(stamps) == len(items)
    stamps.clear()
    summary = run_job(items, PriceFileScorer(), out, items_per_chunk=5, progress=False)  # the folder holds this job: checked twice
    assert summary.chunks_skipped == 4
    assert sorted(stamps) == sorted(str(p) for p in price_files)  # each file once (the old code: twice)


@pytest.mark.parametrize("with_out", [True, False])
def test_a_score_command_stats_each_input_once(price_files, tmp_path, stamps, with_out):
    """The command (tests.scoring_support's score CLI, shaped like a domain's): --out given (its job checked
    before the run and again by run_job, before and under the lock) or not (the run named from the inputs)."""
    args = ["--items-dir", str(price_files[0].parent), "--runs-dir", str(tmp_path / "runs"), "--items-per-chunk", "5", "--no-progress"]
    if with_out:
        args += ["--out", str(tmp_path / "out")]
    assert score_prices_main(args) == 0
    stamps.clear()
    assert score_prices_main(args) == 0  # the rerun: every check of the existing job (the old code: 3 stats per file)
    assert sorted(stamps) == sorted(str(p) for p in price_files)


def test_a_given_digest_must_be_of_these_items_and_a_changed_input_is_still_refused(price_files, tmp_path):
    items = file_items(price_files)
    with pytest.raises(ValueError, match="not of these 19 items"):
        job_fingerprint(items[:-1], PriceFileScorer(), 5, digest_items(items))
    out = tmp_path / "out"
    run_job(items, PriceFileScorer(), out, items_per_chunk=5, progress=False)
    price_files[3].write_text(price_files[3].read_text() + price_files[3].read_text().splitlines()[-1] + "\n")  # an input changed since
    with pytest.raises(JobMismatchError, match="input items differ"):
        run_job(items, PriceFileScorer(), out, items_per_chunk=5, progress=False, digest=digest_items(items))
