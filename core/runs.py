"""One run directory per run: ``<runs_dir>/<domain>/<name>/``.

It holds the resolved ``config.json``, ``run.json`` (status, timings, device), per-step
``metrics.jsonl``, final ``metrics.json``, ``checkpoints/`` and ``log.jsonl``. The path is
printed at the end of every command. ``<runs_dir>/<domain>/latest`` points at the newest
completed run of kind ``"model"`` (a run that trained a model), which is what ``score``/``infer``
commands and dashboards use by default; runs of kind ``"job"`` (forecast, score, …) never move it.

    with Run.start("medical", cfg) as run:
        start_step = run.resume(model, optimizer, scheduler)   # 0 unless --resume
        ...
        run.log_metrics({"loss": loss}, step)
        run.save_checkpoint(model, optimizer, scheduler, step=step)
        run.finish({"val_dice": dice})
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from core.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from core.config import RunConfig, config_to_dict
from core.device import device_summary, resolve_device, seed_everything
from core.io import atomic_write_json
from core.logging import attach_run_log, detach_run_log, get_logger
from core.tracking import Tracker

__all__ = ["Run", "list_runs", "latest_run_dir", "read_run", "RunNotFoundError"]

log = get_logger("runs")


class RunNotFoundError(FileNotFoundError):
    pass


@functools.lru_cache(maxsize=1)
def _git_commit() -> str | None:  # once per process: run.json is written at start and at close
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


def latest_run_dir(domain: str, runs_dir: str | Path = "runs") -> Path:
    """The newest completed run of ``domain``; a clear error naming the command that makes one."""
    root = Path(runs_dir) / domain
    link = root / "latest"
    if link.exists():
        return link.resolve()
    done = [r for r in list_runs(runs_dir, domain) if r.get("status") == "completed" and r.get("kind", "model") == "model"]
    if done:
        return Path(done[0]["path"])
    raise RunNotFoundError(f"no completed {domain} run under {root}; create one with `python -m domains.{domain}.train`")


def read_run(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    info: dict[str, Any] = {"path": str(run_dir), "name": run_dir.name, "domain": run_dir.parent.name}
    for fname, key in (("run.json", None), ("config.json", "config"), ("metrics.json", "metrics")):
        p = run_dir / fname
        if p.is_file():
            try:
                data = json.loads(p.read_text())
            except json.JSONDecodeError:
                data = {}
            if key is None:
                info.update(data)
            else:
                info[key] = data
    return info


def list_runs(runs_dir: str | Path = "runs", domain: str | None = None) -> list[dict[str, Any]]:
    """All runs (newest first) with their run.json, config and final metrics."""
    root = Path(runs_dir)
    domains = [domain] if domain else sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("mlartifacts", "."))) if root.is_dir() else []
    out = []
    for d in domains:
        droot = root / d
        if not droot.is_dir():
            continue
        for rd in droot.iterdir():
            if rd.is_dir() and not rd.is_symlink() and (rd / "run.json").is_file():
                out.append(read_run(rd))
    out.sort(key=lambda r: r.get("started", ""), reverse=True)
    return out


class Run:
    """A run directory plus its tracker. Use :meth:`start` as a context manager."""

    def __init__(self, domain: str, config: RunConfig, *, new_name: str | None = None, kind: str = "model", data_parallel=None):
        if kind not in ("model", "job"):
            raise ValueError(f"run kind must be 'model' or 'job', got {kind!r}")
        from core.distributed import world

        rank, world_size, _ = world()
        dp = data_parallel if data_parallel is not None and data_parallel.enabled else None
        if world_size > 1 and rank > 0 and dp is None:
            raise RuntimeError(f"{type(config).__name__} does not train data-parallel: launch it as one process, not under torchrun "
                               f"(rank {rank} of {world_size}); the medical and finance trainers support torchrun")
        # under torchrun, rank 0 writes and every other rank follows the same run without writing
        self.is_main = rank == 0
        self.domain = domain
        self.kind = kind
        self.command = type(config).__name__
        self.config = config
        self.runs_dir = Path(config.runs_dir)
        self.device = resolve_device(config.device)
        if config.resume:
            if config.name:
                self.dir = self.runs_dir / domain / config.name
                if not (self.dir / "run.json").is_file():
                    raise RunNotFoundError(f"--resume: no run {self.dir} to resume")
            else:
                # the newest run made by the same command (a train run never resumes a score run)
                runs = [r for r in list_runs(self.runs_dir, domain) if r.get("command", self.command) == self.command]
                if not runs:
                    raise RunNotFoundError(f"--resume: no {domain} {self.command} run under {self.runs_dir / domain} to resume")
                self.dir = Path(runs[0]["path"])
        else:
            name = config.name or new_name or time.strftime("%Y%m%d-%H%M%S")
            self.dir = self.runs_dir / domain / name
            if self.dir.exists() and (self.dir / "run.json").is_file():
                prev = read_run(self.dir)
                if prev.get("status") == "completed" or config.name is None:
                    # never overwrite finished work: pick a fresh name
                    i = 1
                    while (self.runs_dir / domain / f"{name}-{i}").exists():
                        i += 1
                    self.dir = self.runs_dir / domain / f"{name}-{i}"
        if dp is not None:
            self.dir = Path(dp.broadcast(str(self.dir)))  # rank 0's choice of name, for every rank
        self.name = self.dir.name
        self.checkpoint_dir = self.dir / "checkpoints"
        self.summary: dict[str, Any] = {}
        if not self.is_main:
            seed_everything(config.seed + rank, config.deterministic)  # own batches per rank; DDP syncs the weights
            self.tracker = Tracker(experiment=domain, run_name=self.name, runs_dir=self.runs_dir, enabled=False)
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self._log_handler = attach_run_log(self.dir)
        self.tracker = Tracker(experiment=domain, run_name=self.name, runs_dir=self.runs_dir, enabled=config.track,
                               tags={"domain": domain, "run_dir": str(self.dir.resolve())})
        self._started = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._metrics_fh = open(self.dir / "metrics.jsonl", "a", encoding="utf-8")
        seed_everything(config.seed, config.deterministic)
        self._write_run_json("running")
        atomic_write_json(self.dir / "config.json", config_to_dict(config))
        self.tracker.log_params({"domain": domain, **config_to_dict(config)})
        log.info(f"{domain} run {self.name} on {self.device} -> {self.dir}")

    # -- lifecycle --------------------------------------------------------------------------
    @classmethod
    def start(cls, domain: str, config: RunConfig, new_name: str | None = None, kind: str = "model", data_parallel=None) -> "Run":
        """``kind="job"`` for runs that only use a model (forecast, score, …): they keep their own
        run directory but do not become ``<domain>/latest``. ``data_parallel``: the trainer's
        :class:`core.distributed.DataParallel` under torchrun (rank 0 writes, the others follow)."""
        return cls(domain, config, new_name=new_name, kind=kind, data_parallel=data_parallel)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            if not self._finished:
                self.finish()
        else:
            status = "interrupted" if exc_type is KeyboardInterrupt else "failed"
            self._close(status, error=f"{exc_type.__name__}: {exc}")
        return False

    _finished = False

    def finish(self, metrics: dict[str, Any] | None = None) -> Path:
        if metrics:
            self.summary.update(metrics)
        if not self.is_main:
            self._finished = True
            return self.dir
        atomic_write_json(self.dir / "metrics.json", self.summary)
        self.tracker.log_metrics({k: v for k, v in self.summary.items()}, step=None)
        self._close("completed")
        if self.kind == "model":
            self._point_latest()
        return self.dir

    def _close(self, status: str, error: str | None = None) -> None:
        if self._finished or not self.is_main:
            self._finished = True
            return
        self._finished = True
        self._metrics_fh.close()
        self._write_run_json(status, error=error)
        for name in ("config.json", "metrics.json", "run.json"):
            if (self.dir / name).is_file():
                self.tracker.log_artifact(self.dir / name)
        self.tracker.end({"completed": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED"))
        detach_run_log(self._log_handler)
        print(f"Run directory: {self.dir}  ({status})", file=sys.stderr if status != "completed" else sys.stdout, flush=True)

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
        row = {"step": int(step), "time": round(time.time(), 3), **{k: _num(v) for k, v in metrics.items()}}
        self._metrics_fh.write(json.dumps(row) + "\n")
        self._metrics_fh.flush()
        self.tracker.log_metrics(metrics, step=step)

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
        return save_checkpoint(self.checkpoint_dir / f"step_{step:08d}.pt", model=model, optimizer=optimizer,
                               scheduler=scheduler, scaler=scaler, step=step, epoch=epoch, extra=extra, keep_last=keep_last)

    def resume(self, model: torch.nn.Module, optimizer=None, scheduler=None, scaler=None) -> dict[str, Any]:
        """With ``--resume``: restore the newest checkpoint and return its step/epoch/extra;
        otherwise ``{"step": 0, "epoch": 0, "extra": {}}``."""
        if not self.config.resume:
            return {"step": 0, "epoch": 0, "extra": {}}
        ckpt = latest_checkpoint(self.checkpoint_dir)
        if ckpt is None:
            log.warning(f"--resume: no checkpoint in {self.checkpoint_dir}; starting from step 0")
            return {"step": 0, "epoch": 0, "extra": {}}
        state = load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, map_location=self.device)
        log.info(f"resumed from {ckpt} at step {state['step']}")
        return state


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
        for line in p.read_text().splitlines():
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
