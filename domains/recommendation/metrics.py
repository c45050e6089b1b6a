"""Ranking metrics over top-K lists, plus catalogue coverage and popularity bias.

All functions take ``recs`` — an ``(n_users, K)`` integer array of item indices, best first (``-1``
pads a list shorter than K) — and ``truth`` — a list of ``n_users`` arrays of relevant item indices
(the user's test items). Users with no test item are skipped (not counted as zero).

Definitions (binary relevance, averaged over users with ≥ 1 test item):

* ``precision@K`` = hits in the top K / K;
* ``recall@K`` = hits in the top K / number of the user's test items;
* ``ndcg@K`` = DCG@K / IDCG@K with DCG = Σ_{r=1..K} rel_r / log2(r + 1) and IDCG the DCG of an ideal
  list, i.e. min(K, |test items|) hits at the top. This is the standard definition and the one the
  Microsoft Recommenders ``ndcg_at_k`` computes with binary relevance (its ideal DCG is taken over the
  user's test items, truncated at K) — numbers are comparable to its ML-100K benchmark table;
* ``map@K`` = Σ_{r: rel_r=1} precision@r / min(K, |test items|) (the usual truncated average precision;
  note Microsoft Recommenders' ``map_at_k`` divides by |test items| without truncation, which gives
  smaller values, reported here as ``map_ms@K`` for comparison);
* ``coverage@K`` = distinct items in all top-K lists / catalogue size;
* popularity bias: ``arp@K`` = mean training popularity (fraction of training users who interacted)
  of recommended items, and ``pop_lift@K`` = that mean divided by the same mean over the test items —
  1.0 means the recommender is as popularity-skewed as what users actually consumed, > 1 means more.
"""

from __future__ import annotations

import numpy as np

__all__ = ["hit_matrix", "ranking_metrics", "top_k", "mask_excluded"]


def hit_matrix(recs: np.ndarray, truth: list[np.ndarray], n_items: int) -> np.ndarray:
    """(n_users, K) boolean: is recommendation r of user u one of u's test items."""
    recs = np.asarray(recs, dtype=np.int64)
    n_users, k = recs.shape
    lens = np.array([len(t) for t in truth], dtype=np.int64)
    if len(truth) != n_users:
        raise ValueError(f"recs has {n_users} users but truth has {len(truth)}")
    uid = np.repeat(np.arange(n_users, dtype=np.int64), lens)
    keys_truth = uid * (n_items + 1) + (np.concatenate(truth).astype(np.int64) if lens.sum() else np.empty(0, np.int64))
    keys_recs = np.arange(n_users, dtype=np.int64)[:, None] * (n_items + 1) + recs
    hits = np.isin(keys_recs, keys_truth) & (recs >= 0)
    return hits


def ranking_metrics(recs: np.ndarray, truth: list[np.ndarray], n_items: int, k: int = 10,
                    item_popularity: np.ndarray | None = None) -> dict[str, float]:
    """Every metric of the module docstring at cut-off ``k`` (``recs`` may be longer; it is cut)."""
    recs = np.asarray(recs, dtype=np.int64)[:, :k]
    if recs.shape[1] < k:  # a catalogue smaller than k: the lists end early (-1 pads, as documented)
        recs = np.pad(recs, ((0, 0), (0, k - recs.shape[1])), constant_values=-1)
    hits = hit_matrix(recs, truth, n_items).astype(np.float64)
    n_rel = np.array([len(t) for t in truth], dtype=np.float64)
    keep = n_rel > 0
    if not keep.any():
        raise ValueError("no user has a test item; nothing to evaluate")
    hits, n_rel, recs_k = hits[keep], n_rel[keep], recs[keep]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(1)
    ideal_n = np.minimum(n_rel, k).astype(int)
    idcg = np.cumsum(discounts)[ideal_n - 1]
    n_hits = hits.sum(1)
    prec_at_r = np.cumsum(hits, 1) / np.arange(1, k + 1)
    ap_sum = (prec_at_r * hits).sum(1)
    out = {
        f"precision@{k}": float((n_hits / k).mean()),
        f"recall@{k}": float((n_hits / n_rel).mean()),
        f"ndcg@{k}": float((dcg / idcg).mean()),
        f"map@{k}": float((ap_sum / np.minimum(n_rel, k)).mean()),
        f"map_ms@{k}": float((ap_sum / n_rel).mean()),
        f"coverage@{k}": float(len(np.unique(recs[recs >= 0])) / n_items),
        "users_evaluated": int(keep.sum()),
    }
    if item_popularity is not None:
        pop = np.asarray(item_popularity, dtype=np.float64)
        valid = recs_k >= 0
        arp = float(pop[recs_k[valid]].mean())
        test_items = np.concatenate([t for t, kp in zip(truth, keep) if kp]).astype(np.int64)
        out[f"arp@{k}"] = arp
        out[f"pop_lift@{k}"] = float(arp / max(pop[test_items].mean(), 1e-12))
    return out


def top_k(scores, k: int, exclude: list[np.ndarray] | None = None):
    """Top ``k`` item indices per row of a (n_users, n_items) torch score matrix, with each user's
    ``exclude`` items (e.g. seen in training) removed. Returns (indices, scores) as numpy arrays."""
    import torch

    scores = scores.clone() if isinstance(scores, torch.Tensor) else torch.as_tensor(scores)
    if exclude is not None:
        mask_excluded(scores, exclude)
    k = min(k, scores.shape[1])
    val, idx = torch.topk(scores, k, dim=1)
    idx = idx.numpy().copy()
    val = val.numpy().copy()
    idx[~np.isfinite(val)] = -1
    return idx, val


def mask_excluded(scores, exclude: list[np.ndarray]):
    """Set row r's ``exclude[r]`` columns of a (n_users, n_items) torch score matrix to -inf, in place."""
    import torch

    lens = torch.tensor([len(e) for e in exclude], dtype=torch.long)
    if int(lens.sum()):
        rows = torch.repeat_interleave(torch.arange(len(exclude)), lens)
        cols = torch.as_tensor(np.concatenate(exclude).astype(np.int64))
        scores[rows, cols] = float("-inf")
    return scores
