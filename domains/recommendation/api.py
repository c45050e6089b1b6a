"""The recommendation page's contract with this domain (imported statically by
``dashboards/views/recommendation.py``). Nothing here trains.

    run = recommendation_run(run_dir)        # RecommendationRun: .has_model
    rec = load_recommender(run_dir)          # a RecommenderView: .users() .history(u) .recommend(u, k)
                                             #   .similar_items(i, k) .cold_start_item(title, genres, k_users) .items_df .users_df
    genre_vocabulary(rec)                    # the genres its item tower knows
    cold_start_inputs(rec)                   # ColdStartInputs: whether a new item can be placed, and from what (.describe())
    load_metrics(run_dir)                    # DataFrame: model vs baselines (ndcg@10, recall@10, ...)
    training_report(run_dir)                 # TrainingReport: validation curve, chosen epoch
    seed_spread(runs_root, "stratified")     # SeedSpread: mean ± sd over seeds of every model (bench/recommendation.py)
    because_you_watched(rec, user, k, top)   # DataFrame: per recommended item, the history items that drove it (issue 17.3)

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

from core.errors import UserInputError, plain
from core.runs import domain_dirs, iter_metrics, links_out
from domains.recommendation.because import ITEM_SIMILARITY, because_summary, because_you_watched
from domains.recommendation.checks import ArgumentError, found, path_arg
from domains.recommendation.evaluation import load_metrics
from domains.recommendation.inference import POPULARITY_COLUMN, Recommender, UnknownItemError

__all__ = ["RecommenderView", "RecommendationRun", "TrainingReport", "SeedSpread", "BENCH_DIR", "recommendation_run", "load_recommender", "genre_vocabulary",
           "ColdStartInputs", "cold_start_inputs",
           "load_metrics", "training_report", "seed_spread", "seed_spread_files", "seed_spread_stamp", "PROTOCOLS",
           "because_you_watched", "because_summary", "ITEM_SIMILARITY", "Recommender", "UnknownItemError", "POPULARITY_COLUMN",
           "ArgumentError", "BenchResultsError"]


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
    """How a run chose its model (issue 16.8): the validation curve per epoch and the epoch early
    stopping kept (the test split is used once, after that choice)."""

    curves: pd.DataFrame = field(default_factory=pd.DataFrame)  # index: epoch; columns: valid_* metrics, loss
    chosen_epoch: int | None = None
    selection_metric: str | None = None  # the validation metric the epoch was chosen on

    @property
    def empty(self) -> bool:
        return self.curves.empty and self.chosen_epoch is None


@dataclass
class SeedSpread:
    """Every model of one benchmark protocol over several seeds (``bench/recommendation.py``):
    ``table`` has ``model, metric, mean, sd, n_seeds``; empty when the benchmark has not been run."""

    protocol: str  # "stratified" (the split train uses by default) or "sequential" (leave-last-out)
    table: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["model", "metric", "mean", "sd", "n_seeds"]))
    seeds: tuple[int, ...] = ()
    source: Path | None = None
    quick: bool = False  # the benchmark's smoke settings, not its figures


class BenchResultsError(UserInputError, ValueError):
    """A benchmark results file under ``bench-recommendation/`` that is not what bench/recommendation.py writes."""


BENCH_DIR = "bench-recommendation"  # under the runs root: where bench/recommendation.py writes its parts
PROTOCOLS = ("stratified", "sequential")


def recommendation_run(run_dir: str | Path) -> RecommendationRun:
    run_dir = path_arg(run_dir, "run_dir", "a run folder")
    return RecommendationRun(path=run_dir, has_model=(run_dir / "model.safetensors").is_file())


def load_recommender(run_dir: str | Path) -> Recommender:
    """The run's model, ready to serve (a :class:`RecommenderView`)."""
    return Recommender.load(run_dir)


def genre_vocabulary(rec: Recommender) -> list[str]:
    """The genres the model's item tower was trained on (what a cold-start item may name)."""
    if not isinstance(rec, Recommender):
        raise ArgumentError(f"rec {found(rec)}: expected a loaded recommender (load_recommender(run_dir))")
    return sorted(rec.space.genres)


@dataclass(frozen=True)
class ColdStartInputs:
    """What a run's item tower places a new item (nobody has interacted with it) from: its title text (runs
    trained with item text) and the genres it knows. With neither, every new item would get the same vector,
    and ``Recommender.cold_start_item`` refuses."""

    title: bool  # the item tower reads the title (--text precomputed / lora); --text none: it does not
    genres: tuple[str, ...]  # the genres the tower was trained on; empty when the run's items had none

    @property
    def placeable(self) -> bool:
        return self.title or bool(self.genres)

    def describe(self) -> str:
        """One sentence for the page: what the new item is placed from, or why it cannot be."""
        if self.title and self.genres:
            return "the model places it from its title and genres alone."
        if self.title:
            return "the model places it from its title alone (this run's items have no genres)."
        if self.genres:
            return "the model places it from its genres alone (trained with --text none, its item tower does not read the title)."
        return ("this run cannot place one: its item tower reads no title (trained with --text none) and its items have no genres, "
                "so every new item would get the same vector; a run trained with item text or genres can.")


def cold_start_inputs(rec: Recommender) -> ColdStartInputs:
    """Whether ``rec`` can place a new item, and from what (:class:`ColdStartInputs`)."""
    if not isinstance(rec, Recommender):
        raise ArgumentError(f"rec {found(rec)}: expected a loaded recommender (load_recommender(run_dir))")
    return ColdStartInputs(title=bool(rec.model.cfg.text_dim), genres=tuple(sorted(rec.space.genres)))


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
    """The validation curve and chosen epoch a training run recorded (``validation_curve.json``;
    older runs: the ``valid*``/``val*`` rows of ``metrics.jsonl`` and ``best_epoch`` in ``metrics.json``)."""
    run_dir = path_arg(run_dir, "run_dir", "a run folder")
    sel = _read_json(run_dir / "validation_curve.json")
    if isinstance(sel, dict) and sel.get("curve"):
        curves = pd.DataFrame(sel["curve"]).apply(pd.to_numeric, errors="coerce").set_index("epoch").sort_index()
        metric = next((c for c in curves.columns if str(c).startswith("valid_ndcg")), None)
        return TrainingReport(curves=curves, chosen_epoch=_finite_int(sel.get("best_epoch")), selection_metric=metric)
    rows = [r for r in iter_metrics(run_dir) if any(str(k).startswith("val") for k in r)]
    curves = pd.DataFrame()
    if rows:
        df = pd.DataFrame(rows).drop(columns=["time"], errors="ignore")
        by = "epoch" if "epoch" in df else "step"
        keep = [c for c in df.columns if c != by and (str(c).startswith("val") or c == "loss")]
        curves = df[[by, *keep]].apply(pd.to_numeric, errors="coerce").groupby(by).last().sort_index().dropna(how="all")
    m = _read_json(run_dir / "metrics.json")
    chosen = _finite_int(m.get("best_epoch")) if isinstance(m, dict) else None
    metric = next((c for c in curves.columns if str(c).startswith(("valid_ndcg", "val_ndcg"))), None)
    return TrainingReport(curves=curves, chosen_epoch=chosen, selection_metric=metric)


def _protocol(protocol: Any) -> str:
    if isinstance(protocol, str) and protocol in PROTOCOLS:
        return protocol
    raise ArgumentError(f"protocol {found(protocol)}: expected one of {list(PROTOCOLS)}")


def seed_spread_files(runs_root: str | Path, protocol: str = "stratified") -> list[Path]:
    """The files :func:`seed_spread` reads for ``protocol`` (the combined file first, then per-seed files),
    those that exist inside the runs root only: a ``bench-recommendation`` folder that links out of the runs
    root, or a file in it that links out of it, is not read (:func:`core.runs.domain_dirs`, :func:`core.runs.links_out`)."""
    protocol = _protocol(protocol)
    bench = domain_dirs(path_arg(runs_root, "runs_root", "the runs folder"), BENCH_DIR)
    if not bench:
        return []
    files = [bench[0] / f"{protocol}.json", *sorted(bench[0].glob(f"{protocol}-s*.json"))]
    return [f for f in files if not links_out(f, bench[0]) and f.is_file()]


def seed_spread_stamp(runs_root: str | Path, protocol: str = "stratified") -> float:
    """Newest modification time of :func:`seed_spread_files` (0.0 when none exists): a cache key that
    changes when any per-seed file is rewritten, not only the combined one."""
    return max((f.stat().st_mtime for f in seed_spread_files(runs_root, protocol)), default=0.0)


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _bench_part(f: Path, d: dict) -> tuple[list[dict], list[int]]:
    """The rows and seeds of one benchmark file, checked (:class:`BenchResultsError` naming the file)."""
    rows, seeds = d["rows"], d.get("seeds") or []
    if not isinstance(rows, list):
        raise BenchResultsError(f"{f}: 'rows' is {found(rows)}; expected a list of objects, as bench/recommendation.py writes")
    for i, r in enumerate(rows):
        if not (isinstance(r, dict) and isinstance(r.get("model"), str) and _whole(r.get("seed"))):
            what = f"has model {found(r.get('model'))} and seed {found(r.get('seed'))}" if isinstance(r, dict) else f"is {found(r)}"
            raise BenchResultsError(f"{f}: rows[{i}] {what}; expected an object with 'model' (text) and 'seed' (a whole number), "
                                    "as bench/recommendation.py writes")
    if not isinstance(seeds, list) or not all(_whole(x) for x in seeds):
        raise BenchResultsError(f"{f}: 'seeds' is {plain(seeds) if isinstance(seeds, list) else found(seeds)}; expected a list of whole numbers, "
                                "as bench/recommendation.py writes")
    return rows, seeds


def seed_spread(runs_root: str | Path, protocol: str = "stratified") -> SeedSpread:
    """Mean ± sd over seeds of every model's test metrics in the benchmark part ``protocol``
    (``<runs_root>/bench-recommendation/<protocol>.json`` and the per-seed/per-model files
    ``<protocol>-s*.json`` of ``--per-seed-file``, rows concatenated as the bench's own report does).
    Files that link out of that folder are not read; a file that is not what the bench writes is a
    :class:`BenchResultsError` naming it."""
    files = seed_spread_files(runs_root, protocol)
    read = [(f, d) for f in files if isinstance(d := _read_json(f), dict) and d.get("rows")]
    parts = [_bench_part(f, d) for f, d in read]
    if not parts:
        return SeedSpread(protocol=protocol)
    rows = pd.DataFrame([r for part_rows, _ in parts for r in part_rows])
    seeds = sorted({int(x) for _, part_seeds in parts for x in part_seeds})
    metrics = [c for c in rows.columns if c not in ("model", "seed", "params", "seconds", "trials")
               and not str(c).startswith("valid") and pd.api.types.is_numeric_dtype(rows[c])]
    long = rows.melt(id_vars=["model", "seed"], value_vars=metrics, var_name="metric")
    table = long.groupby(["model", "metric"], sort=False)["value"].agg(mean="mean", sd="std", n_seeds="count").reset_index()
    table["sd"] = table["sd"].fillna(0.0)
    combined = files[0] if files and files[0].name == f"{protocol}.json" else None
    return SeedSpread(protocol=protocol, table=table, seeds=tuple(seeds or sorted(int(s) for s in rows["seed"].unique())),
                      source=combined or files[0].parent, quick=any(bool(d.get("quick")) for _, d in read))
