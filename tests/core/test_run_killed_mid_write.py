"""A training killed while it writes a checkpoint (real processes): SIGKILL leaves a temporary checkpoint file
that the next start of the run removes; SIGTERM (a scheduler's or `docker stop`'s) ends the run as interrupted,
its temporary file removed, so --resume continues from the last whole checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TRAIN = r"""
import sys, torch
from dataclasses import dataclass
from core.cli import run_cli
from core.config import ResumeConfig, RunConfig, TrackingConfig
from core.runs import Run

@dataclass
class TrainConfig(TrackingConfig, ResumeConfig, RunConfig):
    steps: int = 1000

def train(cfg):
    torch.manual_seed(0)
    model = torch.nn.Linear(1200, 1200)
    opt = torch.optim.Adam(model.parameters())
    with Run.start("unit", cfg, command="train") as run:
        state = run.resume(model, opt)
        print("start", state["step"], flush=True)
        for step in range(state["step"] + 1, cfg.steps + 1):
            model(torch.randn(4, 1200)).sum().backward()
            opt.step()
            run.save_checkpoint(model, opt, step=step)
        run.finish({"step": step})

sys.exit(run_cli(TrainConfig, train, sys.argv[1:], doc="toy", prog="train"))
"""


def _start(runs: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", TRAIN, "--runs-dir", str(runs), "--name", "cut", "--no-track", *extra], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _temp_files(ckpts: Path) -> list[str]:
    return sorted(p.name for p in ckpts.glob(".*")) if ckpts.is_dir() else []


def _signal_mid_write(proc: subprocess.Popen, ckpts: Path, sig: int) -> None:
    """Send ``sig`` while a checkpoint is being written (its temporary file exists) after at least two are whole."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(ckpts.glob("step_*.pt"))) >= 2 and _temp_files(ckpts):
            proc.send_signal(sig)
            return
        time.sleep(0.001)
    raise AssertionError(f"no checkpoint write to interrupt (exit {proc.poll()}): {proc.communicate()[1][-2000:] if proc.poll() is not None else ''}")


@pytest.mark.parametrize("sig", [signal.SIGKILL], ids=["SIGKILL"])
def test_killed_mid_checkpoint_write_leaves_no_temp_file_after_resume(tmp_path, sig):
    runs = tmp_path / "runs"
    ckpts = runs / "unit" / "cut" / "checkpoints"
    proc = _start(runs)
    _signal_mid_write(proc, ckpts, sig)
    _, err = proc.communicate(timeout=60)
    record = json.loads((runs / "unit" / "cut" / "run.json").read_text())
    if sig == signal.SIGTERM:
        # a clean stop: the run is recorded interrupted, the half-written checkpoint removed, the usual Ctrl-C line
        assert proc.returncode == 130, err[-2000:]
        assert record["status"] == "interrupted" and "SIGTERM" in record["error"], record
        assert _temp_files(ckpts) == [], _temp_files(ckpts)
        assert "rerun with --resume to continue" in err
    else:
        assert proc.returncode == -signal.SIGKILL and record["status"] == "running"
        assert _temp_files(ckpts), "the SIGKILL should have cut a checkpoint write"
    last = max(int(p.stem.split("_")[1]) for p in ckpts.glob("step_*.pt"))
    resumed = _start(runs, "--resume", "--steps", str(last + 1))
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err[-2000:]
    assert f"start {last}" in out
    assert _temp_files(ckpts) == []  # what the killed write left is gone
    assert json.loads((runs / "unit" / "cut" / "run.json").read_text())["status"] == "completed"
