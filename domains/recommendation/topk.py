"""Batch top-K over a trained run's users: exact (matmul + top-k) and FAISS (HNSW / IVF / flat), as a
:class:`core.scoring.Scorer` — the library under ``python -m domains.recommendation.score``.

Each output row is ``user_id, rank, item_id, title, score, method, fallback, popularity_count`` for
``method`` in ``exact`` (brute-force inner product over the whole catalogue) and ``faiss-<index>``.
Seen items are excluded in both: the approximate search fetches ``k + max seen`` candidates and
filters (:func:`drop_seen`). Users without training history get the most popular unseen items
(``fallback=True``, ``score`` empty, ``popularity_count`` = training interactions of the item) in both: the
same list, :meth:`~domains.recommendation.inference.Recommender.recommend_rows`'s, as ``recommend --user`` gives
(the index is not asked for them), and :func:`approx_recall` measures the index on the other users only.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from core.scoring import Scorer, WorkItem
from domains.recommendation.config import INDEX_TYPES
from domains.recommendation.inference import POPULARITY_COLUMN

__all__ = ["build_index", "drop_seen", "TopKScorer", "approx_recall", "user_work_items"]


def user_work_items(n_users: int, users_per_item: int) -> list[WorkItem]:
    """Ranges of user rows, one work item each: rows ``[start, stop)`` of a training run's users. They carry no file:
    the score command stamps the run itself (``digest_items(items, model_run=run)``, core's model-run stamp of its
    weights and config files), so a run folder replaced by another with as many users (retrained under the same name,
    copied over) is another job, not a finished one whose old lists are served again."""
    return [WorkItem(id=f"users-{s:07d}", start=s, stop=min(s + users_per_item, n_users)) for s in range(0, n_users, users_per_item)]


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
    version = "3"  # 2: fallback rows carry popularity_count, score empty; 3: the FAISS list of a fallback user is the exact one (popularity)

    def __init__(self, run_dir: str, k: int, index: str):
        self.run_dir = str(run_dir)
        self.k = int(k)
        self.index = index

    def load(self) -> None:
        from domains.recommendation.inference import Recommender

        self._rec = Recommender.load(self.run_dir)
        self._faiss = None
        untrained = self._rec.untrained  # items in no ranked list (model.untrained_id_mask): not in the index either
        self._ranked = None if untrained is None else np.flatnonzero(~untrained.numpy())
        if self.index != "none":
            t0 = time.perf_counter()
            vecs = self._rec.item_vecs.numpy()
            self._faiss = build_index(vecs if self._ranked is None else vecs[self._ranked], self.index)
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
            D, I = self._faiss.search(q, min(self.k + max(map(len, seen), default=0), self._faiss.ntotal))
            if self._ranked is not None:  # index positions -> item rows
                I = np.where(I >= 0, self._ranked[np.clip(I, 0, None)], -1)
            a_idx, a_val = drop_seen(I, D, seen, self.k, rec.space.n_items)
            # a user without training history is served by popularity whatever the engine: the exact path's list, not the
            # index's answer for a vector no list of that user uses (it gave another list than recommend --user, its
            # inner products in popularity_count)
            fallback = ~rec.has_history(rows)
            if fallback.any():
                width = idx.shape[1]  # min(k, n_items)
                a_idx[fallback], a_val[fallback] = -1, np.nan
                a_idx[fallback, :width], a_val[fallback, :width] = idx[fallback], val[fallback]
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
        fallback = np.repeat(~rec.has_history(rows), k)
        df["fallback"] = fallback
        # users without history get the most popular items: a count, not a model score (its own column)
        df[POPULARITY_COLUMN] = np.where(fallback, df["score"], np.nan).astype(np.float32)
        df.loc[fallback, "score"] = np.nan
        return df[valid].reset_index(drop=True)


def approx_recall(out: pd.DataFrame, methods: list[str] | None = None) -> dict[str, float]:
    """Recall@k of each approximate method's lists against the exact lists (per user, averaged). ``methods``:
    the approximate methods that were run — one that returned no row at all (every candidate it found was a
    seen item) gets 0.0 instead of going missing. Users served the popularity fallback (``fallback`` rows) are left
    out: the index does not rank them, their lists are the exact ones; None when every user is one."""
    if "fallback" in out:
        out = out[~out["fallback"].astype(bool)]
    exact = out[out["method"] == "exact"].groupby("user_id")["item_id"].apply(set)
    res = {}
    for method in sorted((set(out["method"]) | set(methods or [])) - {"exact"}):
        approx = out[out["method"] == method].groupby("user_id")["item_id"].apply(set)
        r = [len(exact[u] & approx.get(u, set())) / max(len(exact[u]), 1) for u in exact.index]
        res[method] = float(np.mean(r)) if r else None
    return res
