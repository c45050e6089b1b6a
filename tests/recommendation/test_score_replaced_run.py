"""score's job is named from the model run's name (``score-<run>-k<k>-<index>``) and its work items are ranges of the run's
users: a run folder replaced by another with as many users (retrained under the same name, copied over) gave the same
items and scorer config, so a rerun into the same --out found every chunk committed and served the old run's top-K, and
one resuming a crashed job mixed both runs' lists (session 13). The items
now carry the run folder, whose files the core items digest stamps."""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest

from core.scoring import job_fingerprint
from domains.recommendation.topk import TopKScorer, user_work_items


def _fake_run(folder, weights: bytes):
    folder.mkdir()
    (folder / "feature_space.json").write_text(json.dumps({"user_ids": list(range(5))}))
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_the_score_job_of_a_replaced_run_folder_is_another_job(tmp_path):
    run = _fake_run(tmp_path / "r1", b"weights of run one")
    items = user_work_items(5, 2, str(run))
    assert [(it.path, it.start, it.stop) for it in items] == [(str(run), 0, 2), (str(run), 2, 4), (str(run), 4, 5)]
    scorer = TopKScorer(str(run), 10, "hnsw")
    before = job_fingerprint(items, scorer, 16)[0]
    assert job_fingerprint(user_work_items(5, 2, str(run)), scorer, 16)[0] == before  # nothing changed: the same job (a rerun resumes)
    st = (run / "model.safetensors").stat()
    other = _fake_run(tmp_path / "r2", b"weights of run two")  # the same size, users and (below) modification time
    os.utime(other / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns))
    shutil.rmtree(run)
    shutil.copytree(other, run, copy_function=shutil.copy2)  # copied over, times kept (cp -a)
    assert (run / "model.safetensors").stat().st_mtime_ns == st.st_mtime_ns
    assert job_fingerprint(user_work_items(5, 2, str(run)), scorer, 16)[0] != before


def test_score_after_the_run_was_retrained_under_the_same_name_does_not_serve_the_old_lists(tmp_path, capsys):
    """End to end: two tiny trainings, four score commands (3.4 s here under load)."""
    import numpy as np

    from domains.recommendation.score import main as score
    from domains.recommendation.train import main as train

    rng = np.random.default_rng(0)
    rows = [(u, f"i{i}", t) for u in range(12) for t, i in enumerate(rng.choice(30, 8, replace=False))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(tmp_path / "d.csv", index=False)
    runs = tmp_path / "runs"
    for name, seed in (("r", 0), ("other", 1)):
        assert train(["--runs-dir", str(runs), "--data", str(tmp_path / "d.csv"), "--name", name, "--seed", str(seed), "--no-track", "--epochs", "1",
                      "--max-steps", "2", "--text", "none", "--no-baselines", "--no-wide"]) == 0
    run = runs / "recommendation" / "r"
    out = tmp_path / "topk"  # one output folder kept across runs (without --out a finished job's rerun is a new run folder)
    job = ["--model-run", str(run), "--runs-dir", str(runs), "--index", "flat", "--no-progress", "--out", str(out)]
    assert score(job) == 0
    first = pd.read_parquet(out)
    shutil.rmtree(run)
    shutil.copytree(runs / "recommendation" / "other", run, symlinks=True)  # retrained under the same name
    capsys.readouterr()
    assert score(job) == 2  # the old code: every chunk skipped, the first run's lists kept as this run's
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "the input items differ" in err[0], err
    assert score(job + ["--overwrite"]) == 0
    again = pd.read_parquet(out)
    assert score(["--model-run", str(runs / "recommendation" / "other"), "--runs-dir", str(runs), "--index", "flat", "--no-progress"]) == 0
    fresh = pd.read_parquet(runs / "recommendation" / "score-other-k10-flat" / "topk")
    cols = ["user_id", "rank", "item_id", "method"]
    key = lambda df: df[cols].sort_values(cols).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(key(again), key(fresh))  # the lists of the run now in the folder
    assert not key(first).equals(key(again))  # (and they are not the old run's)
    capsys.readouterr()
    inside = run / "topk"  # the job stamps the run's files: an output inside the run would change them (and the run is read-only to score)
    assert score(["--model-run", str(run), "--runs-dir", str(runs), "--out", str(inside)]) == 2
    assert [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")] == [
        f"error: --out {inside}: inside the training run {run}; score never writes into a training run — choose an --out outside it"]
    assert not inside.exists()


def test_a_score_command_walks_the_run_folder_once(tmp_path, monkeypatch):
    """The items stamp the run folder (one stat per file in it): the --out check and the job share one digest."""
    from core.scoring import job as scoring_job
    from domains.recommendation import score as score_cmd

    run = _fake_run(tmp_path / "r1", b"w")
    cfg = score_cmd.ScoreConfig(model_run=str(run), runs_dir=str(tmp_path / "runs"), out=str(tmp_path / "out"), progress=False)
    monkeypatch.setattr(score_cmd, "resolve_two_tower_run", lambda *a: run)
    items = user_work_items(5, cfg.users_per_item, str(run))
    scoring_job.prepare_job_dir(tmp_path / "out", items, TopKScorer(str(run), cfg.k, cfg.index), cfg.items_per_chunk, False)  # a rerun: the job is in --out
    walked = []
    real = scoring_job._file_stamp
    monkeypatch.setattr(scoring_job, "_file_stamp", lambda p: walked.append(p) or real(p))

    class Stop(Exception):
        pass

    def run_job(items, scorer, cfg, default_out, digest=None):  # what run_job does first; the model itself is not needed here
        scoring_job.check_same_job(tmp_path / "out", items, scorer, cfg.items_per_chunk, False, digest)
        raise Stop

    monkeypatch.setattr(score_cmd, "run_job_from_config", run_job)
    with pytest.raises(Stop):
        score_cmd.score(cfg)
    assert walked == [str(run)]  # once for the check before the run folder and the job's own checks
