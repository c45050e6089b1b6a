"""Recommendations from a trained run, with titles.

    python -m domains.recommendation.recommend --user 42              # top-10 unseen items for user 42, each with the
                                                                      # two history items that raise its score most
                                                                      # ("because you watched", domains/recommendation/because.py)
    python -m domains.recommendation.recommend --similar-to 50        # items closest to item 50 (Star Wars)
    python -m domains.recommendation.recommend --new-title "Galaxy Quest 2" --new-genres Sci-Fi Comedy
                                                                      # cold start: which users the new item reaches
    python -m domains.recommendation.recommend --model-run <name or folder> --user 42

Unknown user ids (or users without training history) get the most popular unseen items; the output
then says ``FALLBACK`` and why, and shows ``popularity_count`` (training interactions) instead of a
model score. Unknown item ids and blank titles are errors. Ids are matched as the training data wrote them
(``--user 7`` finds user 7 whether the ids were read as numbers or text); an id that is unknown while one written as
the same number is known (``--user 007`` on a run with user 7, which the data keeps apart from 7) is refused in one
line naming it, not answered for the other user nor as a new one. Each call is a run of kind "job" that
writes its answer to ``recommendations.parquet`` in its own folder.

A user id identifies a person: it is not written to the job's files (``config.json`` says
``<not recorded: private>``, the log and run.json do not name it, the output file is not named
after it); only the answer printed on the terminal names the user.
"""

from __future__ import annotations

import sys

import pandas as pd

from core.cli import run_cli
from core.config import PRIVATE_VALUE, check_ranges
from core.io import atomic_write_parquet
from core.runs import Run
from domains.recommendation.because import because_summary, because_you_watched
from domains.recommendation.config import RecommendConfig
from domains.recommendation.inference import POPULARITY_COLUMN, InvalidQueryError, Recommender, resolve_two_tower_run
from domains.recommendation.training import DOMAIN

__all__ = ["RecommendConfig", "run", "main"]


def answer(rec: Recommender, cfg: RecommendConfig) -> tuple[str, pd.DataFrame, list[str]]:
    """(headline, table, columns to print) for the query in ``cfg``."""
    cols = ["item_id", "title", "year", "genres", "score"]
    if cfg.user is not None:
        out = rec.recommend(cfg.user, k=cfg.k)
        if out["fallback"].any():
            return f"FALLBACK for user {cfg.user}: {out['reason'].iloc[0]} (ranked by {POPULARITY_COLUMN}, not a model score)", out, \
                ["item_id", "title", "year", "genres", POPULARITY_COLUMN]
        out["because_you_watched"] = out["item_id"].map(because_summary(because_you_watched(rec, cfg.user, k=cfg.k, top=2)))
        ranked = "in the catalogue" if rec.untrained is None else "with a training interaction (the others are not ranked)"
        fewer = f"; only {len(out)} unseen item(s) {ranked}, not --k {cfg.k}" if len(out) < cfg.k else ""
        return f"Top {len(out)} for user {cfg.user} ({len(rec.history(cfg.user))} items in history, seen items excluded{fewer}):", out, \
            [*cols, "because_you_watched"]
    if cfg.similar_to is not None:
        out = rec.similar_items(cfg.similar_to, k=cfg.k)
        src = rec.items_df.iloc[rec.item_row(cfg.similar_to)]
        return f"Items most similar to {src['item_id']} {src['title']!r}:", out, cols
    if cfg.new_title is not None:
        out = rec.cold_start_item(cfg.new_title, cfg.new_genres, k_users=cfg.k, year=cfg.new_year)
        return f"New item {cfg.new_title!r} ({', '.join(cfg.new_genres)}): users it reaches most strongly", out, list(out.columns)
    raise InvalidQueryError("pass --user ID, --similar-to ITEM_ID or --new-title TITLE --new-genres G1 G2")


def run(cfg: RecommendConfig) -> pd.DataFrame:
    model_run = resolve_two_tower_run(cfg.model_run, cfg.runs_dir)  # a sequence run: refused, naming its metrics
    check_ranges(cfg)  # --k >= 1 (declared on the field)
    if cfg.user == PRIVATE_VALUE:  # --config <a recommend job's config.json>: the id was never written there
        raise InvalidQueryError(f"--user {PRIVATE_VALUE!r} comes from a saved config.json, which does not record user ids; pass --user ID")
    given = [flag for flag, v in (("--user", cfg.user), ("--similar-to", cfg.similar_to), ("--new-title", cfg.new_title)) if v is not None]
    if len(given) > 1:  # answer() took the first and silently dropped the others
        raise InvalidQueryError(f"{' and '.join(given)} given together; expected one query per call: --user, --similar-to or --new-title")
    if cfg.new_title is None and (cfg.new_genres or cfg.new_year != -1):
        raise InvalidQueryError("--new-genres/--new-year describe a new item; expected them with --new-title TITLE")
    if cfg.new_title is not None and not cfg.new_title.strip():
        raise InvalidQueryError(f"--new-title {cfg.new_title!r} is blank: give the new item's title")
    rec = Recommender.load(model_run)
    headline, out, cols = answer(rec, cfg)
    with Run.start(DOMAIN, cfg, command="recommend", kind="job") as job:
        pd.set_option("display.width", 160)
        pd.set_option("display.max_colwidth", 48)
        print(headline)
        print(out[cols].to_string(index=False))
        atomic_write_parquet(out.reset_index(drop=True), job.path("recommendations.parquet"), index=False)
        job.finish({"model_run": str(model_run), "rows": int(len(out))})
    return out


def main(argv: list[str] | None = None) -> int:
    return run_cli(RecommendConfig, run, argv, doc=__doc__, prog="python -m domains.recommendation.recommend")


if __name__ == "__main__":
    sys.exit(main())
