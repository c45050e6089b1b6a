"""``core.runs.check_resumable``: the ``--resume`` refusals that the run folder alone decides, read before a
command's slow data load — each with the error ``Run.start`` raises for the same folder, and without creating,
locking or changing anything under runs/."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from core.config import ResumeConfig, RunConfig, TrackingConfig
from core.errors import UserInputError
from core.locking import FolderLock
from core.runs import LOCK_FILE, Run, RunDamagedError, RunLockedError, RunNameError, RunNotFoundError, check_resumable


@dataclass
class JobConfig(TrackingConfig, ResumeConfig, RunConfig):
    pass


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under root with its content's hash (folders: 'dir'): any creation, removal or change shows."""
    return {str(p.relative_to(root)): ("dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()) for p in sorted(root.rglob("*"))}


@pytest.fixture
def runs(tmp_path) -> tuple[JobConfig, Path]:
    """A finished train run 'done', an interrupted train run 'cut', a score job 'job1', under tmp_path/runs/unit."""
    cfg = JobConfig(runs_dir=str(tmp_path / "runs"), track=False)
    with Run.start("unit", replace(cfg, name="done"), command="train") as run:
        run.finish({"loss": 1.0})
    cut = Run.start("unit", replace(cfg, name="cut"), command="train")
    cut._close("interrupted", error="killed")
    with Run.start("unit", replace(cfg, name="job1"), command="score", kind="job") as run:
        run.finish()
    for minute, name in enumerate(("done", "cut", "job1")):  # start times one second apart at most: make the order plain
        record = tmp_path / "runs" / "unit" / name / "run.json"
        record.write_text(json.dumps({**json.loads(record.read_text()), "started": f"2026-01-01T00:0{minute}:00"}))
    return replace(cfg, resume=True), tmp_path / "runs"


def _refused(cfg, error, match, command="train"):
    before = _snapshot(Path(cfg.runs_dir))
    with pytest.raises(error, match=match) as e:
        check_resumable("unit", cfg, command)
    assert "\n" not in str(e.value) and isinstance(e.value, UserInputError)
    assert _snapshot(Path(cfg.runs_dir)) == before  # nothing created, locked or changed
    with pytest.raises(error, match=match):  # and Run.start refuses the same folder with the same error
        Run.start("unit", cfg, command=command)


def test_without_resume_nothing_is_checked(runs):
    cfg, root = runs
    assert check_resumable("unit", replace(cfg, resume=False, name="nosuch"), "train") is None


def test_the_folder_is_the_one_start_continues(runs):
    cfg, root = runs
    before = _snapshot(root)
    assert check_resumable("unit", replace(cfg, name="done"), "train") == root / "unit" / "done"
    newest = check_resumable("unit", cfg, "train")  # no --name: the newest train run, never the newer score job
    assert newest == root / "unit" / "cut" and check_resumable("unit", cfg, "score") == root / "unit" / "job1"
    assert _snapshot(root) == before
    with Run.start("unit", cfg, command="train") as run:
        assert run.dir == newest
        run.finish()


def test_no_such_run(runs):
    cfg, _ = runs
    _refused(replace(cfg, name="nosuch"), RunNotFoundError, r"^--resume: no run .*nosuch to resume; expected the --name of a unit train run under ")


def test_no_run_of_this_command_at_all(runs):
    cfg, _ = runs
    _refused(cfg, RunNotFoundError, r"^--resume: no unit evaluate run under .* to resume$", command="evaluate")


def test_no_runs_folder_at_all(tmp_path):
    cfg = JobConfig(runs_dir=str(tmp_path / "runs"), track=False, resume=True)
    with pytest.raises(RunNotFoundError, match="no unit train run under"):
        check_resumable("unit", cfg, "train")
    assert not (tmp_path / "runs").exists()


def test_another_commands_run(runs):
    cfg, _ = runs
    _refused(replace(cfg, name="job1"), RunNotFoundError, r"job1 is a score job run, not a train run; expected the name of a train run")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"status": 3}'])
def test_a_damaged_record(runs, content):
    cfg, root = runs
    (root / "unit" / "done" / "run.json").write_text(content)
    _refused(replace(cfg, name="done"), RunDamagedError, r"^--resume: .*run\.json: .*this run's record is damaged, so it is not continued")


def test_a_damaged_newest_run_without_a_name(runs):
    cfg, root = runs
    (root / "unit" / "cut" / "run.json").write_text("{not json")  # no status or date left: it sorts last, and is no other command's
    (root / "unit" / "done" / "run.json").write_text("{not json")
    _refused(cfg, RunDamagedError, r"record is damaged")


def test_a_run_being_written(runs):
    cfg, root = runs
    lock = FolderLock.acquire(root / "unit" / "cut" / LOCK_FILE)  # another handle, as another process's
    try:
        _refused(replace(cfg, name="cut"), RunLockedError, r"^run .*cut is being written by PID \d+; wait for it to finish")
    finally:
        lock.release()


def test_a_bad_name(runs):
    cfg, _ = runs
    _refused(replace(cfg, name="../done"), RunNameError, r"--name '\.\./done'")


def _legacy_record(root: Path, name: str, config_class: str, status: str = "interrupted") -> Path:
    """A run.json as Run wrote it before Run.start(command=...) (until 82bd45f): the command field holds the
    name of the config class of the command that made it."""
    run_dir = root / "unit" / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"name": name, "runs_dir": str(root), "track": False, "resume": False}))
    (run_dir / "run.json").write_text(json.dumps({
        "domain": "unit", "name": name, "kind": "model", "command": config_class, "status": status, "started": "2025-12-01T00:00:00",
        "updated": "2025-12-01T00:10:00", "host": "old-host", "pid": 999999, "git_commit": None, "mlflow_run_id": None, "mlflow_tracking_uri": None,
        "error": "KeyboardInterrupt"}))
    return run_dir


def test_a_legacy_record_naming_the_config_class_is_this_commands_run(runs):
    """--resume --name of an interrupted run of the previous version, whose run.json says command "JobConfig"
    (the config class of the command that made it), continues it — and the record then names the command."""
    cfg, root = runs
    legacy = _legacy_record(root, "old", type(cfg).__name__)
    assert check_resumable("unit", replace(cfg, name="old"), "train") == legacy
    with Run.start("unit", replace(cfg, name="old"), command="train") as run:
        assert run.dir == legacy
        run.finish({"loss": 0.5})
    assert json.loads((legacy / "run.json").read_text())["command"] == "train"


def test_a_legacy_record_of_another_config_class_is_still_another_commands_run(runs):
    cfg, root = runs
    _legacy_record(root, "oldscore", "ScoreConfig")
    _refused(replace(cfg, name="oldscore"), RunNotFoundError, r"oldscore is a ScoreConfig model run, not a train run")


def test_a_legacy_record_is_found_by_resume_without_a_name(tmp_path):
    cfg = JobConfig(runs_dir=str(tmp_path / "runs"), track=False, resume=True)
    legacy = _legacy_record(tmp_path / "runs", "old", "JobConfig")
    assert check_resumable("unit", cfg, "train") == legacy
