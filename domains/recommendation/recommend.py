"""Recommendations from a trained run, with titles.

    python -m domains.recommendation.recommend --user 42              # top-10 unseen items for user 42
    python -m domains.recommendation.recommend --similar-to 50        # items closest to item 50 (Star Wars)
    python -m domains.recommendation.recommend --new-title "Galaxy Quest 2" --new-genres Sci-Fi Comedy
                                                                      # cold start: which users the new item reaches

Unknown user ids (or users without training history) get the most popular unseen items; the
output then says ``FALLBACK`` and why (documented behaviour, never silent). Unknown item ids are an error.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.cli import run_cli
from core.config import DeviceConfig, ResumeConfig, RunConfig, SeedConfig, TrackingConfig
from core.runs import latest_run_dir


@dataclass
class RecommendConfig(TrackingConfig, SeedConfig, DeviceConfig, ResumeConfig, RunConfig):
    run_dir: str | None = field(default=None, metadata={"help": "trained run (default: <runs-dir>/recommendation/latest)"})
    user: str | None = field(default=None, metadata={"help": "user id to recommend for"})
    similar_to: str | None = field(default=None, metadata={"help": "item id: list the most similar items"})
    new_title: str | None = field(default=None, metadata={"help": "cold start: title of a new item"})
    new_genres: list[str] = field(default_factory=list, metadata={"help": "cold start: genres of the new item"})
    new_year: int = field(default=-1, metadata={"help": "cold start: release year of the new item"})
    k: int = field(default=10, metadata={"help": "how many items (or users for cold start)"})


def run(cfg: RecommendConfig) -> pd.DataFrame:
    from domains.recommendation.inference import Recommender

    run_dir = Path(cfg.run_dir) if cfg.run_dir else latest_run_dir("recommendation", cfg.runs_dir)
    rec = Recommender.load(run_dir)
    pd.set_option("display.width", 160)
    pd.set_option("display.max_colwidth", 48)
    if cfg.user is not None:
        out = rec.recommend(cfg.user, k=cfg.k)
        if out["fallback"].any():
            print(f"FALLBACK for user {cfg.user}: {out['reason'].iloc[0]}")
        else:
            print(f"Top {cfg.k} for user {cfg.user} ({len(rec.history(cfg.user))} items in history, seen items excluded):")
        print(out[["item_id", "title", "year", "genres", "score"]].to_string(index=False))
    elif cfg.similar_to is not None:
        out = rec.similar_items(cfg.similar_to, k=cfg.k)
        src = rec.items_df.iloc[rec._item_row(cfg.similar_to)]
        print(f"Items most similar to {src['item_id']} {src['title']!r}:")
        print(out[["item_id", "title", "year", "genres", "score"]].to_string(index=False))
    elif cfg.new_title:
        out = rec.cold_start_item(cfg.new_title, cfg.new_genres, k_users=cfg.k, year=cfg.new_year)
        print(f"New item {cfg.new_title!r} ({', '.join(cfg.new_genres)}): users it reaches most strongly")
        print(out.to_string(index=False))
    else:
        raise ValueError("pass --user ID, --similar-to ITEM_ID or --new-title TITLE --new-genres G1 G2")
    print(f"Run directory: {run_dir}")
    return out


def main(argv: list[str] | None = None) -> int:
    from domains.recommendation.inference import UnknownItemError

    return run_cli(RecommendConfig, run, argv, doc=__doc__, prog="python -m domains.recommendation.recommend", user_errors=(UnknownItemError, ValueError,))


if __name__ == "__main__":
    sys.exit(main())
