"""Batch top-K for every user of a trained run, through the core scoring engine (resumable, local or Ray).

    python -m domains.recommendation.score                          # latest run, exact + FAISS, k=10
    python -m domains.recommendation.score --run-dir runs/recommendation/<name> --k 20 --workers 2
    python -m domains.recommendation.score --engine ray --workers 2

Work items are ranges of user rows (``--users-per-item``). Each output row is
``user_id, rank, item_id, title, score, method, fallback`` for ``method`` in ``exact`` (brute-force
inner product over the whole catalogue) and ``faiss`` (``--index``: ``hnsw`` = IndexHNSWFlat on inner
product, ``ivf`` = IndexIVFFlat; built once per worker). Seen items are excluded in both: the
approximate search fetches ``k + max seen`` candidates and filters. Output goes to
``<run>/scores/topk`` (partitioned Parquet + manifest + quarantine; a rerun skips finished chunks);
``<out>/_topk_summary.json`` reports the recall of the approximate lists against the exact ones,
the index build time each worker measured (``null`` when a rerun found every chunk done) and users/s.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.cli import run_cli
from core.config import DeviceConfig, ResumeConfig, RunConfig, SeedConfig, TrackingConfig
from core.io import atomic_write_json
from core.runs import RunNotFoundError, latest_run_dir
from core.scoring import Scorer, ScoringConfig, ScoringError, WorkItem, read_output, run_job_from_config

INDEX_TYPES = ("hnsw", "ivf", "flat", "none")


@dataclass
class ScoreConfig(ScoringConfig, TrackingConfig, SeedConfig, DeviceConfig, ResumeConfig, RunConfig):
    run_dir: str | None = field(default=None, metadata={"help": "trained run (default: <runs-dir>/recommendation/latest)"})
    k: int = field(default=10, metadata={"help": "items per user"})
    index: str = field(default="hnsw", metadata={"help": "approximate index next to the exact search: hnsw, ivf, flat (exact FAISS) or none", "choices": list(INDEX_TYPES)})
    users_per_item: int = field(default=256, metadata={"help": "users per work item"})


def build_index(vectors: np.ndarray, kind: str, seed: int = 0):
    import faiss

    d = vectors.shape[1]
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 64
    elif kind == "ivf":
        nlist = max(1, int(np.sqrt(len(x))))
        quant = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(x)
        index.nprobe = max(1, nlist // 4)
    elif kind == "flat":
        index = faiss.IndexFlatIP(d)
    else:
        raise ValueError(f"unknown index {kind!r}; expected one of {INDEX_TYPES}")
    index.add(x)
    return index


def drop_seen(I: np.ndarray, D: np.ndarray, seen: list[np.ndarray], k: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` candidates of each row of a FAISS result (``I``, ``D``) that are neither padding
    (-1) nor in that row's ``seen`` items, in search order; lists shorter than ``k`` pad with -1 / NaN."""
    n = len(I)
    lens = np.array([len(s) for s in seen], dtype=np.int64)
    seen_keys = np.repeat(np.arange(n, dtype=np.int64), lens) * (n_items + 1) + (np.concatenate(seen).astype(np.int64) if lens.sum() else 0)
    keys = np.arange(n, dtype=np.int64)[:, None] * (n_items + 1) + I
    ok = (I >= 0) & ~np.isin(keys, seen_keys)
    pos = np.cumsum(ok, 1) - 1  # position of each kept candidate in its row's filtered list
    r, c = np.nonzero(ok & (pos < k))
    a_idx = np.full((n, k), -1, dtype=np.int64)
    a_val = np.full((n, k), np.nan, dtype=np.float32)
    a_idx[r, pos[r, c]] = I[r, c]
    a_val[r, pos[r, c]] = D[r, c]
    return a_idx, a_val


class TopKScorer(Scorer):
    version = "1"

    def __init__(self, run_dir: str, k: int, index: str):
        self.run_dir = str(run_dir)
        self.k = int(k)
        self.index = index

    def load(self) -> None:
        from domains.recommendation.inference import Recommender

        self._rec = Recommender.load(self.run_dir)
        self._faiss = None
        if self.index != "none":
            t0 = time.perf_counter()
            self._faiss = build_index(self._rec.item_vecs.numpy(), self.index)
            # reaches the driver with the chunk results (JobSummary.worker_load_info)
            self._load_info = {"index_build_seconds": time.perf_counter() - t0}

    def score(self, item: WorkItem) -> pd.DataFrame:
        rec = self._rec
        rows = np.arange(item.start, item.stop)
        if item.stop > rec.space.n_users or item.start < 0:
            raise ValueError(f"user rows {item.start}..{item.stop} outside 0..{rec.space.n_users}")
        idx, val = rec.recommend_rows(rows, self.k)
        frames = [self._frame(rows, idx, val, "exact")]
        if self._faiss is not None:
            seen = [rec.seen.get(rec.space.user_ids[r], np.empty(0, np.int64)) for r in rows]
            q = np.ascontiguousarray(rec.user_vecs[rows].numpy(), dtype=np.float32)
            D, I = self._faiss.search(q, min(self.k + max(map(len, seen), default=0), rec.space.n_items))
            a_idx, a_val = drop_seen(I, D, seen, self.k, rec.space.n_items)
            frames.append(self._frame(rows, a_idx, a_val, f"faiss-{self.index}"))
        return pd.concat(frames, ignore_index=True)

    def _frame(self, rows, idx, val, method) -> pd.DataFrame:
        rec = self._rec
        n, k = idx.shape
        flat = idx.reshape(-1)
        valid = flat >= 0
        items = rec.items_df
        ids = np.array(rec.space.user_ids, dtype=object)[np.repeat(rows, k)]
        df = pd.DataFrame({"user_id": ids.astype(str), "rank": np.tile(np.arange(1, k + 1), n),
                           "item_id": np.where(valid, np.asarray(items["item_id"].astype(str))[np.clip(flat, 0, None)], None),
                           "title": np.where(valid, np.asarray(items["title"])[np.clip(flat, 0, None)], None),
                           "score": val.reshape(-1).astype(np.float32), "method": method})
        df["fallback"] = np.repeat([rec.space.user_ids[r] not in rec.seen for r in rows], k)
        return df[valid].reset_index(drop=True)


def approx_recall(out: pd.DataFrame) -> dict[str, float]:
    """Recall@k of each approximate method's lists against the exact lists (per user, averaged)."""
    exact = out[out["method"] == "exact"].groupby("user_id")["item_id"].apply(set)
    res = {}
    for method in sorted(set(out["method"]) - {"exact"}):
        approx = out[out["method"] == method].groupby("user_id")["item_id"].apply(set)
        r = [len(exact[u] & approx.get(u, set())) / max(len(exact[u]), 1) for u in exact.index]
        res[method] = float(np.mean(r))
    return res


def score(cfg: ScoreConfig) -> dict:
    """Run the scoring job; returns the summary (also written to ``<out>/_topk_summary.json``)."""
    import faiss  # noqa: F401 - fail early with a clear message when missing

    try:
        run_dir = Path(cfg.run_dir) if cfg.run_dir else latest_run_dir("recommendation", cfg.runs_dir)
    except RunNotFoundError as e:
        raise ScoringError(str(e)) from e
    space = json.loads((run_dir / "feature_space.json").read_text()) if (run_dir / "feature_space.json").is_file() else None
    if space is None:
        raise ScoringError(f"{run_dir} is not a finished recommendation run (feature_space.json missing)")
    n_users = len(space["user_ids"])
    items = [WorkItem(id=f"users-{s:07d}", start=s, stop=min(s + cfg.users_per_item, n_users)) for s in range(0, n_users, cfg.users_per_item)]
    out_dir = Path(cfg.out) if cfg.out else run_dir / "scores" / "topk"
    scorer = TopKScorer(str(run_dir.resolve()), cfg.k, cfg.index)
    t0 = time.perf_counter()
    summary = run_job_from_config(items, scorer, cfg, default_out=out_dir)
    secs = time.perf_counter() - t0
    out = read_output(out_dir)
    # what the workers of this run measured (none when every chunk was done by an earlier run)
    builds = [float(info["index_build_seconds"]) for info in summary.worker_load_info.values() if "index_build_seconds" in info]
    build_s = float(np.mean(builds)) if builds else None
    result = {"run_dir": str(run_dir), "out": str(out_dir), "users": n_users, "k": cfg.k, "index": cfg.index,
              "rows": int(len(out)), "seconds": secs, "users_per_s": n_users / max(secs, 1e-9),
              "index_build_seconds": build_s, "index_build_seconds_per_worker": builds,
              "approx_recall_vs_exact": approx_recall(out) if cfg.index != "none" else {},
              "quarantined": summary.items_quarantined, "engine": cfg.engine, "workers": cfg.workers}
    atomic_write_json(out_dir / "_topk_summary.json", result)
    print(summary.line())
    built = f"index build {build_s * 1000:.1f} ms (mean of {len(builds)} worker(s))" if builds else "no index built in this run"
    print(f"{n_users} users, k={cfg.k}: recall of {cfg.index} vs exact = {result['approx_recall_vs_exact']}; {built}")
    print(f"Top-K Parquet: {out_dir}")
    return result


def main(argv: list[str] | None = None) -> int:
    return run_cli(ScoreConfig, score, argv, doc=__doc__, prog="python -m domains.recommendation.score", user_errors=(ScoringError, ValueError,))


if __name__ == "__main__":
    sys.exit(main())
