"""An ``--out`` folder that holds ANOTHER scoring job (other items, scorer settings or chunking: its
``_job.json`` fingerprint differs) is refused in one line before anything is written: not its lock file,
not the leftovers of its own killed run, and no run folder for the refused job. The folder is left
byte for byte (and timestamp for timestamp) as it was."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.scoring import JobMismatchError, Scorer, ScoringConfig, WorkItem, check_scoring_job, run_job
from tests.scoring_support import folder_snapshot


class ScaleScorer(Scorer):
    def __init__(self, scale: int = 1):
        self.scale = scale

    def score(self, item: WorkItem) -> pd.DataFrame:
        return pd.DataFrame({"x": [self.scale * len(item.id)]})


ITEMS = [WorkItem(id=f"item-{i}") for i in range(3)]


def _other_jobs_folder(tmp_path: Path) -> Path:
    out = tmp_path / "scores"
    run_job(ITEMS, ScaleScorer(1), out, items_per_chunk=1, progress=False)
    (out / ".part-000002.tmp-x1y2.parquet").write_bytes(b"half a part")  # what a killed run of that job may leave
    return out


def test_run_job_refuses_another_job_before_touching_its_folder(tmp_path):
    out = _other_jobs_folder(tmp_path)
    before = folder_snapshot(out)
    with pytest.raises(JobMismatchError) as e:
        run_job(ITEMS, ScaleScorer(2), out, items_per_chunk=1, progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{out} holds another scoring job: the scorer or its config differs (scale: 1 before, 2 now)") and "\n" not in msg
    assert folder_snapshot(out) == before  # the lock file used to be rewritten and the other job's temp file deleted


def test_check_scoring_job_reads_only_and_names_what_differs(tmp_path):
    out = _other_jobs_folder(tmp_path)
    before = folder_snapshot(out)
    cfg = ScoringConfig(out=str(out), items_per_chunk=1)
    with pytest.raises(JobMismatchError, match=r"holds another scoring job: the input items differ \(3 before, 2 now, or files changed\)"):
        check_scoring_job(cfg, ITEMS[:2], ScaleScorer(1))
    with pytest.raises(JobMismatchError, match=r"items-per-chunk differs \(1 before, 2 now\)"):
        check_scoring_job(ScoringConfig(out=str(out), items_per_chunk=2), ITEMS, ScaleScorer(1))
    check_scoring_job(cfg, ITEMS, ScaleScorer(1))  # the same job: resumed later, not refused
    check_scoring_job(ScoringConfig(out=str(out), items_per_chunk=1, overwrite=True), ITEMS[:2], ScaleScorer(2))  # discarded later, under the lock
    check_scoring_job(ScoringConfig(out=None), ITEMS[:2], ScaleScorer(2))  # no --out: the job's own new folder
    assert folder_snapshot(out) == before


def test_the_test_score_cli_refuses_another_job_in_out_with_one_line_and_writes_nothing(price_files, tmp_path, capsys):
    from tests.scoring_support import main

    out, runs = tmp_path / "out", tmp_path / "runs"
    common = ["--items-dir", str(price_files[0].parent), "--out", str(out), "--runs-dir", str(runs), "--no-progress"]
    assert main(common + ["--items-per-chunk", "5"]) == 0
    before = folder_snapshot(out)
    capsys.readouterr()
    assert main(common + ["--items-per-chunk", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {out} holds another scoring job: items-per-chunk differs (5 before, 4 now). "
                   "Refusing to mix outputs; use --overwrite to discard it and start over, or another --out"]
    assert folder_snapshot(out) == before and not runs.exists()


def test_the_test_score_cli_checks_its_items_before_its_run_folder(tmp_path, capsys):
    """Like the domains' score commands (check_scoring_items before Run.start): an items folder without
    price files is one line, exit 2, and leaves no failed job run behind."""
    from tests.scoring_support import main

    (tmp_path / "empty").mkdir()
    runs = tmp_path / "runs"
    assert main(["--items-dir", str(tmp_path / "empty"), "--runs-dir", str(runs), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --items-dir {tmp_path / 'empty'}: no items to score (expected at least one price CSV (*.csv))"]
    assert not runs.exists()  # the run folder (status failed) was created before the items were looked at


class FolderScorer(ScaleScorer):
    def __init__(self, folder: str):
        self.folder = folder


def test_a_long_setting_that_differs_is_shown_by_its_end(tmp_path):
    """Two run folders under the same long runs path differ at their end; the message used to cut both after
    80 characters, showing the same prefix twice."""
    root = "/data/" + "long-project-name/" * 6 + "runs/medical/"
    out = tmp_path / "scores"
    run_job(ITEMS, FolderScorer(root + "score-1a2b3c/masks"), out, items_per_chunk=1, progress=False)
    with pytest.raises(JobMismatchError) as e:
        check_scoring_job(ScoringConfig(out=str(out), items_per_chunk=1), ITEMS, FolderScorer(root + "score-1a2b3c-1/masks"))
    assert 'score-1a2b3c/masks" before, ' in str(e.value) and 'score-1a2b3c-1/masks" now)' in str(e.value)
