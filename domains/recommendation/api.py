"""What the dashboards call (the contract in the team brief).

    rec = load_recommender(run_dir)          # Recommender: .users(), .history(u), .recommend(u, k),
                                             #   .similar_items(i, k), .cold_start_item(title, genres, k_users)
    load_metrics(run_dir)                    # DataFrame: model vs baselines (ndcg@10, recall@10, ...)
"""

from __future__ import annotations

from pathlib import Path



from domains.recommendation.evaluate import load_metrics
from domains.recommendation.inference import Recommender, UnknownItemError

__all__ = ["load_recommender", "load_metrics", "Recommender", "UnknownItemError"]


def load_recommender(run_dir: str | Path) -> Recommender:
    return Recommender.load(run_dir)


