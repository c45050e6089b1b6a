"""Batch top-K for every user of a trained run, through the core scoring engine (resumable, local or Ray).

    python -m domains.recommendation.score                          # newest trained run, exact + FAISS HNSW, k=10
    python -m domains.recommendation.score --model-run <name> --k 20 --workers 2
    python -m domains.recommendation.score --engine ray --workers 2

A run of kind "job" of its own: by default named ``score-<model run>-k<k>-<index>-<8 hex>`` (no timestamp; the hex
digits are core's :func:`~core.scoring.job_name` of the job: the stamp of the model run's weights and config files, the
users, the settings), so rerunning the identical command after a crash resumes the unfinished chunks, and a model run
retrained in place under the same name is another job. The job identifies the model run the way medical's and finance's
do (``digest_items(items, model_run=run)``): an ``--out`` inside the training run is allowed (its own files are not
the model's) and its identical rerun is reused. The top-K Parquet
(partitioned + manifest + quarantine; library: :mod:`domains.recommendation.topk`) goes to
``<job run>/topk`` unless ``--out`` says otherwise, with ``_topk_summary.json`` (recall of the
approximate lists against exact over the users with training history, the index build time each worker
measured — ``null`` when a rerun found every chunk done — and users/s). Users without training history get the
popularity fallback (``fallback=True``, ``score`` empty, ``popularity_count`` set) in the exact and the FAISS lists
alike: the same list as ``recommend --user``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from core.cli import run_cli
from core.config import check_ranges
from core.io import atomic_write_json
from core.runs import Run
from core.scoring import ScoringError, check_scoring_items, check_scoring_job, check_scoring_out, digest_items, job_name, read_output, run_job_from_config
from domains.recommendation.config import ScoreConfig
from domains.recommendation.inference import resolve_two_tower_run
from domains.recommendation.topk import TopKScorer, approx_recall, user_work_items
from domains.recommendation.training import DOMAIN

__all__ = ["ScoreConfig", "score", "main"]


def score(cfg: ScoreConfig) -> dict:
    """Run the scoring job; returns the summary (also written to ``<out>/_topk_summary.json``)."""
    import faiss  # noqa: F401 - fail early with a clear message when missing

    check_ranges(cfg)  # --k, --users-per-item >= 1 (declared on the fields), before any job folder exists
    check_scoring_out(cfg)  # and --out (not a file, writable)
    model_run = resolve_two_tower_run(cfg.model_run, cfg.runs_dir)  # a sequence run: refused, naming its metrics
    if not (model_run / "feature_space.json").is_file():
        raise ScoringError(f"{model_run} is not a finished recommendation run (feature_space.json missing)")
    n_users = len(json.loads((model_run / "feature_space.json").read_text())["user_ids"])
    items = user_work_items(n_users, cfg.users_per_item)
    check_scoring_items(items, f"{model_run / 'feature_space.json'}", "at least one user in user_ids")  # before the run folder
    scorer = TopKScorer(str(model_run), cfg.k, cfg.index)
    digest = digest_items(items, model_run=model_run)  # one walk of the run's weights and config files per command, shared below
    job = check_scoring_job(cfg, items, scorer, digest)  # an --out holding another job: refused before the run folder, --out untouched
    if cfg.name is None:  # derived from the inputs and the model's stamp: the identical command resumes the same job, a retrained model is another
        suffix = job_name("score", items, scorer, cfg.items_per_chunk, model_run, digest=digest).rsplit("-", 1)[1][:8]
        cfg = dataclasses.replace(cfg, name=f"score-{model_run.name}-k{cfg.k}-{cfg.index}-{suffix}")
    with Run.start(DOMAIN, cfg, command="score", kind="job") as run:
        out_dir = Path(cfg.out) if cfg.out else run.dir / "topk"
        t0 = time.perf_counter()
        summary = run_job_from_config(items, scorer, cfg, default_out=out_dir, digest=digest, job=job)  # the record read above, handed on
        secs = time.perf_counter() - t0
        out = read_output(out_dir)
        # what the workers of this run measured (none when every chunk was done by an earlier run)
        builds = [float(info["index_build_seconds"]) for info in summary.worker_load_info.values() if "index_build_seconds" in info]
        build_s = float(np.mean(builds)) if builds else None
        result = {"model_run": str(model_run), "out": str(out_dir), "users": n_users, "k": cfg.k, "index": cfg.index,
                  "rows": int(len(out)), "seconds": secs, "users_per_s": n_users / max(secs, 1e-9),
                  "index_build_seconds": build_s, "index_build_seconds_per_worker": builds,
                  "approx_recall_vs_exact": approx_recall(out, [f"faiss-{cfg.index}"]) if cfg.index != "none" else {},
                  "quarantined": summary.items_quarantined, "engine": cfg.engine, "workers": cfg.workers}
        atomic_write_json(out_dir / "_topk_summary.json", result)
        print(summary.line())
        built = f"index build {build_s * 1000:.1f} ms (mean of {len(builds)} worker(s))" if builds else "no index built in this run"
        print(f"{n_users} users, k={cfg.k}: recall of {cfg.index} vs exact = {result['approx_recall_vs_exact']}; {built}")
        print(f"Top-K Parquet: {out_dir}")
        run.finish({k: v for k, v in result.items() if isinstance(v, (int, float, str)) and v is not None})
    return result


def main(argv: list[str] | None = None) -> int:
    return run_cli(ScoreConfig, score, argv, doc=__doc__, prog="python -m domains.recommendation.score")


if __name__ == "__main__":
    sys.exit(main())
