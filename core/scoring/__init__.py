"""Batch scoring: one resumable, exactly-once engine for every domain; local processes or Ray.

    from core.scoring import WorkItem, Scorer, run_job

    class MyScorer(Scorer):
        def __init__(self, run_dir): self.run_dir = str(run_dir)      # config only (pickled)
        def load(self): self.model = load_model(self.run_dir)        # once per worker / actor
        def score(self, item): return predict(self.model, item.path)  # -> DataFrame; raise = quarantine

    summary = run_job(items, MyScorer(run_dir), out_dir, engine="local", workers=2)
    df = read_output(out_dir)

See core/scoring/README.md.
"""

from core.scoring.cli import ScoringConfig, check_scoring_items, check_scoring_job, check_scoring_out, run_job_from_config
from core.scoring.engine import DEFAULT_ITEMS_PER_CHUNK, ENGINES, ray_init, ray_shutdown, run_job
from core.scoring.job import (
    WORK_ITEM_COLUMN,
    ItemsDigest,
    JobMismatchError,
    JobSummary,
    Scorer,
    ScorerLoadError,
    ScoringError,
    WorkItem,
    digest_items,
    file_items,
    frame_checksum,
    job_fingerprint,
    job_name,
    job_status,
    model_run_stamp,
    output_checksum,
    read_output,
    read_quarantine,
    row_range_items,
)

__all__ = [
    "WorkItem",
    "Scorer",
    "run_job",
    "JobSummary",
    "read_output",
    "read_quarantine",
    "file_items",
    "row_range_items",
    "ItemsDigest",
    "digest_items",
    "model_run_stamp",
    "job_fingerprint",
    "job_name",
    "job_status",
    "frame_checksum",
    "output_checksum",
    "ScoringConfig",
    "run_job_from_config",
    "check_scoring_out",
    "check_scoring_items",
    "check_scoring_job",
    "ScoringError",
    "JobMismatchError",
    "ScorerLoadError",
    "WORK_ITEM_COLUMN",
    "ENGINES",
    "DEFAULT_ITEMS_PER_CHUNK",
    "ray_init",
    "ray_shutdown",
]
