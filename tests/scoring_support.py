"""Test helpers for scoring jobs, importable by every domain's tests (and the scoring bench).

    from tests.scoring_support import assert_engines_agree

    def test_my_score_local_vs_ray(ray_address, tmp_path):      # ray_address: tests/conftest.py
        df = assert_engines_agree(items, MyScorer(...), tmp_path, ray_address)   # byte-identical parts

:func:`start_ray_cluster` starts a real Ray cluster (``ray start --head --block`` on 127.0.0.1,
2 CPUs, 200 MB object store, no dashboard, private ports and temp dir) whose ``stop`` kills exactly
that process group — never ``ray stop``, which would stop other users' clusters on the same
machine. The ``ray_address`` fixture in tests/conftest.py starts one per test session.

``PriceFileScorer`` is a small real scorer (log returns and rolling volatility of one ticker's
daily S&P 500 closes, skfolio data) with fault switches used by the engine's own tests.

``python -m tests.scoring_support --items-dir D --out O`` runs it as a CLI (used by the SIGKILL
tests); without ``--out`` the job is a run of kind "job" under ``--runs-dir``, named by
:func:`core.scoring.job_name` (no timestamp), so rerunning the identical command resumes it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.scoring import write_price_files
from core.cli import run_cli
from core.config import RunConfig
from core.runs import Run
from core.scoring.cli import ScoringConfig, check_scoring_items, check_scoring_job, check_scoring_out, run_job_from_config
from core.scoring.job import (JobSummary, Scorer, ScoringError, WorkItem, digest_items, file_items, frame_checksum, job_name, output_checksum, read_markers,
                              read_output)

__all__ = [
    "PriceFileScorer",
    "write_price_files",
    "start_ray_cluster",
    "output_checksum",
    "frame_checksum",
    "assert_engines_agree",
    "committed_markers",
]

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def folder_snapshot(folder: str | os.PathLike) -> dict[str, tuple[bytes | None, int]]:
    """Every entry under ``folder``: its bytes (None for a folder) and its modification time in ns — to show a
    refused job left another job's folder exactly as it was."""
    folder = Path(folder)
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            q = Path(root) / name
            out[str(q.relative_to(folder))] = (None if q.is_dir() else q.read_bytes(), q.stat().st_mtime_ns)
    return out


def committed_markers(out: str | os.PathLike) -> list[dict]:
    """The commit markers the engine counts (``core.scoring.job.read_markers``: a SIGKILL mid-write can
    leave a temp marker that is not one); none while the output folder has no job file yet."""
    try:
        return read_markers(out)
    except ScoringError:
        return []


# ---------------------------------------------------------------------------------------------
# a small real scorer on real data


class PriceFileScorer(Scorer):
    """Rows ``(date, ticker, log_return, vol_20)`` for one price CSV (or its rows ``[start, stop)``).

    Fault switches for tests: ``sleep`` seconds per item; ``fail_ids`` raise (→ quarantine);
    ``crash_once_dir``: the first worker to score ``crash_id`` SIGKILLs itself (a dying worker or
    actor), later attempts score normally. ``work`` adds CPU-bound matrix work per item;
    ``load_log``: a file each ``load()`` appends its pid to.
    """

    def __init__(self, sleep: float = 0.0, fail_ids: tuple[str, ...] = (), crash_id: str | None = None, crash_once_dir: str | None = None, work: int = 0, load_log: str | None = None):
        self.load_log = load_log  # each load() appends its pid here: proves one model load per worker/actor
        self.sleep = sleep
        self.fail_ids = tuple(fail_ids)
        self.crash_id = crash_id
        self.crash_once_dir = crash_once_dir
        self.work = work

    def config(self) -> dict:
        # fault switches do not change results, so they are not part of the job's identity
        return {"work": self.work}

    def load(self) -> None:
        if self.work < 0:
            raise FileNotFoundError(f"work={self.work}: no such model (a load() that fails, for tests)")
        self.window = 20
        self.loaded_pid = os.getpid()
        if self.load_log:
            with open(self.load_log, "a") as fh:
                fh.write(f"{os.getpid()}\n")

    def score(self, item: WorkItem) -> pd.DataFrame:
        if item.id in self.fail_ids:
            raise ValueError(f"{item.id}: rejected by fail_ids")
        if self.crash_id == item.id and self.crash_once_dir:
            flag = Path(self.crash_once_dir) / "crashed"
            try:
                fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # only the first attempt crashes
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        if self.sleep:
            time.sleep(self.sleep)
        try:
            df = pd.read_csv(item.path)
        except FileNotFoundError:
            raise
        except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise ValueError(f"{item.path}: not a readable CSV ({type(e).__name__}: {e})") from e
        if list(df.columns) != ["date", "close"]:
            raise ValueError(f"{item.path}: expected columns ['date', 'close'], got {list(df.columns)[:5]}")
        if item.start is not None:
            df = df.iloc[item.start : item.stop]
        close = pd.to_numeric(df["close"], errors="raise").to_numpy(float)
        if not np.isfinite(close).all() or (close <= 0).any():
            raise ValueError(f"{item.path}: close prices must be positive and finite")
        ret = np.diff(np.log(close), prepend=np.nan)
        vol = pd.Series(ret).rolling(self.window).std().to_numpy() * np.sqrt(252)
        for _ in range(self.work):  # optional CPU-bound load for benchmarks
            a = np.outer(close[:200], close[:200]) / close.max() ** 2
            vol = vol + 0.0 * np.linalg.eigvalsh(a)[: len(vol)].sum()
        return pd.DataFrame({"date": df["date"].to_numpy(), "ticker": Path(item.path).stem, "log_return": ret, "vol_20": vol})


# ---------------------------------------------------------------------------------------------
# checksums


def assert_engines_agree(items, scorer: Scorer, tmp_path: str | os.PathLike, ray_address: str, workers: int = 2, items_per_chunk: int = 2) -> pd.DataFrame:
    """Score ``items`` with the local engine and on the Ray cluster at ``ray_address``; assert the
    two output folders hold byte-identical parts and the same quarantine. Returns the output rows.

        def test_score_local_vs_ray(ray_address, tmp_path):
            df = assert_engines_agree(my_items, MyScorer(run), tmp_path, ray_address)
    """
    from core.scoring.engine import run_job
    from core.scoring.job import read_quarantine

    tmp_path = Path(tmp_path)
    local = run_job(items, scorer, tmp_path / "engine-local", engine="local", items_per_chunk=items_per_chunk, progress=False)
    ray_ = run_job(items, scorer, tmp_path / "engine-ray", engine="ray", workers=workers, address=ray_address, items_per_chunk=items_per_chunk, progress=False)
    assert (local.rows_total, local.items_quarantined) == (ray_.rows_total, ray_.items_quarantined), (local, ray_)
    # what the scorer measured in load() reaches the driver from processes and actors alike
    assert {k for info in local.worker_load_info.values() for k in info} == {k for info in ray_.worker_load_info.values() for k in info}
    parts = sorted(p.name for p in (tmp_path / "engine-local").glob("part-*.parquet"))
    assert parts == sorted(p.name for p in (tmp_path / "engine-ray").glob("part-*.parquet"))
    for name in parts:
        assert (tmp_path / "engine-local" / name).read_bytes() == (tmp_path / "engine-ray" / name).read_bytes(), f"{name} differs between engines"
    q_local, q_ray = read_quarantine(tmp_path / "engine-local"), read_quarantine(tmp_path / "engine-ray")
    pd.testing.assert_frame_equal(q_local.drop(columns=["where"]), q_ray.drop(columns=["where"]))
    return read_output(tmp_path / "engine-local", verify=True)


# ---------------------------------------------------------------------------------------------
# a real local Ray cluster


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@dataclass
class RayCluster:
    address: str
    process: subprocess.Popen
    temp_dir: Path
    log: Path = field(default=None)  # type: ignore[assignment]

    def stop(self) -> None:
        """Stop exactly this cluster: its own process group (``ray stop`` would stop every cluster of the user)."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=2)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_ray_cluster(num_cpus: int = 2, object_store_mb: int = 200, timeout: float = 90.0) -> RayCluster:
    """``ray start --head --block`` in its own process group, bound to 127.0.0.1 on free ports."""
    ray_bin = Path(sys.executable).with_name("ray")
    # every port chosen free, including the Ray client server's (default 10001: a second cluster on the
    # machine, e.g. another test run, would make this one's head exit)
    gcs, agent_http, agent_grpc, runtime_env, metrics, node_mgr, obj_mgr, client = _free_ports(8)
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's unix sockets need a short path
    log = temp_dir / "ray-start.log"
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray keep 127.0.0.1 as the node address (by default it
    # swaps a loopback --node-ip-address for the machine's routable IP and listens there)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    cmd = [
        str(ray_bin), "start", "--head", "--block",
        "--node-ip-address=127.0.0.1", f"--port={gcs}", f"--num-cpus={num_cpus}",
        f"--object-store-memory={object_store_mb * 2**20}", "--include-dashboard=false",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}", f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}",
        f"--ray-client-server-port={client}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
    ]
    fh = open(log, "wb")
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    cluster = RayCluster(address=f"127.0.0.1:{gcs}", process=proc, temp_dir=temp_dir, log=log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace")[-3000:]
            cluster.stop()
            raise RuntimeError(f"ray start exited with {proc.returncode}: {text}")
        if b"Ray runtime started" in log.read_bytes():
            return cluster
        time.sleep(0.2)
    cluster.stop()
    raise RuntimeError(f"ray start did not come up within {timeout}s")


# ---------------------------------------------------------------------------------------------
# CLI (the SIGKILL test runs this in a subprocess)


@dataclass
class PriceScoreConfig(ScoringConfig, RunConfig):
    items_dir: str = field(default="", metadata={"help": "folder of price CSVs (write_price_files)"})
    sleep: float = field(default=0.0, metadata={"help": "seconds of sleep per item"})


def score_prices(cfg: PriceScoreConfig) -> JobSummary:
    """``--out DIR``: a bare scoring job into DIR. Without it: a run of kind "job" under
    ``<runs-dir>/prices/``, named from the job's inputs, its output in ``<run>/scores``. Checked like a
    domain's score command: ``--out``, then the items, then whether ``--out`` holds another job — each a
    one-line refusal (exit 2) before any folder is created or written."""
    check_scoring_out(cfg)  # as the domains' score commands: a bad --out before anything is read or created
    items = file_items(sorted(Path(cfg.items_dir).glob("*.csv")))
    check_scoring_items(items, f"--items-dir {cfg.items_dir}", "at least one price CSV (*.csv)")  # before the run folder
    scorer = PriceFileScorer(sleep=cfg.sleep)
    digest = digest_items(items)  # one stat per input file, once per command
    job = check_scoring_job(cfg, items, scorer, digest)  # --out holding another job: before the run folder, --out untouched
    if cfg.out:
        summary = run_job_from_config(items, scorer, cfg, digest=digest, job=job)  # --out's job file: not read again before the lock
    else:
        name = job_name("score", items, scorer, cfg.items_per_chunk, digest=digest)
        with Run.start("prices", cfg, name, command="score", kind="job", stable_name=True) as run:
            summary = run_job_from_config(items, scorer, cfg, default_out=run.dir / "scores", digest=digest)
            run.finish({"rows_total": summary.rows_total})
    print(summary.line())
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_cli(PriceScoreConfig, score_prices, argv, doc="Score price CSVs with PriceFileScorer (engine test CLI)", prog="python -m tests.scoring_support")


if __name__ == "__main__":
    raise SystemExit(main())
