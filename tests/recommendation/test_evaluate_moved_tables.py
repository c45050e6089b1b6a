"""evaluate re-reads a run's data with the --items/--users tables train was given, from the paths recorded in the run's
config.json. When such a table had moved, evaluate said only "<path>: no such file" — not that the path came from the run,
nor what to do; it is one line naming the run's recorded path and --items/--users (evaluate's flags for the table's new
place), before a job folder exists."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.recommendation_support import evaluate_from, job_folders


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained on ``inter.csv`` with ``--items items.csv``."""
    from domains.recommendation.train import TrainConfig, train

    d = tmp_path_factory.mktemp("tables")
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"item{i}", t) for u in range(10) for t, i in enumerate(rng.choice(25, 6, replace=False))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(d / "inter.csv", index=False)
    pd.DataFrame({"item_id": [f"item{i}" for i in range(25)], "title": [f"Thing {i}" for i in range(25)],
                  "genres": [["A", "B", "C"][i % 3] for i in range(25)]}).to_csv(d / "items.csv", index=False)
    run = train(TrainConfig(runs_dir=str(d / "runs"), name="tables", data=str(d / "inter.csv"), items=str(d / "items.csv"), track=False,
                            epochs=1, max_steps=1, baselines=False, text="none", wide=False, validation_ratio=0))
    return run, d


def test_a_moved_items_table_is_one_line_naming_the_recorded_path_and_the_flag(trained, tmp_path, monkeypatch, capsys):
    from core.errors import plain

    run, d = trained
    recorded, moved = d / "items.csv", tmp_path / "items-moved.csv"
    assert json.loads((run / "config.json").read_text())["items"] == str(recorded)
    shutil.move(recorded, moved)
    try:
        jobs = job_folders(d)
        assert evaluate_from(["--model-run", str(run), "--runs-dir", str(d / "jobs")], tmp_path, monkeypatch) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].endswith(f"run tables was trained with --items {plain(str(recorded))} (recorded in its config.json): no such file or folder now; "
                                "pass --items PATH where that table is now"), err
        assert job_folders(d) == jobs  # refused before a job folder exists
        assert evaluate_from(["--model-run", str(run), "--runs-dir", str(d / "jobs"), "--name", "moved", "--items", str(moved)], tmp_path, monkeypatch) == 0
        assert (d / "jobs" / "recommendation" / "moved" / "evaluation.json").is_file()
    finally:
        shutil.move(moved, recorded)


def test_a_table_the_run_was_not_trained_with_is_refused(trained, tmp_path, monkeypatch, capsys):
    run, d = trained
    (tmp_path / "users.csv").write_text("user_id,age\nu0,30\n")
    assert evaluate_from(["--model-run", str(run), "--runs-dir", str(d / "jobs"), "--users", str(tmp_path / "users.csv")], tmp_path, monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "run tables was trained without --users" in err and "leave --users out" in err, err
