"""Data loading/validation, protocols and metric definitions (fast, no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from domains.recommendation.data import (InteractionDataError, load_interactions, load_ml100k, load_movielens_folder,
                                         split_interactions)
from domains.recommendation.metrics import ranking_metrics, top_k


@pytest.fixture(scope="module")
def ml100k():
    return load_ml100k()


def test_ml100k_shapes_and_features(ml100k):
    assert ml100k.interactions.shape == (100_000, 4)
    assert ml100k.users.shape[0] == 943 and ml100k.items.shape[0] == 1682
    assert set(ml100k.users.columns) >= {"age", "gender", "occupation"}
    toy = ml100k.items.set_index("item_id").loc[1]
    assert toy["title"] == "Toy Story" and toy["year"] == 1995 and toy["genres"] == ["Animation", "Children's", "Comedy"]
    assert ml100k.interactions["rating"].between(1, 5).all()


def test_ms_protocol_is_per_user_stratified_and_seeded(ml100k):
    a = split_interactions(ml100k.interactions, "ms", seed=42)
    b = split_interactions(ml100k.interactions, "ms", seed=42)
    c = split_interactions(ml100k.interactions, "ms", seed=7)
    pd.testing.assert_frame_equal(a.test, b.test)
    assert not a.test.equals(c.test)
    assert len(a.train) + len(a.test) == 100_000
    n = ml100k.interactions.groupby("user_id").size()
    ntr = a.train.groupby("user_id").size()
    assert (ntr == np.round(0.75 * n)).all()  # every user split 75/25
    assert not a.train.merge(a.test, on=["user_id", "item_id"]).shape[0]


def test_temporal_protocol_holds_out_each_users_last(ml100k):
    s = split_interactions(ml100k.interactions, "temporal")
    assert len(s.test) == 943
    last = s.train.groupby("user_id")["timestamp"].max()
    assert (s.test.set_index("user_id")["timestamp"] >= last.loc[s.test["user_id"]].values).all()


def test_user_file_validation_counts_everything(tmp_path):
    df = pd.DataFrame({"user_id": [1, 1, 1, 2, 3], "item_id": ["a", "a", "b", "zzz", "b"], "timestamp": [1, 5, 2, 3, 4], "rating": [3, 4, 5, 1, 2]})
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["A", "B", "C"], "genres": ["Drama", "Comedy|Drama", ""]})
    users = pd.DataFrame({"user_id": [1, 2, 3, 4], "age": [20, 30, 40, 50], "gender": ["F", "M", "F", "M"], "occupation": ["x"] * 4})
    df.to_csv(tmp_path / "inter.csv", index=False)
    data = load_interactions(tmp_path / "inter.csv", items=items, users=users)
    r = data.report
    assert r.duplicates_dropped == 1 and r.unknown_items_dropped == 1 and r.unknown_item_examples == ["zzz"]
    assert r.users_without_history == 2  # users 2 (only an unknown item) and 4 (none)
    assert r.rows_in == 5 and r.rows_out == 3
    kept = data.interactions.set_index(["user_id", "item_id"])
    assert kept.loc[(1, "a"), "timestamp"] == 5  # the latest duplicate is kept
    with pytest.raises(InteractionDataError, match="duplicate"):
        load_interactions(tmp_path / "inter.csv", items=items, duplicates="error")
    with pytest.raises(InteractionDataError, match="not in the catalogue"):
        load_interactions(tmp_path / "inter.csv", items=items, unknown_items="error")


@pytest.mark.parametrize("content,match", [
    ("user_id,rating\n1,2\n", "missing column"),  # no timestamp alone is read (tests/recommendation/test_no_timestamp_column.py)
    ("user_id,item_id,timestamp\n1,2,yesterday-ish\n", "neither numbers nor dates"),
    ("user_id,item_id,timestamp\n", "empty"),
    ("user_id,item_id,timestamp,rating\n1,2,3,x\n", "rating"),
    ("user_id,item_id,timestamp\n,2,3\n", "empty user_id"),
])
def test_malformed_files_are_named_errors(tmp_path, content, match):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(InteractionDataError, match=match) as e:
        load_interactions(p)
    assert "bad.csv" in str(e.value)


def test_movielens_folders(tmp_path):
    ml1m = tmp_path / "ml-1m"
    ml1m.mkdir()
    (ml1m / "ratings.dat").write_text("1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n")
    (ml1m / "movies.dat").write_text("10::GoldenEye (1995)::Action|Adventure|Thriller\n20::Heat (1995)::Action|Crime\n", encoding="latin-1")
    (ml1m / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    d = load_movielens_folder(ml1m)
    assert len(d.interactions) == 3 and d.items.set_index("item_id").loc[10, "year"] == 1995
    assert d.items.set_index("item_id").loc[10, "title"] == "GoldenEye"
    assert d.users.set_index("user_id").loc[2, "occupation"] == "self-employed"
    ml20 = tmp_path / "ml-20m"
    ml20.mkdir()
    (ml20 / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,3.5,1112484676\n")
    (ml20 / "movies.csv").write_text("movieId,title,genres\n2,Jumanji (1995),Adventure|Children|Fantasy\n29,\"City of Lost Children, The (1995)\",(no genres listed)\n")
    d = load_movielens_folder(ml20)
    assert len(d.interactions) == 2 and d.items.set_index("item_id").loc[29, "genres"] == []
    (ml1m / "ratings.dat").write_text("1::10::5\n")
    with pytest.raises(InteractionDataError, match="malformed"):
        load_movielens_folder(ml1m)
    with pytest.raises(InteractionDataError, match=r"no u\.data \(ml-100k\), ratings\.dat \(ml-1m\) or ratings\.csv"):
        load_movielens_folder(tmp_path)


def test_metrics_against_hand_computed_values():
    recs = np.array([[0, 1, 2], [3, 4, 5]])
    truth = [np.array([1, 7]), np.array([9])]
    m = ranking_metrics(recs, truth, n_items=10, k=3, item_popularity=np.linspace(0, 1, 10))
    # user 0: hit at rank 2 -> DCG 1/log2(3); IDCG = 1 + 1/log2(3); user 1: no hit
    ndcg0 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert m["ndcg@3"] == pytest.approx(ndcg0 / 2)
    assert m["precision@3"] == pytest.approx((1 / 3) / 2)
    assert m["recall@3"] == pytest.approx(0.5 / 2)
    assert m["map@3"] == pytest.approx((0.5 / 2) / 2)  # AP = (1/2) / min(3, 2)
    assert m["coverage@3"] == pytest.approx(0.6)
    perfect = ranking_metrics(np.array([[1, 7, 0]]), [np.array([1, 7])], 10, 3)
    assert perfect["ndcg@3"] == pytest.approx(1.0) and perfect["recall@3"] == 1.0


def test_top_k_excludes_seen():
    import torch

    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
    idx, _ = top_k(scores, 2, [np.array([0]), np.array([3, 2])])
    assert idx.tolist() == [[1, 2], [1, 0]]
