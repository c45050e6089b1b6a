"""``run_job``: drive a scoring job on the local engine (N worker processes) or on Ray.

Workers score chunks and encode each chunk's rows once, as the Parquet bytes of its part; the
driver alone commits (writes those bytes as they are, then the quarantine file, then the
marker). Both engines therefore write byte-identical folders for the same input, and a retried
chunk (worker crash, Ray actor restart) can never be written twice.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import multiprocessing as mp
import os
import pickle
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator, Sequence

from core.logging import get_logger
from core.reaper import start_reaper, stop_reaper
from core.progress import progress
from core.io import atomic_write_json, remove_temp_files
from core.scoring.job import (
    SUCCESS_FILE,
    ChunkResult,
    JobSummary,
    Scorer,
    ScorerLoadError,
    ScoringError,
    WorkItem,
    check_out_dir,
    ItemsDigest,
    check_same_job,
    chunk_items,
    digest_items,
    commit_chunk,
    job_lock,
    prepare_job_dir,
    read_markers,
    score_chunk,
)

__all__ = ["run_job", "ray_init", "ray_shutdown", "ENGINES", "DEFAULT_ITEMS_PER_CHUNK"]

log = get_logger("scoring")

ENGINES = ("local", "ray")
DEFAULT_ITEMS_PER_CHUNK = 16
MAX_WORKER_RESTARTS = 3  # local engine: worker processes that die (OOM, segfault) are replaced this often


def run_job(
    items: Sequence[WorkItem],
    scorer: Scorer,
    out_dir: str | os.PathLike,
    engine: str = "local",
    workers: int = 1,
    address: str | None = None,
    items_per_chunk: int = DEFAULT_ITEMS_PER_CHUNK,
    progress: bool = True,  # noqa: A002 - contract name
    overwrite: bool = False,
    digest: ItemsDigest | None = None,
    job: dict | None = None,
) -> JobSummary:
    """Score ``items`` with ``scorer`` into ``out_dir`` (see :mod:`core.scoring.job` for the layout).

    Reruns into the same ``out_dir`` skip committed chunks; a different job (other items,
    scorer config or chunking) is refused with :class:`JobMismatchError` unless ``overwrite``.
    ``digest``: the items' :class:`~core.scoring.job.ItemsDigest` if the command already took it (one
    ``stat`` per input file); otherwise it is taken here, once, for both checks of the output folder.
    ``job``: the record of ``out_dir``'s ``_job.json`` the command's ``check_scoring_job`` returned, so the check
    before the lock does not read the file again; the check under the lock reads it anew (a concurrent run may
    have written it since), and that record serves the rest of the job.
    """
    if engine not in ENGINES:
        raise ScoringError(f"--engine {engine!r}: expected one of {ENGINES}")
    if workers < 1:
        raise ScoringError(f"--workers {workers}: expected ≥ 1")
    if items_per_chunk < 1:
        raise ScoringError(f"--items-per-chunk {items_per_chunk}: expected ≥ 1")
    if address and engine != "ray":
        raise ScoringError("--address only applies to --engine ray")
    if not isinstance(scorer, Scorer):
        raise TypeError(f"scorer must be a core.scoring.Scorer, got {type(scorer).__name__}")
    items = list(items)
    if not items:  # an empty job would write a folder marked complete that holds nothing
        raise ScoringError("no items to score (expected at least one work item); nothing was written")
    counts = Counter(it.id for it in items)
    if len(counts) != len(items):
        dup = sorted(i for i, n in counts.items() if n > 1)[:5]
        raise ScoringError(f"work item ids must be unique; duplicated: {dup}")
    for it in items:
        try:
            json.dumps(it.meta)  # items travel as JSON (manifest, Ray): same values for every engine
        except (TypeError, ValueError) as e:
            raise ScoringError(f"work item {it.id!r}: meta must be JSON-serialisable ({e})") from e
        if it.start is not None and it.stop is not None and not 0 <= it.start <= it.stop:
            raise ScoringError(f"work item {it.id!r}: row range [{it.start}, {it.stop}) is not a valid range")
    try:
        scorer_bytes = pickle.dumps(scorer)
    except Exception as e:  # noqa: BLE001
        raise ScoringError(f"{type(scorer).__name__} is not picklable ({e}); its __init__ must store configuration only and load() build the model") from e

    out = Path(out_dir)
    check_out_dir(out, overwrite)  # before the lock file is created in someone else's folder
    # the items' stat-per-file digest once per command: the check under the lock re-reads the folder's job
    # file (what another run may change meanwhile), not the inputs (which no lock protects while scoring)
    digest = digest_items(items) if digest is None else digest
    check_same_job(out, items, scorer, items_per_chunk, overwrite, digest, job)  # another job's folder: refused before its lock file is rewritten
    with job_lock(out):
        return _run_locked(items, scorer, scorer_bytes, out, engine, workers, address, items_per_chunk, progress, overwrite, digest)


def _run_locked(items, scorer, scorer_bytes, out, engine, workers, address, items_per_chunk, show_progress, overwrite, digest) -> JobSummary:  # noqa: ANN001
    job, done_before = prepare_job_dir(out, items, scorer, items_per_chunk, overwrite, digest)  # the job file read (or written) under the lock
    chunks = chunk_items(items, items_per_chunk)
    pending = [(i, c) for i, c in enumerate(chunks) if i not in done_before]
    skipped = len(chunks) - len(pending)
    if pending:  # the folder is incomplete again (a damaged chunk is re-scored): no stale "complete" flag while it is
        (out / SUCCESS_FILE).unlink(missing_ok=True)
    if skipped:
        log.info(f"{out}: {skipped}/{len(chunks)} chunks already committed, skipping them")

    stats: dict[str, float] = {"done": 0, "items": 0, "quarantined": 0, "rows": 0}
    committed: set[int] = set()
    load_info: dict[str, dict] = {}
    bar = progress(total=len(pending), desc=f"scoring ({engine}×{workers})", unit="chunk", disable=not show_progress)

    def on_result(res: ChunkResult) -> None:
        if res.chunk in committed:  # a retried task delivered twice; the first commit stands
            return
        m = commit_chunk(out, res, len(chunks[res.chunk]))
        committed.add(res.chunk)
        if res.load_info:
            load_info[res.worker] = res.load_info
        if res.ready_at is not None:  # engine start + model load = until the first worker was ready
            stats["startup"] = min(stats.get("startup", float("inf")), max(0.0, res.ready_at - wall_t0))
        stats["done"] += 1
        stats["items"] += m["scored"]
        stats["quarantined"] += m["quarantined"]
        stats["rows"] += m["rows"]
        for q in res.quarantine:
            log.warning(f"quarantined {q['item_id']}: {q['error_type']}: {q['reason']}")
        bar.update(1)
        bar.set_postfix(rows=stats["rows"], quarantined=stats["quarantined"], refresh=False)

    t0, wall_t0 = time.perf_counter(), time.time()
    restarts = 0
    # without a bar (--no-progress) the scorer's own bars go too (finance's GJR-GARCH-t fits of --zero-shot): with
    # --workers 1 it runs in this process, whose SUITE_PROGRESS the worker processes' "0" never touched
    progress_env = os.environ.get("SUITE_PROGRESS")
    if not show_progress:
        os.environ["SUITE_PROGRESS"] = "0"
    try:
        if pending:
            if engine == "local":
                restarts = _run_local(scorer_bytes, pending, workers, on_result, preload=tuple(getattr(scorer, "preload", ())))
            else:
                _run_ray(scorer, pending, workers, address, on_result)
    finally:
        bar.close()
        if progress_env is None:
            os.environ.pop("SUITE_PROGRESS", None)
        else:
            os.environ["SUITE_PROGRESS"] = progress_env
    seconds = time.perf_counter() - t0

    markers = read_markers(out, job)
    rows_total = sum(m["rows"] for m in markers)
    summary = JobSummary(
        out_dir=str(out),
        engine=engine,
        workers=workers,
        chunks_total=len(chunks),
        chunks_done=stats["done"],
        chunks_skipped=skipped,
        items_total=len(items),
        items_scored=stats["items"],
        items_quarantined=stats["quarantined"],
        rows=stats["rows"],
        rows_total=rows_total,
        seconds=seconds,
        items_per_second=(stats["items"] + stats["quarantined"]) / seconds if seconds > 0 else 0.0,
        rows_per_second=stats["rows"] / seconds if seconds > 0 else 0.0,
        fingerprint=job["fingerprint"],
        worker_restarts=restarts,
        startup_seconds=min(stats.get("startup", 0.0), seconds),
        worker_load_info=load_info,
    )
    if len(markers) != len(chunks):  # pragma: no cover - engines raise before this
        raise ScoringError(f"{out}: only {len(markers)}/{len(chunks)} chunks committed; rerun to finish")
    atomic_write_json(out / SUCCESS_FILE, summary)
    remove_temp_files(out)
    log.info(summary.line())
    return summary


# ---------------------------------------------------------------------------------------------
# local engine

_WORKER_SCORER: Scorer | None = None
_WORKER_LOAD_ERROR: str | None = None
_WORKER_READY_AT: float | None = None


def _load_scorer(scorer: Scorer) -> None:
    """``scorer.load()``; a failure is a job-level error (bad checkpoint path, …), not a worker crash."""
    try:
        scorer.load()
    except Exception as e:  # noqa: BLE001
        raise ScorerLoadError(f"{type(scorer).__name__}.load() failed: {type(e).__name__}: {e}") from e


def _set_parent_death_signal() -> None:
    """Linux: die with the driver, so a killed job never leaves orphan workers burning CPU."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort, non-Linux
        pass


def _die_with_driver(driver: int) -> None:
    """A worker forked by the fork server (``Scorer.preload``) has the fork server as its parent, and the fork
    server outlives a SIGKILLed driver while any worker holds its pipe, so PR_SET_PDEATHSIG alone left both
    running: watch the driver itself (a pidfd, else polling) and SIGKILL this worker when it is gone."""
    import select
    import signal
    import threading

    if os.getppid() == driver:  # a spawned worker: PR_SET_PDEATHSIG covers it
        return

    def watch() -> None:
        try:
            fd = os.pidfd_open(driver)
            select.select([fd], [], [])  # readable once the driver has exited
        except ProcessLookupError:
            pass
        except (OSError, AttributeError):  # no pidfd (old kernel, not Linux): poll
            while True:
                time.sleep(1.0)
                try:
                    os.kill(driver, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="driver-watch", daemon=True).start()


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _pin_threads(threads: int) -> None:
    """Every worker and actor computes with ``threads`` threads, whatever its scorer's ``load`` did:
    scorers never set threads themselves."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _init_worker(scorer_bytes: bytes, threads: int, driver: int | None = None) -> None:
    global _WORKER_SCORER
    _set_parent_death_signal()
    if driver is not None:
        _die_with_driver(driver)
    _pin_threads(threads)
    os.environ.setdefault("SUITE_PROGRESS", "0")
    scorer = pickle.loads(scorer_bytes)  # our own object from the driver, never a user file
    try:
        _load_scorer(scorer)
    except ScorerLoadError as e:  # reported by the first task: an initializer error would only "break" the pool
        global _WORKER_LOAD_ERROR
        _WORKER_LOAD_ERROR = str(e)
        return
    _WORKER_SCORER = scorer
    global _WORKER_READY_AT
    _WORKER_READY_AT = time.time()
    _pin_threads(threads)  # again: load() may have imported torch or changed its threads


def _score_in_worker(chunk: int, items: list[WorkItem]) -> ChunkResult:
    if _WORKER_LOAD_ERROR is not None:
        raise ScorerLoadError(_WORKER_LOAD_ERROR)
    assert _WORKER_SCORER is not None, "worker not initialised"
    return score_chunk(_WORKER_SCORER, chunk, items, ready_at=_WORKER_READY_AT)


# the jobs of this process now using the fork server, and whether they started it (then the last one to end stops it)
_FORKSERVER_JOBS = {"running": 0, "started_by_jobs": False}
_FORKSERVER_LOCK = threading.Lock()  # jobs may run in threads of one process (a Streamlit session each)


@contextlib.contextmanager
def _worker_context(preload: tuple[str, ...]) -> Iterator[mp.context.BaseContext]:
    """``spawn`` (a fork of the driver after torch has started threads is unsafe); for a scorer with ``preload``
    modules, ``forkserver``: one clean process imports them once and every worker is forked from it, so N workers
    pay one heavy import (pytorch-forecasting: ~15 s of CPU each on this machine) instead of N. Its workers watch
    the driver themselves (:func:`_die_with_driver`); the fork server exits on EOF once they are gone.

    The fork server is one per process and would otherwise live as long as the driver: in a long-lived process (the
    dashboard, a notebook) it kept the preloaded modules' memory after the job, and a later job with other ``preload``
    modules got it as it was (they are read only when it starts). So one the jobs started is stopped when the last job
    using it ends; one that was running before them (someone else's) is left alone."""
    if not (preload and "forkserver" in mp.get_all_start_methods()):
        yield mp.get_context("spawn")
        return
    import multiprocessing.forkserver as forkserver

    ctx = mp.get_context("forkserver")
    with _FORKSERVER_LOCK:
        if _FORKSERVER_JOBS["running"] == 0:
            _FORKSERVER_JOBS["started_by_jobs"] = getattr(forkserver._forkserver, "_forkserver_pid", None) is None  # not running yet
        _FORKSERVER_JOBS["running"] += 1
        ctx.set_forkserver_preload(list(preload))  # only read when this process starts its fork server
    try:
        yield ctx
    finally:
        with _FORKSERVER_LOCK:
            _FORKSERVER_JOBS["running"] -= 1
            if _FORKSERVER_JOBS["running"] == 0 and _FORKSERVER_JOBS["started_by_jobs"]:
                try:  # closes its "alive" pipe (it exits on EOF), reaps it and removes its socket; the workers are gone by now
                    forkserver._forkserver._stop()
                except Exception as e:  # noqa: BLE001 - a private stdlib method; without it the server stays, as before
                    log.warning(f"the scoring workers' fork server was not stopped ({type(e).__name__}: {e}); it ends with this process")


def _run_local(scorer_bytes: bytes, pending: list[tuple[int, list[WorkItem]]], workers: int, on_result: Callable[[ChunkResult], None],
               preload: tuple[str, ...] = ()) -> int:
    if workers == 1:
        # in-process: a private copy, so the caller's scorer keeps its config-only state
        scorer = pickle.loads(scorer_bytes)
        _load_scorer(scorer)
        ready_at = time.time()
        for i, items in pending:
            on_result(score_chunk(scorer, i, items, ready_at=ready_at))
        return 0

    todo = list(pending)
    todo.reverse()
    restarts = 0
    with _worker_context(preload) as ctx:  # a fork server this job starts (Scorer.preload) is stopped when it ends
        while todo:
            inflight: dict[cf.Future, tuple[int, list[WorkItem]]] = {}
            broken = False
            with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(scorer_bytes, _threads_per_worker(workers), os.getpid())) as pool:
                try:
                    while todo or inflight:
                        while todo and len(inflight) < 2 * workers:  # bounded queue: memory stays flat for huge jobs
                            fut = pool.submit(_score_in_worker, *todo[-1])  # may raise BrokenProcessPool: pop only after
                            inflight[fut] = todo.pop()
                        finished, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
                        for fut in finished:
                            res = fut.result()  # raises BrokenProcessPool while the chunk is still in `inflight`
                            del inflight[fut]
                            on_result(res)
                except cf.process.BrokenProcessPool as e:
                    broken = True
                    restarts += 1
                    lost = sorted(ck[0] for ck in inflight.values())
                    todo.extend(sorted(inflight.values(), key=lambda ck: -ck[0]))
                    if restarts > MAX_WORKER_RESTARTS:
                        raise ScoringError(
                            f"local workers died {restarts} times (last in-flight chunks {lost}); "
                            "the committed chunks are kept, rerun to continue or lower --workers if memory is short"
                        ) from e
                    log.warning(f"a worker process died ({e}); restarting the pool and re-scoring chunks {lost}")
                    inflight.clear()
            if not broken:
                break
    return restarts


# ---------------------------------------------------------------------------------------------
# Ray engine


class _RayChunkScorer:
    """Ray Data actor: loads the model once, then scores one chunk per call."""

    def __init__(self, scorer: Scorer):
        os.environ.setdefault("SUITE_PROGRESS", "0")
        self.scorer = scorer
        self.load_error: str | None = None
        try:
            _load_scorer(self.scorer)
        except ScorerLoadError as e:  # raising here would make Ray restart the actor forever
            self.load_error = str(e)
        _pin_threads(1)  # each actor reserves num_cpus=1
        self.ready_at = time.time()

    def __call__(self, batch: dict) -> dict:
        if self.load_error is not None:
            raise ScorerLoadError(self.load_error)
        import numpy as np

        out = []
        for chunk, items_json in zip(batch["chunk"], batch["items"]):
            items = [WorkItem.from_dict(d) for d in json.loads(items_json)]
            out.append(score_chunk(self.scorer, int(chunk), items, ready_at=self.ready_at).to_bytes())
        return {"chunk": np.asarray(batch["chunk"]), "result": np.array(out, dtype=object)}


RAY_OBJECT_STORE_BYTES = 200 * 2**20


_PRIVATE_CLUSTER: dict = {}  # the reaper and temp folder of the private cluster this process started


def ray_init(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to the cluster at ``address`` or start a private one on 127.0.0.1 (no dashboard,
    small object store, its own temp folder). Returns True when this call connected (so the caller
    calls :func:`ray_shutdown`). A private cluster is watched by :mod:`core.reaper`: when this
    process ends — SIGKILL included — every process of that cluster is killed and its folder removed."""
    import logging

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    common = dict(logging_level=logging.WARNING, log_to_driver=True, configure_logging=True)
    if address:
        host = _check_reachable(address)
        if host is not None and _is_loopback(host):
            # a cluster on 127.0.0.1 (see start_ray_cluster): stop Ray from swapping the loopback
            # address for the machine's routable IP, where nothing listens
            ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
        _use_token_auth_if_available()
        ray.init(address=address, **common)
    else:
        # keep the private cluster on loopback: by default Ray swaps 127.0.0.1 for the machine's
        # routable IP and listens there (this is the switch behind RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)
        ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
        # Ray enables token auth for a new cluster and says so; keep the auth, drop the notice
        # (the warning that auth is *disabled* still shows)
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
            lambda r: "Token authentication is enabled" not in r.getMessage()
        )
        temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's unix socket paths must stay < 108 bytes
        _PRIVATE_CLUSTER.update(temp_dir=temp_dir, reaper=start_reaper(temp_dir))
        try:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                object_store_memory=RAY_OBJECT_STORE_BYTES,
                _node_ip_address="127.0.0.1",
                _temp_dir=temp_dir,
                **common,
            )
        except BaseException:
            ray_shutdown()
            raise
    return True


def ray_shutdown() -> None:
    """Disconnect from Ray; a private cluster started by :func:`ray_init` is stopped and reaped."""
    import ray

    try:
        ray.shutdown()
    finally:
        reaper = _PRIVATE_CLUSTER.pop("reaper", None)
        _PRIVATE_CLUSTER.pop("temp_dir", None)
        stop_reaper(reaper)


def _use_token_auth_if_available() -> None:
    """`ray start` enables token auth by default (token in ~/.ray/auth_token, or RAY_AUTH_TOKEN*);
    a driver joining with ``ray.init(address=...)`` must then send it. Ray does this for its own
    CLI; do the same here unless RAY_AUTH_MODE says otherwise."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available

        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    except Exception as e:  # noqa: BLE001 - private Ray API; fall back to Ray's own behaviour
        log.debug(f"token auth setup skipped: {e}")


def _last_line_with(text: str, needle: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if needle in ln]
    return lines[-1].split(needle + ": ", 1)[-1] if lines else text.strip().splitlines()[-1]


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _check_reachable(address: str, timeout: float = 10.0) -> str | None:
    """Fail fast with a clear message instead of Ray's minutes of connection retries."""
    import socket

    if address in ("auto", "local") or address.startswith("ray://"):
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ScoringError(f"--address {address!r}: expected HOST:PORT of a Ray head node (e.g. 10.0.0.5:6379) or 'auto'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ScoringError(f"--address {address}: no Ray head node reachable there ({e}); start one with `ray start --head --port={port}`") from e
    return host.strip("[]")


def _run_ray(scorer: Scorer, pending: list[tuple[int, list[WorkItem]]], workers: int, address: str | None, on_result: Callable[[ChunkResult], None]) -> None:
    import ray

    connected = ray_init(address, num_cpus=None if address else max(workers, os.cpu_count() or 1))
    try:
        import logging

        ctx = ray.data.DataContext.get_current()  # importing ray.data configures its loggers; quieten after
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # we draw our own bar over chunks; drop Ray's notice that its own bars are off
        logging.getLogger("ray.data._internal.progress").addFilter(lambda r: "Progress bars" not in r.getMessage())
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.execution_options.verbose_progress = False
        if address:
            cpus = ray.cluster_resources().get("CPU", 0)
            if cpus < workers:
                log.warning(f"--workers {workers} actors need {workers} CPUs but the cluster at {address} has {cpus:g} now; "
                            "the job waits for the autoscaler (or lower --workers)")
        rows = [{"chunk": i, "items": json.dumps([it.to_dict() for it in items])} for i, items in pending]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map_batches(
            _RayChunkScorer,
            fn_constructor_args=(scorer,),  # cloudpickled by Ray: scorers defined in __main__ work too
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
            batch_format="numpy",
            zero_copy_batch=True,
            # Ray Data's actor pool already defaults to max_restarts=-1 and max_task_retries=-1:
            # a killed actor is replaced and its chunk re-scored (tested in test_scoring_ray.py)
        )
        try:
            for row in ds.iter_rows():
                on_result(ChunkResult.from_bytes(row["result"]))
        except ScoringError:
            raise
        except Exception as e:  # noqa: BLE001 - Ray wraps the worker's exception; surface its message
            cause = e
            while getattr(cause, "cause", None) is not None or cause.__cause__ is not None:
                cause = getattr(cause, "cause", None) or cause.__cause__
            if isinstance(cause, ScorerLoadError) or "ScorerLoadError" in str(e):
                msg = str(cause) if isinstance(cause, ScorerLoadError) else _last_line_with(str(e), "ScorerLoadError")
                raise ScorerLoadError(msg) from e
            raise ScoringError(f"Ray job failed ({type(e).__name__}): {str(e).strip().splitlines()[-1][:500]}; committed chunks are kept, rerun to continue") from e
    finally:
        if connected:
            ray_shutdown()
