"""What core.runs guarantees, shown with real files and real processes: run names stay inside the
runs folder, one writer per run folder (a second one is refused before it touches anything), a
writer killed with SIGKILL leaves a run that reads as "interrupted", config files are checked like
flags, and a scoring job killed mid-run is finished by rerunning the identical command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from core.cli import run_cli
from core.config import ModelRunConfig, RunConfig, SeedConfig, TrackingConfig, parse_config
from core.io import is_temp_file
from core.runs import Run, RunLockedError, RunNameError, RunNotFoundError, latest_run_dir, list_runs, read_run, resolve_model_run
from core.scoring import WORK_ITEM_COLUMN, file_items, read_output
from tests.scoring_support import PriceFileScorer, PriceScoreConfig, frame_checksum, score_prices

REPO = Path(__file__).resolve().parents[2]


@dataclass
class NamedConfig(TrackingConfig, SeedConfig, RunConfig):
    epochs: int = 2
    tickers: list[str] = ("SPY",)  # type: ignore[assignment]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---- 13.2 names stay inside the runs folder ----------------------------------------------------
@pytest.mark.parametrize("name", ["../../evil", "/abs/victim", "..", ".", "", "a/b", "latest", ".hidden"])
def test_run_names_that_are_paths_are_refused_from_flags_with_nothing_created(tmp_path, capsys, name):
    work = tmp_path / "work"
    work.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.json").write_text("precious")
    before = _tree(tmp_path)
    name = name.replace("/abs/victim", str(victim))
    calls = []
    with pytest.raises(SystemExit) as e:
        run_cli(NamedConfig, lambda cfg: calls.append(Run.start("unit", cfg, command="train")), ["--name", name, "--runs-dir", str(work / "runs"), "--no-track"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and not calls
    assert err.startswith("error: --name") and err.count("\n") == 1, err
    assert _tree(tmp_path) == before and (victim / "config.json").read_text() == "precious"


def test_run_names_and_runs_dir_from_a_config_file_are_checked_too(tmp_path, capsys):
    before = _tree(tmp_path)
    for bad, word in (({"name": "../../.."}, "name"), ({"runs_dir": "../../etc"}, "runs_dir"), ({"runs_dir": "/etc"}, "runs_dir")):
        p = tmp_path / "c.json"
        p.write_text(json.dumps(bad))
        with pytest.raises(SystemExit) as e:
            parse_config(NamedConfig, ["--config", str(p)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(f"error: --config {p}") and word in err and err.count("\n") == 1, err
        p.unlink()
    assert _tree(tmp_path) == before
    # the command line may still name any runs folder, and it overrides the file's
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"runs_dir": "/etc"}))
    assert parse_config(NamedConfig, ["--config", str(p), "--runs-dir", str(tmp_path / "r")]).runs_dir == str(tmp_path / "r")


def test_run_refuses_a_path_as_name_even_when_called_directly(tmp_path):
    with pytest.raises(RunNameError):
        Run.start("unit", NamedConfig(runs_dir=str(tmp_path), name="../x", track=False), command="train")
    with pytest.raises(RunNameError):
        Run.start("unit", NamedConfig(runs_dir=str(tmp_path), track=False), "../../y", command="score", kind="job")
    assert not any(tmp_path.iterdir())


def test_latest_only_points_at_a_completed_model_run_of_the_domain(tmp_path):
    with Run.start("unit", NamedConfig(runs_dir=str(tmp_path), name="m", track=False), command="train") as run:
        run.finish({"x": 1})
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "run.json").write_text(json.dumps({"status": "completed", "kind": "model"}))
    link = tmp_path / "unit" / "latest"
    link.unlink()
    link.symlink_to(outside)  # planted: points outside the domain
    assert latest_run_dir("unit", tmp_path) == run.dir.resolve()


# ---- 13.6 config files are checked like flags --------------------------------------------------
def test_config_file_values_are_typed_like_flags(tmp_path, capsys):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"epochs": "two"}))
    with pytest.raises(SystemExit) as e:
        parse_config(NamedConfig, ["--config", str(p)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "'epochs'" in err and "integer" in err and '"two"' in err and "Traceback" not in err
    p.write_text(json.dumps({"track": "false", "tickers": "AAPL", "epochs": "3"}))
    cfg = parse_config(NamedConfig, ["--config", str(p)])
    assert cfg.track is False and cfg.tickers == ["AAPL"] and cfg.epochs == 3


def test_flag_abbreviations_are_refused(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(NamedConfig, ["--ticker", "AAPL"])
    assert e.value.code == 2 and "--ticker" in capsys.readouterr().err


# ---- 12.3 one helper resolves --model-run --------------------------------------------------------
def test_resolve_model_run_checks_existence_status_and_kind(tmp_path):
    @dataclass
    class JobConfig(ModelRunConfig, RunConfig):
        pass

    with pytest.raises(RunNotFoundError, match="no completed unit model run"):
        resolve_model_run("unit", None, tmp_path)
    with Run.start("unit", NamedConfig(runs_dir=str(tmp_path), name="m", track=False), command="train") as model:
        model.finish()
    with Run.start("unit", JobConfig(runs_dir=str(tmp_path), name="j"), command="score", kind="job") as job:
        job.finish()
    with pytest.raises(ValueError):
        with Run.start("unit", NamedConfig(runs_dir=str(tmp_path), name="broken", track=False), command="train"):
            raise ValueError("boom")
    assert resolve_model_run("unit", None, tmp_path) == model.dir.resolve()
    assert resolve_model_run("unit", "m", tmp_path) == model.dir.resolve()
    assert resolve_model_run("unit", str(model.dir), tmp_path) == model.dir.resolve()
    for ref, msg in (("j", "job, not a trained model run"), ("broken", "failed, not completed"), ("nope", "no run named 'nope'"),
                     (str(tmp_path / "missing"), "is not a folder"), (str(tmp_path), "not a run folder")):
        with pytest.raises(RunNotFoundError, match=msg) as e:
            resolve_model_run("unit", ref, tmp_path)
        assert "\n" not in str(e.value)


def test_resume_is_keyed_by_the_command_name(tmp_path):
    with Run.start("unit", NamedConfig(runs_dir=str(tmp_path), track=False), command="train") as a:
        a.finish()
    with Run.start("unit", NamedConfig(runs_dir=str(tmp_path), track=False), "later", command="evaluate", kind="job") as b:
        b.finish()
    assert read_run(a.dir)["command"] == "train" and read_run(b.dir)["command"] == "evaluate"

    @dataclass
    class RenamedTrainConfig(NamedConfig):  # another config class, same command: resumes the train run
        resume: bool = True

    with Run.start("unit", RenamedTrainConfig(runs_dir=str(tmp_path), track=False), command="train") as r:
        assert r.dir == a.dir


# ---- 13.3 one writer per run folder; killed writers read as interrupted -----------------------------
def _start_writer(items_dir: Path, runs_dir: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tests.scoring_support", "--items-dir", str(items_dir), "--runs-dir", str(runs_dir),
           "--items-per-chunk", "1", "--sleep", "0.25", "--no-progress", *extra]
    return subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the writer and its workers (its whole process group), as a crash would."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _chunks(run_dir: Path) -> int:
    return len(list((run_dir / "scores" / "_done").glob("chunk-*.json")))


def test_a_second_writer_is_refused_before_it_touches_the_run_and_a_killed_writer_reads_interrupted(price_files, tmp_path):
    runs = tmp_path / "runs"
    proc = _start_writer(price_files[0].parent, runs, "--name", "nightly")
    run_dir = runs / "prices" / "nightly"
    try:
        _wait_for(lambda: _chunks(run_dir) >= 1, proc)
        snapshot = {p: p.read_bytes() for p in (run_dir / "config.json", run_dir / "run.json")}
        cfg = PriceScoreConfig(runs_dir=str(runs), name="nightly", items_dir=str(price_files[0].parent), items_per_chunk=3)
        with pytest.raises(RunLockedError, match=f"being written by PID {proc.pid}"):
            score_prices(cfg)  # a job with other settings into the same run
        assert {p: p.read_bytes() for p in snapshot} == snapshot  # refused before touching anything
        assert read_run(run_dir)["status"] == "running"
    finally:
        _kill(proc)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # what the killed process left
    info = read_run(run_dir)
    assert info["status"] == "interrupted" and str(proc.pid) in info["error"]
    assert [r["status"] for r in list_runs(runs, "prices")] == ["interrupted"]


def test_a_running_run_without_lock_file_is_judged_by_its_pid(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    for pid, expected in ((dead.pid, "interrupted"), (os.getpid(), "running")):
        d = tmp_path / "unit" / f"r{pid}"
        d.mkdir(parents=True)
        (d / "run.json").write_text(json.dumps({"status": "running", "pid": pid, "host": os.uname().nodename}))
        assert read_run(d)["status"] == expected


# ---- 13.5 rerunning the identical command finishes a killed scoring job --------------------------
def test_sigkill_mid_job_then_the_identical_command_finishes_it_in_the_same_run(price_files, tmp_path):
    runs = tmp_path / "runs"
    items_dir = price_files[0].parent
    proc = _start_writer(items_dir, runs)  # no --name, no --out: the job names itself from its inputs
    try:
        _wait_for(lambda: any(_chunks(d) >= 3 for d in (runs / "prices").glob("score-*")), proc)
    finally:
        _kill(proc)
    (run_dir,) = (runs / "prices").glob("score-*")
    committed = _chunks(run_dir)
    assert 3 <= committed < 20, committed
    (run_dir / "scores" / ".part-000019.tmp-x1y2.parquet").write_bytes(b"half")  # what a kill mid-write leaves
    (run_dir / "scores" / "_done" / ".chunk-000019.abc.json").write_bytes(b"{")  # older temp names too
    # the identical command, in this process
    summary = score_prices(PriceScoreConfig(runs_dir=str(runs), items_dir=str(items_dir), items_per_chunk=1, sleep=0.0, progress=False))
    assert summary.chunks_skipped == committed and summary.chunks_done == 20 - committed
    assert [p.name for p in (runs / "prices").iterdir()] == [run_dir.name]  # same run, no second folder
    assert read_run(run_dir)["status"] == "completed"
    out = read_output(run_dir / "scores", verify=True)
    ref = []
    s = PriceFileScorer()
    s.load()
    for it in file_items(sorted(items_dir.glob("*.csv"))):
        df = s.score(it)
        df.insert(0, WORK_ITEM_COLUMN, it.id)
        ref.append(df)
    assert frame_checksum(out) == frame_checksum(pd.concat(ref, ignore_index=True))  # every row exactly once
    assert not [p for p in run_dir.rglob(".*") if is_temp_file(p)]


# ---- folders the machine refuses, flags the engine cannot use, config files from Windows editors ---------------
def test_a_runs_folder_that_cannot_be_written_is_one_line_not_a_traceback(tmp_path, capsys):
    """--runs-dir under a file (NotADirectoryError) or on a read-only/full disk raised a traceback from Run.start."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc = run_cli(NamedConfig, lambda cfg: Run.start("unit", cfg, command="train"), ["--runs-dir", str(blocker / "runs"), "--no-track"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(blocker) in err and "choose another --runs-dir" in err

    def full_disk(cfg):
        raise OSError(28, "No space left on device", str(tmp_path / "runs"))

    assert run_cli(NamedConfig, full_disk, ["--no-track"]) == 2 and "No space left" in capsys.readouterr().err

    def bug(cfg):
        raise OSError(5, "Input/output error")  # not about a folder the user chose: keeps its traceback

    with pytest.raises(OSError):
        run_cli(NamedConfig, bug, ["--no-track"])


def test_scoring_flags_the_engine_cannot_use_and_a_bom_config_file(tmp_path, capsys):
    for flag in ("--workers", "--items-per-chunk"):
        with pytest.raises(SystemExit) as e:  # each used to fail inside run_job, after the run folder existed
            parse_config(PriceScoreConfig, [flag, "0", "--runs-dir", str(tmp_path)])
        assert e.value.code == 2 and f"{flag} 0: expected >= 1" in capsys.readouterr().err
    p = tmp_path / "c.json"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps({"epochs": 5}).encode())  # Notepad's UTF-8 with a byte-order mark
    assert parse_config(NamedConfig, ["--config", str(p)]).epochs == 5
    assert not (tmp_path / "unit").exists()
