"""A training killed while it writes a checkpoint: SIGKILL leaves a temporary checkpoint file that the next start
of the run removes; SIGTERM (a scheduler's or `docker stop`'s) ends the run as interrupted, its temporary file
removed, so --resume continues from the last whole checkpoint. The real-process test is slow (three processes
importing torch: ~10 s of CPU, over a minute on a loaded 2-core machine); the in-process ones are fast."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from core.config import ResumeConfig, RunConfig, TrackingConfig
from core.runs import Run, RunTerminated, read_run

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
    model = torch.nn.Linear(800, 800)
    opt = torch.optim.Adam(model.parameters())
    with Run.start("unit", cfg, command="train") as run:
        state = run.resume(model, opt)
        print("start", state["step"], flush=True)
        for step in range(state["step"] + 1, cfg.steps + 1):
            model(torch.randn(4, 800)).sum().backward()
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


def _signal_mid_write(proc: subprocess.Popen, ckpts: Path, sig: int, at_least: int = 2) -> None:
    """Send ``sig`` while a checkpoint is being written (its temporary file exists) after the one of step ``at_least``."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (ckpts / f"step_{at_least:08d}.pt").is_file() and _temp_files(ckpts):
            proc.send_signal(sig)
            return
        time.sleep(0.001)
    raise AssertionError(f"no checkpoint write to interrupt (exit {proc.poll()}): {proc.communicate()[1][-2000:] if proc.poll() is not None else ''}")


@pytest.mark.slow
def test_sigterm_then_sigkill_mid_checkpoint_write_then_resume(tmp_path):
    runs = tmp_path / "runs"
    run_json = runs / "unit" / "cut" / "run.json"
    ckpts = runs / "unit" / "cut" / "checkpoints"

    # SIGTERM (a scheduler's preemption, `docker stop`): a clean stop — recorded interrupted, the checkpoint being
    # written abandoned and its temporary file removed, the usual Ctrl-C line and exit code
    proc = _start(runs)
    _signal_mid_write(proc, ckpts, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    record = json.loads(run_json.read_text())
    assert proc.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert record["status"] == "interrupted" and "SIGTERM" in record["error"], record
    assert _temp_files(ckpts) == []
    assert "interrupted; finished work is kept — rerun with --resume to continue" in err

    # SIGKILL of the resumed run mid-write: nothing can clean up — the temporary checkpoint stays ...
    proc = _start(runs, "--resume")
    _signal_mid_write(proc, ckpts, signal.SIGKILL, at_least=4)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL and json.loads(run_json.read_text())["status"] == "running"
    assert _temp_files(ckpts), "the SIGKILL should have cut a checkpoint write"

    # ... until the run is started again: --resume continues from the last whole checkpoint, the leftover is removed
    last = max(int(p.stem.split("_")[1]) for p in ckpts.glob("step_*.pt"))
    proc = _start(runs, "--resume", "--steps", str(last + 1))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert f"start {last}" in out
    assert _temp_files(ckpts) == []
    assert json.loads(run_json.read_text())["status"] == "completed"


@dataclass
class ToyConfig(TrackingConfig, ResumeConfig, RunConfig):
    pass


@pytest.fixture
def default_sigterm():
    """SIGTERM at its default action for the test, whatever an earlier test in this process installed (ray.init sets
    its own handler), and the earlier handler back afterwards: the test is about what a run does from the default."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_in_a_run_is_an_interrupted_run_and_the_handler_is_removed_after(tmp_path, default_sigterm):
    cfg = ToyConfig(runs_dir=str(tmp_path / "runs"), name="t", track=False)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with pytest.raises(RunTerminated, match="SIGTERM"):
        with Run.start("unit", cfg, command="train"):
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "the run does not catch SIGTERM (it would end this process)"
            try:
                os.kill(os.getpid(), signal.SIGTERM)  # delivered to this (main) thread: raised at the next bytecode
                time.sleep(5)
            except RunTerminated:
                # what torch.save's writer does when cut: it raises its own error on the way out
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5888 vs 5782") from None
    info = read_run(tmp_path / "runs" / "unit" / "t")
    assert info["status"] == "interrupted" and "SIGTERM" in info["error"], info
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the run's handler is gone with the run


def test_a_handler_someone_installed_is_left_alone(tmp_path):
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda *a: seen.append(a[0]))
    try:
        with Run.start("unit", ToyConfig(runs_dir=str(tmp_path / "runs"), track=False), command="train") as run:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            run.finish()
        assert seen == [signal.SIGTERM] and read_run(run.dir)["status"] == "completed"
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_starting_a_run_again_removes_what_interrupted_writes_left(tmp_path):
    cfg = ToyConfig(runs_dir=str(tmp_path / "runs"), name="t", track=False)
    with Run.start("unit", cfg, command="train") as run:
        pass
    run.dir.joinpath("run.json").write_text(run.dir.joinpath("run.json").read_text().replace('"completed"', '"interrupted"'))
    left = [run.checkpoint_dir / ".step_00000003.tmp-1a2b3c4d.pt", run.dir / ".metrics.tmp-5e6f7a8b.json"]
    for p in left:
        p.write_bytes(b"cut")
    kept = run.dir / "notes.txt"
    kept.write_text("mine")
    with Run.start("unit", replace(cfg, resume=True), command="train"):
        pass
    assert not any(p.exists() for p in left) and kept.read_text() == "mine"


@pytest.mark.parametrize("interrupt, code", [(KeyboardInterrupt(), 130), (RunTerminated("terminated by SIGTERM (pid 1)"), 143)])
def test_the_command_exit_code_says_how_it_was_stopped(interrupt, code, capsys):
    """Ctrl-C exits 130; SIGTERM during a run exits 143 (128 + 15), which is what a scheduler (SLURM, Kubernetes,
    `docker stop`) reads as 'ended by SIGTERM' — both print the resume line, neither a traceback."""
    from core.cli import run_cli

    @dataclass
    class Cfg(ResumeConfig, RunConfig):
        pass

    def stop(cfg):
        raise interrupt

    assert run_cli(Cfg, stop, []) == code
    assert "rerun with --resume to continue" in capsys.readouterr().err
