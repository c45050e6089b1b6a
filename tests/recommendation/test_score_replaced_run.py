"""score's job is named from the model run's name (``score-<run>-k<k>-<index>``) and its work items are ranges of the run's
users: a run folder replaced by another with as many users (retrained under the same name, copied over) gave the same
items and scorer config, so a rerun into the same --out found every chunk committed and served the old run's top-K, and
one resuming a crashed job mixed both runs' lists (session 13). The items then carried the run folder (every file
stamped), which made an --out inside the run change its own input, so that was refused; since session 14 the command
stamps the run the way medical and finance score do (``digest_items(items, model_run=run)``, core's model-run stamp):
an --out inside the run works and its identical rerun is reused, and the default job name changes with the model."""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest

from core.scoring import digest_items, job_fingerprint
from domains.recommendation.topk import TopKScorer, user_work_items


def _fake_run(folder, weights: bytes):
    folder.mkdir()
    (folder / "feature_space.json").write_text(json.dumps({"user_ids": list(range(5))}))
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_the_score_job_of_a_replaced_run_folder_is_another_job(tmp_path):
    run = _fake_run(tmp_path / "r1", b"weights of run one")
    items = user_work_items(5, 2)
    assert [(it.path, it.start, it.stop) for it in items] == [(None, 0, 2), (None, 2, 4), (None, 4, 5)]
    scorer = TopKScorer(str(run), 10, "hnsw")
    fingerprint = lambda: job_fingerprint(items, scorer, 16, digest_items(items, model_run=run))[0]  # noqa: E731 - what score takes
    before = fingerprint()
    assert fingerprint() == before  # nothing changed: the same job (a rerun resumes)
    st = (run / "model.safetensors").stat()
    other = _fake_run(tmp_path / "r2", b"weights of run two")  # the same size, users and (below) modification time
    os.utime(other / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns))
    shutil.rmtree(run)
    shutil.copytree(other, run, copy_function=shutil.copy2)  # copied over, times kept (cp -a)
    assert (run / "model.safetensors").stat().st_mtime_ns == st.st_mtime_ns
    assert fingerprint() != before


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny trainings on the same file (other seeds): runs ``r`` and ``other`` under ``<tmp>/runs``."""
    import numpy as np

    from domains.recommendation.train import main as train

    tmp = tmp_path_factory.mktemp("two_runs")
    rng = np.random.default_rng(0)
    rows = [(u, f"i{i}", t) for u in range(12) for t, i in enumerate(rng.choice(30, 8, replace=False))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(tmp / "d.csv", index=False)
    for name, seed in (("r", 0), ("other", 1)):
        assert train(["--runs-dir", str(tmp / "runs"), "--data", str(tmp / "d.csv"), "--name", name, "--seed", str(seed), "--no-track", "--epochs", "1",
                      "--max-steps", "2", "--text", "none", "--no-baselines", "--no-wide"]) == 0
    return tmp / "runs"


def _copy_runs(two_runs, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(two_runs, runs, symlinks=True)
    return runs


def _errors(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]


def test_score_after_the_run_was_retrained_under_the_same_name_does_not_serve_the_old_lists(two_runs, tmp_path, capsys):
    """End to end: five score commands on two tiny trainings."""
    from domains.recommendation.score import main as score

    runs = _copy_runs(two_runs, tmp_path)
    run = runs / "recommendation" / "r"
    out = tmp_path / "topk"  # one output folder kept across runs (without --out a finished job's rerun is a new run folder)
    job = ["--model-run", str(run), "--runs-dir", str(runs), "--index", "flat", "--no-progress", "--out", str(out)]
    assert score(["--model-run", str(run), "--runs-dir", str(runs), "--index", "flat", "--no-progress"]) == 0  # without --out
    (named,) = (runs / "recommendation").glob("score-r-k10-flat-*")
    assert score(job) == 0
    first = pd.read_parquet(out)
    shutil.rmtree(run)
    shutil.copytree(runs / "recommendation" / "other", run, symlinks=True)  # retrained under the same name
    capsys.readouterr()
    assert score(job) == 2  # the code before session 13: every chunk skipped, the first run's lists kept as this run's
    err = _errors(capsys)
    assert len(err) == 1 and "the model run changed since this output was written" in err[0] and "--overwrite re-scores it" in err[0], err
    assert score(job + ["--overwrite"]) == 0
    again = pd.read_parquet(out)
    before = {p.name for p in (runs / "recommendation").iterdir()}
    assert score(["--model-run", str(run), "--runs-dir", str(runs), "--index", "flat", "--no-progress"]) == 0
    (new,) = {p.name for p in (runs / "recommendation").iterdir()} - before
    assert new.startswith("score-r-k10-flat-") and not new.startswith(named.name), (new, named.name)  # was "score-r-k10-flat" again  # another job, not <old name>-1
    fresh = pd.read_parquet(runs / "recommendation" / new / "topk")
    cols = ["user_id", "rank", "item_id", "method"]
    key = lambda df: df[cols].sort_values(cols).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(key(again), key(fresh))  # the lists of the run now in the folder
    assert not key(first).equals(key(again))  # (and they are not the old run's)


def test_an_out_inside_the_training_run_is_scored_and_its_rerun_reused(two_runs, tmp_path, capsys):
    """Before session 14 the job stamped every file of the run, its own output included, so an --out inside the run was
    refused in one line (exit 2); now the model run's stamp leaves a scoring job's folder out, as medical's and finance's."""
    import json as json_

    from core.scoring import model_run_stamp
    from domains.recommendation.score import main as score

    runs = _copy_runs(two_runs, tmp_path)
    run = runs / "recommendation" / "r"
    stamp = model_run_stamp(run)
    inside = run / "topk"
    job = ["--model-run", str(run), "--runs-dir", str(runs), "--index", "flat", "--no-progress", "--out", str(inside)]
    assert score(job) == 0, _errors(capsys)  # the old code: 2, "inside the training run …"
    rows = pd.read_parquet(inside)
    assert len(rows) and set(rows["method"]) == {"exact", "faiss-flat"}
    assert model_run_stamp(run) == stamp  # the job's own files are not the model's
    assert score(job) == 0, _errors(capsys)  # the identical rerun: reused, every chunk skipped
    success = json_.loads((inside / "_SUCCESS.json").read_text())
    assert success["chunks_done"] == 0 and success["chunks_skipped"] >= 1, success
    pd.testing.assert_frame_equal(pd.read_parquet(inside), rows)


def test_a_score_command_stamps_the_run_once(tmp_path, monkeypatch):
    """The command takes the model run's stamp (one stat per weights/config file) once: the --out check, the job name
    and the job share one digest."""
    from core.scoring import job as scoring_job
    from domains.recommendation import score as score_cmd

    run = _fake_run(tmp_path / "r1", b"w")
    cfg = score_cmd.ScoreConfig(model_run=str(run), runs_dir=str(tmp_path / "runs"), out=str(tmp_path / "out"), progress=False)
    monkeypatch.setattr(score_cmd, "resolve_two_tower_run", lambda *a: run)
    items = user_work_items(5, cfg.users_per_item)
    digest = digest_items(items, model_run=run)
    scoring_job.prepare_job_dir(tmp_path / "out", items, TopKScorer(str(run), cfg.k, cfg.index), cfg.items_per_chunk, False, digest)  # a rerun: the job is in --out
    stamped = []
    real = scoring_job.model_run_stamp
    monkeypatch.setattr(scoring_job, "model_run_stamp", lambda p: stamped.append(str(p)) or real(p))

    class Stop(Exception):
        pass

    def run_job(items, scorer, cfg, default_out, digest=None, job=None):  # what run_job does first; the model itself is not needed here
        scoring_job.check_same_job(tmp_path / "out", items, scorer, cfg.items_per_chunk, False, digest, job)
        raise Stop

    monkeypatch.setattr(score_cmd, "run_job_from_config", run_job)
    with pytest.raises(Stop):
        score_cmd.score(cfg)
    assert stamped == [str(run)]  # once for the check before the run folder, the job name and the job's own checks
