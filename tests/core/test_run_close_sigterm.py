"""SIGTERM arriving while a run closes (``Run.finish``: metrics.json, then ``Run._close``: run.json, ``latest``, the
tracker). The writes are atomic, so the record is never damaged; before, the SIGTERM was raised where it landed and
left a completed model run that ``latest`` did not point at (``score``/``infer`` then used the previous model), or —
when the ``with`` block's end called ``finish`` — a run.json saying ``running`` under a held lock for as long as the
process lived. Now the record is made final first, then :class:`RunTerminated` is raised (exit 143 in a command)."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

import core.runs as runs
from core.config import RunConfig, TrackingConfig
from core.locking import is_locked
from core.runs import LOCK_FILE, Run, RunTerminated, read_run


@dataclass
class ToyConfig(TrackingConfig, RunConfig):
    pass


@pytest.fixture
def default_sigterm():
    """SIGTERM at its default action for the test (ray.init, earlier in the process, may have installed its own)."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("file_cut", ["metrics.json", "run.json"])
@pytest.mark.parametrize("explicit_finish", [True, False], ids=["finish-in-block", "finish-at-block-end"])
def test_sigterm_while_a_run_closes_leaves_it_completed_and_latest_on_it_then_stops(tmp_path, monkeypatch, default_sigterm, file_cut, explicit_finish):
    cfg = ToyConfig(runs_dir=str(tmp_path / "runs"), track=False)
    with Run.start("unit", replace(cfg, name="older"), command="train") as run:
        run.finish({"loss": 2.0})
    latest = tmp_path / "runs" / "unit" / "latest"
    assert latest.resolve().name == "older"

    write = runs.atomic_write_json
    armed = []

    def sigterm_then_write(path, obj, *a, **kw):
        if armed and Path(path).name == file_cut:
            armed.clear()
            os.kill(os.getpid(), signal.SIGTERM)  # lands at the next bytecode of this (main) thread
        return write(path, obj, *a, **kw)

    monkeypatch.setattr(runs, "atomic_write_json", sigterm_then_write)
    with pytest.raises(RunTerminated, match="SIGTERM"):
        with Run.start("unit", replace(cfg, name="newer"), command="train") as run:
            run.summary["loss"] = 1.0
            armed.append(True)
            if explicit_finish:
                run.finish()
    assert not armed, "the SIGTERM was not sent"
    info = read_run(run.dir)
    assert info["status"] == "completed" and info["metrics"] == {"loss": 1.0}, info
    assert latest.resolve().name == "newer"  # the newest completed model, not the previous one
    assert is_locked(run.dir / LOCK_FILE) is False and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_while_the_close_gives_back_the_signal_and_the_lock_still_leaves_both_given_back(tmp_path, monkeypatch, default_sigterm):
    """The last steps of closing (restore SIGTERM's action, release the lock): a SIGTERM landing just before them was
    raised there, in the ``finally``, and skipped both — the run's handler stayed installed and its lock held."""
    cfg = ToyConfig(runs_dir=str(tmp_path / "runs"), track=False, name="r")
    restore = Run._restore_sigterm
    sent = []

    def sigterm_then_restore(self):
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)  # lands at the next bytecode of this (main) thread
        return restore(self)

    monkeypatch.setattr(Run, "_restore_sigterm", sigterm_then_restore)
    with pytest.raises(RunTerminated, match="SIGTERM"):
        with Run.start("unit", cfg, command="train") as run:
            run.finish({"loss": 1.0})
    assert sent
    assert read_run(run.dir)["status"] == "completed"
    assert is_locked(run.dir / LOCK_FILE) is False and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
