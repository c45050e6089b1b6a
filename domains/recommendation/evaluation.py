"""Evaluating score matrices and trained runs on a split: the two-tower, the baselines, a saved run.

    evaluate_scores(scores, seen, truth, n_items, k)   # any (n_users, n_items) score matrix -> metrics
    reevaluate_run(run_dir)                            # the saved model's test metrics, re-derived from its weights
    run_data_source(run_dir)                           # the data the run was trained on, whatever folder this runs from
    run_side_tables(run_dir)                           # its --items/--users tables (a moved one: one line naming --items/--users)

Definitions of the metrics: :mod:`domains.recommendation.metrics`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.errors import UserInputError, plain
from core.logging import get_logger
from domains.recommendation.checks import path_arg
from domains.recommendation.metrics import ranking_metrics, top_k
from domains.recommendation.model import all_embeddings, rank_mask, untrained_id_mask

__all__ = ["evaluate_scores", "model_scores", "load_metrics", "reevaluate_run", "ANCHORS_NDCG10", "ANCHORS_SETTING", "anchors_for", "RunFilesMissing", "RunDataChanged", "RunDataMissing", "check_same_split",
           "run_data_source", "run_side_tables"]

log = get_logger("recommendation.evaluation")

# Microsoft Recommenders' published ML-100K table (python_stratified_split, ratio 0.75, seed 42; NDCG@10)
ANCHORS_NDCG10 = {"ms_recommenders_bpr": 0.442, "ms_recommenders_bivae": 0.475, "popularity_approx": 0.22}
ANCHORS_SETTING = "bundled ml-100k, split msr-stratified-75, split seed 42, k 10"  # the only setting ANCHORS_NDCG10 were measured in


def anchors_for(data: str, split: str, split_seed: int, k: int) -> dict | None:
    """:data:`ANCHORS_NDCG10` when a run's test table is comparable with them (:data:`ANCHORS_SETTING`), else None."""
    from domains.recommendation.data import MSR_STRATIFIED, is_bundled

    return dict(ANCHORS_NDCG10) if is_bundled(data) and split == MSR_STRATIFIED and split_seed == 42 and k == 10 else None


class RunFilesMissing(UserInputError, FileNotFoundError):
    """A run folder lacks a file a finished recommendation training run writes."""


def evaluate_scores(scores: torch.Tensor, seen: list[np.ndarray], truth: list[np.ndarray], n_items: int, k: int,
                    popularity: np.ndarray | None = None) -> dict[str, float]:
    """Rank every user's unseen items by ``scores`` and compare the top ``k`` with ``truth``."""
    recs, _ = top_k(scores, k, seen)
    return ranking_metrics(recs, truth, n_items, k, popularity)


def model_scores(model, prep, trained_items: np.ndarray | None = None) -> torch.Tensor:
    """Every user × every item score of a two-tower model (``prep``: anything with ``batcher`` and ``space``);
    ``trained_items``: the item rows the model was trained on — the others are -inf, in no ranked list
    (:func:`domains.recommendation.model.untrained_id_mask`); None: every item ranked."""
    U, V = all_embeddings(model, prep.batcher, prep.space.n_users, prep.space.n_items, trained_items=trained_items)
    return rank_mask(U @ V.T, untrained_id_mask(prep.space.n_items, trained_items))


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


class RunDataMissing(UserInputError, FileNotFoundError):
    """The data a run was trained on is not where the run recorded it (moved or deleted since)."""


def _run_json(run_dir: Path, name: str) -> dict:
    p = run_dir / name
    if not p.is_file():
        return {}
    try:
        out = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise RunFilesMissing(f"{p}: not readable JSON ({e}); the run is damaged, train it again") from e
    return out if isinstance(out, dict) else {}


def run_data_source(run_dir: str | Path, data: str | None = None) -> str:
    """The ``--data`` to read a run's training data from, whatever folder this is called from: ``data`` when
    given (evaluate's ``--data``); else the bundled data set's name; else the absolute path ``train`` recorded
    (``split.json`` ``data_path``); else — a run trained before that was recorded, or a recorded file moved
    since — the path as typed at training, from the current folder. :class:`RunDataMissing` (one line naming
    the path and ``--data``) when none of these exists. Whether it still gives the run's split is checked by
    :func:`check_same_split`."""
    from domains.recommendation.data import ML100K, is_bundled

    run_dir = path_arg(run_dir, "run_dir", "a recommendation training run folder")
    if data is not None:
        return data
    typed = _run_json(run_dir, "config.json").get("data", ML100K)
    if is_bundled(typed):
        return typed
    recorded = _run_json(run_dir, "split.json").get("data_path")
    if recorded and Path(recorded).exists():
        return recorded
    if Path(typed).exists():
        if recorded:
            log.warning(f"run {run_dir.name}: its data {recorded} no longer exists; reading --data {typed} from this folder ({Path.cwd()})")
        return typed
    where = (f"recorded as {recorded}" if recorded else
             f"relative to the folder it was trained from, which this older run did not record; not found from {Path.cwd()}")
    raise RunDataMissing(f"run {run_dir.name} was trained on --data {typed} ({where}): no such file or folder; "
                         "pass --data PATH where those interactions are now")


def run_side_tables(run_dir: str | Path, items: str | None = None, users: str | None = None) -> dict[str, str | None]:
    """The ``--items``/``--users`` tables to re-read a run's data with (``load_dataset``'s ``items=``/``users=``): the paths
    recorded in the run's ``config.json`` (absolute since train records them so), or ``items``/``users`` where such a table
    is now (evaluate's flags; checked with the data by :func:`check_same_split`). :class:`RunDataMissing` (one line naming
    the recorded path and the flag) when a recorded table no longer exists; :class:`RunDataChanged` for a flag naming a
    table the run was not trained with."""
    from domains.recommendation.config import side_tables

    run_dir = path_arg(run_dir, "run_dir", "a recommendation training run folder")
    recorded = side_tables(_run_json(run_dir, "config.json"))
    out = {}
    for name, now in (("items", items), ("users", users)):
        was = recorded.get(name)
        if now is not None and not was:
            raise RunDataChanged(f"--{name} {plain(now)}: run {run_dir.name} was trained without --{name} (its {name} came with --data); "
                                 f"leave --{name} out")
        if now is None and was and not Path(str(was)).expanduser().exists():
            raise RunDataMissing(f"run {run_dir.name} was trained with --{name} {plain(was)} (recorded in its config.json): no such file "
                                 f"or folder now; pass --{name} PATH where that table is now")
        out[name] = now if now is not None else was
    return out


def reevaluate_run(run_dir: str | Path, data: str | None = None, tables: dict[str, str | None] | None = None) -> dict:
    """Re-derive the two-tower's test metrics from a run's saved weights and its recorded split, and
    compare with the table the run wrote. ``data``: where the run's training data is now, when it moved
    (default: :func:`run_data_source`); ``tables``: its ``--items``/``--users`` (default: :func:`run_side_tables`). Returns ``{"k", "split", "reevaluated", "table", "difference"}``."""
    from domains.recommendation.config import data_columns
    from domains.recommendation.data import group_by_user, load_dataset, require_timestamps, split_interactions, split_name
    from domains.recommendation.inference import Recommender

    run_dir = Path(run_dir)
    table = load_metrics(run_dir)
    tcfg = json.loads((run_dir / "config.json").read_text())
    k = int(tcfg.get("k", 10))
    split = tcfg.get("split") or tcfg.get("protocol", "ms")
    source = run_data_source(run_dir, data)
    tables = run_side_tables(run_dir) if tables is None else tables
    rec = Recommender.load(run_dir)
    loaded = load_dataset(source, date_order=tcfg.get("date_order", "auto"), columns=data_columns(tcfg), **tables)  # read as train read it
    require_timestamps(loaded, split_name(split), f"--data {source}")  # the file may have lost its timestamp column since training
    sp = split_interactions(loaded.interactions, split, int(tcfg.get("split_seed", 42)))
    check_same_split(run_dir, sp.train, sp.test, source)
    uidx, iidx = rec.space.user_index(), rec.space.item_index()
    truth = group_by_user(sp.test["user_id"].map(uidx).to_numpy(np.int64), sp.test["item_id"].map(iidx).to_numpy(np.int64), rec.space.n_users)
    # the serving top-k (seen items excluded); its popularity fallback only touches users without
    # training history, and those have no test items under either protocol, so the metrics are the model's
    recs, _ = rec.recommend_rows(np.arange(rec.space.n_users), k)
    again = ranking_metrics(recs, truth, rec.space.n_items, k, rec.popularity / rec.space.n_users)
    saved = table[table["model"] == "two_tower"].iloc[0]
    return {"k": k, "split": sp.info["split"], "split_seed": int(tcfg.get("split_seed", 42)), "reevaluated": again, "table": table,
            "difference": abs(again[f"ndcg@{k}"] - float(saved[f"ndcg@{k}"]))}
