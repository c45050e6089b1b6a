"""The scoring job: items → chunks → atomically committed Parquet parts + per-chunk markers.

Layout of an output folder (``out_dir``)::

    _job.json                    fingerprint, scorer class + config, chunking, item count
    _items.jsonl                 the work items in order (chunk ``i`` = items[i*k:(i+1)*k])
    part-000000.parquet          output rows of chunk 0 (written atomically; absent if 0 rows)
    _done/chunk-000000.json      commit marker of chunk 0: rows, quarantined, sha256 and size of the part
    _job.lock                    flock held by the run writing here (one writer per folder)
    _quarantine/chunk-000000.parquet   items of chunk 0 that failed, with the reason
    _SUCCESS.json                written when every chunk is committed (last run's summary)

A chunk is committed when its marker exists; the marker is written (atomically, fsync'd)
only after the part and quarantine files are in place, so after a crash at any instant a
rerun re-scores exactly the chunks without a marker and overwrites their (same-named)
parts: every output row exists once. A rerun also re-scores a chunk whose marker is damaged or
whose part or quarantine file is missing or of another size (a disk fault, a hand edit); readers
refuse such a folder with one line naming the file. Files starting with ``_`` are ignored by
``pyarrow``/``pandas.read_parquet(out_dir)``, so the folder reads as one Parquet data set.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import stat
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import pandas as pd

from core.errors import UserInputError
from core.io import (MissingColumnsError, atomic_write_bytes, atomic_write_json, atomic_write_text, is_temp_file, json_default, read_parquet, remove_temp_files,
                     sha256_file)
from core.logging import get_logger

__all__ = [
    "WorkItem",
    "Scorer",
    "JobSummary",
    "ChunkResult",
    "ScoringError",
    "JobMismatchError",
    "ScorerLoadError",
    "ItemsDigest",
    "ITEMS_DIGEST",
    "digest_items",
    "model_run_stamp",
    "job_fingerprint",
    "job_name",
    "check_same_job",
    "frame_checksum",
    "output_checksum",
    "read_job",
    "read_markers",
    "read_output",
    "read_quarantine",
    "job_status",
    "file_items",
    "row_range_items",
]

log = get_logger("scoring")

JOB_FILE = "_job.json"
ITEMS_FILE = "_items.jsonl"
DONE_DIR = "_done"
QUARANTINE_DIR = "_quarantine"
SUCCESS_FILE = "_SUCCESS.json"
LOCK_FILE = "_job.lock"
WORK_ITEM_COLUMN = "work_item"  # added to every output row: which WorkItem produced it (lineage)
FORMAT_VERSION = 1


class ScoringError(UserInputError):
    """A scoring job cannot run as asked (user-facing, one-line message)."""


class JobMismatchError(ScoringError):
    """``out_dir`` holds a job with other items or another scorer config."""


class ScorerLoadError(ScoringError):
    """``Scorer.load()`` failed in a worker/actor (missing checkpoint, bad config): the job stops."""


@dataclass(frozen=True)
class WorkItem:
    """One unit of input: a file (``path``) or a row range ``[start, stop)`` of a file."""

    id: str
    path: str | None = None
    start: int | None = None
    stop: int | None = None
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "start": self.start, "stop": self.stop, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WorkItem":
        return cls(id=d["id"], path=d.get("path"), start=d.get("start"), stop=d.get("stop"), meta=d.get("meta") or {})


class Scorer:
    """Subclass this. ``__init__`` stores configuration only (the object is pickled to every
    worker/actor); ``load`` builds the model once per worker; ``score`` returns the output rows
    of one item as a DataFrame. Raising in ``score`` quarantines that item with the reason.

    The job fingerprint includes the class name and :meth:`config` (by default every public
    attribute set in ``__init__``), so changing a setting and rerunning into the same folder is
    refused instead of mixing outputs. Bump ``version`` when the scoring logic changes.
    """

    version: str = "1"
    # modules the local engine's worker processes (--workers N > 1) get already imported: one fork server imports
    # them and the workers are forked from it, instead of each importing them after spawn. Heavy imports the
    # scorer's load needs (a model library); importing them must have no side effects a worker should not share
    preload: tuple[str, ...] = ()

    def load(self) -> None:  # noqa: B027 - optional hook
        """Load the model (called once per worker/actor, before the first ``score``)."""

    def prepare_chunk(self, items: Sequence[WorkItem]) -> None:  # noqa: B027 - optional hook
        """Called with a chunk's items before they are scored, in whichever worker scores that chunk.
        A scorer that computes a chunk's items together (one batched forward) does it here, so each
        worker computes only the chunks it gets and a resumed job only the chunks still missing; a
        chunk's batch is the same in every run, so its rows are too. Raising quarantines every item
        of the chunk with the reason."""

    def score(self, item: WorkItem) -> pd.DataFrame:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """What identifies this scorer's results; part of the job fingerprint."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def load_info(self) -> dict[str, Any]:
        """JSON-able facts measured by :meth:`load` (e.g. an index build time); they travel back
        with every chunk result and reach ``JobSummary.worker_load_info`` keyed by worker. Set
        ``self._load_info`` in ``load`` or override this."""
        return dict(getattr(self, "_load_info", None) or {})


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """The one Parquet encoding of a frame (parts and quarantine files): same input, same bytes,
    whichever engine or process encodes it."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


@dataclass
class ChunkResult:
    """What a worker sends back for one chunk; committed by the driver.

    ``part`` is the chunk's ``n_rows`` output rows already encoded as the Parquet file the driver
    commits (``None`` when the chunk has no rows): rows are encoded once, where they were scored,
    and the driver writes these bytes as they are, so every engine commits byte-identical parts."""

    chunk: int
    part: bytes | memoryview | None
    n_rows: int
    quarantine: list[dict[str, Any]]
    seconds: float
    worker: str
    ready_at: float | None = None  # wall clock (time.time) when this worker's model was loaded
    load_info: dict[str, Any] = field(default_factory=dict)  # Scorer.load_info() of this worker

    def to_bytes(self) -> bytes:
        """JSON header + the part's Parquet bytes, so results cross process/node boundaries
        without pickling user objects."""
        header = json.dumps({"chunk": self.chunk, "n_rows": self.n_rows, "quarantine": self.quarantine, "seconds": self.seconds, "worker": self.worker, "ready_at": self.ready_at,
                             "load_info": self.load_info}).encode()
        return b"".join((len(header).to_bytes(8, "little"), header, self.part if self.part is not None else b""))

    @classmethod
    def from_bytes(cls, data: bytes) -> "ChunkResult":
        """The inverse of :meth:`to_bytes`; the part stays encoded (a view into ``data``, not a copy)."""
        n = int.from_bytes(data[:8], "little")
        h = json.loads(data[8 : 8 + n])
        part = memoryview(data)[8 + n :] if h["n_rows"] else None
        return cls(chunk=h["chunk"], part=part, n_rows=h["n_rows"], quarantine=h["quarantine"], seconds=h["seconds"], worker=h["worker"], ready_at=h.get("ready_at"),
                   load_info=h.get("load_info") or {})


@dataclass
class JobSummary:
    out_dir: str
    engine: str
    workers: int
    chunks_total: int
    chunks_done: int  # committed in this run
    chunks_skipped: int  # already committed by an earlier run
    items_total: int
    items_scored: int  # in this run
    items_quarantined: int  # in this run
    rows: int  # written in this run
    rows_total: int  # in the whole output
    seconds: float
    items_per_second: float
    rows_per_second: float
    fingerprint: str
    worker_restarts: int = 0
    startup_seconds: float = 0.0  # engine start + model load: until the first worker was ready to score
    worker_load_info: dict[str, dict] = field(default_factory=dict)  # Scorer.load_info() per worker of this run

    def line(self) -> str:
        return (
            f"scoring {self.engine}×{self.workers}: {self.chunks_done} chunks done, {self.chunks_skipped} skipped "
            f"(of {self.chunks_total}); {self.items_scored} items scored, {self.items_quarantined} quarantined; "
            f"{self.rows} rows written ({self.rows_total} in total) in {self.seconds:.1f}s = "
            f"{self.items_per_second:.2f} items/s, {self.rows_per_second:.1f} rows/s → {self.out_dir}"
        )


# ---------------------------------------------------------------------------------------------
# worker side: score one chunk (same code for the local and the Ray engine)


def _worker_name() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def score_chunk(scorer: Scorer, chunk: int, items: Sequence[WorkItem], ready_at: float | None = None) -> ChunkResult:
    t0 = time.perf_counter()
    frames: list[pd.DataFrame] = []
    quarantine: list[dict[str, Any]] = []
    try:
        scorer.prepare_chunk(items)
        failed = None
    except Exception as e:  # noqa: BLE001 - the chunk's items are quarantined below, the job goes on
        failed = e
    for item in items:
        try:
            if failed is not None:
                raise failed
            df = scorer.score(item)
            if not isinstance(df, pd.DataFrame):
                raise TypeError(f"{type(scorer).__name__}.score returned {type(df).__name__}, expected a pandas DataFrame")
            if WORK_ITEM_COLUMN in df.columns:
                raise ValueError(f"{type(scorer).__name__}.score returned a column named {WORK_ITEM_COLUMN!r}, which the engine reserves for lineage")
        except Exception as e:  # noqa: BLE001 - any failure of one item quarantines that item only
            tb = traceback.extract_tb(e.__traceback__)
            where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
            quarantine.append({**_item_columns(item), "error_type": type(e).__name__, "reason": str(e) or repr(e), "where": where, "chunk": chunk})
            continue
        df = df.reset_index(drop=True)
        df.insert(0, WORK_ITEM_COLUMN, item.id)
        frames.append(df)
    rows = pd.concat(frames, ignore_index=True) if frames else None
    part = parquet_bytes(rows) if rows is not None and len(rows) else None  # encoded here, once: the driver commits these bytes
    n_rows = len(rows) if part is not None else 0
    return ChunkResult(chunk=chunk, part=part, n_rows=n_rows, quarantine=quarantine, seconds=time.perf_counter() - t0, worker=_worker_name(), ready_at=ready_at,
                       load_info=scorer.load_info())


def _item_columns(item: WorkItem) -> dict[str, Any]:
    return {"item_id": item.id, "path": item.path, "start": item.start, "stop": item.stop, "meta": json.dumps(item.meta, sort_keys=True, default=str)}


# ---------------------------------------------------------------------------------------------
# driver side: fingerprint, job folder, commits


def _jsonable(obj: Any) -> Any:
    """A JSON-normal form of a scorer config (sorted keys; unknown objects by ``repr``)."""
    def default(o: Any) -> Any:
        try:
            return json_default(o)
        except TypeError:
            return repr(o)

    return json.loads(json.dumps(obj, sort_keys=True, default=default))


def _file_stamp(path: str | None) -> list | None:
    """What tells that an item's input changed, without reading it: a file's size, modification and change times and
    inode (a file replaced by another of the same size and modification time — ``cp -p``, ``rsync -t``, an archive
    unpacked again, two files swapped by renames — has a new change time or inode); a folder (a DICOM series, a model
    run) the same for every file under it, by relative path, in order (a file rewritten inside leaves the folder's own
    entry as it was). One ``stat`` per file; None when there is no path or it cannot be read here."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):  # the stat already taken tells, no second one
        return _stat_identity(st)
    files = []
    for root, dirs, names in os.walk(path):  # links to folders are not followed
        dirs.sort()
        for name in sorted(names):
            f = os.path.join(root, name)
            try:
                fs = os.stat(f)
            except OSError:  # a link to nothing: nothing the scorer can read either
                continue
            files.append([os.path.relpath(f, path), *_stat_identity(fs)])
    return files


def _stat_identity(st: os.stat_result) -> list[int]:
    """What of a file's ``stat`` tells that it changed: size, modification and change times, inode."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _class_name(cls: type) -> str:
    """``module.Class``; a class of a ``python -m pkg.mod`` run is named by ``pkg.mod``, not ``__main__``,
    so the CLI and an in-process call of the same job share a fingerprint."""
    module = cls.__module__
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = getattr(spec, "name", None) or module
    return f"{module}.{cls.__qualname__}"


# how digest_items stamps the items' files (recorded in the job description of items that have files): 2 — size, both
# times and inode, every file of a folder. A job recorded before (size and mtime of the path only: another file of the
# same size and time at that path, or a file changed inside a folder item, looked unchanged and its stale output was
# reused) is scored again when everything else about it is the same (prepare_job_dir), never reused, never refused.
ITEMS_DIGEST = 2


@dataclass(frozen=True)
class ItemsDigest:
    """The part of a job fingerprint that reads the disk: sha256 over the items (ids, paths, ranges, meta)
    and the content stamp of each item's file or folder (:func:`_file_stamp`: one ``stat`` per file). A score
    command takes it once (:func:`digest_items`) and hands it to :func:`job_name`, ``check_scoring_job`` and
    ``run_job``, instead of each of them stat-ing every input file again. ``items``: the items it was taken of —
    a digest handed on with other items is refused, also when their number is the same."""

    sha256: str
    items: tuple = field(default=(), compare=False, repr=False)
    model_run_sha256: str | None = None  # the stamp of the model run's weights and config files (model_run_stamp), when the command named one

    @property
    def n_items(self) -> int:
        """How many items it was taken of."""
        return len(self.items)

    @property
    def has_files(self) -> bool:
        """Whether any item names a file or folder (only then do the stamps, and their version, enter the fingerprint)."""
        return any(it.path for it in self.items)


# what of a model run decides its rows: its weights and configuration files (any depth, by suffix), not the run's own
# bookkeeping (status, metrics, logs, the lock: rewritten without a new model), nor ``checkpoints/`` (training state; a
# user pruning old checkpoints has not changed the model). A run retrained in place or copied over rewrites the weights.
MODEL_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".onnx", ".json", ".yaml", ".yml", ".npz", ".npy")
MODEL_RUN_BOOKKEEPING = frozenset({"run.json", "metrics.json", "checkpoints"})


def model_run_stamp(model_run: str | os.PathLike) -> str:
    """sha256 over the stat identity (size, mtime_ns, ctime_ns, inode: :func:`_stat_identity`, as :func:`_file_stamp`) of the model run's
    weights and config files (:data:`MODEL_FILE_SUFFIXES`, outside :data:`MODEL_RUN_BOOKKEEPING`, hidden or ``_``-named
    entries and any scoring job's output folder inside the run), by relative path;
    a model given as one file: that file. One ``stat`` per file, no reading: a run folder replaced by a retrained one
    under the same name (same path) has another stamp, an untouched one the same."""
    root = str(model_run)
    if not os.path.isdir(root):
        stamp: Any = _file_stamp(root)
    else:
        stamp = []
        for here, dirs, names in os.walk(root):  # links to folders are not followed
            if here != root and {JOB_FILE, ITEMS_FILE, LOCK_FILE} & set(names):  # a scoring job's --out given inside the run:
                dirs[:] = []  # its _job.json and markers change as it scores, the model does not (else its own rerun is refused)
                continue
            dirs[:] = sorted(d for d in dirs if not (here == root and d in MODEL_RUN_BOOKKEEPING) and not d.startswith((".", "_")))
            for name in sorted(names):
                if name.endswith(MODEL_FILE_SUFFIXES) and not name.startswith((".", "_")) and not (here == root and name in MODEL_RUN_BOOKKEEPING):
                    f = os.path.join(here, name)
                    try:
                        fs = os.stat(f)
                    except OSError:  # a link to nothing
                        continue
                    stamp.append([os.path.relpath(f, root), *_stat_identity(fs)])
    return hashlib.sha256(json.dumps(stamp).encode()).hexdigest()


def digest_items(items: Sequence[WorkItem], model_run: str | os.PathLike | None = None) -> ItemsDigest:
    """:class:`ItemsDigest` of ``items`` as their files are now; with ``model_run`` (the trained run the scorer loads),
    also :func:`model_run_stamp` of it — so the job fingerprint, the ``--out`` check and :func:`job_name` see a model
    run replaced in place (retrained under the same name) as another job, not a finished one whose old rows are reused."""
    items = tuple(items)
    h = hashlib.sha256()
    stamps: dict[str | None, Any] = {}  # items sharing a file or folder (row ranges of one file, user ranges of one model run): stamped once
    for it in items:
        if it.path not in stamps:
            stamps[it.path] = _file_stamp(it.path)
        h.update(json.dumps([it.to_dict(), stamps[it.path]], sort_keys=True, default=str).encode())
        h.update(b"\n")
    return ItemsDigest(h.hexdigest(), items, model_run_stamp(model_run) if model_run is not None else None)


def _digest_of(items: Sequence[WorkItem], digest: ItemsDigest | None) -> ItemsDigest:
    """``digest`` when given (it must be of these items: the same items in the same order, not only as many), else
    the items' digest now."""
    if digest is None:
        return digest_items(items)
    same = isinstance(digest, ItemsDigest) and digest.n_items == len(items) and all(a is b or a == b for a, b in zip(digest.items, items))
    if not same:
        raise ValueError(f"digest {digest!r} is not of these {len(items)} items; take it with digest_items(items)")
    return digest


def job_fingerprint(items: Sequence[WorkItem], scorer: Scorer, items_per_chunk: int, digest: ItemsDigest | None = None) -> tuple[str, dict[str, Any]]:
    """sha256 over the items (ids, paths, ranges, meta, and the content stamp of each input file or folder: ``digest``,
    taken now when not given; with :data:`ITEMS_DIGEST` when any item has a file), the scorer's class, version and config,
    and the chunking.
    Returns (hex digest, description)."""
    digest = _digest_of(items, digest)
    scorer_desc = {
        "class": _class_name(type(scorer)),
        "version": str(getattr(scorer, "version", "1")),
        "config": _jsonable(scorer.config()),
    }
    desc = {"scorer": scorer_desc, "items_per_chunk": items_per_chunk, "n_items": digest.n_items, "items_sha256": digest.sha256, "format": FORMAT_VERSION}
    if digest.has_files:  # items without files (ids only) have no stamps: their fingerprint (and job_name) is as it was
        desc["items_digest"] = ITEMS_DIGEST
    if digest.model_run_sha256 is not None:  # a job recorded without it is scored again (prepare_job_dir), not refused
        desc["model_run_sha256"] = digest.model_run_sha256
    fp = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()
    return fp, desc


def _chunk_name(i: int) -> str:
    return f"{i:06d}"


def _marker_path(out: Path, i: int) -> Path:
    return out / DONE_DIR / f"chunk-{_chunk_name(i)}.json"


def _part_path(out: Path, i: int) -> Path:
    return out / f"part-{_chunk_name(i)}.parquet"


def _quarantine_path(out: Path, i: int) -> Path:
    return out / QUARANTINE_DIR / f"chunk-{_chunk_name(i)}.parquet"


def _foreign_entries(out: Path) -> list[str]:
    """What in ``out`` is not the start of a scoring job: a run killed between creating the folder and
    writing ``_job.json`` leaves only the lock, ``_items.jsonl`` and temp files, and its rerun must go on."""
    return [p.name for p in out.iterdir() if p.name not in (LOCK_FILE, ITEMS_FILE) and not (p.is_file() and is_temp_file(p))] if out.is_dir() else []


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse, before anything is written, an output folder the job cannot use: a file (or a link to a
    missing target) at that path or above it, a folder this process may not write, or a folder that holds
    something other than a scoring job."""
    if out.is_symlink() and not out.exists():
        raise ScoringError(f"--out {out}: a link to {os.readlink(out)}, which does not exist; give a folder")
    if out.exists() and not out.is_dir():
        raise ScoringError(f"--out {out}: exists and is not a folder (a file); give a new or empty folder, or a scoring output folder to resume")
    _check_writable_place(out)
    if out.is_dir() and not (out / JOB_FILE).is_file() and _foreign_entries(out):
        if overwrite:
            raise ScoringError(f"--overwrite: {out} exists but is not a scoring output folder (no {JOB_FILE}); refusing to delete it")
        raise ScoringError(f"--out {out} exists, is not empty and holds no scoring job ({JOB_FILE} missing); choose an empty or new folder")


def _check_writable_place(out: Path) -> None:
    """``out``, or the nearest folder above it that exists, is a folder this process can write into."""
    place = out
    while not place.exists() and not place.is_symlink() and place != place.parent:
        place = place.parent
    if place != out and not place.is_dir():
        raise ScoringError(f"--out {out}: {place} is a file, not a folder, so the output folder cannot be created there")
    if not os.access(place, os.W_OK | os.X_OK):
        where = "the folder is not writable" if place == out else f"{place} is not writable, so the output folder cannot be created there"
        raise ScoringError(f"--out {out}: {where} (permissions); choose another --out")


@contextlib.contextmanager
def job_lock(out: Path) -> Iterator[None]:
    """One writer per output folder: an exclusive ``flock`` on ``<out>/_job.lock``, released by the
    kernel even when the process is SIGKILLed, so a crashed run never blocks the rerun."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    fh = open(out / LOCK_FILE, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise ScoringError(f"{out}: another scoring run (pid {holder}) is writing into this folder; wait for it to finish or stop it") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock


def check_same_job(out: Path, items: Sequence[WorkItem], scorer: Scorer, items_per_chunk: int, overwrite: bool, digest: ItemsDigest | None = None,
                   job: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Refuse, reading only, an ``out`` that already holds a *different* scoring job (other items, scorer,
    scorer config or chunking: another ``_job.json`` fingerprint): one :class:`JobMismatchError` line naming
    the folder and what differs. Nothing in ``out`` is written or created (not even the lock file), so a score
    command can call it before it loads a model or creates its run folder. ``overwrite`` allows it (the old
    job is discarded later, under the lock). ``digest``: the items' :class:`ItemsDigest`, if already taken.
    Returns the folder's job record it compared with (:func:`read_job`, read once here; None when ``out`` holds
    no job or ``overwrite``), which the command hands on as ``job`` to the next check before the lock instead of
    it reading the file again; only the check under the lock (:func:`prepare_job_dir`) reads it anew."""
    if overwrite or not (out / JOB_FILE).is_file():
        return None
    fp, desc = job_fingerprint(items, scorer, items_per_chunk, digest)
    old = read_job(out) if job is None else job
    if not _recorded_before_stamps(old, desc):  # such a job is scored again by run_job (prepare_job_dir), not refused
        _refuse_other_job(out, old, fp, desc)
    return old


def _recorded_before_stamps(old: dict[str, Any], desc: dict[str, Any]) -> list[str]:
    """What ``out``'s record of this job lacks because it was written before it was stamped: ``"items"`` when recorded
    before :data:`ITEMS_DIGEST` stamped the items' files the way it does now (no digest version in the record),
    ``"model run"`` when recorded before the model run's files were stamped (no ``model_run_sha256``; the items the
    same) — given the same scorer (class, version, config), chunking and item count. Such a record cannot be compared
    with today's stamps, so its chunks are scored again; [] for a job recorded with today's stamps, or another job.
    ``old``: the folder's job record (:func:`read_job`)."""
    if "items_digest" not in desc and "model_run_sha256" not in desc:
        return []
    od = old.get("description", {})
    if not all(od.get(k) == desc[k] for k in ("scorer", "items_per_chunk", "n_items", "format")):
        return []
    missing = []
    if "items_digest" in desc and "items_digest" not in od:
        missing.append("items")
    elif od.get("items_sha256") != desc["items_sha256"]:  # stamped the same way and different: other inputs, refused
        return []
    if "model_run_sha256" in desc and "model_run_sha256" not in od:
        missing.append("model run")
    return missing


def _refuse_other_job(out: Path, old: dict[str, Any], fp: str, desc: dict[str, Any]) -> None:
    """:class:`JobMismatchError` when ``out``'s job record ``old`` (:func:`read_job`) has another fingerprint than ``fp``."""
    if old.get("fingerprint") == fp:
        return
    what = []
    od = old.get("description", {})
    if od.get("items_sha256") != desc["items_sha256"]:
        what.append(f"the input items differ ({od.get('n_items')} before, {desc['n_items']} now, or files changed)")
    model_changed = od.get("model_run_sha256") != desc.get("model_run_sha256")  # retrained in place, or copied over, under the same path
    if od.get("scorer") != desc["scorer"]:
        what.append(_scorer_difference(od.get("scorer") or {}, desc["scorer"]))
    if od.get("items_per_chunk") != desc["items_per_chunk"]:
        what.append(f"items-per-chunk differs ({od.get('items_per_chunk')} before, {desc['items_per_chunk']} now)")
    if model_changed and not what:  # the same job but for the model's files: say that, not "another job"
        raise JobMismatchError(f"{out}: the model run changed since this output was written (its weights or config files were replaced since); "
                               "--overwrite re-scores it, or choose another --out")
    if model_changed:
        what.append("the model run changed since this output was written")
    raise JobMismatchError(
        f"{out} holds another scoring job: {'; '.join(what) or 'fingerprint differs'}. "
        "Refusing to mix outputs; use --overwrite to discard it and start over, or another --out"
    )


def prepare_job_dir(out: Path, items: Sequence[WorkItem], scorer: Scorer, items_per_chunk: int, overwrite: bool,
                    digest: ItemsDigest | None = None) -> tuple[dict[str, Any], set[int]]:
    """Create or reopen ``out`` (call under :func:`job_lock`); returns (the folder's job record — read here, once, or
    just written —, committed chunk ids). Refuses to mix jobs; removes temp files a crashed run left behind. ``digest``:
    the items' :class:`ItemsDigest` taken by the command (the job file read here, under the lock, is what a concurrent
    run may have changed since the checks before the lock — not the items, whose files no lock protects)."""
    fp, desc = job_fingerprint(items, scorer, items_per_chunk, digest)
    job_file = out / JOB_FILE
    check_out_dir(out, overwrite)
    old = read_job(out) if not overwrite and job_file.is_file() else None  # --overwrite discards it unread (a damaged one too)
    old_record = _recorded_before_stamps(old, desc) if old is not None else []
    if old_record:
        why = []
        if "items" in old_record:
            why.append(f"the inputs' files were stamped by content (digest version {ITEMS_DIGEST}: a file replaced by another of the same size "
                       "and time looked unchanged)")
        if "model run" in old_record:
            why.append("the model run's weights and config files were stamped (a model run retrained in place looked unchanged)")
        log.warning(f"{out}: its job was recorded before {' and before '.join(why)}; its {len(list((out / DONE_DIR).glob('chunk-*.json')))} "
                    "committed chunk(s) are scored again")
    if overwrite or old_record:
        for p in out.iterdir():
            if p.name != LOCK_FILE:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    remove_temp_files(out)  # half-written files of a killed run (parts, markers, quarantine): never read, now removed
    if old is not None and not old_record:
        _refuse_other_job(out, old, fp, desc)  # checked again under the lock: another run may have started a job here meanwhile
        job = old
    else:  # no job yet, or the one read was discarded above
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / ITEMS_FILE, "".join(json.dumps(it.to_dict(), sort_keys=True, default=str) + "\n" for it in items))
        job = {"fingerprint": fp, "description": desc, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write_json(job_file, job)
    _marker_paths(out)  # refuses a folder whose _done or _quarantine is a file
    (out / DONE_DIR).mkdir(exist_ok=True)
    return job, _committed_chunks(out, -(-len(items) // items_per_chunk))


def _committed_chunks(out: Path, n_chunks: int) -> set[int]:
    """The chunks a resumed run skips: those whose marker is sound and whose part and quarantine
    files are there whole (by size; markers of older runs: by the part's sha256). A damaged marker or
    a missing or truncated file (a disk fault, a hand edit) un-commits its chunk with a warning, so
    the rerun scores it again and overwrites its files: the output is repaired, never read wrong."""
    done = set()
    for p in _marker_paths(out):
        try:
            m = _read_marker(p, n_chunks)
            _check_chunk_files(out, m)
        except ScoringError as e:
            log.warning(f"{e}; chunk {_marker_index(p)} is scored again")
            p.unlink(missing_ok=True)
            continue
        done.add(m["chunk"])
    return done


def _check_chunk_files(out: Path, m: dict[str, Any]) -> None:
    """The files a marker commits exist whole (cheap: sizes; the sha256 only for markers without sizes)."""
    if m["part"]:
        part = out / m["part"]
        if not part.is_file():
            raise ScoringError(f"{part}: the output part of committed chunk {m['chunk']} is missing")
        size = m.get("part_bytes")
        if size is not None and part.stat().st_size != size:
            raise ScoringError(f"{part}: {part.stat().st_size} bytes but its commit marker records {size} (truncated or replaced)")
        if size is None and sha256_file(part) != m["part_sha256"]:
            raise ScoringError(f"{part}: checksum differs from its commit marker (damaged or replaced)")
    if m["quarantined"]:
        q = _quarantine_path(out, m["chunk"])
        if not q.is_file():
            raise ScoringError(f"{q}: the quarantine file of committed chunk {m['chunk']} is missing")
        size = m.get("quarantine_bytes")
        if size is not None and q.stat().st_size != size:
            raise ScoringError(f"{q}: {q.stat().st_size} bytes but its commit marker records {size} (truncated or replaced)")
        if size is None:  # a marker of an older run: read the (small) file instead
            _read_committed(q, m["quarantined"], m["chunk"])


def _scorer_difference(before: dict[str, Any], now: dict[str, Any]) -> str:
    """Which scorer setting changed, in a few words (not two whole config dumps)."""
    if before.get("class") != now.get("class"):
        return f"the scorer or its config differs (class {before.get('class')} before, {now.get('class')} now)"
    if before.get("version") != now.get("version"):
        return f"the scorer or its config differs (version {before.get('version')} before, {now.get('version')} now)"
    old, new = before.get("config") or {}, now.get("config") or {}
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    shown = ", ".join(f"{k}: {_short(old.get(k))} before, {_short(new.get(k))} now" for k in keys[:3])
    return f"the scorer or its config differs ({shown}{', …' if len(keys) > 3 else ''})"


def _short(value: Any, limit: int = 80) -> str:
    """A setting's value in at most ``limit`` characters; a long one keeps its end, where two paths differ
    (``…/runs/medical/score-1a2b/masks``), not its start (the same ``/home/…/runs/medical/sco`` twice)."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def job_name(command: str, items: Sequence[WorkItem], scorer: Scorer, items_per_chunk: int, model_run: str | os.PathLike | None = None,
             digest: ItemsDigest | None = None) -> str:
    """The default run name of a scoring job: ``<command>-<12 hex digits>`` derived from what
    decides its rows — the items (and their files' stamps), the scorer's class, version
    and config, the chunking and the model run (its path and its files' stamp, :func:`model_run_stamp`) — never
    from the clock; a model run retrained in place gives another name. Rerunning the identical
    command after a crash therefore lands in the same run folder and finishes the partial job.
    ``digest``: the items' :class:`ItemsDigest`, if the command already took it."""
    if digest is None:
        digest = digest_items(items, model_run)
    elif model_run is not None and digest.model_run_sha256 is None:  # the name would not change with the model's files
        raise ValueError("job_name: a digest without the model run's stamp; take it with digest_items(items, model_run)")
    fp, _ = job_fingerprint(items, scorer, items_per_chunk, digest)
    model = str(Path(model_run).resolve()) if model_run is not None else ""
    name_hash = hashlib.sha256(f"{fp}\n{model}".encode()).hexdigest()  # not `digest`: that is the items' ItemsDigest above
    return f"{command}-{name_hash[:12]}"


def commit_chunk(out: Path, result: ChunkResult, n_items: int) -> dict[str, Any]:
    """Write the chunk's part (the worker's Parquet bytes, as they are) and quarantine files,
    then its marker (the commit point)."""
    i = result.chunk
    part = _part_path(out, i)
    qpath = _quarantine_path(out, i)
    rows = 0
    sha = None
    if result.part is not None:
        atomic_write_bytes(part, result.part)
        rows = result.n_rows
        sha = hashlib.sha256(result.part).hexdigest()
    elif part.exists():  # left by a crashed earlier attempt of this chunk that did produce rows
        part.unlink()
    q_bytes = None
    if result.quarantine:
        q_data = parquet_bytes(pd.DataFrame(result.quarantine))
        atomic_write_bytes(qpath, q_data)
        q_bytes = len(q_data)
    elif qpath.exists():
        qpath.unlink()
    marker = {
        "chunk": i,
        "items": n_items,
        "scored": n_items - len(result.quarantine),
        "quarantined": len(result.quarantine),
        "rows": rows,
        "part": part.name if rows else None,
        "part_sha256": sha,
        "part_bytes": len(result.part) if rows else None,
        "quarantine_bytes": q_bytes,
        "seconds": round(result.seconds, 4),
        "worker": result.worker,
        "committed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(_marker_path(out, i), marker)
    return marker


def chunk_items(items: Sequence[WorkItem], items_per_chunk: int) -> list[list[WorkItem]]:
    return [list(items[s : s + items_per_chunk]) for s in range(0, len(items), items_per_chunk)]


_MARKER_NAME = re.compile(r"chunk-(\d+)\.json")


def _marker_paths(out: Path) -> list[Path]:
    """The committed chunks' markers (``chunk-N.json``, written by rename: a half-written temp marker is a
    dot file and not one of them; other names are not ours), sorted by name."""
    for sub in (DONE_DIR, QUARANTINE_DIR):
        if (out / sub).exists() and not (out / sub).is_dir():
            raise ScoringError(f"{out / sub}: a file where the job keeps its {'commit markers' if sub == DONE_DIR else 'quarantined items'} (a folder); "
                               "rerun the score command with --overwrite to start over")
    return sorted(p for p in (out / DONE_DIR).glob("chunk-*.json") if _MARKER_NAME.fullmatch(p.name))


def _marker_index(p: Path) -> int:
    return int(_MARKER_NAME.fullmatch(p.name).group(1))  # type: ignore[union-attr]


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ScoringError(f"{path}: cannot read the {what} ({e.strerror or e})") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ScoringError(f"{path}: damaged {what} (not JSON: {str(e)[:100]})") from e


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def read_job(out: str | os.PathLike) -> dict[str, Any]:
    """``<out>/_job.json``, checked: a missing, damaged or hand-edited job file is one
    :class:`ScoringError` naming it."""
    out = Path(out)
    job_file = out / JOB_FILE
    if not job_file.is_file():
        raise ScoringError(f"{out}: not a scoring output folder ({JOB_FILE} missing)")
    how = "; rerun the score command with --overwrite to start over"
    try:
        job = _read_json(job_file, "job description")
    except ScoringError as e:
        raise ScoringError(f"{e}{how}") from e
    desc = job.get("description") if isinstance(job, dict) else None
    if not isinstance(job, dict):
        why = f"a JSON {type(job).__name__}, expected an object"
    elif not isinstance(job.get("fingerprint"), str):
        why = "no fingerprint"
    elif not isinstance(desc, dict) or not _is_count(desc.get("n_items")) or not _is_count(desc.get("items_per_chunk")) or desc["items_per_chunk"] < 1 \
            or not isinstance(desc.get("scorer"), dict) or not isinstance(desc["scorer"].get("class"), str):
        why = "its description lacks n_items, items_per_chunk or the scorer class"
    else:
        return job
    raise ScoringError(f"{job_file}: damaged job description ({why}){how}")


def _n_chunks(job: dict[str, Any]) -> int:
    desc = job["description"]
    return -(-desc["n_items"] // desc["items_per_chunk"])


def _read_marker(p: Path, n_chunks: int) -> dict[str, Any]:
    """One commit marker, checked against its file name and the job (a damaged one is a ScoringError naming it)."""
    m = _read_json(p, "commit marker")
    i = _marker_index(p)
    if not isinstance(m, dict):
        why = f"a JSON {type(m).__name__}, expected an object"
    elif m.get("chunk") != i or isinstance(m.get("chunk"), bool):
        why = f"it names chunk {m.get('chunk')!r}"
    elif i >= n_chunks:
        why = f"the job has {n_chunks} chunks"
    elif not all(_is_count(m.get(k)) for k in ("rows", "quarantined")):
        why = "rows or quarantined is not a count"
    elif m.get("part") != (_part_path(Path(), i).name if m["rows"] else None) or (m["rows"] and not isinstance(m.get("part_sha256"), str)):
        why = f"part {m.get('part')!r} is not this chunk's part"
    else:
        return m
    raise ScoringError(f"{p}: damaged commit marker ({why})")


def read_markers(out: str | os.PathLike, job: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The commit markers of an output folder, in chunk order (one per committed chunk); a damaged
    job file or marker is a :class:`ScoringError` naming it (a rerun of the job repairs markers).
    ``job``: the folder's job record when the caller has it (:func:`read_job`), so the file is not read again."""
    out = Path(out)
    n_chunks = _n_chunks(read_job(out) if job is None else job)
    return [_read_marker(p, n_chunks) for p in _marker_paths(out)]


def read_output(out_dir: str | os.PathLike, verify: bool = False, columns: list[str] | None = None) -> pd.DataFrame:
    """All committed output rows, in item order (chunk order, then the order ``score`` returned).

    Only chunks with a commit marker are read, so a folder of an interrupted job yields the
    committed part. ``verify=True`` checks each part against the sha256 in its marker."""
    out = Path(out_dir)
    frames = []
    for m in read_markers(out):
        if not m.get("part"):
            continue
        p = out / m["part"]
        if not p.is_file():
            raise ScoringError(f"{p}: the output part of committed chunk {m['chunk']} is missing; rerun the score command to score it again")
        if verify and sha256_file(p) != m["part_sha256"]:
            raise ScoringError(f"{p}: checksum differs from its commit marker; the output was modified after the job")
        frames.append(_read_committed(p, m["rows"], m["chunk"], columns))
    if not frames:
        return pd.DataFrame(columns=[WORK_ITEM_COLUMN] + (columns or []))
    return pd.concat(frames, ignore_index=True)


def _read_committed(p: Path, rows: int, chunk: int, columns: list[str] | None = None) -> pd.DataFrame:
    """A committed part or quarantine file, whole: readable and holding the rows its marker counts."""
    try:
        df = read_parquet(p, columns=columns)
    except MissingColumnsError as e:  # the caller asked for columns the scorer does not write
        raise ScoringError(str(e)) from e
    except UserInputError as e:
        raise ScoringError(f"{e}; rerun the score command to score chunk {chunk} again") from e
    if len(df) != rows:
        raise ScoringError(f"{p}: {len(df)} rows but its commit marker records {rows} (replaced or edited); rerun the score command to score chunk {chunk} again")
    return df


def frame_checksum(df: pd.DataFrame) -> str:
    """Order-sensitive content hash of a DataFrame (values and column names): two outputs with the
    same checksum hold the same rows in the same order, whatever their Parquet bytes."""
    h = hashlib.sha256(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def output_checksum(out_dir: str | os.PathLike) -> str:
    """:func:`frame_checksum` of a job's committed rows (each part verified against its marker)."""
    return frame_checksum(read_output(out_dir, verify=True))


def job_status(out_dir: str | os.PathLike) -> dict[str, Any]:
    """What a scoring folder holds: chunks committed of total, rows, quarantined items, complete?"""
    out = Path(out_dir)
    job = read_job(out)
    markers = read_markers(out, job)
    desc = job["description"]
    n_chunks = _n_chunks(job)
    return {
        "out_dir": str(out),
        "scorer": desc["scorer"]["class"],
        "items": desc["n_items"],
        "chunks_total": n_chunks,
        "chunks_committed": len(markers),
        "complete": len(markers) == n_chunks,
        "rows": sum(m["rows"] for m in markers),
        "items_quarantined": sum(m["quarantined"] for m in markers),
        "fingerprint": job["fingerprint"],
        "created": job.get("created"),
    }


def read_quarantine(out_dir: str | os.PathLike) -> pd.DataFrame:
    """Items that failed in committed chunks: item_id, path, start, stop, meta, error_type, reason, where, chunk."""
    out = Path(out_dir)
    frames = []
    for m in read_markers(out):
        if m["quarantined"]:
            q = _quarantine_path(out, m["chunk"])
            if not q.is_file():
                raise ScoringError(f"{q}: the quarantine file of committed chunk {m['chunk']} is missing; rerun the score command to score it again")
            frames.append(_read_committed(q, m["quarantined"], m["chunk"]))
    if not frames:
        return pd.DataFrame(columns=["item_id", "path", "start", "stop", "meta", "error_type", "reason", "where", "chunk"])
    return pd.concat(frames, ignore_index=True)


def file_items(paths: Iterable[str | os.PathLike], root: str | os.PathLike | None = None) -> list[WorkItem]:
    """One WorkItem per file; id = path relative to ``root`` (or the file name)."""
    items = []
    for p in paths:
        p = Path(p)
        ident = str(p.relative_to(root)) if root is not None else p.name
        items.append(WorkItem(id=ident, path=str(p)))
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise ScoringError("file_items: duplicate item ids (same file name in several folders?); pass root= to use relative paths")
    return items


def row_range_items(path: str | os.PathLike, n_rows: int, rows_per_item: int, prefix: str | None = None) -> list[WorkItem]:
    """Split rows ``[0, n_rows)`` of one file into WorkItems of ``rows_per_item`` rows."""
    if rows_per_item < 1:
        raise ValueError(f"rows_per_item must be ≥ 1, got {rows_per_item}")
    prefix = prefix or Path(path).name
    return [WorkItem(id=f"{prefix}[{s}:{min(s + rows_per_item, n_rows)}]", path=str(path), start=s, stop=min(s + rows_per_item, n_rows)) for s in range(0, n_rows, rows_per_item)]

