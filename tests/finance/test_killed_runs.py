"""Runs killed with SIGKILL (real processes, the default ``--qlike-weight``): ``train --resume`` continues
from the last epoch checkpoint to the same weights as an uninterrupted run; a killed ``backtest`` rerun
with the same ``--name`` reuses the folds it committed (``walkforward.FoldStore``), computes only the
rest and finishes with exactly the uninterrupted run's results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from core.data import prepare
from domains.finance.data import DATASETS

pytestmark = pytest.mark.slow  # real processes: two tiny trainings and two tiny backtests (~1-2 min idle)

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "SUITE_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
TINY = ["--tickers", "AAPL", "KO", "--encoder-length", "20", "--horizon", "3", "--hidden-size", "8", "--attention-heads", "1",
        "--hidden-continuous-size", "4", "--batch-size", "32", "--no-track", "--threads", "1"]


def _cmd(module: str, runs: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", module, "--runs-dir", str(runs), *TINY, *args]


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 600) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (fails the test if it ended first)."""
    t0 = time.time()
    while not ready():
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()[-2000:] if proc.stderr else ''}"
        assert time.time() - t0 < timeout
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _run(cmd: list[str]) -> str:
    p = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout + p.stderr


def test_train_killed_after_an_epoch_resumes_to_the_uninterrupted_weights(tmp_path):
    from safetensors.torch import load_file

    prepare(DATASETS[0])
    args = ["--epochs", "2", "--max-batches", "20", "--val-days", "30"]
    _run(_cmd("domains.finance.train", tmp_path, *args, "--name", "full"))
    cut = tmp_path / "finance" / "cut"
    proc = subprocess.Popen(_cmd("domains.finance.train", tmp_path, *args, "--name", "cut"), cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: (cut / "checkpoints" / "step_00000001.pt").is_file())
    assert json.loads((cut / "run.json").read_text())["status"] == "running"  # killed: nothing marked it finished
    assert not (cut / "model" / "model.safetensors").is_file()
    _run(_cmd("domains.finance.train", tmp_path, *args, "--name", "cut", "--resume"))
    full = tmp_path / "finance" / "full"
    assert json.loads((cut / "config.json").read_text())["qlike_weight"] == 0.1  # the default loss: pinball + 0.1 x QLIKE
    wa, wb = load_file(str(full / "model" / "model.safetensors")), load_file(str(cut / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] == wb[k]).all(), k
    rows = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train_loss" in r] == [1, 2]  # each epoch logged once


def test_backtest_killed_mid_run_resumes_from_its_finished_folds_and_matches_the_uninterrupted_run(tmp_path):
    import re

    prepare(DATASETS[0])
    args = ["--folds", "3", "--test-days", "20", "--epochs", "1", "--refit-epochs", "1", "--max-batches", "3", "--seeds", "2",
            "--baselines", "ewma", "gjr_t"]
    _run(_cmd("domains.finance.backtest", tmp_path, *args, "--name", "full"))
    cut = tmp_path / "finance" / "cut"

    def fold_rows() -> list[int]:
        m = cut / "metrics.jsonl"
        return [int(json.loads(x)["fold"]) for x in m.read_text().splitlines() if x.strip()] if m.is_file() else []

    proc = subprocess.Popen(_cmd("domains.finance.backtest", tmp_path, *args, "--name", "cut"), cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: len(fold_rows()) >= 1)
    assert json.loads((cut / "run.json").read_text())["status"] == "running" and not (cut / "metrics_aggregate.csv").is_file()
    committed = sorted(p.parent.name for p in (cut / "folds").glob("fold-*/done.json"))
    assert committed and committed[0] == "fold-000"  # the fold finished before the kill survived it
    log = _run(_cmd("domains.finance.backtest", tmp_path, *args, "--name", "cut"))
    reused = re.findall(r"resume: reusing (\d+) of 3 finished folds", log)
    assert len(reused) == 1 and int(reused[0]) >= 1, log[-3000:]
    assert json.loads((cut / "run.json").read_text())["status"] == "completed"
    assert fold_rows() == [0, 1, 2]  # the killed attempt's rows were dropped, not mixed with the new ones
    assert json.loads((cut / "config.json").read_text())["qlike_weight"] == 0.1
    a = pd.read_csv(tmp_path / "finance" / "full" / "metrics_aggregate.csv")
    b = pd.read_csv(cut / "metrics_aggregate.csv")
    pd.testing.assert_frame_equal(a, b)
    assert (tmp_path / "finance" / "cut" / "model" / "model.safetensors").is_file()
    full = tmp_path / "finance" / "full"
    for name in ("losses.parquet", "predictions.parquet"):  # every forecast, bit for bit
        pd.testing.assert_frame_equal(pd.read_parquet(full / name), pd.read_parquet(cut / name), check_exact=True)
    for name in ("diebold_mariano.csv", "metrics_by_fold.csv", "metrics_by_seed.csv", "var_tests_by_ticker_fold.csv", "folds.json", "summary.md"):
        assert (full / name).read_text() == (cut / name).read_text(), name
    assert (full / "model" / "model.safetensors").read_bytes() == (cut / "model" / "model.safetensors").read_bytes()
    assert not (cut / "folds").exists()  # the committed folds are dropped once the run is complete


def test_backtest_killed_after_its_last_fold_reuses_all_of_them(tmp_path):
    """Killed after every fold was committed (while the tables were being written): the rerun trains nothing."""
    prepare(DATASETS[0])
    args = ["--folds", "3", "--test-days", "20", "--epochs", "1", "--refit-epochs", "1", "--max-batches", "3", "--seeds", "1",
            "--baselines", "ewma", "gjr_t"]
    cut = tmp_path / "finance" / "cut"
    proc = subprocess.Popen(_cmd("domains.finance.backtest", tmp_path, *args, "--name", "cut"), cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: (cut / "folds" / "fold-002" / "done.json").is_file())
    log = _run(_cmd("domains.finance.backtest", tmp_path, *args, "--name", "cut"))
    assert "resume: reusing 3 of 3 finished folds" in log and "fold 0 seed" not in log, log[-3000:]
    assert (cut / "metrics_aggregate.csv").is_file() and (cut / "model" / "model.safetensors").is_file()
