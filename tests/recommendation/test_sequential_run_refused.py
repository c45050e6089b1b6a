"""The two-tower commands (evaluate, recommend, score) given a train_sequential run: checked as a user would
(by name and by folder, from another folder). The sequence run records only --data as typed and has no
split.json or eval_metrics.parquet, so reading it as a two-tower run could only fail deep inside or read another
file; it is refused in one line naming the run and where its metrics are (metrics.json: the sequence model is
evaluated as it trains), exit 2, before any job folder exists."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def sequence_run(tmp_path_factory):
    from domains.recommendation.train_sequential import TrainSequentialConfig, train_sequential

    d = tmp_path_factory.mktemp("seq-refused")
    rng = np.random.default_rng(0)
    rows = [(u, f"i{i}", t) for u in range(20) for t, i in enumerate(rng.choice(30, 8, replace=False))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(d / "seq.csv", index=False)
    run = train_sequential(TrainSequentialConfig(runs_dir=str(d / "runs"), name="seq1", data=str(d / "seq.csv"), track=False, text=False,
                                                 epochs=1, dim=8, heads=1, layers=1, max_len=8, threads=1))
    return run, d


@pytest.mark.parametrize("command,extra", [("evaluate", []), ("recommend", ["--user", "1"]), ("score", [])])
@pytest.mark.parametrize("by", ["name", "folder"])
def test_a_sequence_run_is_refused_in_one_line_by_the_two_tower_commands(sequence_run, command, extra, by, tmp_path, monkeypatch, capsys):
    import importlib

    run, d = sequence_run
    monkeypatch.chdir(tmp_path)  # another folder than the one it was trained from
    jobs = tmp_path / "jobs"
    ref = "seq1" if by == "name" else str(run)
    args = ["--model-run", ref, "--runs-dir", str(d / "runs") if by == "name" else str(jobs), *extra]
    before = sorted(p.name for p in (d / "runs" / "recommendation").iterdir())
    rc = importlib.import_module(f"domains.recommendation.{command}").main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "train_sequential job, not a trained model run" in lines[0] and ref in lines[0], err
    # and where that run's evaluation is: the sequence model is evaluated as it trains (no command re-evaluates it)
    assert f"{run / 'metrics.json'}" in lines[0] and "train_sequential" in lines[0].split("metrics.json")[0], err
    assert (run / "metrics.json").is_file() and "ndcg@10" in (run / "metrics.json").read_text()
    assert "Traceback" not in err
    assert sorted(p.name for p in (d / "runs" / "recommendation").iterdir()) == before  # no job folder beside it
    assert not jobs.exists()


def test_the_api_names_the_sequence_runs_metrics_too(sequence_run):
    from domains.recommendation.api import load_recommender
    from domains.recommendation.inference import NotARecommendationRun

    run, _ = sequence_run
    with pytest.raises(NotARecommendationRun) as e:
        load_recommender(run)
    assert "\n" not in str(e.value) and f"{run / 'metrics.json'}" in str(e.value)
