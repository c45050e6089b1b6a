"""One run directory per run: ``<runs_dir>/<domain>/<name>/``.

It holds the resolved ``config.json``, ``run.json`` (command, kind, status, timings, device, pid),
per-step ``metrics.jsonl``, final ``metrics.json``, ``checkpoints/``, ``log.jsonl`` and ``.lock``.
The two metrics files are strict JSON: a non-finite value (NaN, ±inf, e.g. an undefined HD95) is
``null`` there — readers take ``null`` as "no value" — and is not sent to MLflow.
The path is printed at the end of every command. ``<runs_dir>/<domain>/latest`` points at the
newest completed run of kind ``"model"`` (a run that trained a model), which is what
``score``/``infer`` commands and dashboards use by default (:func:`resolve_model_run`); runs of
kind ``"job"`` (forecast, score, …) never move it.

    with Run.start("medical", cfg, command="train") as run:
        start_step = run.resume(model, optimizer, scheduler)   # 0 unless --resume
        ...
        run.log_metrics({"loss": loss}, step)
        run.save_checkpoint(model, optimizer, scheduler, step=step)
        run.finish({"val_dice": dice})

Guarantees: run names are plain names (:class:`RunNameError` before anything is created); one
writer per run folder (a second one gets :class:`RunLockedError` naming the writer's PID before it
touches anything); a run whose writer died while ``running`` reads as ``interrupted``; ``--resume`` continues
only a run of the same command whose record is intact, with the settings its config declares fixed on a resume
(those that decide the held-out rows, :class:`ResumeSettingsError`) and the same data as the run's, by content
(:data:`DATA_RECORD_FILE`, :class:`ResumeDataError`) — :func:`check_resumable` says so, reading only, before a
command's slow data load.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn

import torch

from core.checkpoint import (CheckpointDamagedError, CheckpointMismatchError, checkpoints_newest_first, read_checkpoint, restore_checkpoint,
                             save_checkpoint)
from core.config import PRIVATE_VALUE, ResumeConfig, RunConfig, RunNameError, check_run_name, fixed_settings_changed, recorded_config
from core.device import device_summary, resolve_device, seed_everything
from core.errors import UserInputError, plain
from core.io import atomic_write_bytes, atomic_write_json, finite_or_none, json_default, remove_temp_files
from core.locking import FolderLock, is_locked, lock_holder, pid_alive
from core.logging import attach_run_log, detach_run_log, get_logger
from core.tracking import Tracker

__all__ = ["Run", "list_runs", "latest_run_dir", "resolve_model_run", "read_run", "iter_metrics", "check_resumable", "RunNotFoundError", "RunLockedError",
           "RunDamagedError", "ResumeSettingsError", "ResumeDataError", "RunNameError", "RunTerminated", "LOCK_FILE", "DATA_RECORD_FILE",
           "data_identity", "content_digest"]

log = get_logger("runs")
# the data an attempt reads ("resume": "same-data" fields): {field: data_identity(...) + "content"}, written as each
# attempt starts (Run.start), compared by --resume (check_resumable, Run.start) before the data is read
DATA_RECORD_FILE = "data_source.json"

LOCK_FILE = ".lock"  # in every run folder: flock held by the writing process, with its PID


_METRICS_ROWS = "run_metrics_rows"  # key Run adds to a checkpoint's extra (and removes on resume)
_RUN_CONFIG = "run_config"  # the recorded config of the run that wrote the checkpoint (same)
_NOT_SETTINGS = ("resume", "name")  # config keys that are not settings a resumed run could differ in


class RunNotFoundError(UserInputError, FileNotFoundError):
    """No run where one was asked for (a --model-run, a --resume, the domain's latest model)."""


class RunLockedError(UserInputError, RuntimeError):
    """Another live process is writing the run folder."""


class RunDamagedError(UserInputError, ValueError):
    """A run whose record (run.json) is damaged: it may be finished work, so it is never continued or overwritten."""


class ResumeSettingsError(UserInputError, ValueError):
    """``--resume`` with another value of a setting the run's config declares fixed on a resume (``"resume": "fixed"``
    field metadata, :meth:`core.config.ResumeConfig.fixed_on_resume`): one that decides which rows are held out, so the
    checkpoint could be validated or tested on rows it has trained on. ``run_dir``: the run that was asked for."""

    def __init__(self, message: str, run_dir: Path | None = None):
        super().__init__(message)
        self.run_dir = run_dir


class ResumeDataError(ResumeSettingsError):
    """``--resume`` reading other data than the run was trained on (a ``"resume": "same-data"`` field: another file's
    content, a file rewritten at the run's path, a bundled data set instead of a file or the other way round)."""


class RunTerminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption, ``docker stop``, ``kill``) reached a running run: it stops as after Ctrl-C —
    the write in progress is abandoned (its temporary file removed), the run recorded ``interrupted``. The command
    exits 143 (128 + SIGTERM, what schedulers expect of a process ended by SIGTERM), Ctrl-C's 130 otherwise."""

    exit_code = 143


@functools.lru_cache(maxsize=1)
def _git_commit() -> str | None:  # once per process: run.json is written at start and at close
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


def _is_completed_model(info: dict[str, Any]) -> bool:
    return info.get("status") == "completed" and info.get("kind", "model") == "model"


def latest_run_dir(domain: str, runs_dir: str | Path = "runs") -> Path:
    """The newest completed model run of ``domain``; a clear error naming the command that makes one.

    ``<runs_dir>/<domain>/latest`` is followed only when it points at a completed model run inside
    ``<runs_dir>/<domain>`` (a link planted elsewhere is ignored)."""
    root = Path(runs_dir) / domain
    link = root / "latest"
    if link.is_symlink() or link.exists():
        try:
            target = link.resolve()
        except (OSError, RuntimeError):  # a link loop (RuntimeError before Python 3.13): ignore the link
            target = None
        if target is not None and target.parent == root.resolve() and target.is_dir() and _is_completed_model(read_run(target)):
            return target
    done = [r for r in list_runs(runs_dir, domain) if _is_completed_model(r)]
    if done:
        return Path(done[0]["path"])
    raise RunNotFoundError(f"no completed {domain} model run under {root}; create one with `python -m domains.{domain}.train`")


def resolve_model_run(domain: str, model_run: str | os.PathLike | None, runs_dir: str | Path = "runs") -> Path:
    """The model run a job uses: ``None`` -> the domain's newest completed model run; otherwise a
    run folder (a path) or a run name under ``<runs_dir>/<domain>``. The run must exist, be
    completed and be of kind ``"model"``; otherwise :class:`RunNotFoundError` in one line."""
    if model_run is None or str(model_run) == "":
        return latest_run_dir(domain, runs_dir)
    text = str(model_run)
    as_path = Path(text).expanduser()
    is_name = not any(sep in text for sep in ("/", "\\")) and text not in (".", "..")
    run_dir = Path(runs_dir) / domain / text if is_name and not (as_path.is_dir() and (as_path / "run.json").is_file()) else as_path
    if not run_dir.is_dir():
        where = f"no run named {text!r} under {Path(runs_dir) / domain}" if is_name else f"{text} is not a folder"
        raise RunNotFoundError(f"--model-run {text}: {where}; give a {domain} run folder or run name (list them with `ls {Path(runs_dir) / domain}`)")
    if not (run_dir / "run.json").is_file():
        raise RunNotFoundError(f"--model-run {text}: {run_dir} is not a run folder (no run.json)")
    info = read_run(run_dir)
    if info.get("domain", domain) != domain:
        raise RunNotFoundError(f"--model-run {text}: {run_dir} is a {info.get('domain')} run, expected a {domain} run")
    if info.get("kind", "model") != "model":
        raise RunNotFoundError(f"--model-run {text}: {run_dir} is a {info.get('command') or 'job'} job, not a trained model run")
    if info.get("status") == "damaged":
        raise RunNotFoundError(f"--model-run {text}: {info.get('error')}; use another run")
    if info.get("status") != "completed":
        raise RunNotFoundError(f"--model-run {text}: {run_dir} is {info.get('status', 'unknown')}, not completed; use a finished training run")
    return run_dir.resolve()


def _writer_died(run_dir: Path, info: dict[str, Any]) -> bool:
    """A ``running`` run whose writer is gone: its lock is free (or, without a lock file, its PID is dead)."""
    locked = is_locked(run_dir / LOCK_FILE)
    if locked is not None:
        return not locked
    return pid_alive(info.get("pid"), info.get("host")) is False


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """run.json, config and final metrics of one run; a ``running`` run whose writer died reads as
    ``interrupted`` (the files are left as they are)."""
    run_dir = Path(run_dir)
    info = _read_run_files(run_dir)
    if info.get("status") == "running" and _writer_died(run_dir, info):
        info = _read_run_files(run_dir)  # it may have finished between the two reads
        if info.get("status") == "running":
            info["status"] = "interrupted"
            info.setdefault("error", f"the writing process (pid {info.get('pid')}) ended without closing the run")
    return info


_RUN_FILES = (("run.json", None), ("config.json", "config"), ("metrics.json", "metrics"))
_TEXT_FIELDS = ("status", "kind", "command", "error", "device", "git_commit")


def links_out(path: Path, folder: Path) -> bool:
    """``path`` is a symbolic link whose target is not inside ``folder`` (a link loop counts as one)."""
    try:
        return path.is_symlink() and not path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        return True


def _read_run_files(run_dir: Path) -> dict[str, Any]:
    """The run's JSON files. A run.json that is not a JSON object with a text status (edited by hand,
    damaged on disk), or a run file that links out of the run folder, reads as status ``damaged`` with an
    ``error`` naming the file — one such run never breaks a listing; a config.json or metrics.json that is
    not an object reads as ``{}``. Name and path are the folder's; the domain is the parent folder's unless
    run.json names one; timestamps that are not text read as unknown (None); the other text fields are text."""
    info: dict[str, Any] = {"path": str(run_dir), "name": run_dir.name, "domain": run_dir.parent.name, "config": {}, "metrics": {}}
    linked = [f for f, _ in _RUN_FILES if links_out(run_dir / f, run_dir)]
    if linked:
        return {**info, "status": "damaged", "error": f"{run_dir}: {', '.join(linked)} link(s) outside the run folder: not read"}
    for fname, key in _RUN_FILES:
        p = run_dir / fname
        if not p.is_file():
            continue
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            problem = None if isinstance(data, dict) else f"a JSON {type(data).__name__}, expected an object"
        except (OSError, ValueError) as e:  # ValueError: not JSON, not UTF-8
            data, problem = {}, f"not readable JSON ({type(e).__name__})"
        if key is not None:
            info[key] = data if problem is None else {}
            continue
        if problem is None and not isinstance(data.get("status"), (str, type(None))):
            problem = f"status {data['status']!r} is not text"
        if problem is None:
            info.update({k: v for k, v in data.items() if k not in ("path", "name", "config", "metrics")})
        else:
            info.update(status="damaged", error=f"{p}: {problem}")
    if not isinstance(info.get("domain"), str) or not info["domain"]:
        info["domain"] = run_dir.parent.name
    for k in ("started", "updated"):
        if not isinstance(info.get(k), str):
            info[k] = None
    for k in _TEXT_FIELDS:
        v = info.get(k)
        if v is not None and not isinstance(v, str):
            info[k] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return info


def domain_dirs(runs_dir: str | Path, domain: str | None = None) -> list[Path]:
    """The domain folders under ``runs_dir``: real folders, or links that stay inside it (a ``finance`` link
    to another disk's folder is not followed out of the runs folder)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    names = [domain] if domain else sorted(p.name for p in root.iterdir() if not p.name.startswith(("mlartifacts", ".")))
    out = []
    for name in names:
        d = root / name
        try:
            if d.is_dir() and not links_out(d, root):
                out.append(d)
        except OSError:
            continue
    return out


def run_dirs(runs_dir: str | Path = "runs", domain: str | None = None) -> list[Path]:
    """Run folders: real folders (never a link such as ``latest``) holding a ``run.json`` file."""
    out = []
    for d in domain_dirs(runs_dir, domain):
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False) and os.path.isfile(os.path.join(e.path, "run.json")):
                    out.append(Path(e.path))
            except OSError:
                continue
    return out


def list_runs(runs_dir: str | Path = "runs", domain: str | None = None) -> list[dict[str, Any]]:
    """All runs (newest first) with their run.json, config and final metrics."""
    out = [read_run(rd) for rd in run_dirs(runs_dir, domain)]
    out.sort(key=lambda r: str(r.get("started") or ""), reverse=True)
    return out


class Run:
    """A run directory plus its tracker. Use :meth:`start` as a context manager.

    Starting a run takes small steps in this order: identify it (domain, command, kind), choose its
    folder and lock it (rank 0 only; the other ranks under torchrun follow rank 0's folder and write
    nothing), seed once, then open the log/metrics files, start tracking and write run.json/config.json.
    """

    def __init__(self, domain: str, config: RunConfig, *, command: str | None = None, new_name: str | None = None,
                 stable_name: bool = False, kind: str = "model", data_parallel=None):
        if kind not in ("model", "job"):
            raise ValueError(f"run kind must be 'model' or 'job', got {kind!r}")
        self.domain, self.kind, self.config = domain, kind, config
        self.command = command or self._legacy_command(config)
        self.runs_dir = Path(config.runs_dir)
        self.summary: dict[str, Any] = {}
        self._lock: FolderLock | None = None
        rank, dp = self._check_world(data_parallel)
        self.is_main = rank == 0
        self.device = resolve_device(getattr(config, "device", "auto"))
        # the content digest of each data path, read once per attempt: a --resume's comparison and data_source.json share it
        self._data_digest = functools.cache(_digest_or_none)
        self.dir = self._agree_on_dir(dp, new_name, stable_name)
        self.name = self.dir.name
        self.checkpoint_dir = self.dir / "checkpoints"
        if not self.is_main:
            self._seed(rank)
            self.tracker = Tracker(experiment=domain, run_name=self.name, runs_dir=self.runs_dir, enabled=False)
            return
        try:
            self._open_files()
            self._start_tracking()
            self._seed(rank)  # after the tracker started, so nothing it does can draw from the seeded generators
            self._write_start_files()
        except BaseException:
            self._restore_completed_files()
            self._release_lock()
            raise
        self._catch_sigterm()
        log.info(f"{domain} {self.command} run {self.name} on {self.device} -> {self.dir}")

    # -- the steps of starting a run ---------------------------------------------------------
    @staticmethod
    def _legacy_command(config: Any) -> str:
        log.debug(f"Run.start without command=: keying --resume by the config class {type(config).__name__}")
        return type(config).__name__

    def _check_world(self, data_parallel) -> tuple[int, Any]:  # noqa: ANN001
        from core.distributed import world

        rank, world_size, _ = world()
        dp = data_parallel if data_parallel is not None and data_parallel.enabled else None
        if world_size > 1 and rank > 0 and dp is None:
            raise RuntimeError(f"{self.command} does not train data-parallel: launch it as one process, not under torchrun "
                               f"(rank {rank} of {world_size}); the medical and finance trainers support torchrun")
        return rank, dp

    def _agree_on_dir(self, dp, new_name: str | None, stable_name: bool) -> Path:  # noqa: ANN001
        """Rank 0 chooses and locks the folder; under torchrun every rank gets rank 0's choice (or its error)."""
        chosen: Path | None = None
        error: BaseException | None = None
        if self.is_main:
            try:
                chosen = self._choose_and_lock_dir(new_name, stable_name)
            except BaseException as e:  # noqa: BLE001 - re-raised below, after telling the other ranks
                error = e
        if dp is not None:
            verdict = dp.broadcast(("error", f"{type(error).__name__}: {error}") if error else ("ok", str(chosen)))
            if verdict[0] == "error" and error is None:
                raise RuntimeError(f"rank 0 could not start the run: {verdict[1]}")
            chosen = Path(verdict[1]) if verdict[0] == "ok" else chosen
        if error is not None:
            raise error
        assert chosen is not None
        return chosen

    def _choose_and_lock_dir(self, new_name: str | None, stable_name: bool) -> Path:
        """The run folder, locked by this process. Nothing is created or changed before the name is
        checked and the lock is ours. A name the user gave (or a ``stable_name`` derived from the job's
        inputs) continues an unfinished run of that name; a finished run is never written again."""
        check_run_name(self.config.name, "--name")
        check_run_name(new_name, "run name")
        root = self.runs_dir / self.domain
        if getattr(self.config, "resume", False):
            run_dir = _resume_dir(self.config, self.domain, self.command, self._data_digest)
            self._lock_or_refuse(run_dir)
            self._keep_completed_files(run_dir)
            return run_dir
        explicit, base = _naming(self.config, new_name, stable_name)
        for i, run_dir in enumerate(_candidate_dirs(root, base, explicit)):
            if explicit and i == 0:
                self._lock_or_refuse(run_dir)  # a named run that is not finished: continue in its folder, if free
                self._reset_unfinished(run_dir)
                return run_dir
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            try:
                run_dir.mkdir()
            except FileExistsError:
                continue  # another process just took this name
            self._lock_or_refuse(run_dir)
            return run_dir
        raise RunLockedError(f"no free run name {base}-N under {root}")

    _completed_files: dict[str, bytes] | None = None
    _RESTORABLE = ("run.json", "config.json", "metrics.json", "metrics.jsonl", DATA_RECORD_FILE)

    def _keep_completed_files(self, run_dir: Path) -> None:
        """``--resume`` of a *completed* run (e.g. to train more epochs): keep its record, so an attempt
        that fails before doing new work (a checkpoint that does not fit other --data, a bad flag) leaves
        the finished run as it was instead of marking it failed with the other attempt's config."""
        if read_run(run_dir).get("status") == "completed":
            self._completed_files = {n: (run_dir / n).read_bytes() for n in self._RESTORABLE if (run_dir / n).is_file()}

    def _restore_completed_files(self) -> bool:
        kept, self._completed_files = self._completed_files, None
        if not kept:
            return False
        for name in self._RESTORABLE:
            if name in kept:
                atomic_write_bytes(self.dir / name, kept[name])
            elif name != "metrics.jsonl":
                (self.dir / name).unlink(missing_ok=True)
        log.warning(f"--resume of the completed run {self.dir.name} failed before any new work; the run is left completed as it was")
        return True

    def _lock_or_refuse(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = FolderLock.acquire(run_dir / LOCK_FILE)
        if self._lock is None:
            raise _being_written(run_dir)
        # the folder is ours: what a killed attempt's atomic writes left (a checkpoint of hundreds of MB cut by SIGKILL/SIGTERM
        # mid-write, as .step_….tmp-….pt) is never read, and would otherwise stay there for good, one more per kill
        removed = remove_temp_files(run_dir, recursive=False) + remove_temp_files(run_dir / "checkpoints", recursive=False)
        if removed:
            log.info(f"{run_dir}: removed {len(removed)} temporary file(s) of an interrupted write ({', '.join(p.name for p in removed[:3])}"
                     f"{', …' if len(removed) > 3 else ''})")

    def _reset_unfinished(self, run_dir: Path) -> None:
        """Starting a named run again (without --resume) in the folder of its failed or interrupted
        attempt: that attempt's per-step metrics and checkpoints would mix with the new ones."""
        stale = sorted(self._stale_files(run_dir))
        if stale:
            log.warning(f"{run_dir}: the folder of an unfinished run without --resume: its per-step metrics.jsonl and {sum(p.suffix == '.pt' for p in stale)} step "
                        "checkpoint(s) are removed (work the command saved on its own, e.g. finished backtest folds, is left for it to reuse)")
        for p in stale:
            p.unlink(missing_ok=True)

    @staticmethod
    def _stale_files(run_dir: Path) -> Iterator[Path]:
        if (run_dir / "metrics.jsonl").is_file():
            yield run_dir / "metrics.jsonl"
        yield from (run_dir / "checkpoints").glob("step_*.pt")

    def _seed(self, rank: int) -> None:
        """The one place a run seeds (when its config has a seed): rank r uses seed + r, so each rank
        draws its own batches while DDP keeps the weights in sync."""
        if hasattr(self.config, "seed"):
            seed_everything(self.config.seed + rank, getattr(self.config, "deterministic", False))

    def _open_files(self) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self._log_handler = attach_run_log(self.dir)
        metrics = self.dir / "metrics.jsonl"
        self._metrics_rows = _drop_cut_last_line(metrics) if metrics.is_file() else 0
        self._metrics_fh = open(metrics, "a", encoding="utf-8")
        self._started = time.strftime("%Y-%m-%dT%H:%M:%S")

    def _start_tracking(self) -> None:
        self.tracker = Tracker(experiment=self.domain, run_name=self.name, runs_dir=self.runs_dir, enabled=getattr(self.config, "track", False),
                               tags={"domain": self.domain, "command": self.command, "run_dir": str(self.dir.resolve())})

    def _write_start_files(self) -> None:
        self._write_run_json("running")
        new = recorded_config(self.config)  # private fields (e.g. a scan's path) are not recorded
        self._warn_changed_settings(new)
        atomic_write_json(self.dir / "config.json", new)
        record = data_record(self.config, self._data_digest)
        if record:  # the data this attempt reads, by content: what a --resume compares (check_resumable)
            atomic_write_json(self.dir / DATA_RECORD_FILE, record)
        self.tracker.log_params({"domain": self.domain, "command": self.command, **new})

    def _warn_changed_settings(self, new: dict) -> None:
        """With ``--resume``: name the settings that differ from the interrupted attempt's config.json
        (a resumed run continues with the new ones, except what the checkpoint restores: the optimizer's and
        scheduler's state, learning rate and weight decay included, are the interrupted run's — the line says so;
        every command sees the same line)."""
        old_file = self.dir / "config.json"
        if not getattr(self.config, "resume", False) or not old_file.is_file():
            return
        try:
            old = json.loads(old_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(old, dict):
            self._previous_config = old  # names the differing settings if the checkpoint does not fit (older checkpoints)
        changed = sorted(k for k in set(old) | set(new) if k not in _NOT_SETTINGS and old.get(k) != new.get(k))
        if changed:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:6]) + (" …" if len(changed) > 6 else "")
            log.warning(f"--resume with settings that differ from the interrupted run's ({shown}); it continues with the new ones, "
                        "but the optimizer and learning-rate schedule (learning rate, weight decay included) continue as the checkpoint saved them")

    _sigterm_handler = None
    _previous_sigterm = None
    _terminated: RunTerminated | None = None
    _closing = False  # finish/_close are writing the run's final record: a SIGTERM waits for it (see _catch_sigterm)
    _sigterm_while_closing = False

    def _catch_sigterm(self) -> None:
        """While the run is open, SIGTERM raises :class:`RunTerminated` in the main thread instead of ending the process
        where it stands: without it a preempted training died mid-checkpoint with its run.json saying "running", its
        MLflow run RUNNING for good and its temporary checkpoint file left behind. Only when SIGTERM has its default
        action (a handler someone else installed is left alone); a forked child (a DataLoader worker) that inherits it
        dies of SIGTERM as before; a second SIGTERM ends the process at once. While the run closes (:meth:`finish`,
        :meth:`_close`: metrics.json, run.json, ``latest``, the tracker) SIGTERM waits: the record is made final first
        (a completed run is never left pointing ``latest`` at the previous model, nor its MLflow run RUNNING), then
        :class:`RunTerminated` is raised."""
        if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        pid = os.getpid()

        def on_sigterm(signum, frame):  # noqa: ANN001
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if os.getpid() != pid:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            self._terminated = RunTerminated(f"terminated by SIGTERM (pid {pid})")
            if self._closing:  # the record is being made final: _close raises it when that is done
                self._sigterm_while_closing = True
                return
            raise self._terminated

        self._previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
        self._sigterm_handler = on_sigterm

    def _restore_sigterm(self) -> None:
        if self._sigterm_handler is not None and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) is self._sigterm_handler:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._sigterm_handler = None

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- lifecycle --------------------------------------------------------------------------
    @classmethod
    def start(cls, domain: str, config: RunConfig, new_name: str | None = None, *, command: str | None = None, kind: str = "model",
              stable_name: bool = False, data_parallel=None) -> "Run":
        """Start a run of ``domain``. ``command`` is the verb ("train", "score", …): stored in
        run.json and the key of ``--resume`` (the newest run of the same command). ``kind="job"``
        for runs that only use a model (forecast, score, …): they keep their own run directory but
        do not become ``<domain>/latest``. ``new_name``: the default name when the user gives no
        ``--name`` (a timestamp otherwise); ``stable_name=True`` when ``new_name`` is derived from the
        job's inputs (:func:`core.scoring.job_name`): rerunning the identical command then continues
        the unfinished run of that name instead of starting a new one. ``data_parallel``: the trainer's
        :class:`core.distributed.DataParallel` under torchrun (rank 0 writes, the others follow)."""
        return cls(domain, config, command=command, new_name=new_name, stable_name=stable_name, kind=kind, data_parallel=data_parallel)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            if not self._finished:
                self.finish()
        elif self._terminated is not None:
            # SIGTERM: whatever the code it interrupted raised on the way out (torch.save's writer reports its cut
            # zip file as a RuntimeError) is a consequence, not a failure of the run
            self._close("interrupted", error=f"RunTerminated: {self._terminated}")
            if exc is not self._terminated:
                raise self._terminated from None
        else:
            status = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
            self._close(status, error=f"{exc_type.__name__}: {exc}")
        return False

    _finished = False

    def finish(self, metrics: dict[str, Any] | None = None) -> Path:
        if metrics:
            self.summary.update(metrics)
        if not self.is_main:
            self._finished = True
            return self.dir
        self._closing = True  # a SIGTERM from here waits until the record is final (_close raises it then)
        try:
            summary = finite_or_none(self.summary)  # NaN/inf (e.g. an HD95 of an absent class) -> null: strict JSON
            atomic_write_json(self.dir / "metrics.json", summary, strict=True)
            self.tracker.log_metrics(summary, step=None)  # MLflow skips the nulls
        except BaseException:  # e.g. a full disk: the run is closed as failed by __exit__ (a SIGTERM that came meanwhile, as interrupted)
            self._closing = False
            raise
        if self.kind == "model":
            self._close("completed", point_latest=True)
        else:
            self._close("completed")
        return self.dir

    def _close(self, status: str, error: str | None = None, point_latest: bool = False) -> None:
        if self._finished or not self.is_main:
            self._finished, self._closing = True, False
            self._stop_if_terminated_while_closing()
            return
        self._finished = True
        self._closing = True
        try:
            self._metrics_fh.close()
            if status != "completed" and self._restore_completed_files():
                self.tracker.end("FAILED")
                detach_run_log(self._log_handler)
                return
            self._write_run_json(status, error=error)
            if point_latest:
                self._point_latest()
            for name in ("config.json", "metrics.json", "run.json"):
                if (self.dir / name).is_file():
                    self.tracker.log_artifact(self.dir / name)
            self.tracker.end({"completed": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED"))
            detach_run_log(self._log_handler)
        finally:
            self._restore_sigterm()
            self._release_lock()  # the run's files are final before another writer may take the folder
            self._closing = False  # last: a SIGTERM before this line waits (raised below), one after it has its default action
        print(f"Run directory: {self.dir}  ({status})", file=sys.stderr if status != "completed" else sys.stdout, flush=True)
        self._stop_if_terminated_while_closing()

    def _stop_if_terminated_while_closing(self) -> None:
        """SIGTERM came while the record was being made final (:meth:`_catch_sigterm`): stop now that it is."""
        if self._sigterm_while_closing and self._terminated is not None:
            self._sigterm_while_closing = False
            raise self._terminated

    def _write_run_json(self, status: str, error: str | None = None) -> None:
        data = {
            "domain": self.domain,
            "name": self.name,
            "kind": self.kind,
            "command": self.command,
            "status": status,
            "started": self._started,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "git_commit": _git_commit(),
            "mlflow_run_id": self.tracker.run_id,
            "mlflow_tracking_uri": self.tracker.uri if self.tracker.enabled else None,
            **device_summary(self.device),
        }
        if error:
            data["error"] = error
        atomic_write_json(self.dir / "run.json", data)

    def _point_latest(self) -> None:
        link = self.dir.parent / "latest"
        tmp = self.dir.parent / f".latest.{os.getpid()}"
        try:
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            os.symlink(self.dir.name, tmp)
            os.replace(tmp, link)
        except OSError as e:  # e.g. a filesystem without symlinks
            log.warning(f"could not update {link}: {e}")

    # -- metrics, artifacts, checkpoints -----------------------------------------------------
    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        if not self.is_main:
            return
        self._completed_files = None  # new work: from here a failure is this attempt's, recorded as such
        values = finite_or_none({k: _num(v) for k, v in metrics.items()})  # NaN/inf -> null: every row is strict JSON
        row = {"step": int(step), "time": round(time.time(), 3), **values}
        self._metrics_fh.write(json.dumps(row, default=json_default, allow_nan=False) + "\n")
        self._metrics_fh.flush()
        self._metrics_rows += 1
        self.tracker.log_metrics(values, step=step)  # MLflow skips the nulls

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.is_main:
            self.tracker.log_artifact(path, artifact_path)

    def path(self, *parts: str) -> Path:
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def save_checkpoint(self, model: torch.nn.Module, optimizer=None, scheduler=None, *, step: int, epoch: int = 0,
                        scaler=None, extra: dict | None = None, keep_last: int = 2) -> Path | None:
        if not self.is_main:
            return None
        self._completed_files = None  # new work (see log_metrics)
        # how many metrics.jsonl rows precede this checkpoint: resume drops the rows after it; and the settings it was
        # made with, so a resume with other settings that do not fit is told which flags differ
        extra = {**(extra or {}), _METRICS_ROWS: self._metrics_rows, _RUN_CONFIG: json.loads(json.dumps(recorded_config(self.config), default=str))}
        return save_checkpoint(self.checkpoint_dir / f"step_{step:08d}.pt", model=model, optimizer=optimizer,
                               scheduler=scheduler, scaler=scaler, step=step, epoch=epoch, extra=extra, keep_last=keep_last)

    _previous_config: dict[str, Any] | None = None

    def resume(self, model: torch.nn.Module, optimizer=None, scheduler=None, scaler=None) -> dict[str, Any]:
        """With ``--resume``: restore the newest checkpoint that loads and return its step/epoch/extra;
        otherwise ``{"step": 0, "epoch": 0, "extra": {}}``.

        A newer checkpoint that cannot be read (cut short, empty) is named in a one-line warning and,
        once an older one has loaded, renamed ``<name>.damaged`` (kept, never chosen again); when none
        loads, :class:`CheckpointDamagedError` in one line. A readable checkpoint that does not fit
        (another optimizer, other layers) is :class:`CheckpointMismatchError` naming the flags that
        differ from the run that saved it — never a silent fresh start."""
        if not getattr(self.config, "resume", False):
            return {"step": 0, "epoch": 0, "extra": {}}
        found = checkpoints_newest_first(self.checkpoint_dir)
        if not found:
            log.warning(f"--resume: no checkpoint in {self.checkpoint_dir}; starting from step 0")
            return {"step": 0, "epoch": 0, "extra": {}}
        damaged: list[tuple[Path, CheckpointDamagedError]] = []
        for ckpt in found:
            try:
                data = read_checkpoint(ckpt, map_location=self.device)
                state = restore_checkpoint(data, ckpt, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
            except CheckpointDamagedError as e:  # cut short by a crash or a disk fault: an older one may load
                damaged.append((ckpt, e))
                continue
            except CheckpointMismatchError as e:  # other settings: an older checkpoint would not fit either
                raise CheckpointMismatchError(f"{e}; {self._settings_differing_from(data)}") from e
            break
        else:
            newest, e = damaged[0]
            raise CheckpointDamagedError(f"--resume: none of the {len(found)} checkpoint(s) in {self.checkpoint_dir} can be read (newest: {newest.name}, "
                                         f"{e.reason}); nothing was changed — restore an intact checkpoint there, or rerun without --resume to start over")
        if damaged:
            self._set_aside_damaged(damaged, ckpt, state["step"])
        rows = state["extra"].pop(_METRICS_ROWS, None)
        state["extra"].pop(_RUN_CONFIG, None)
        dropped = self._truncate_metrics(rows) if rows is not None else 0
        log.info(f"resumed from {ckpt} at step {state['step']}" + (f"; dropped {dropped} metrics.jsonl row(s) logged after it" if dropped else ""))
        return state

    def _set_aside_damaged(self, damaged: list[tuple[Path, CheckpointDamagedError]], used: Path, step: int) -> None:
        """Name the damaged newer checkpoints (one line) and rename them out of the ``step_*.pt`` pattern, so the
        next resume and the keep-last pruning see only intact ones; the files themselves are kept."""
        if not self.is_main:
            return  # rank 0 renames; the other ranks fell back to the same checkpoint
        kept = []
        for p, _ in damaged:
            target = p.with_name(f"{p.name}.damaged")
            if target.exists():
                target = p.with_name(f"{p.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            try:
                os.replace(p, target)
                kept.append(target.name)
            except OSError:  # already moved by another process, or a read-only folder: the warning still names it
                kept.append(p.name)
        what = "; ".join(f"{p.name} ({e.reason})" for p, e in damaged)
        log.warning(f"--resume: damaged checkpoint(s) in {self.checkpoint_dir}: {what}; resuming from the newest one that loads, {used.name} "
                    f"(step {step}); the damaged file(s) are kept as {', '.join(kept)}")

    def _settings_differing_from(self, checkpoint: dict[str, Any]) -> str:
        """What to tell a user whose checkpoint does not fit: the flags whose values differ from the run that
        saved it (its recorded config; for checkpoints without one, the interrupted attempt's config.json)."""
        saved = (checkpoint.get("extra") or {}).get(_RUN_CONFIG)
        if not isinstance(saved, dict):
            saved = self._previous_config
        if not isinstance(saved, dict):
            return "was it saved with other settings? resume with the flags it was started with, or start a new run without --resume"
        now = json.loads(json.dumps(recorded_config(self.config), default=str))
        changed = sorted(k for k in set(saved) | set(now) if k not in _NOT_SETTINGS and saved.get(k) != now.get(k))
        if not changed:
            return "its run had the same settings (saved by another version of the code?); start a new run without --resume"
        shown = ", ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:6]) + (" …" if len(changed) > 6 else "")
        return f"settings that differ from the run that saved it: {shown}; resume with its flags, or start a new run without --resume"

    def _truncate_metrics(self, rows: int) -> int:
        """Keep the first ``rows`` lines of ``metrics.jsonl`` (those logged before the checkpoint):
        the work a resumed run redoes is logged once, not twice. Returns how many lines were dropped."""
        p = self.dir / "metrics.jsonl"
        if not self.is_main or not p.is_file():
            return 0
        lines = p.read_bytes().splitlines(keepends=True)
        if len(lines) <= rows:
            return 0
        with open(p, "r+b") as fh:  # the append handle keeps working (O_APPEND)
            fh.write(b"".join(lines[:rows]))
            fh.truncate()
        self._metrics_rows = rows
        return len(lines) - rows


def _naming(config: RunConfig, new_name: str | None, stable_name: bool) -> tuple[bool, str]:
    """(whether the name is one to continue — a ``--name`` or a name derived from the job's inputs —, the base name)."""
    explicit = config.name is not None or (stable_name and new_name is not None)
    return explicit, config.name or new_name or time.strftime("%Y%m%d-%H%M%S")


def _candidate_dirs(root: Path, base: str, explicit: bool) -> Iterator[Path]:
    """The run folders a new run may take, in order: ``base``, ``base-1``, … skipping finished work (and, for a
    timestamp name, any run); an explicit name's unfinished run is offered first (to continue in it). A damaged
    record under an explicit name is refused: it may be finished work, never reset."""
    for i in range(10_000):
        run_dir = root / (base if i == 0 else f"{base}-{i}")
        status = read_run(run_dir).get("status") if (run_dir / "run.json").is_file() else None
        if status is not None and (status == "completed" or not explicit):
            continue  # never overwrite finished work (or reuse a timestamp name): pick a fresh name
        if status == "damaged" and i == 0:  # it may be finished work whose record was damaged: never reset it
            raise RunDamagedError(f"{read_run(run_dir)['error']}; this run's record is damaged, so it is not continued or overwritten: "
                                  "repair or move that folder, or choose another --name")
        yield run_dir


def check_resumable(domain: str, config: RunConfig, command: str) -> Path | None:
    """With ``--resume``: the run folder :meth:`Run.start` (same domain, config and command) will continue, found by
    reading only — nothing is created or locked — so a command can refuse, before its slow data load, what the folder
    alone decides, with the error ``Run.start`` would raise: a bad ``--name`` (:class:`RunNameError`), no such run or
    no run of ``command`` at all, a run another command made (:class:`RunNotFoundError`), a damaged record
    (:class:`RunDamagedError`), a setting the config declares fixed on a resume whose value differs from the run's
    ``config.json`` (:class:`ResumeSettingsError`), a run another process is writing (:class:`RunLockedError`).
    ``None`` without ``--resume``. A checkpoint that does not fit is still refused by :meth:`Run.resume`, after loading.

    Under ``torchrun`` every process calls it, before the process group exists; the data's content digest (up to
    :data:`FULL_DIGEST_BYTES` read) is taken by the first process of each machine (local rank 0) only: the others
    read the same files, and a refusal there ends the launch (torchrun stops the other processes)."""
    if not getattr(config, "resume", False):
        return None
    from core.distributed import world

    check_run_name(config.name, "--name")
    run_dir = _resume_dir(config, domain, command, check_data=world()[2] == 0)
    if is_locked(run_dir / LOCK_FILE):
        raise _being_written(run_dir)
    return run_dir


def _being_written(run_dir: Path) -> RunLockedError:
    pid = lock_holder(run_dir / LOCK_FILE)
    return RunLockedError(f"run {run_dir} is being written by PID {pid if pid else '?'}; wait for it to finish, stop it, or choose another --name")


def _resume_dir(config: RunConfig, domain: str, command: str, digest_of: Callable[[Path], dict[str, Any] | None] | None = None,
                check_data: bool = True) -> Path:
    """The run ``--resume`` continues: ``--name``'s, else the newest run made by ``command`` (a train run never
    resumes a score run). Refused: none, a run of another command, a damaged record (it may be finished work), other
    data (unless ``check_data`` is False: another process of the launch reads and compares it), another value of a
    setting fixed on a resume. ``digest_of``: how the data's content digest is read (``Run`` shares one per attempt
    with :func:`data_record`)."""
    root = Path(config.runs_dir) / domain
    if config.name:
        run_dir = root / config.name
        if not (run_dir / "run.json").is_file():
            raise RunNotFoundError(f"--resume: no run {run_dir} to resume; expected the --name of a {domain} {command} run under {root}")
        info = read_run(run_dir)
    else:
        runs = [r for r in list_runs(config.runs_dir, domain) if _made_by(r, command, config)]
        if not runs:
            raise RunNotFoundError(f"--resume: no {domain} {command} run under {root} to resume")
        run_dir, info = Path(runs[0]["path"]), runs[0]
    if info.get("status") == "damaged":
        raise RunDamagedError(f"--resume: {info.get('error')}; this run's record is damaged, so it is not continued: repair or move that folder, "
                              "or start a new run without --resume")
    if not _made_by(info, command, config):
        raise RunNotFoundError(f"--resume --name {config.name}: {run_dir} is a {info.get('command')} {info.get('kind', 'model')} run, not a {command} run; "
                               f"expected the name of a {command} run to continue, or another --name without --resume")
    if check_data:
        _refuse_other_data(run_dir, config, digest_of or _digest_or_none)  # first: other data is the first thing to tell
    _refuse_changed_fixed_settings(run_dir, info.get("config"), config)
    return run_dir


# ---------------------------------------------------------------------------------------------
# the data a run reads ("resume": "same-data" fields), by content
# ---------------------------------------------------------------------------------------------
FULL_DIGEST_BYTES = 64 << 20  # data up to this size is hashed whole; above it, SAMPLE_BLOCKS blocks spread over each file
SAMPLE_BLOCKS = 16


def data_identity(config: Any, name: str) -> dict[str, Any]:
    """What ``config``'s ``"resume": "same-data"`` field ``name`` reads: ``{"value", "name"}`` for a bundled data set
    (a value in the field's ``"data_names"``, or an empty value: the field's default), else ``{"value", "path"}``
    (absolute and normalised, so that the same file typed as another relative path is the same path). :func:`data_record`
    records a private field's value and path as :data:`core.config.PRIVATE_VALUE` (its content alone then tells)."""
    meta = type(config).same_data_on_resume()[name]
    value = getattr(config, name, None)
    if value in (None, ""):
        f = next(f for f in dataclasses.fields(config) if f.name == name)
        value = f.default if isinstance(f.default, str) else ""
    if not value or value in meta.get("data_names", ()):
        return {"value": value, "name": value}
    return {"value": value, "path": os.path.abspath(value)}


def data_record(config: Any, digest_of: Callable[[Path], dict[str, Any] | None] | None = None) -> dict[str, Any]:
    """The :data:`DATA_RECORD_FILE` of an attempt started with ``config``: per ``"resume": "same-data"`` field, its
    :func:`data_identity` and, for a path that exists, its :func:`content_digest` (read by ``digest_of`` when given:
    ``Run``'s, which the resume comparison already read). Empty for other configs."""
    if not isinstance(config, ResumeConfig):
        return {}
    out: dict[str, Any] = {}
    for name, meta in type(config).same_data_on_resume().items():
        entry = data_identity(config, name)
        if "path" in entry:
            entry["content"] = (digest_of or _digest_or_none)(Path(entry["path"]))
            if meta.get("private"):
                entry["value"] = entry["path"] = PRIVATE_VALUE
        out[name] = entry
    return out


def content_digest(path: str | os.PathLike) -> dict[str, Any]:
    """What tells a file's or folder's data from other data without the path or the times: ``{"sha256", "bytes",
    "files"}`` over each file's path inside the folder, size and bytes (the files under a folder in order; names starting
    with '.' — ``.DS_Store``, ``._x`` of a macOS archive, an atomic write's temporary file — are left out). Data of at
    most :data:`FULL_DIGEST_BYTES` is read whole; larger data only in :data:`SAMPLE_BLOCKS` blocks spread evenly over each
    file, first and last included (``FULL_DIGEST_BYTES`` shared by the files, 4 KiB to 2 MiB per file), so a same-size
    rewrite of a large file that changes no sampled byte is not told apart. Raises OSError when it cannot be read."""
    root = Path(path)
    if root.is_dir():
        files = []
        for d, dirs, names in os.walk(root):  # links to folders are not followed
            dirs[:] = sorted(x for x in dirs if not x.startswith("."))
            files += [Path(d) / n for n in sorted(names) if not n.startswith(".")]
        files = [f for f in files if f.is_file()]
    else:
        files = [root]
    sizes = [f.stat().st_size for f in files]
    total = sum(sizes)
    per_file = None if total <= FULL_DIGEST_BYTES else min(max(FULL_DIGEST_BYTES // max(len(files), 1), 4 << 10), 2 << 20)
    h = hashlib.sha256()
    for f, size in zip(files, sizes):
        h.update(f"{f.relative_to(root).as_posix() if f != root else ''}\0{size}\0".encode("utf-8", "surrogateescape"))
        with open(f, "rb") as fh:
            if per_file is None or size <= per_file:
                while block := fh.read(1 << 20):
                    h.update(block)
                continue
            length = per_file // SAMPLE_BLOCKS
            for i in range(SAMPLE_BLOCKS):
                fh.seek(i * (size - length) // (SAMPLE_BLOCKS - 1))
                h.update(fh.read(length))
    return {"sha256": h.hexdigest(), "bytes": total, "files": len(files)}


def _digest_or_none(path: Path) -> dict[str, Any] | None:
    try:
        return content_digest(path) if path.exists() else None
    except OSError:
        return None


def _refuse_other_data(run_dir: Path, config: Any, digest_of: Callable[[Path], dict[str, Any] | None]) -> None:
    """:class:`ResumeDataError` when a ``"resume": "same-data"`` field of ``config`` reads other data than the run's
    :data:`DATA_RECORD_FILE` recorded: another content (under the run's path or another one), a bundled data set
    instead of a file, another bundled data set. The same content under another path (typed relative instead of
    absolute, moved, a copy) continues. Not refused here: a run without the record (older than it: ``Run.resume``
    still refuses a checkpoint that does not fit), a path that does not exist now (the data load names it)."""
    fields = type(config).same_data_on_resume() if isinstance(config, ResumeConfig) else {}
    if not fields:
        return
    try:
        record = json.loads((run_dir / DATA_RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(record, dict):
        return
    for name, meta in fields.items():
        was = _recorded_identity(record, name)
        if was is not None:
            _compare_data(run_dir, name, meta, was, data_identity(config, name), digest_of)


def _recorded_identity(record: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A field's entry of :data:`DATA_RECORD_FILE`; recommendation's record before core kept it (until this change:
    ``{"data": value, "data_path": absolute path or null}``, no content) reads as the identity without content."""
    entry = record.get(name)
    if isinstance(entry, dict):
        return entry
    if name not in record or not isinstance(entry, (str, type(None))):
        return None
    path = record.get(f"{name}_path")
    return {"value": entry, "path": path} if path else {"value": entry or "", "name": entry or "", "legacy": True}


def _compare_data(run_dir: Path, name: str, meta: Any, was: dict[str, Any], now: dict[str, Any],
                  digest_of: Callable[[Path], dict[str, Any] | None]) -> None:
    """:class:`ResumeDataError` when ``now`` (:func:`data_identity`) is not the data ``was`` recorded (see :func:`_refuse_other_data`)."""
    flag = "--" + name.replace("_", "-")
    why = meta.get("resume_why") or "the checkpoint has trained on that data"

    def shown(entry: dict[str, Any]) -> str:
        path = entry.get("path")
        if "name" in entry and not entry.get("name"):
            return f"no {flag} (the default data)"
        return f"{flag} {plain(entry.get('value'))}" + (f" ({path})" if path and path != entry.get("value") else "")

    def refuse(detail: str, fix: str) -> NoReturn:
        raise ResumeDataError(f"--resume of run {run_dir.name}: {detail}; expected the same data ({why}): {fix}, or start a new run without --resume",
                              run_dir)

    if "path" not in was or "path" not in now:
        if was.get("legacy") and "name" in now:  # the old record told a bundled data set by its value only
            return
        if "path" not in was and "path" not in now and was.get("name") == now.get("name"):
            return
        fix = f"pass {flag} {plain(was.get('path') or was.get('value'))}" if was.get("path") or was.get("value") else f"leave out {flag}"
        refuse(f"it was trained on {shown(was)}, this command reads {shown(now)}", fix)
    new = Path(now["path"])
    if not new.exists():
        return  # the data load says what is missing
    old = Path(was["path"]) if was["path"] != PRIVATE_VALUE else None
    recorded = was.get("content")
    if recorded is None:  # recorded without a content (legacy, or a path that did not exist): compare with what is at its path now
        if old is None or not old.exists():
            return
        try:
            if _same_file(old, new) or content_digest(old) == content_digest(new):
                return
        except OSError:
            return
        refuse(f"it was trained on {shown(was)}, this command reads {shown(now)}", f"pass {flag} {plain(str(old))}")
    current = digest_of(new)
    if current is None or _same_digest(current, recorded):
        return
    size = f"{plain(recorded.get('bytes'))} bytes in {plain(recorded.get('files'))} file(s) then, {plain(current['bytes'])} in {plain(current['files'])} now"
    if old is not None and (old == new or _same_file(old, new)):
        refuse(f"{shown(now)} holds other data than the run was trained on ({size})",
               f"put the run's data back at that path, or pass {flag} where it is now")
    at_old = digest_of(old) if old is not None else None
    fix = (f"pass {flag} {plain(str(old))}" if at_old is not None and _same_digest(at_old, recorded) else
           f"pass {flag} where the run's data is now ({plain(recorded.get('bytes'))} bytes)")
    refuse(f"it was trained on {shown(was) if old is not None else flag + ' (a private path)'}, this command reads {shown(now)}, which holds other data "
           f"({size})", fix)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _same_digest(a: dict[str, Any], b: Any) -> bool:
    return isinstance(b, dict) and all(a.get(k) == b.get(k) for k in ("sha256", "bytes", "files"))


def _refuse_changed_fixed_settings(run_dir: Path, recorded: Any, config: RunConfig) -> None:
    """:class:`ResumeSettingsError` naming each setting the config declares fixed on a resume whose value differs from
    the run's ``config.json`` (``recorded``), both values and why (:func:`core.config.fixed_settings_changed`). A run
    without a readable ``config.json``, or one older than a flag, is not refused for it."""
    changed = fixed_settings_changed(config, recorded) if isinstance(recorded, dict) else []
    if not changed:
        return
    now = json.loads(json.dumps(recorded_config(config), default=str))
    started = " ".join(_flag_value(k, recorded.get(k)) for k in changed)
    asked = " ".join(_flag_value(k, now.get(k)) for k in changed)
    raise ResumeSettingsError(f"--resume of run {run_dir.name}: it was started with {started}, this command asks for {asked}; "
                              f"{type(config).why_fixed_on_resume(changed)}; expected the run's {started}, or a new run without --resume", run_dir)


def _flag_value(name: str, value: Any) -> str:
    """A setting as the flag that gives it: ``--val-days 63``, ``--tickers 'AAPL' 'JPM'``, ``--no-covariates``."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else f"--no-{name.replace('_', '-')}"
    if isinstance(value, list):
        return f"{flag} {' '.join(plain(v) for v in value)}" if value else f"{flag} (none)"
    return f"{flag} {plain(value)}"


def _made_by(info: dict[str, Any], command: str, config: RunConfig) -> bool:
    """Whether the run of record ``info`` was made by ``command``. Records name their command ("train"); those
    written before ``Run.start(command=...)`` existed (until 82bd45f) hold the name of the command's config class
    instead ("TrainConfig", what Run recorded then), and the oldest hold none: both are runs of the command whose
    config class that is — refusing them left an interrupted run of the previous version impossible to continue."""
    recorded = info.get("command", command)
    return recorded == command or recorded == type(config).__name__


def _drop_cut_last_line(metrics: Path) -> int:
    """A crash in the middle of writing a row leaves ``metrics.jsonl`` without its final newline; the
    next row appended would be glued to that fragment and lost with it. Cut the fragment (readers
    skip it anyway) and return the number of whole rows."""
    data = metrics.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(metrics, "r+b") as fh:
            fh.truncate(keep)
        log.warning(f"{metrics}: the last row was cut off by a crash ({len(data) - keep} bytes); dropped it")
        data = data[:keep]
    return data.count(b"\n")


def _num(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item()
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def iter_metrics(run_dir: str | Path) -> Iterator[dict[str, Any]]:
    p = Path(run_dir) / "metrics.jsonl"
    if p.is_file():
        for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
                if isinstance(row, dict):  # a hand-edited line that is not a row is skipped too
                    yield row
