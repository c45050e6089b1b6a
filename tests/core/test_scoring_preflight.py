"""A scoring job that cannot run is refused before anything is created: an input with no items, or an
``--out`` that is a file (or below one, or a link to nothing). One line, exit 2, no job run folder left.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from core.scoring import Scorer, ScoringError, WorkItem, run_job
from tests.scoring_support import folder_snapshot


class EchoScorer(Scorer):
    def score(self, item: WorkItem) -> pd.DataFrame:
        return pd.DataFrame({"x": [1]})


def test_a_job_with_no_items_is_refused_and_writes_nothing(tmp_path):
    out = tmp_path / "scores"
    with pytest.raises(ScoringError, match=r"no items to score \(expected at least one work item\)"):
        run_job([], EchoScorer(), out, progress=False)
    assert not out.exists()  # it used to write a folder marked complete (_SUCCESS.json) holding no rows


@pytest.mark.parametrize("case", ["file", "below_a_file", "dangling_link"])
def test_an_unusable_out_is_one_scoring_error_and_nothing_is_created(tmp_path, case):
    (tmp_path / "a_file").write_text("x")
    out = {"file": tmp_path / "a_file", "below_a_file": tmp_path / "a_file" / "scores", "dangling_link": tmp_path / "link"}[case]
    if case == "dangling_link":
        os.symlink(tmp_path / "missing", out)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ScoringError) as e:
        run_job([WorkItem(id="a")], EchoScorer(), out, progress=False)
    msg = str(e.value)
    assert msg.startswith(f"--out {out}: ") and "\n" not in msg
    assert {"file": "is not a folder (a file)", "below_a_file": "a_file is a file, not a folder", "dangling_link": "does not exist"}[case] in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (tmp_path / "a_file").read_text() == "x"


DOMAIN_SCORE_COMMANDS = ["domains.medical.score", "domains.finance.score", "domains.recommendation.score"]


@pytest.mark.parametrize("module", DOMAIN_SCORE_COMMANDS)
def test_every_score_command_refuses_an_out_that_is_a_file_first(module, tmp_path, capsys):
    """Checked before the model is looked up or loaded, so it is the one line the user sees."""
    import importlib

    (tmp_path / "taken").write_text("keep me")
    rc = importlib.import_module(module).main(["--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "taken"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1] == f"error: --out {tmp_path / 'taken'}: exists and is not a folder (a file); give a new or empty folder, " \
                                   "or a scoring output folder to resume"
    assert not (tmp_path / "runs").exists() and (tmp_path / "taken").read_text() == "keep me"


def _recommendation_model_run(runs: Path, users: list[int]) -> Path:
    """A completed recommendation model run as far as ``score`` reads it before scoring (nothing is loaded)."""
    d = runs / "recommendation" / "m"
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"domain": "recommendation", "kind": "model", "command": "train", "status": "completed"}))
    (d / "feature_space.json").write_text(json.dumps({"user_ids": users, "item_ids": [1, 2]}))
    return d


def test_recommendation_score_with_no_users_is_refused_before_its_job_run_folder(tmp_path, capsys):
    from domains.recommendation.score import main

    model = _recommendation_model_run(tmp_path / "runs", users=[])
    assert main(["--runs-dir", str(tmp_path / "runs"), "--model-run", "m", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"error: {model / 'feature_space.json'}: no items to score (expected at least one user in user_ids)"
    assert sorted(p.name for p in (tmp_path / "runs" / "recommendation").iterdir()) == ["m"]  # no score-… run folder


def test_recommendation_score_into_a_file_leaves_no_failed_job_run(tmp_path, capsys):
    from domains.recommendation.score import main

    _recommendation_model_run(tmp_path / "runs", users=[1, 2, 3])
    (tmp_path / "taken").write_text("keep me")
    assert main(["--runs-dir", str(tmp_path / "runs"), "--model-run", "m", "--out", str(tmp_path / "taken"), "--no-progress"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "runs" / "recommendation").iterdir()) == ["m"]  # it used to leave score-m-k10-hnsw (failed)


def test_recommendation_score_into_an_out_of_another_job_is_refused_before_its_run_folder(tmp_path, capsys):
    from domains.recommendation.score import main

    _recommendation_model_run(tmp_path / "runs", users=[1, 2, 3])
    out = tmp_path / "other"
    run_job([WorkItem(id="a")], EchoScorer(), out, progress=False)  # another job already in --out
    before = folder_snapshot(out)
    assert main(["--runs-dir", str(tmp_path / "runs"), "--model-run", "m", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {out} holds another scoring job: the input items differ (1 before, 1 now, or files changed); "
                                               "the scorer or its config differs (class "), err
    assert folder_snapshot(out) == before
    assert sorted(p.name for p in (tmp_path / "runs" / "recommendation").iterdir()) == ["m"]  # no failed score-m-k10-hnsw run
