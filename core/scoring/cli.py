"""The standard scoring flags, as a dataclass mixin for a domain's score config.

    @dataclass
    class ScoreConfig(ScoringConfig, RunConfig):
        checkpoint: str | None = None

    cfg = parse_config(ScoreConfig, description=__doc__)
    check_scoring_out(cfg)                                   # first: before a model is loaded
    ...
    check_scoring_items(items, "--input DIR", "at least one file")   # before Run.start creates the run folder
    digest = digest_items(items, model_run=run_dir)          # one stat per input (and model) file, once per command
    job = check_scoring_job(cfg, items, MyScorer(...), digest)   # --out holding another job: refused, also before Run.start
    with Run.start(...) as run:
        summary = run_job_from_config(items, MyScorer(...), cfg, default_out=run.dir / "scores", digest=digest, job=job)

adds ``--engine {local,ray} --workers N --address HOST:PORT --out DIR --items-per-chunk K
--overwrite`` (and ``--no-progress``) to the domain's CLI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from core.scoring.engine import DEFAULT_ITEMS_PER_CHUNK, ENGINES, run_job
from core.scoring.job import ItemsDigest, JobSummary, Scorer, ScoringError, WorkItem, check_out_dir, check_same_job

__all__ = ["ScoringConfig", "run_job_from_config", "check_scoring_out", "check_scoring_items", "check_scoring_job"]


@dataclass
class ScoringConfig:
    engine: str = field(default="local", metadata={"help": "local: N worker processes on this machine; ray: a Ray Data actor pool (one model per actor)", "choices": list(ENGINES)})
    workers: int = field(default=1, metadata={"min": 1, "help": "local worker processes, or Ray actors (each loads the model once)"})
    address: str | None = field(default=None, metadata={"help": "Ray cluster to join (e.g. 10.0.0.5:6379 or 'auto'); default: start a private local Ray on 127.0.0.1"})
    out: str | None = field(default=None, metadata={"help": "output folder (partitioned Parquet + commit markers + quarantine); a rerun into it resumes"})
    items_per_chunk: int = field(default=DEFAULT_ITEMS_PER_CHUNK, metadata={"min": 1, "help": "work items per chunk (the unit of commit and of resume)"})
    overwrite: bool = field(default=False, metadata={"help": "discard an existing job in --out (e.g. inputs or scorer config changed) and start over"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})


def check_scoring_out(cfg: ScoringConfig) -> None:
    """``--out``, when given, is a place the job can use — not a file or below one, writable, not a non-empty
    folder of something else: one :class:`ScoringError` line otherwise. A score command calls it first,
    before it loads a model or creates its job's run folder, so a bad ``--out`` leaves nothing behind."""
    if cfg.out:
        check_out_dir(Path(cfg.out), cfg.overwrite)


def check_scoring_items(items: Sequence[WorkItem], source: str, expected: str) -> None:
    """A job has something to score: an input with no items is one :class:`ScoringError` line naming it
    (``source``, as the user named it) and what it should hold (``expected``). A score command calls it
    before it creates its job's run folder (an empty job would end "completed" with an empty result)."""
    if not items:
        raise ScoringError(f"{source}: no items to score (expected {expected})")


def check_scoring_job(cfg: ScoringConfig, items: Sequence[WorkItem], scorer: Scorer, digest: ItemsDigest | None = None) -> dict[str, Any] | None:
    """``--out``, when given, does not hold *another* scoring job (other inputs, model, scorer settings or
    ``--items-per-chunk``: its ``_job.json`` fingerprint differs): one :class:`JobMismatchError` line naming
    the folder and what differs, unless ``--overwrite``. Reads only: a score command calls it with the scorer
    it will run (same settings) after :func:`check_scoring_items` and before ``Run.start``, so a refused
    job leaves no run folder and the other job's folder exactly as it was. ``run_job`` checks again.
    ``digest``: the items' :func:`~core.scoring.job.digest_items`, taken once by the command and passed on.
    Returns the ``_job.json`` record of ``--out`` it read (None: no ``--out``, no job there, or ``--overwrite``); the
    command passes it on to :func:`run_job_from_config` (``job=``), so the file is read once before the lock."""
    if cfg.out:
        return check_same_job(Path(cfg.out), items, scorer, cfg.items_per_chunk, cfg.overwrite, digest)
    return None


def run_job_from_config(items: Sequence[WorkItem], scorer: Scorer, cfg: ScoringConfig, default_out: str | os.PathLike | None = None,
                        digest: ItemsDigest | None = None, job: dict[str, Any] | None = None) -> JobSummary:
    """``run_job`` with the flags of ``cfg``; ``--out`` wins over ``default_out``; ``digest`` as for ``run_job``;
    ``job``: what :func:`check_scoring_job` returned for the same ``cfg``."""
    out = cfg.out or default_out
    if out is None:
        raise ScoringError("no output folder: pass --out DIR")
    return run_job(
        items,
        scorer,
        Path(out),
        engine=cfg.engine,
        workers=cfg.workers,
        address=cfg.address,
        items_per_chunk=cfg.items_per_chunk,
        progress=cfg.progress,
        overwrite=cfg.overwrite,
        digest=digest,
        job=job if cfg.out else None,  # check_scoring_job read --out's job file; a default_out is another folder
    )
