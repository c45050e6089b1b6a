"""evaluate reads a run's training data again: from the place train found it, whatever folder evaluate runs
from. A relative --data used to be read from the current folder (another folder: 'no such file', or another
file of the same name); a file that has moved is one line naming it and --data, before a job folder exists."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from domains.recommendation.evaluation import run_data_source
from tests.recommendation_support import evaluate_from, job_folders


def _interactions(path, seed: int, users: int = 10) -> None:
    rng = np.random.default_rng(seed)
    rows = [(u, f"item{i}", t) for u in range(users) for t, i in enumerate(rng.choice(25, 6, replace=False))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(path, index=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained from ``project/`` with ``--data inter.csv`` (a relative path)."""
    from domains.recommendation.train import TrainConfig, train

    d = tmp_path_factory.mktemp("elsewhere")
    (d / "project").mkdir()
    _interactions(d / "project" / "inter.csv", seed=0)
    before = os.getcwd()
    os.chdir(d / "project")
    try:
        run = train(TrainConfig(runs_dir=str(d / "runs"), name="rel", data="inter.csv", track=False, epochs=1, max_steps=1, baselines=False,
                                text="none", wide=False, validation_ratio=0))
    finally:
        os.chdir(before)
    return run, d


def test_evaluate_from_another_folder_reads_the_file_train_read(trained, tmp_path, monkeypatch, capsys):
    run, d = trained
    assert json.loads((run / "split.json").read_text())["data_path"] == str(d / "project" / "inter.csv")
    other = tmp_path / "other"
    other.mkdir()
    _interactions(other / "inter.csv", seed=1)  # another file of the same name where evaluate runs: not the run's data
    assert evaluate_from(["--model-run", str(run), "--runs-dir", str(d / "jobs"), "--name", "from-other"], other, monkeypatch) == 0, capsys.readouterr().err
    out = json.loads((d / "jobs" / "recommendation" / "from-other" / "evaluation.json").read_text())
    assert out["data"] == str(d / "project" / "inter.csv")


def test_data_moved_since_training_is_one_line_naming_it_and_the_flag(trained, tmp_path, monkeypatch, capsys):
    run, d = trained
    data, moved = d / "project" / "inter.csv", tmp_path / "moved.csv"
    shutil.move(data, moved)
    try:
        jobs = job_folders(d)
        assert evaluate_from(["--model-run", str(run), "--runs-dir", str(d / "jobs")], tmp_path, monkeypatch) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"run rel was trained on --data inter.csv (recorded as {data}): no such file or folder; pass --data PATH" in err
        assert job_folders(d) == jobs  # refused before a job folder exists
        assert evaluate_from(["--model-run", str(run), "--runs-dir", str(d / "jobs"), "--name", "moved", "--data", str(moved)], d, monkeypatch) == 0
        assert json.loads((d / "jobs" / "recommendation" / "moved" / "evaluation.json").read_text())["data"] == str(moved)
    finally:
        shutil.move(moved, data)


def test_a_bundled_name_is_not_a_path_and_older_runs_read_from_the_current_folder(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": "ml-100k"}))
    (run / "split.json").write_text(json.dumps({"split": "msr-stratified-75", "data": "ml-100k", "data_path": None}))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ml-100k").mkdir()  # a folder of that name here is not the bundled data set
    assert run_data_source(run) == "ml-100k"
    # a run trained before the absolute path was recorded: its --data as typed, from the current folder
    (run / "config.json").write_text(json.dumps({"data": "inter.csv"}))
    (run / "split.json").write_text(json.dumps({"split": "msr-stratified-75"}))
    _interactions(tmp_path / "inter.csv", seed=0)
    assert run_data_source(run) == "inter.csv"
    assert run_data_source(run, "elsewhere.csv") == "elsewhere.csv"  # --data given: that one
    monkeypatch.chdir(run)
    with pytest.raises(FileNotFoundError, match=r"--data inter.csv \(relative to the folder it was trained from, which this older run did not "
                                                 r"record; not found from .*\): no such file or folder; pass --data PATH"):
        run_data_source(run)
