"""--resume of a killed training run: it continues from the last per-epoch checkpoint, no step is
logged twice, and the result is bit-exact with an uninterrupted run of the same seed (real
processes, a real SIGKILL after a checkpoint)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# tiny settings: a small synthetic interaction file, small towers, no text, no baselines; 3 select epochs (no early stop) + refit
TINY = ["--text", "none", "--id-dim", "8", "--feature-dim", "4", "--hidden", "16", "--out-dim", "8", "--batch-size", "256",
        "--epochs", "3", "--patience", "0", "--no-baselines", "--no-track", "--threads", "1"]


def _interactions(path: Path) -> Path:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = [(u, int(i), 1_000_000 + 100 * u + t) for u in range(300) for t, i in enumerate(rng.choice(200, 30, replace=False, p=None))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(path, index=False)
    return path


def _cmd(runs: Path, name: str, *extra: str) -> list[str]:
    extra = tuple(x for e in extra for x in e.split())  # a mode may carry a flag and its value
    return [sys.executable, "-m", "domains.recommendation.train", *TINY, "--data", str(runs.parent / "inter.csv"), "--runs-dir", str(runs),
            "--name", name, *extra]


def _env() -> dict:
    return {**os.environ, "SUITE_PROGRESS": "0", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["", "--dmp", "--ema-decay 0.9"])  # one process; TorchRec DMP (world size 1: sharded tables + fused
# optimizer state); weight averaging (the checkpoint holds the average as its model and the raw weights beside it)
def test_killed_run_resumes_bit_exact(tmp_path, mode):
    from core.checkpoint import load_weights

    runs = tmp_path / "runs"
    _interactions(tmp_path / "inter.csv")
    full = subprocess.run(_cmd(runs, "full", mode), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert full.returncode == 0, full.stderr[-3000:]

    victim = subprocess.Popen(_cmd(runs, "killed", mode), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = runs / "recommendation" / "killed" / "checkpoints"
    deadline = time.time() + 600
    while time.time() < deadline and not (ckpts.is_dir() and any(ckpts.glob("step_*.pt"))):
        if victim.poll() is not None:
            pytest.fail("the run ended before its first checkpoint")
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    killed = runs / "recommendation" / "killed"
    assert json.loads((killed / "run.json").read_text())["status"] == "running"  # killed mid-run, not finished
    assert not (killed / "model.safetensors").exists()

    resumed = subprocess.run(_cmd(runs, "killed", mode, "--resume"), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at phase" in resumed.stderr + resumed.stdout

    a, b = runs / "recommendation" / "full", killed
    wa, wb = load_weights(a / "model.safetensors"), load_weights(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] == wb[k]).all(), k  # bit-exact, not just close
    ma, mb = json.loads((a / "metrics.json").read_text()), json.loads((b / "metrics.json").read_text())
    assert ma["ndcg@10"] == mb["ndcg@10"] and ma["best_epoch"] == mb["best_epoch"] and ma["steps"] == mb["steps"]
    steps = _steps(b)
    assert len(steps) == len(set(steps)), "a step was logged twice"
    assert _rows(a) == _rows(b)  # the same per-step log (losses, validation NDCG), apart from wall-clock times
    assert json.loads((a / "validation_curve.json").read_text()) == json.loads((b / "validation_curve.json").read_text())
