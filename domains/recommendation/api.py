"""The recommendation page's contract with this domain (imported statically by
``dashboards/views/recommendation.py``). Nothing here trains.

    run = recommendation_run(run_dir)        # RecommendationRun: .has_model
    rec = load_recommender(run_dir)          # a RecommenderView: .users() .history(u) .recommend(u, k)
                                             #   .similar_items(i, k) .cold_start_item(title, genres, k_users) .items_df .users_df
    genre_vocabulary(rec)                    # the genres its item tower knows
    load_metrics(run_dir)                    # DataFrame: model vs baselines (ndcg@10, recall@10, ...)
    training_report(run_dir)                 # TrainingReport: validation curves, chosen epoch, seed spread

Recommendations are DataFrames ``item_id, title, genres, year, score, popularity_count, fallback,
reason``: model rows have a ``score``; fallback rows (a user the model cannot score) have no score
and carry the item's training-interaction count in :data:`POPULARITY_COLUMN` instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from core.runs import iter_metrics
from domains.recommendation.evaluation import load_metrics
from domains.recommendation.inference import POPULARITY_COLUMN, Recommender, UnknownItemError

__all__ = ["RecommenderView", "RecommendationRun", "TrainingReport", "recommendation_run", "load_recommender", "genre_vocabulary",
           "load_metrics", "training_report", "Recommender", "UnknownItemError", "POPULARITY_COLUMN"]


class RecommenderView(Protocol):
    """What the page asks of a loaded recommender (``inference.Recommender`` implements it)."""

    items_df: pd.DataFrame  # item_id, title, genres, year, ...
    users_df: pd.DataFrame  # user_id, age, gender, occupation, ... (may be empty)

    def users(self) -> list: ...

    def history(self, user_id: Any) -> pd.DataFrame: ...

    def recommend(self, user_id: Any, k: int | None = None, exclude_seen: bool = True) -> pd.DataFrame: ...

    def similar_items(self, item_id: Any, k: int = 10) -> pd.DataFrame: ...

    def cold_start_item(self, title: str, genres: list[str], k_users: int = 20, year: int = -1) -> pd.DataFrame: ...


@dataclass(frozen=True)
class RecommendationRun:
    path: Path
    has_model: bool


@dataclass
class TrainingReport:
    """How a run chose its model (issue 16.8): the validation curves per epoch, the epoch early
    stopping kept, and the spread over seeds of the model and the baselines when the run has it."""

    curves: pd.DataFrame = field(default_factory=pd.DataFrame)  # index: epoch; columns: val_* metrics (and train loss)
    chosen_epoch: int | None = None
    selection_metric: str | None = None  # the validation metric the epoch was chosen on
    seed_spread: pd.DataFrame = field(default_factory=pd.DataFrame)  # model, metric, mean, sd, n_seeds

    @property
    def empty(self) -> bool:
        return self.curves.empty and self.chosen_epoch is None and self.seed_spread.empty


def recommendation_run(run_dir: str | Path) -> RecommendationRun:
    run_dir = Path(run_dir)
    return RecommendationRun(path=run_dir, has_model=(run_dir / "model.safetensors").is_file())


def load_recommender(run_dir: str | Path) -> Recommender:
    """The run's model, ready to serve (a :class:`RecommenderView`)."""
    return Recommender.load(run_dir)


def genre_vocabulary(rec: Recommender) -> list[str]:
    """The genres the model's item tower was trained on (what a cold-start item may name)."""
    return sorted(rec.space.genres)


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _finite_int(v: Any) -> int | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) else None


def training_report(run_dir: str | Path) -> TrainingReport:
    """Validation curves from ``metrics.jsonl``, the chosen epoch from ``metrics.json``, and the seed
    spread table when the run wrote one (``seed_spread.parquet``/``.csv``)."""
    run_dir = Path(run_dir)
    rows = [r for r in iter_metrics(run_dir) if any(str(k).startswith("val") for k in r)]
    curves = pd.DataFrame()
    if rows:
        df = pd.DataFrame(rows).drop(columns=["time"], errors="ignore")
        by = "epoch" if "epoch" in df else "step"
        keep = [c for c in df.columns if c != by and (str(c).startswith("val") or c in ("loss", "train_loss"))]
        df = df[[by, *keep]].apply(pd.to_numeric, errors="coerce")
        curves = df.groupby(by).last().sort_index().dropna(how="all")
    m = _read_json(run_dir / "metrics.json") or {}
    chosen = None
    selection = None
    if isinstance(m, dict):
        for k in ("chosen_epoch", "best_epoch", "early_stopping_epoch"):
            if k in m:
                chosen = _finite_int(m[k])
                break
        selection = m.get("selection_metric") or m.get("early_stopping_metric")
    spread = pd.DataFrame()
    for name in ("seed_spread.parquet", "seed_spread.csv"):
        p = run_dir / name
        if p.is_file():
            spread = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
            break
    return TrainingReport(curves=curves, chosen_epoch=chosen, selection_metric=str(selection) if selection else None, seed_spread=spread)
