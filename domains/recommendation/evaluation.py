"""Evaluating score matrices and trained runs on a split: the two-tower, the baselines, a saved run.

    evaluate_scores(scores, seen, truth, n_items, k)   # any (n_users, n_items) score matrix -> metrics
    reevaluate_run(run_dir)                            # the saved model's test metrics, re-derived from its weights

Definitions of the metrics: :mod:`domains.recommendation.metrics`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.errors import UserInputError
from domains.recommendation.checks import path_arg
from domains.recommendation.metrics import ranking_metrics, top_k
from domains.recommendation.model import all_embeddings

__all__ = ["evaluate_scores", "model_scores", "load_metrics", "reevaluate_run", "ANCHORS_NDCG10", "RunFilesMissing", "RunDataChanged", "check_same_split"]

# Microsoft Recommenders' published ML-100K table (python_stratified_split, ratio 0.75, seed 42; NDCG@10)
ANCHORS_NDCG10 = {"ms_recommenders_bpr": 0.442, "ms_recommenders_bivae": 0.475, "popularity_approx": 0.22}


class RunFilesMissing(UserInputError, FileNotFoundError):
    """A run folder lacks a file a finished recommendation training run writes."""


def evaluate_scores(scores: torch.Tensor, seen: list[np.ndarray], truth: list[np.ndarray], n_items: int, k: int,
                    popularity: np.ndarray | None = None) -> dict[str, float]:
    """Rank every user's unseen items by ``scores`` and compare the top ``k`` with ``truth``."""
    recs, _ = top_k(scores, k, seen)
    return ranking_metrics(recs, truth, n_items, k, popularity)


def model_scores(model, prep) -> torch.Tensor:
    """Every user × every item score of a two-tower model (``prep``: anything with ``batcher`` and ``space``)."""
    U, V = all_embeddings(model, prep.batcher, prep.space.n_users, prep.space.n_items)
    return U @ V.T


def load_metrics(run_dir: str | Path) -> pd.DataFrame:
    """The model-vs-baselines table a training run wrote (``eval_metrics.parquet``)."""
    p = path_arg(run_dir, "run_dir", "a recommendation training run folder") / "eval_metrics.parquet"
    if not p.is_file():
        raise RunFilesMissing(f"{run_dir} has no eval_metrics.parquet; train with `python -m domains.recommendation.train`")
    return pd.read_parquet(p)


class RunDataChanged(UserInputError, ValueError):
    """The run's data source no longer gives the split the run was trained and tested on."""


def check_same_split(run_dir: Path, train: pd.DataFrame, test: pd.DataFrame, data: str) -> None:
    """:class:`RunDataChanged` unless ``train``/``test`` are the run's own split: the training rows saved with the
    run (``train.parquet``, compared as (user, item) pairs) and the test row count of its ``split.json``."""
    saved = pd.read_parquet(run_dir / "train.parquet", columns=["user_id", "item_id"])
    info = json.loads((run_dir / "split.json").read_text()) if (run_dir / "split.json").is_file() else {}
    pairs = lambda df: pd.MultiIndex.from_arrays([df["user_id"].astype(str), df["item_id"].astype(str)]).sort_values()  # noqa: E731
    same = len(saved) == len(train) and pairs(saved).equals(pairs(train)) and int(info.get("test_rows", len(test))) == len(test)
    if not same:
        raise RunDataChanged(f"{data}: the data no longer gives the split run {run_dir.name} was trained on ({len(train)} training / {len(test)} test rows "
                             f"now, {len(saved)} / {info.get('test_rows', '?')} when it was trained): the file changed after training; "
                             "evaluate needs the data the run was trained on")


def reevaluate_run(run_dir: str | Path) -> dict:
    """Re-derive the two-tower's test metrics from a run's saved weights and its recorded split, and
    compare with the table the run wrote. Returns ``{"k", "split", "reevaluated", "table", "difference"}``."""
    from domains.recommendation.data import group_by_user, load_dataset, split_interactions
    from domains.recommendation.inference import Recommender

    run_dir = Path(run_dir)
    table = load_metrics(run_dir)
    tcfg = json.loads((run_dir / "config.json").read_text())
    k = int(tcfg.get("k", 10))
    split = tcfg.get("split") or tcfg.get("protocol", "ms")
    rec = Recommender.load(run_dir)
    data = load_dataset(tcfg.get("data", "ml-100k"), date_order=tcfg.get("date_order", "auto"))  # the run's slash-date order
    sp = split_interactions(data.interactions, split, int(tcfg.get("split_seed", 42)))
    check_same_split(run_dir, sp.train, sp.test, tcfg.get("data", "ml-100k"))
    uidx, iidx = rec.space.user_index(), rec.space.item_index()
    truth = group_by_user(sp.test["user_id"].map(uidx).to_numpy(np.int64), sp.test["item_id"].map(iidx).to_numpy(np.int64), rec.space.n_users)
    # the serving top-k (seen items excluded); its popularity fallback only touches users without
    # training history, and those have no test items under either protocol, so the metrics are the model's
    recs, _ = rec.recommend_rows(np.arange(rec.space.n_users), k)
    again = ranking_metrics(recs, truth, rec.space.n_items, k, rec.popularity / rec.space.n_users)
    saved = table[table["model"] == "two_tower"].iloc[0]
    return {"k": k, "split": sp.info["split"], "split_seed": int(tcfg.get("split_seed", 42)), "reevaluated": again, "table": table,
            "difference": abs(again[f"ndcg@{k}"] - float(saved[f"ndcg@{k}"]))}
