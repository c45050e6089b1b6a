"""``Run.planned_dir`` names the folder ``Run.start`` would take, reading only: medical score compares its
job (whose identity includes ``<run>/masks``) with an ``--out`` holding another job before any run folder exists."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from core.config import ResumeConfig, RunConfig, TrackingConfig
from core.runs import Run


@dataclass
class JobConfig(TrackingConfig, ResumeConfig, RunConfig):
    pass


def _entries(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*")) if root.exists() else []


def _planned_then_started(cfg: JobConfig, name: str | None, **kw) -> tuple[Path, Run]:
    before = _entries(Path(cfg.runs_dir))
    planned = Run.planned_dir("unit", cfg, name, command="score", **kw)
    assert _entries(Path(cfg.runs_dir)) == before  # nothing created
    run = Run.start("unit", cfg, name, command="score", kind="job", **kw)
    return planned, run


def test_planned_dir_is_the_folder_start_takes(tmp_path):
    cfg = JobConfig(runs_dir=str(tmp_path / "runs"), track=False)
    planned, run = _planned_then_started(cfg, "score-abc", stable_name=True)  # a new stable name
    assert planned == run.dir == tmp_path / "runs" / "unit" / "score-abc"
    run._close("failed", error="killed")
    planned, run = _planned_then_started(cfg, "score-abc", stable_name=True)  # its unfinished run: continued in place
    assert planned == run.dir == tmp_path / "runs" / "unit" / "score-abc"
    run.finish()
    planned, run = _planned_then_started(cfg, "score-abc", stable_name=True)  # finished work is never reused
    assert planned == run.dir == tmp_path / "runs" / "unit" / "score-abc-1"
    run.finish()
    planned, run = _planned_then_started(replace(cfg, name="mine"), "score-abc", stable_name=True)  # --name wins
    assert planned == run.dir == tmp_path / "runs" / "unit" / "mine"
    run.finish()
    planned, run = _planned_then_started(replace(cfg, resume=True, name="score-abc-1"), None)  # --resume --name: that run
    assert planned == run.dir == tmp_path / "runs" / "unit" / "score-abc-1"
    run.finish()
