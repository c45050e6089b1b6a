"""``run_job(progress=False)`` (a score command's ``--no-progress``) silences the scorer's own progress bars too:
with ``--workers 1`` the scorer runs in the command's process, where finance's zero-shot GJR-GARCH-t fits drew
their bar although the job's bar was off (worker processes and Ray actors already ran with SUITE_PROGRESS=0)."""

from __future__ import annotations

import os

import pandas as pd

from core.progress import progress
from core.scoring import Scorer, WorkItem, run_job


class BarScorer(Scorer):
    """Draws a bar of its own in ``load`` and in ``prepare_chunk``, as a scorer fitting something per item does."""

    def load(self) -> None:
        for _ in progress(range(3), desc="inner load bar"):
            pass

    def prepare_chunk(self, items) -> None:
        for _ in progress(items, desc="inner chunk bar"):
            pass

    def score(self, item: WorkItem) -> pd.DataFrame:
        return pd.DataFrame({"x": [len(item.id)]})


def test_no_progress_silences_the_scorers_own_bars_in_process_and_restores_the_setting(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SUITE_PROGRESS", raising=False)
    items = [WorkItem(id=f"i{k}") for k in range(4)]
    s = run_job(items, BarScorer(), tmp_path / "quiet", workers=1, items_per_chunk=2, progress=False)
    assert s.items_scored == 4
    err = capsys.readouterr().err
    assert "inner load bar" not in err and "inner chunk bar" not in err
    assert "SUITE_PROGRESS" not in os.environ  # the command's own setting again after the job

    monkeypatch.setenv("SUITE_PROGRESS", "1")
    run_job(items, BarScorer(), tmp_path / "shown", workers=1, items_per_chunk=2, progress=True)
    err = capsys.readouterr().err
    assert "inner load bar" in err and "inner chunk bar" in err  # with the job's bar on, its bars are left alone
    assert os.environ["SUITE_PROGRESS"] == "1"
