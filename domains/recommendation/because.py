""""Because you watched ...": the history items that contribute most to each recommended item.

    from domains.recommendation.because import because_you_watched
    because_you_watched(rec, user_id, k=10, top=3)   # one row per (recommended item, history item)

Method (faithful to the two-tower): the user tower consumes the user's training history as a
mean-pooled embedding bag (``TwoTowerConfig.history``). The contribution of history item ``h`` to
recommended item ``i`` is the leave-one-out difference of the model's score

    contribution(h, i) = s(u(H), v_i) - s(u(H \\ {h}), v_i)

where ``u(H)`` is the user tower run on the full history and ``u(H \\ {h})`` the same tower with
``h`` removed from its history bag (all other user features unchanged); ``s`` is the serving score
(``u·v``, as :meth:`Recommender.recommend` ranks). A positive contribution means the item pushed the
recommendation up. The bag is pooled once; each "all but h" bag follows from its sums (mean, sqrt and
softmax-weighted pooling are ratios of sums), so only the layers after pooling run once per history item
(batched), no retraining: linear in the history, where rebuilding the bags was quadratic.

A model trained without the history feature cannot be explained by its history this way; there the
rows are the history items most similar to the recommended item in the item tower's space
(``method="item-similarity"``), which is labelled as a proxy, not an attribution.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from core.errors import UserInputError
from domains.recommendation.checks import ArgumentError, found, whole_number
from domains.recommendation.inference import Recommender
from domains.recommendation.model import TwoTower

__all__ = ["because_you_watched", "history_contributions", "because_summary", "LEAVE_ONE_OUT", "ITEM_SIMILARITY"]

LEAVE_ONE_OUT = "leave-one-out"
ITEM_SIMILARITY = "item-similarity"


@torch.no_grad()
def history_contributions(model: TwoTower, batcher, user_row: int, history: np.ndarray, item_vecs: torch.Tensor,
                          batch: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(full scores (n,), contributions (len(history), n)) for the ``n`` rows of ``item_vecs`` (pass only the items to
    explain: the contributions are len(history) × n floats) by leaving each history item out of the user tower's history bag. ``history`` are the item rows in ``batcher``'s history of
    ``user_row`` (duplicates are left out together). The bag is pooled once and the "all but one item" bags are formed
    from its sums (:meth:`TwoTower.user_deep_leaving_out`): rebuilding n bags of n - 1 ids cost n² id lookups (73-115 s
    for a user with 11,250 items). The wide part's score is linear in the 0/1 history, so leaving ``h`` out removes
    its term ``c·B[h, i]`` exactly."""
    was = model.training
    model.eval()
    kjt = batcher.user_kjt(torch.tensor([user_row]))
    full = model.user_embedding(kjt)[0]
    base = item_vecs @ full
    hist = torch.as_tensor(np.asarray(history, dtype=np.int64)).reshape(-1)
    deep_dim = item_vecs.shape[1] - model.wide_dim
    u = model.user_deep_leaving_out(kjt, hist + 1, batch=batch)  # the history table's index is item row + 1
    if model.wide_dim and model.cfg.wide_gate:
        u = u * model.deep_gate
    without = u @ item_vecs[:, :deep_dim].T
    if model.wide_dim:  # full[deep_dim:] = c·x (x the 0/1 history); leaving h out zeroes x[h]
        wide = full[deep_dim:]
        without = without + (item_vecs[:, deep_dim:] @ wide)[None, :] - wide[hist][:, None] * item_vecs[:, deep_dim + hist].T
    model.train(was)
    return base, base[None, :] - without


def because_you_watched(rec: Recommender, user_id, k: int | None = None, top: int = 3, item_ids=None) -> pd.DataFrame:
    """For each of the user's top-``k`` recommendations (or the given ``item_ids``), the ``top``
    history items that contribute most to its score. Columns: ``item_id, title, score, rank,
    because_item_id, because_title, contribution, share, method``; ``share`` is the contribution
    over the sum of the positive contributions to that item. Empty for users the model cannot score
    (unknown users, users without history: their recommendations are a popularity fallback)."""
    cols = ["item_id", "title", "score", "rank", "because_item_id", "because_title", "contribution", "share", "method"]
    if not isinstance(rec, Recommender):
        raise ArgumentError(f"rec {found(rec)}: expected a loaded recommender (api.load_recommender(run_dir))")
    top = whole_number(top, "top", low=1)
    if item_ids is not None and (isinstance(item_ids, (str, bytes)) or not hasattr(item_ids, "__iter__")):
        raise ArgumentError(f"item_ids {found(item_ids)}: expected a list of item ids (or None for the user's top-k)")
    row = rec.user_row(user_id)
    if row is None or not rec.has_history([row])[0]:  # the popularity fallback: nothing the model explains
        return pd.DataFrame(columns=cols)
    uid = rec.space.user_ids[row]
    if not isinstance(rec.model, TwoTower):
        raise UserInputError(f"'because you watched' explains the two-tower model; this run's model is {type(rec.model).__name__}")
    hist = np.unique(rec.seen[uid])
    if item_ids is None:
        recs = rec.recommend(user_id, k=k)
        targets = np.array([rec.item_row(i) for i in recs["item_id"]], dtype=np.int64)
    else:
        targets = np.array([rec.item_row(i) for i in item_ids], dtype=np.int64)
    # only the targets' columns: (history × catalogue) floats were 7.5 GB for a user with 37,500 items of a 50,000-item catalogue
    target_vecs = rec.item_vecs[torch.as_tensor(targets)]
    if rec.model.cfg.history:
        base, contrib = history_contributions(rec.model, rec.batcher, row, hist, target_vecs)
        c = contrib.numpy()  # (n_hist, n_targets)
        method = LEAVE_ONE_OUT
    else:
        base = target_vecs @ rec.user_vecs[row]
        c = (rec.item_vecs[torch.as_tensor(hist)] @ target_vecs.T).numpy()
        method = ITEM_SIMILARITY
    base = base.numpy()  # the targets' scores, in the order of targets
    rows = []
    for j, t in enumerate(targets):
        cj = c[:, j]
        pos = float(np.clip(cj, 0, None).sum())
        for h in np.argsort(-cj, kind="stable")[:top]:
            rows.append({"item_id": rec.items_df["item_id"].iloc[t], "title": rec.items_df["title"].iloc[t], "score": float(base[j]),
                         "rank": j + 1, "because_item_id": rec.items_df["item_id"].iloc[hist[h]],
                         "because_title": rec.items_df["title"].iloc[hist[h]], "contribution": float(cj[h]),
                         "share": float(cj[h]) / pos if pos > 0 and cj[h] > 0 else 0.0, "method": method})
    return pd.DataFrame(rows, columns=cols)


def because_summary(table: pd.DataFrame, n: int = 2, width: int = 60) -> dict:
    """item_id -> a short "title A; title B" text of its top-``n`` positive "because" items (for printing)."""
    need = ["item_id", "contribution", "because_title"]
    if not isinstance(table, pd.DataFrame) or not set(need) <= set(table.columns):
        raise ArgumentError(f"table {found(table)}: expected the DataFrame of because_you_watched (columns {need})")
    n, width = whole_number(n, "n", low=1), whole_number(width, "width", low=2)
    out = {}
    for item, g in table.groupby("item_id", sort=False):
        g = g[g["contribution"] > 0].head(n)
        s = "; ".join(str(t) for t in g["because_title"])
        out[item] = s if len(s) <= width else s[:width - 1] + "…"
    return out
