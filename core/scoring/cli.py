"""The standard scoring flags, as a dataclass mixin for a domain's score config.

    @dataclass
    class ScoreConfig(ScoringConfig, RunConfig):
        checkpoint: str | None = None

    cfg = parse_config(ScoreConfig, description=__doc__)
    summary = run_job_from_config(items, MyScorer(...), cfg, default_out=run_dir / "scores")

adds ``--engine {local,ray} --workers N --address HOST:PORT --out DIR --items-per-chunk K
--overwrite`` (and ``--no-progress``) to the domain's CLI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from core.scoring.engine import DEFAULT_ITEMS_PER_CHUNK, ENGINES, run_job
from core.scoring.job import JobSummary, Scorer, ScoringError, WorkItem

__all__ = ["ScoringConfig", "run_job_from_config"]


@dataclass
class ScoringConfig:
    engine: str = field(default="local", metadata={"help": "local: N worker processes on this machine; ray: a Ray Data actor pool (one model per actor)", "choices": list(ENGINES)})
    workers: int = field(default=1, metadata={"min": 1, "help": "local worker processes, or Ray actors (each loads the model once)"})
    address: str | None = field(default=None, metadata={"help": "Ray cluster to join (e.g. 10.0.0.5:6379 or 'auto'); default: start a private local Ray on 127.0.0.1"})
    out: str | None = field(default=None, metadata={"help": "output folder (partitioned Parquet + commit markers + quarantine); a rerun into it resumes"})
    items_per_chunk: int = field(default=DEFAULT_ITEMS_PER_CHUNK, metadata={"min": 1, "help": "work items per chunk (the unit of commit and of resume)"})
    overwrite: bool = field(default=False, metadata={"help": "discard an existing job in --out (e.g. inputs or scorer config changed) and start over"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})


def run_job_from_config(items: Sequence[WorkItem], scorer: Scorer, cfg: ScoringConfig, default_out: str | os.PathLike | None = None) -> JobSummary:
    """``run_job`` with the flags of ``cfg``; ``--out`` wins over ``default_out``."""
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
    )
