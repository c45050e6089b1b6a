"""`train --resume` refusals that the run folder alone decides (core.runs.check_resumable) come before the price
data is read: no such run, a run another command made. The data load is replaced with a sentinel: reaching it
means the refusal came too late (or, for a run that can be continued, that the preflight let it through)."""

from __future__ import annotations

import pytest


class DataWasRead(Exception):
    pass


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """An interrupted finance train run 'cut' and a finished score job 'job1'; the data load raises DataWasRead."""
    import domains.finance.train as train_cmd
    from core.runs import Run
    from domains.finance.config import TrainConfig

    def sentinel(*args, **kwargs):
        raise DataWasRead(args)

    monkeypatch.setattr(train_cmd, "load_panel_data", sentinel)
    cut = Run.start("finance", TrainConfig(runs_dir=str(tmp_path / "runs"), name="cut", track=False), command="train")
    cut._close("interrupted", error="killed")
    with Run.start("finance", TrainConfig(runs_dir=str(tmp_path / "runs"), name="job1", track=False), command="score", kind="job") as job:
        job.finish()
    return tmp_path / "runs"


@pytest.mark.parametrize("name,expected", [("nosuchrun", "--resume: no run .*nosuchrun to resume"),
                                           ("job1", "job1 is a score job run, not a train run")])
def test_refused_in_one_line_before_the_data_is_read(runs, capsys, name, expected):
    import re

    from domains.finance.train import main

    rc = main(["--runs-dir", str(runs), "--name", name, "--resume", "--no-track"])
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and re.search(expected, errors[0]), errors


def test_a_run_that_can_be_continued_gets_to_the_data(runs):
    from domains.finance.config import TrainConfig
    from domains.finance.train import train

    with pytest.raises(DataWasRead):
        train(TrainConfig(runs_dir=str(runs), name="cut", resume=True, track=False))
