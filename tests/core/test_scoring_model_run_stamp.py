"""core.scoring: a model run folder retrained in place (the same name, so the same path) is another job (session 13).
Before, medical and finance score identified the model run by its path only (in the scorer config and job_name), so a
rerun into the same --out skipped every chunk and served the old model's rows, a crashed job resumed after the
retraining mixed both models, and the job's default name (without --out) was the old one. Now the command takes the
model run's stamp (the stat identity of its weights and config files) with the items' digest, once; a job recorded
before that stamp existed is scored again with a warning, not refused."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd
import pytest

from core.scoring import JobMismatchError, Scorer, WorkItem, digest_items, job_name, model_run_stamp, read_output, run_job
from core.scoring.cli import ScoringConfig, check_scoring_job
from core.scoring.job import JOB_FILE, job_fingerprint


class WeightScorer(Scorer):
    """A fake model: each row is the item's value times the 'weight' in the run's model.json (read at load)."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir

    def load(self) -> None:
        self.weight = json.loads((Path(self.run_dir) / "model.json").read_text())["weight"]

    def score(self, item: WorkItem) -> pd.DataFrame:
        return pd.DataFrame({"y": [item.meta["x"] * self.weight]})


def _train(run: Path, weight: int) -> None:
    """What a training run writes into its folder (rewriting a retrained run's files in place)."""
    run.mkdir(exist_ok=True)
    (run / "model.json").write_text(json.dumps({"weight": weight}))
    (run / "run.json").write_text(json.dumps({"status": "completed"}))


ITEMS = [WorkItem(id=f"i{i}", meta={"x": i}) for i in range(4)]


def _score(run: Path, out: Path, **kw):
    digest = digest_items(ITEMS, model_run=run)
    return run_job(ITEMS, WeightScorer(str(run)), out, items_per_chunk=1, progress=False, digest=digest, **kw)


def _ys(out: Path) -> list:
    return read_output(out).sort_values("work_item")["y"].tolist()


def test_a_model_run_retrained_in_place_is_refused_then_rescored_with_overwrite(tmp_path):
    run, out = tmp_path / "runs" / "m", tmp_path / "out"
    run.parent.mkdir()
    _train(run, 1)
    _score(run, out)
    assert _ys(out) == [0, 1, 2, 3]
    _score(run, out)  # the same model: the finished job is reused, not refused
    _train(run, 10)  # retrained under the same name: same path, same scorer config, same items
    cfg = ScoringConfig(out=str(out), items_per_chunk=1)
    with pytest.raises(JobMismatchError, match="the model run changed since this output was written.*--overwrite re-scores") as e:
        check_scoring_job(cfg, ITEMS, WeightScorer(str(run)), digest_items(ITEMS, model_run=run))  # the command's pre-check
    assert "\n" not in str(e.value)
    with pytest.raises(JobMismatchError, match="the model run changed"):  # old code: every chunk skipped, weight 1 served
        _score(run, out)
    assert _ys(out) == [0, 1, 2, 3]  # refused: the output untouched
    _score(run, out, overwrite=True)
    assert _ys(out) == [0, 10, 20, 30]


def test_the_default_job_name_changes_with_the_model_runs_files(tmp_path):
    run = tmp_path / "m"
    _train(run, 1)
    name = job_name("score", ITEMS, WeightScorer(str(run)), 1, run, digest=digest_items(ITEMS, model_run=run))
    assert name == job_name("score", ITEMS, WeightScorer(str(run)), 1, run)  # unchanged files: the same name (a crashed job resumes)
    _train(run, 10)
    assert job_name("score", ITEMS, WeightScorer(str(run)), 1, run) != name
    with pytest.raises(ValueError, match="model run's stamp"):  # a digest taken without the model would hide the change
        job_name("score", ITEMS, WeightScorer(str(run)), 1, run, digest=digest_items(ITEMS))


def test_the_stamp_reads_weights_and_config_not_the_runs_bookkeeping(tmp_path):
    run = tmp_path / "m"
    _train(run, 1)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step-1.pt").write_bytes(b"x")
    before = model_run_stamp(run)
    (run / "run.json").write_text(json.dumps({"status": "completed", "note": "touched"}))  # rewritten without a new model
    (run / "log.jsonl").write_text("{}\n")
    (run / "checkpoints" / "step-1.pt").unlink()  # old checkpoints pruned
    assert model_run_stamp(run) == before
    weights = run / "sub" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"w1")
    assert model_run_stamp(run) != before
    st = weights.stat()
    weights.with_name("new").write_bytes(b"w2")  # same size and mtime, copied over: another inode / ctime
    os.utime(weights.with_name("new"), ns=(st.st_atime_ns, st.st_mtime_ns))
    stamp = model_run_stamp(run)
    os.replace(weights.with_name("new"), weights)
    assert model_run_stamp(run) != stamp


def test_a_job_recorded_before_the_model_stamp_is_scored_again_with_a_warning(tmp_path, caplog):
    run, out = tmp_path / "m", tmp_path / "out"
    _train(run, 1)
    _score(run, out)
    # the record as earlier versions wrote it: no model_run_sha256 in the description (and its fingerprint without it)
    job = json.loads((out / JOB_FILE).read_text())
    del job["description"]["model_run_sha256"]
    job["fingerprint"] = job_fingerprint(ITEMS, WeightScorer(str(run)), 1, digest_items(ITEMS))[0]
    (out / JOB_FILE).write_text(json.dumps(job))
    _train(run, 10)
    check_scoring_job(ScoringConfig(out=str(out), items_per_chunk=1), ITEMS, WeightScorer(str(run)), digest_items(ITEMS, model_run=run))  # not refused
    with caplog.at_level(logging.WARNING):
        _score(run, out)
    assert "before the model run's weights and config files were stamped" in caplog.text
    assert _ys(out) == [0, 10, 20, 30]  # every chunk scored again with the model now there
    assert "model_run_sha256" in json.loads((out / JOB_FILE).read_text())["description"]


def test_an_out_inside_the_model_run_is_not_a_change_of_the_model(tmp_path):
    """The job's own files (``_job.json``, ``_done/*.json``, ``_SUCCESS.json``) are not the model's: an ``--out`` given
    inside the model run is reused by the identical rerun, not refused as "the model run changed"."""
    run = tmp_path / "m"
    _train(run, 1)
    stamp = model_run_stamp(run)
    _score(run, run / "scores")
    assert model_run_stamp(run) == stamp
    _score(run, run / "scores")  # the identical rerun: every chunk skipped, not refused
    assert _ys(run / "scores") == [0, 1, 2, 3]
