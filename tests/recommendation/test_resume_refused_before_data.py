"""`train --resume` refusals that the run folder alone decides come before --data is read (on a large file the
user waited for the whole load, then got one line): no such run, no train run at all, a run another command made,
a run another process is writing, --text lora, and data other than the run's. Each test replaces the data load
with a sentinel: reaching it means the refusal came too late (or, for the accepted cases, that it was passed)."""

from __future__ import annotations

from functools import partial
import shutil

import numpy as np
import pandas as pd
import pytest

from core.errors import UserInputError
from tests.recommendation_support import DataWasRead, resume_cfg

_cfg = partial(resume_cfg, name="done", validation_ratio=0)  # this file's run and its validation ratio


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny train run (name 'done') on a.csv, and a recommend job (name 'job1') beside it."""
    from domains.recommendation import recommend
    from domains.recommendation.train import train

    d = tmp_path_factory.mktemp("resume-early")
    rng = np.random.default_rng(0)
    rows = [(u, f"i{i}", t) for u in range(10) for t, i in enumerate(rng.choice(25, 6, replace=False))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(d / "a.csv", index=False)
    pd.DataFrame(rows[:-6], columns=["user_id", "item_id", "timestamp"]).to_csv(d / "b.csv", index=False)  # other data
    shutil.copy(d / "a.csv", d / "copy-of-a.csv")
    train(_cfg(d, data=str(d / "a.csv"), resume=False))
    assert recommend.main(["--model-run", "done", "--runs-dir", str(d / "runs"), "--name", "job1", "--user", "1"]) == 0
    return d


def test_the_run_records_the_data_it_reads(trained):
    import json

    from core.runs import content_digest

    rec = json.loads((trained / "runs" / "recommendation" / "done" / "data_source.json").read_text())  # core's record of a same-data field
    assert rec == {"data": {"value": str(trained / "a.csv"), "path": str(trained / "a.csv"), "content": content_digest(trained / "a.csv")}}
    assert rec["data"]["content"]["bytes"] == (trained / "a.csv").stat().st_size


@pytest.mark.parametrize("case,kw,expected", [
    ("no such run", dict(name="nosuch"), r"--resume: no run .*nosuch to resume"),
    ("another command's run", dict(name="job1"), r"job1 is a recommend job run, not a train run"),
    ("other data", dict(data="b.csv"), r"--resume of run done: it was trained on --data .*a\.csv', this command reads --data .*b\.csv', which holds other "
                                       r"data \(.*\); expected the same data \(the checkpoint's users and items are that data's rows\): pass --data '.*a\.csv'"),
    ("bundled instead of the file", dict(data="ml-100k"), r"trained on --data .*a\.csv', this command reads --data 'ml-100k'; expected the same data"),
    ("lora", dict(text="lora"), r"--resume with --text lora is not supported"),
])
def test_refused_in_one_line_before_the_data_is_read(trained, no_data, case, kw, expected):
    from domains.recommendation.train import train

    if kw.get("data", "").endswith(".csv"):
        kw = {**kw, "data": str(trained / kw["data"])}
    with pytest.raises(UserInputError, match=expected) as e:
        train(_cfg(trained, **kw))
    assert "\n" not in str(e.value)


def test_no_train_run_at_all_is_refused_before_the_data_is_read(tmp_path, no_data):
    from domains.recommendation.train import train

    with pytest.raises(UserInputError, match="no recommendation train run under .* to resume"):
        train(_cfg(tmp_path, name=None))


def test_a_run_being_written_is_refused_before_the_data_is_read(trained, no_data):
    from core.locking import FolderLock
    from core.runs import LOCK_FILE, RunLockedError
    from domains.recommendation.train import train

    lock = FolderLock.acquire(trained / "runs" / "recommendation" / "done" / LOCK_FILE)  # another handle: as another process's
    try:
        with pytest.raises(RunLockedError, match="is being written by PID"):
            train(_cfg(trained))
    finally:
        lock.release()


@pytest.mark.parametrize("data", ["a.csv", "copy-of-a.csv"])
def test_the_same_data_passes_the_early_checks(trained, no_data, data):
    from domains.recommendation.train import train

    with pytest.raises(DataWasRead):  # got as far as reading the data
        train(_cfg(trained, data=str(trained / data)))


def test_the_command_line_gives_one_error_line_and_exit_2(trained, no_data, capsys):
    from domains.recommendation.train import main

    rc = main(["--runs-dir", str(trained / "runs"), "--name", "done", "--resume", "--data", str(trained / "b.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1 and "expected the same data" in err, err
