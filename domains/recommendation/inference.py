"""Serving a trained run: user/item vectors, top-K with seen items excluded, similar items, cold start.

    rec = Recommender.load(run_dir)
    rec.recommend(42, k=10)                      # item_id, title, genres, score, fallback
    rec.recommend(999999)                        # unknown user -> most popular items, fallback=True
    rec.similar_items(50, k=10)                  # cosine neighbours in the item tower's space (a wide-and-deep
                                                 # model's wide columns left out)
    rec.cold_start_item("Space Robots", ["Sci-Fi", "Action"], k_users=20)

Unknown-user fallback (documented behaviour): a user id that the run has never seen, or a user
without training history, gets the most popular training items (minus anything the user has
seen); every row carries ``fallback=True`` and ``reason`` says why, its ``score`` is empty (NaN) and
``popularity_count`` holds the number of training interactions that ranked it (model rows leave
``popularity_count`` empty). Unknown item ids in ``similar_items`` raise :class:`UnknownItemError`
naming the id; a blank or whitespace-only cold-start title raises :class:`InvalidQueryError`.

Cold start: a new item known only by title (+ year) and genres goes through the item tower with
its id set to "unknown" (index 0, which ID dropout trained) and its MiniLM title embedding, so it
gets a vector in the same space as the catalogue and can be ranked for every user.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.checkpoint import load_weights
from core.errors import UserInputError, plain
from core.runs import RunNotFoundError, read_run, resolve_model_run
from domains.recommendation.checks import ArgumentError, found, id_arg, path_arg, text_list, whole_number
from domains.recommendation.data import group_by_user, id_as_recorded, id_number
from domains.recommendation.model import (TRAINED_ITEMS, TWO_TOWER, UNTRAINED_NOT_RANKED, Batcher, FeatureSpace, TwoTower, all_embeddings, create_model, item_text_embeddings,
                                          item_texts, model_spec, rank_mask, untrained_id_mask)

__all__ = ["Recommender", "UnknownItemError", "UnknownUserError", "InvalidQueryError", "NotARecommendationRun", "POPULARITY_COLUMN",
           "COLD_START_FALLBACK_REASON", "load_run_model", "lookup_id", "near_ids",
           "resolve_two_tower_run", "sequence_run_note", "SEQUENCE_COMMAND"]

POPULARITY_COLUMN = "popularity_count"  # fallback rows: training interactions of the item (model rows: NaN)
COLD_START_FALLBACK_REASON = "no training history: served most popular items"  # cold_start_item: such a user's list holds no new item


class UnknownItemError(UserInputError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


class UnknownUserError(UserInputError, LookupError):
    """A user id the run does not know, though an id written as the same number is known (``"007"`` beside ``7``).
    A LookupError, not a KeyError: the dashboard reads a KeyError as a column missing from the run's files."""

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidQueryError(UserInputError, ValueError):
    """A query that cannot be answered as given (blank title, unknown genre)."""


class NotARecommendationRun(UserInputError, FileNotFoundError):
    """A folder that is not a finished recommendation training run."""


SEQUENCE_COMMAND = "train_sequential"  # the command of a sequence-model run (kind "job": no two-tower command serves it)
_DOMAIN = "recommendation"  # training.DOMAIN (training is not imported here: serving does not need it)


def sequence_run_note(run_dir: str | Path) -> str | None:
    """For a ``train_sequential`` run folder, where its evaluation is (the sequence model is evaluated when it
    trains, and no two-tower command reads it); None for any other folder."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file() or read_run(run_dir).get("command") != SEQUENCE_COMMAND:
        return None
    return (f"a sequence run is evaluated as it trains: its test NDCG@k and HR@k (and most popular's) are in {run_dir / 'metrics.json'}; "
            "evaluate, recommend and score read two-tower runs (python -m domains.recommendation.train)")


def resolve_two_tower_run(model_run, runs_dir: str | Path = "runs") -> Path:
    """:func:`core.runs.resolve_model_run` for the two-tower commands (evaluate, recommend, score): a
    ``train_sequential`` run given by name or folder is refused in the same one line, which also says where that
    run's metrics are (:func:`sequence_run_note`)."""
    try:
        return resolve_model_run(_DOMAIN, model_run, runs_dir)
    except RunNotFoundError as e:
        if model_run is None or str(model_run) == "":
            raise
        for folder in (Path(runs_dir) / _DOMAIN / str(model_run), Path(str(model_run)).expanduser()):
            note = sequence_run_note(folder)
            if note:
                raise RunNotFoundError(f"{e}; {note}") from e
        raise


def load_run_model(run_dir: str | Path) -> tuple[torch.nn.Module, FeatureSpace, dict]:
    """The trained model of a run, rebuilt through the model registry from its ``model.json``
    (``{"name", "kwargs", "k"}``; runs made before the registry have ``model_config.json``)."""
    run_dir = Path(run_dir)
    space = FeatureSpace.from_dict(json.loads((run_dir / "feature_space.json").read_text()))
    if (run_dir / "model.json").is_file():
        spec = json.loads((run_dir / "model.json").read_text())
    else:
        mc = json.loads((run_dir / "model_config.json").read_text())
        spec = {**model_spec(TWO_TOWER, {k: v for k, v in mc.items() if k != "k"}), "k": mc.get("k", 10)}
    model = create_model(spec, space)
    load_weights(run_dir / "model.safetensors", model)
    model.eval()
    return model, space, spec


def _trained_item_rows(run_dir: Path, spec: dict, train_rows: np.ndarray, n_items: int) -> np.ndarray | None:
    """The item rows the run's saved weights were trained on (the others in no ranked list), as train evaluated the run:
    the file model.json names (:data:`TRAINED_ITEMS`); a run recorded before that file, the items of its train.parquet
    (``train_rows``); a run recorded before either, None (every item ranked)."""
    if not spec.get(UNTRAINED_NOT_RANKED):
        return None
    name = spec.get(TRAINED_ITEMS)
    if name is None:
        return np.unique(train_rows)
    path = run_dir / Path(str(name)).name  # a file of the run folder, whatever model.json says
    if not path.is_file():
        raise NotARecommendationRun(f"{run_dir} is not a finished recommendation run ({path.name} missing: model.json names it as the "
                                    "items its weights were trained on); train it again")
    rows = load_weights(path).get("rows")
    if rows is None or rows.ndim != 1 or rows.is_floating_point() or (len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= n_items)):
        raise NotARecommendationRun(f"{path}: expected the item rows (0..{n_items - 1}) the run's weights were trained on; the run is damaged, train it again")
    return rows.numpy().astype(np.int64)


@dataclass
class Recommender:
    run_dir: Path
    model: TwoTower
    space: FeatureSpace
    users_df: pd.DataFrame
    items_df: pd.DataFrame
    batcher: Batcher
    user_vecs: torch.Tensor
    item_vecs: torch.Tensor
    seen: dict  # user_id -> np.ndarray of item rows
    popularity: np.ndarray  # training interaction count per item row
    k_default: int = 10
    untrained: torch.Tensor | None = None  # item rows in no ranked list (model.untrained_id_mask); None: every item ranked

    # -- loading ------------------------------------------------------------------------------
    @classmethod
    def load(cls, run_dir: str | Path) -> "Recommender":
        run_dir = path_arg(run_dir, "run_dir", "a recommendation training run folder")
        for f in ("model.safetensors", "feature_space.json", "items.parquet", "users.parquet", "train.parquet"):
            if not (run_dir / f).is_file():
                note = sequence_run_note(run_dir)
                raise NotARecommendationRun(f"{run_dir} is not a finished recommendation run ({f} missing); " +
                                            (note if note else "train one with `python -m domains.recommendation.train`"))
        model, space, spec = load_run_model(run_dir)
        k = int(spec.get("k", 10))
        cfg = model.cfg
        items = pd.read_parquet(run_dir / "items.parquet")
        items["genres"] = [list(g) for g in items["genres"]]
        users = pd.read_parquet(run_dir / "users.parquet")
        text = load_weights(run_dir / "item_text.safetensors")["emb"] if cfg.text_dim else None
        batcher = Batcher(space.user_feature_table(users), space.item_feature_arrays(items), text)
        train = pd.read_parquet(run_dir / "train.parquet")
        iidx = space.item_index()
        rows = train["item_id"].map(iidx).to_numpy(np.int64)
        per_user = group_by_user(train["user_id"].map(space.user_index()).to_numpy(np.int64), rows, space.n_users)
        seen = {u: g for u, g in zip(space.user_ids, per_user) if len(g)}  # users with training history only
        if cfg.history:
            batcher.set_history([seen.get(u, np.empty(0, np.int64)) for u in space.user_ids])
        # items the saved weights never trained on: in no ranked list, their vector from their features — as train evaluated the run, when it did
        trained = _trained_item_rows(run_dir, spec, rows, space.n_items)
        U, V = all_embeddings(model, batcher, space.n_users, space.n_items, trained_items=trained)
        pop = np.bincount(rows, minlength=space.n_items).astype(np.float64)
        return cls(run_dir, model, space, users, items, batcher, U, V, seen, pop, k, untrained_id_mask(space.n_items, trained))

    # -- queries -------------------------------------------------------------------------------
    def users(self) -> list:
        return list(self.space.user_ids)

    def user_row(self, user_id) -> int | None:
        """The row of ``user_id`` (looked up as the ids were recorded: :func:`lookup_id`), or None for an unknown user.
        :class:`UnknownUserError` when it is unknown but an id written as the same number is known (``"007"`` on a run
        with user 7: that is not the popularity fallback's "new user"); :class:`~domains.recommendation.checks.ArgumentError`
        for what cannot be an id (None, NaN, a list)."""
        row = lookup_id(self.space.user_index(), id_arg(user_id, "user_id"))
        near = near_ids(self.space.user_ids, user_id) if row is None else []
        if near:
            raise UnknownUserError(_unknown_id_message("user", user_id, near))
        return row

    def item_row(self, item_id) -> int:
        """The row of ``item_id`` (looked up as the ids were recorded: :func:`lookup_id`); :class:`UnknownItemError` otherwise
        (naming an id written as the same number, if one is known)."""
        row = lookup_id(self.space.item_index(), id_arg(item_id, "item_id"))
        if row is not None:
            return row
        near = near_ids(self.space.item_ids, item_id)
        if near:
            raise UnknownItemError(_unknown_id_message("item", item_id, near))
        raise UnknownItemError(f"item {item_id!r} is not in this run's catalogue of {self.space.n_items} items (ids like {self.space.item_ids[:3]})")

    def history(self, user_id) -> pd.DataFrame:
        """The user's training interactions with titles (empty for unknown users)."""
        row = self.user_row(user_id)
        uid = self.space.user_ids[row] if row is not None else user_id
        items = self.seen.get(uid, np.empty(0, np.int64))
        return self._item_frame(items).drop(columns=["score"])

    def _item_frame(self, rows: np.ndarray, scores: np.ndarray | None = None) -> pd.DataFrame:
        sub = self.items_df.iloc[rows]
        return pd.DataFrame({"item_id": sub["item_id"].to_numpy(), "title": sub["title"].to_numpy(),
                             "genres": [", ".join(g) for g in sub["genres"]], "year": sub["year"].to_numpy(),
                             "score": scores if scores is not None else np.full(len(rows), np.nan)})

    def recommend(self, user_id, k: int | None = None, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-k items for ``user_id``: item_id, title, genres, year, score, fallback, reason."""
        k = _check_k(self.k_default if k is None else k)
        if not isinstance(exclude_seen, (bool, np.bool_)):  # "no" would be true
            raise ArgumentError(f"exclude_seen {found(exclude_seen)}: expected True or False")
        row = self.user_row(user_id)
        uid = self.space.user_ids[row] if row is not None else user_id
        seen = self.seen.get(uid, np.empty(0, np.int64)) if exclude_seen else np.empty(0, np.int64)
        if row is None or not self.has_history([row])[0]:
            scores = torch.as_tensor(self.popularity, dtype=torch.float32).clone()
            reason = "unknown user: most popular items" if row is None else "user has no training history: most popular items"
            fallback = True
        else:
            scores = self.item_vecs @ self.user_vecs[row]
            reason, fallback = "", False
        if len(seen):
            scores[torch.as_tensor(seen)] = float("-inf")
        rank_mask(scores, self.untrained)
        val, idx = torch.topk(scores, min(k, int(torch.isfinite(scores).sum())))
        out = self._item_frame(idx.numpy(), val.numpy())
        out[POPULARITY_COLUMN] = np.nan
        if fallback:  # a count is not a model score: it gets its own, labelled column
            out[POPULARITY_COLUMN] = out["score"]
            out["score"] = np.nan
        out["fallback"] = fallback
        out["reason"] = reason
        return out

    def has_history(self, user_rows) -> np.ndarray:
        """Per user row, whether the user has training history. The one rule of the fallback: a user without it is
        served the most popular unseen items (:meth:`recommend`, :meth:`recommend_rows`, score's exact and FAISS lists),
        whatever the model's vector for that user says, so the new-title rank and because_you_watched do not apply to it."""
        return np.array([self.space.user_ids[r] in self.seen for r in np.asarray(user_rows, dtype=np.int64).reshape(-1)], dtype=bool)

    def recommend_rows(self, user_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k (item rows, scores) for a batch of user rows, seen items excluded; users without training
        history (:meth:`has_history`) get the popularity fallback of :meth:`recommend` (scores: training counts)."""
        from domains.recommendation.metrics import top_k

        scores = self.user_vecs[torch.as_tensor(user_rows)] @ self.item_vecs.T
        no_history = np.flatnonzero(~self.has_history(user_rows))
        if len(no_history):
            scores[torch.as_tensor(no_history)] = torch.as_tensor(self.popularity, dtype=scores.dtype)
        excl = [self.seen.get(self.space.user_ids[r], np.empty(0, np.int64)) for r in user_rows]
        return top_k(rank_mask(scores, self.untrained), k, excl)

    def similar_items(self, item_id, k: int = 10) -> pd.DataFrame:
        k = _check_k(k)
        row = self.item_row(item_id)
        deep = self.model.deep_part(self.item_vecs) if isinstance(self.model, TwoTower) else self.item_vecs  # the item tower's space
        sims = rank_mask(deep @ deep[row], self.untrained)
        sims[row] = float("-inf")
        val, idx = torch.topk(sims, min(k, int(torch.isfinite(sims).sum())))
        return self._item_frame(idx.numpy(), val.numpy())

    @torch.no_grad()
    def item_vector(self, title: str, genres: list[str], year: int = -1) -> torch.Tensor:
        """Vector of a new item (not in the catalogue) from its title, year and genres."""
        if not isinstance(title, str):
            raise ArgumentError(f"title {found(title)}: expected the new item's title (text)")
        if not title.strip():
            raise InvalidQueryError(f"new item title {title!r} is blank: give the item's title (text)")
        genres = text_list(genres, "genres", "genre names")
        year = whole_number(year, "year")
        if not self.model.cfg.text_dim and not self.space.genres:  # every new item would get the same vector, whatever its title
            raise InvalidQueryError("this run's item tower reads no title text (trained with --text none) and its items have no genres: "
                                    "a new item cannot be placed; expected a run trained with item text or genres")
        unknown = sorted(set(genres) - set(self.space.genres))
        if unknown:
            raise InvalidQueryError(f"unknown genre(s) {unknown}; known: {self.space.genres}")
        new = pd.DataFrame({"item_id": ["__new__"], "title": [title], "year": [int(year)], "genres": [list(genres)]})
        arrays = self.space.item_feature_arrays(new)  # item_id -> 0 (unknown)
        if self.model.cfg.text_dim and getattr(self, "_encoder", None) is None:
            from core.backbones import create_backbone

            self._encoder = create_backbone("minilm-l6-v2")  # loaded once per Recommender
        text = item_text_embeddings(item_texts(new), encoder=self._encoder, cache=False) if self.model.cfg.text_dim else None
        b = Batcher(np.zeros((1, 4), np.int64), arrays, text)
        return self.model.item_embedding(b.item_kjt(torch.tensor([0])), b.item_text(torch.tensor([0])))[0]

    def cold_start_item(self, title: str, genres: list[str], k_users: int = 20, year: int = -1) -> pd.DataFrame:
        """The users the new item scores highest for: user_id, score, rank_in_user_list (1 = it would be the user's top
        recommendation), in_top_k (within the run's k), fallback, reason. A user without training history is served the
        most popular items (:meth:`has_history`), a list a new item (no interaction yet) is in no place of: its rank is
        empty (pandas NA), in_top_k False, fallback True and reason says so — a rank against model scores that list never
        uses would read as a place the item does not get."""
        from domains.recommendation.metrics import mask_excluded

        _check_k(k_users, "k_users")
        v = self.item_vector(title, genres, year)
        s = self.user_vecs @ v  # (n_users,): the new item against every user
        order = torch.argsort(s, descending=True)[:k_users]
        users = [self.space.user_ids[i] for i in order.tolist()]
        # rank of the new item within the unseen catalogue scores of the returned users only (items in no ranked list not counted)
        cat = mask_excluded(rank_mask(self.user_vecs[order] @ self.item_vecs.T, self.untrained), [self.seen.get(u, np.empty(0, np.int64)) for u in users])
        rank = ((cat > s[order, None]).sum(1) + 1).numpy()
        modelled = self.has_history(order.numpy())
        return pd.DataFrame({"user_id": users, "score": s[order].numpy(),
                             "rank_in_user_list": pd.Series(rank, dtype="Int64").where(modelled).array,  # NA: a fallback user
                             "in_top_k": modelled & (rank <= self.k_default), "fallback": ~modelled,
                             "reason": np.where(modelled, "", COLD_START_FALLBACK_REASON)})


def _check_k(k, what: str = "k") -> int:
    """``k`` as a count of results: a whole number >= 1 (:class:`InvalidQueryError` otherwise); larger than
    the catalogue is fine (every candidate is returned)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidQueryError(f"{what} {k!r}: expected a whole number of results >= 1")
    return int(k)


def lookup_id(idx: dict, key) -> int | None:
    """Row of ``key`` in an id -> row index, looked up as the loader recorded the ids (:func:`data.id_as_recorded`):
    CLI and dashboard ids arrive as text, so ``"12"`` (or ``" 12 "``, ``"12.0"``, ``12.0``) finds the integer id 12 and
    the integer 12 finds the text id ``"12"``; ``"007"`` is not 7 (the loader keeps them apart, so a run may hold
    both). None when no id matches (:func:`near_ids` then names an id written differently)."""
    recorded = id_as_recorded(key)
    for cand in (key, recorded, None if recorded is None else str(recorded), str(key) if isinstance(key, (float, np.floating)) else None):
        if cand is not None and cand in idx:
            return idx[cand]
    return None


def near_ids(ids, key, limit: int = 3) -> list:
    """Recorded ids that are the same number as ``key`` written another way (``"7"`` for ``"007"``, ``"007"`` for
    ``7``), at most ``limit``: the 'did you mean' of an id :func:`lookup_id` did not find."""
    number = id_number(key)
    if number is None:
        return []
    return [i for i in ids if id_number(i) == number][:limit]


def _unknown_id_message(what: str, key, near: list) -> str:
    typed = plain(key if isinstance(key, str) else str(key))
    means = " or ".join(plain(str(i)) for i in near)
    return (f"no {what} {typed} in this run; did you mean {means}? (ids are matched as the training data wrote them: "
            f"{typed} and {plain(str(near[0]))} are two different ids)")
