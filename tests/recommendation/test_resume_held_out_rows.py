"""`train --resume` with settings that hold out other interactions than the run was started with (another --split,
--split-seed, --seed for a stratified carve, --validation-ratio, --date-order) is refused in one line naming both values,
before the data is read: the checkpoint has trained on the run's training rows, which the new split would test or
validate on (test leakage). Core's design (continue with the new settings, with a warning) stays for everything else,
e.g. --seed on a leave-last-out run, whose split draws nothing. The data load is replaced by a sentinel: reaching it
means the command got past the check."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import pytest

from core.errors import UserInputError
from tests.recommendation_support import DataWasRead, resume_cfg

_cfg = partial(resume_cfg, name="strat", validation_ratio=0.25)  # this file's run and its validation ratio


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished tiny train runs on a.csv: 'strat' (msr-stratified-75, validation 0.25, seed 0, split seed 42) and
    'llo' (leave-last-out, validation on)."""
    from domains.recommendation.train import train

    d = tmp_path_factory.mktemp("resume-held-out")
    rng = np.random.default_rng(0)
    rows = [(u, f"i{i}", t) for u in range(10) for t, i in enumerate(rng.choice(25, 8, replace=False))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(d / "a.csv", index=False)
    train(_cfg(d, name="strat", resume=False))
    train(_cfg(d, name="llo", split="leave-last-out", resume=False))
    return d


@pytest.mark.parametrize("name,kw,started,asked", [
    ("strat", dict(split="leave-last-out"), "--split 'msr-stratified-75'", "--split 'leave-last-out'"),
    ("strat", dict(split="temporal"), "--split 'msr-stratified-75'", "--split 'temporal'"),
    ("strat", dict(split_seed=7), "--split-seed 42", "--split-seed 7"),
    ("strat", dict(seed=3), "--seed 0", "--seed 3"),
    ("strat", dict(validation_ratio=0.5), "--validation-ratio 0.25", "--validation-ratio 0.5"),
    ("strat", dict(seed=3, split_seed=1), "--split-seed 42 --seed 0", "--split-seed 1 --seed 3"),
    ("strat", dict(date_order="day-first"), "--date-order 'auto'", "--date-order 'day-first'"),
    ("llo", dict(split="msr-stratified-75"), "--split 'leave-last-out'", "--split 'msr-stratified-75'"),
    ("llo", dict(split="leave-last-out", validation_ratio=0), "--validation-ratio 0.25", "--validation-ratio 0"),
])
def test_other_held_out_rows_are_refused_naming_both_values_before_the_data_is_read(runs, no_data, name, kw, started, asked):
    from domains.recommendation.train import train

    with pytest.raises(UserInputError) as e:
        train(_cfg(runs, name=name, **kw))
    msg = str(e.value)
    assert "\n" not in msg and f"--resume of run {name}: it was started with {started}, this command asks for {asked};" in msg, msg
    assert "test leakage" in msg


@pytest.mark.parametrize("name,kw", [
    ("strat", dict()),  # the same settings
    ("strat", dict(split="msr-stratified-75", lr=0.001)),  # a setting that holds nothing out: core's warning, not refused here
    ("strat", dict(seed=0, split_seed=42, validation_ratio=0.25)),
    ("llo", dict(split="leave-last-out")),
    ("llo", dict(split="temporal")),  # the alias of the run's split
    ("llo", dict(split="leave-last-out", seed=5, split_seed=9)),  # leave-last-out draws nothing: the seeds hold out nothing
    ("llo", dict(split="leave-last-out", validation_ratio=0.5)),  # the second-to-last item validates whatever the ratio
])
def test_the_same_held_out_rows_pass_the_check(runs, no_data, name, kw):
    from domains.recommendation.train import train

    with pytest.raises(DataWasRead):
        train(_cfg(runs, name=name, **kw))


def test_the_command_line_gives_one_error_line_exit_2_and_leaves_the_run_alone(runs, capsys):
    from domains.recommendation.train import main

    run = runs / "runs" / "recommendation" / "strat"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    rc = main(["--runs-dir", str(runs / "runs"), "--name", "strat", "--resume", "--data", str(runs / "a.csv"), "--split", "leave-last-out",
               "--validation-ratio", "0.25", "--no-track"])
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(errors) == 1, err
    assert "--split 'msr-stratified-75'" in errors[0] and "--split 'leave-last-out'" in errors[0]
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # config.json still says the run's split


def test_a_run_older_than_a_flag_is_not_refused_for_that_flag(runs, no_data):
    # a config.json written before --validation-ratio / --date-order existed has no value to compare: not a difference
    import json

    from domains.recommendation.train import train

    cfg_file = runs / "runs" / "recommendation" / "strat" / "config.json"
    saved = cfg_file.read_text()
    old = {k: v for k, v in json.loads(saved).items() if k not in ("validation_ratio", "date_order")}
    try:
        cfg_file.write_text(json.dumps(old))
        with pytest.raises(DataWasRead):
            train(_cfg(runs, validation_ratio=0.5, date_order="day-first"))
        with pytest.raises(UserInputError, match=r"started with --split-seed 42, this command asks for --split-seed 7;"):
            train(_cfg(runs, split_seed=7, date_order="day-first"))
    finally:
        cfg_file.write_text(saved)
