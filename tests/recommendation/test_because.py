"""'Because you watched': leave-one-out contributions of history items (tiny synthetic two-tower, no data set)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from domains.recommendation.because import LEAVE_ONE_OUT, because_summary, because_you_watched
from domains.recommendation.inference import Recommender
from domains.recommendation.model import Batcher, FeatureSpace, TwoTower, TwoTowerConfig, all_embeddings


def _recommender(history: bool = True, seed: int = 0) -> Recommender:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_users, n_items = 12, 40
    genres = ["Action", "Comedy", "Drama", "Sci-Fi"]
    users = pd.DataFrame({"user_id": np.arange(1, n_users + 1), "age": rng.integers(18, 60, n_users),
                          "gender": rng.choice(["M", "F"], n_users), "occupation": rng.choice(["a", "b", "c"], n_users)})
    items = pd.DataFrame({"item_id": np.arange(100, 100 + n_items), "title": [f"Movie {i}" for i in range(n_items)],
                          "year": rng.integers(1980, 2000, n_items),
                          "genres": [list(rng.choice(genres, 2, replace=False)) for _ in range(n_items)]})
    space = FeatureSpace.build(users, items)
    model = TwoTower(space, TwoTowerConfig(id_dim=16, feature_dim=4, hidden=[32], out_dim=16, text_dim=0, history=history))
    for p in model.parameters():  # larger weights than the init: contributions well above float noise
        torch.nn.init.normal_(p, std=0.3)
    model.eval()
    batcher = Batcher(space.user_feature_table(users), space.item_feature_arrays(items), None)
    seen = {u: rng.choice(n_items, 8, replace=False).astype(np.int64) for u in space.user_ids[:-1]}  # last user: no history
    if history:
        batcher.set_history([seen.get(u, np.empty(0, np.int64)) for u in space.user_ids])
    U, V = all_embeddings(model, batcher, space.n_users, space.n_items)
    return Recommender(Path("."), model, space, users, items, batcher, U, V, seen, np.ones(n_items), 5)


def _score_without(rec: Recommender, user_id, item_id, drop_item_id) -> float:
    """The user's score for ``item_id`` recomputed from scratch with ``drop_item_id`` removed from the history."""
    row = rec.user_row(user_id)
    drop = rec.item_row(drop_item_id)
    hist = [h[h != drop] if u == user_id else h for u, h in ((u, rec.seen.get(u, np.empty(0, np.int64))) for u in rec.space.user_ids)]
    b = Batcher(rec.space.user_feature_table(rec.users_df), rec.space.item_feature_arrays(rec.items_df), None, history=hist)
    with torch.no_grad():
        u = rec.model.user_embedding(b.user_kjt(torch.tensor([row])))[0]
    return float(rec.item_vecs[rec.item_row(item_id)] @ u)


def test_removing_the_top_because_item_lowers_the_score_more_than_the_least_contributing_one():
    rec = _recommender()
    user = 3
    table = because_you_watched(rec, user, k=5, top=8)  # top=8: every history item, to find the least contributing one
    assert set(table["method"]) == {LEAVE_ONE_OUT}
    assert table["item_id"].nunique() == 5
    recs = rec.recommend(user, k=5)
    assert list(table.drop_duplicates("item_id")["item_id"]) == list(recs["item_id"])
    np.testing.assert_allclose(table.drop_duplicates("item_id")["score"], recs["score"], rtol=1e-5)
    checked = 0
    for item, g in table.groupby("item_id", sort=False):
        g = g.sort_values("contribution", ascending=False)
        assert len(g) == 8 and set(g["because_item_id"]).issubset(set(rec.items_df["item_id"].iloc[rec.seen[user]]))
        full = float(g["score"].iloc[0])
        top_drop = full - _score_without(rec, user, item, g["because_item_id"].iloc[0])
        low_drop = full - _score_without(rec, user, item, g["because_item_id"].iloc[-1])
        # the table's contribution is the score drop recomputed independently
        assert top_drop == pytest.approx(g["contribution"].iloc[0], abs=1e-4)
        assert top_drop > low_drop
        if g["contribution"].iloc[0] > 0:
            assert top_drop > 0  # removing the top "because" item lowers that recommendation's score
            checked += 1
    assert checked >= 1
    text = because_summary(because_you_watched(rec, user, k=5, top=2))
    assert set(text) == set(recs["item_id"]) and any(text.values())


def test_users_the_model_cannot_score_get_no_explanation_and_a_history_free_model_is_labelled():
    rec = _recommender()
    assert because_you_watched(rec, 12).empty  # no history: popularity fallback
    assert because_you_watched(rec, 999).empty  # unknown user
    rec2 = _recommender(history=False)
    t = because_you_watched(rec2, 3, k=3, top=2)
    assert set(t["method"]) == {"item-similarity"} and len(t) == 6


def test_recommend_user_prints_the_because_items_and_the_api_exposes_them():
    from domains.recommendation import api
    from domains.recommendation.config import RecommendConfig
    from domains.recommendation.recommend import answer

    rec = _recommender()
    headline, out, cols = answer(rec, RecommendConfig(user="3", k=4))
    assert "because_you_watched" in cols and out["because_you_watched"].str.len().gt(0).any()
    t = api.because_you_watched(rec, "3", k=4, top=1)
    first = t.set_index("item_id")["because_title"]
    for item, text in zip(out["item_id"], out["because_you_watched"]):
        if t.set_index("item_id").loc[item, "contribution"] > 0:
            assert text.startswith(first[item])
    _, fb, fb_cols = answer(rec, RecommendConfig(user="12", k=4))  # fallback: no "because" column
    assert "because_you_watched" not in fb_cols


def test_only_the_explained_items_are_scored_so_a_long_history_does_not_need_history_times_catalogue_floats(monkeypatch):
    # recommend --user for a user with 11,250 items of a 15,000-item catalogue built an 11,250 × 15,000 matrix (2.2 GB peak,
    # 7.5 GB at 37,500 × 50,000) to use k of its columns
    import domains.recommendation.because as because

    rec = _recommender()
    expected = because_you_watched(rec, 3, k=4, top=2)
    asked = []
    real = because.history_contributions

    def spy(model, batcher, user_row, history, item_vecs, *a, **kw):
        asked.append(tuple(item_vecs.shape))
        return real(model, batcher, user_row, history, item_vecs, *a, **kw)

    monkeypatch.setattr(because, "history_contributions", spy)
    got = because_you_watched(rec, 3, k=4, top=2)
    assert asked == [(4, rec.item_vecs.shape[1])]  # the 4 recommended items, not the 40 of the catalogue
    pd.testing.assert_frame_equal(got, expected)
    recs = rec.recommend(3, k=4)
    np.testing.assert_allclose(got.drop_duplicates("item_id")["score"], recs["score"], rtol=1e-5)
    top = got.iloc[0]
    assert top["contribution"] == pytest.approx(top["score"] - _score_without(rec, 3, top["item_id"], top["because_item_id"]), rel=1e-4, abs=1e-5)
