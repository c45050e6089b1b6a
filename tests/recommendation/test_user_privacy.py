"""A user id identifies a person: `recommend --user ID` must not leave it in the job's files (config.json,
run.json, log, metrics, file and folder names); only the answer on the terminal names the user."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.config import PRIVATE_VALUE

USER = "jane.doe.4471@example.org"  # an id that is a person's e-mail address, as in many exports


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from domains.recommendation.train import TrainConfig, train

    d = tmp_path_factory.mktemp("privacy")
    rng = np.random.default_rng(0)
    users = [USER, *(f"someone{u}@example.org" for u in range(9))]
    rows = [(u, f"item{i}", t) for u in users for t, i in enumerate(rng.choice(25, 6, replace=False))]
    data = d / "inter.csv"
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(data, index=False)
    run = train(TrainConfig(runs_dir=str(d / "runs"), name="tiny", data=str(data), track=False, epochs=1, max_steps=1, baselines=False,
                            text="none", wide=False, validation_ratio=0))
    return run, d


def _files_naming(root, text: str) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if text in p.name:
            hits.append(f"name: {p}")
        elif p.is_file() and text.encode() in p.read_bytes():
            hits.append(f"content: {p}")
    return hits


@pytest.mark.parametrize("user", [USER, "nobody.known@example.org"])  # a known user, and an unknown one (popularity fallback)
def test_recommend_does_not_record_the_user_id(tiny_run, user, capsys):
    from domains.recommendation import recommend

    run, d = tiny_run
    jobs = d / f"jobs-{user.split('.')[0]}"
    assert recommend.main(["--model-run", str(run), "--runs-dir", str(jobs), "--user", user]) == 0
    assert user in capsys.readouterr().out  # the answer on the terminal names the user
    (job,) = [p for p in (jobs / "recommendation").iterdir() if p.is_dir() and not p.is_symlink()]
    assert _files_naming(jobs, user) == [] and _files_naming(jobs, user.split("@")[0]) == []
    assert json.loads((job / "config.json").read_text())["user"] == PRIVATE_VALUE
    assert len(pd.read_parquet(job / "recommendations.parquet")) == 10  # the answer itself is still written


def test_a_saved_config_without_the_user_is_refused_not_answered_for_a_placeholder(tiny_run, capsys):
    from domains.recommendation import recommend

    run, d = tiny_run
    jobs = d / "jobs-config"
    assert recommend.main(["--model-run", str(run), "--runs-dir", str(jobs), "--user", USER]) == 0
    (cfg,) = (jobs / "recommendation").glob("*/config.json")
    capsys.readouterr()
    # rerunning from the job's config.json used to recommend for the user "<not recorded: private>" (an unknown user: popular items)
    assert recommend.main(["--config", str(cfg), "--model-run", str(run), "--runs-dir", str(jobs)]) == 2
    err = capsys.readouterr().err
    assert "--user" in err and "does not record user ids" in err and "Traceback" not in err


@pytest.mark.parametrize("extra,words", [
    (["--user", USER, "--similar-to", "item1"], ["--user and --similar-to given together", "one query"]),  # the item query was dropped
    (["--similar-to", "item1", "--new-title", "X"], ["--similar-to and --new-title"]),
    (["--user", USER, "--new-genres", "Comedy"], ["--new-genres/--new-year", "--new-title"]),  # the genres were ignored
])
def test_one_query_per_call(tiny_run, capsys, extra, words):
    from domains.recommendation import recommend

    run, d = tiny_run
    jobs = d / "jobs-two-queries"
    assert recommend.main(["--model-run", str(run), "--runs-dir", str(jobs), *extra]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words) and USER not in err and "Traceback" not in err
    assert not jobs.exists()
