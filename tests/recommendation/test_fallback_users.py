"""Users without training history (in the user table, no interaction: served the most popular unseen items) get one
rule whatever asks: ``score``'s FAISS lists gave them the index's answer for their model vector — another list than the
exact one and ``recommend --user``, with inner products in ``popularity_count`` — and ``recommend --new-title``
(``cold_start_item``, the dashboard's cold-start tab) ranked the new item against model scores their list never uses.
A tiny shop run with two such users; ML-100K users with history keep their lists (test_train_serve's run)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

GHOSTS = ("ghost1", "ghost2")  # in shop.user, in no interaction


@pytest.fixture(scope="module")
def ghost_run(tmp_path_factory):
    """A RecBole-style shop: 30 users buy among items P0..P29 (three categories); shop.user also lists two users with no order."""
    from domains.recommendation.train import main as train
    from tests.recommendation_support import write_recbole_shop

    tmp = tmp_path_factory.mktemp("ghosts")
    folder = tmp / "shop"
    folder.mkdir()
    write_recbole_shop(folder, n_users=30, n_items=30, extra_users=GHOSTS)
    runs = tmp / "runs"
    assert train(["--runs-dir", str(runs), "--no-track", "--data", str(folder), "--name", "shop", "--no-wide", "--text", "none",
                  "--no-baselines", "--epochs", "2", "--batch-size", "32", "--validation-ratio", "0", "--seed", "0"]) == 0
    return runs / "recommendation" / "shop"


def test_faiss_serves_a_user_without_history_the_popularity_list_of_recommend(ghost_run, tmp_path):
    from domains.recommendation.inference import POPULARITY_COLUMN, Recommender
    from domains.recommendation.score import main as score

    rec = Recommender.load(ghost_run)
    assert set(GHOSTS) <= set(rec.space.user_ids) and not set(GHOSTS) & set(rec.seen)  # the users this test is about
    counts = dict(zip(rec.space.item_ids, rec.popularity))
    out = tmp_path / "topk"
    assert score(["--model-run", str(ghost_run), "--runs-dir", str(tmp_path / "runs"), "--index", "flat", "--k", "5", "--no-progress",
                  "--out", str(out)]) == 0
    rows = pd.read_parquet(out)
    assert set(rows["method"]) == {"exact", "faiss-flat"}
    for user in GHOSTS:
        served = rec.recommend(user, k=5)  # recommend --user: the popularity fallback
        assert served["fallback"].all()
        for method in ("exact", "faiss-flat"):
            lst = rows[(rows["user_id"] == user) & (rows["method"] == method)].sort_values("rank")
            assert list(lst["item_id"]) == [str(i) for i in served["item_id"]], (user, method)  # the old FAISS list: the model vector's
            assert lst["fallback"].all() and lst["score"].isna().all()
            assert list(lst[POPULARITY_COLUMN]) == [counts[i] for i in served["item_id"]]  # counts, not inner products
    # users with history: the flat index's list is the exact inner-product ranking of their vectors (unchanged)
    for user in ("c0", "c1", "c2"):
        exact = rows[(rows["user_id"] == user) & (rows["method"] == "exact")].sort_values("rank")
        flat = rows[(rows["user_id"] == user) & (rows["method"] == "faiss-flat")].sort_values("rank")
        assert list(flat["item_id"]) == list(exact["item_id"]) == [str(i) for i in rec.recommend(user, k=5)["item_id"]]
        assert not flat["fallback"].any() and flat["score"].notna().all()
    summary = json.loads((out / "_topk_summary.json").read_text())
    assert summary["approx_recall_vs_exact"] == {"faiss-flat": pytest.approx(1.0)}


def test_the_recall_of_an_index_leaves_fallback_users_out():
    from domains.recommendation.topk import approx_recall

    out = pd.DataFrame({"user_id": ["a", "a", "b", "b", "g", "g"], "item_id": ["x", "y", "x", "z", "p", "q"],
                        "method": ["exact", "exact", "faiss-hnsw", "faiss-hnsw", "exact", "faiss-hnsw"],
                        "fallback": [False, False, False, False, True, True]})
    out = pd.concat([out, pd.DataFrame({"user_id": ["a", "a", "b", "b"], "item_id": ["x", "w", "x", "z"], "method": ["faiss-hnsw", "faiss-hnsw", "exact", "exact"],
                                        "fallback": False})], ignore_index=True)
    assert approx_recall(out, ["faiss-hnsw"]) == {"faiss-hnsw": pytest.approx(0.75)}  # a 0.5, b 1.0; g (fallback) not counted
    only_fallback = out[out["fallback"]]
    assert approx_recall(only_fallback, ["faiss-hnsw"]) == {"faiss-hnsw": None}


def test_the_cold_start_rank_of_a_user_without_history_is_empty_and_says_why(ghost_run, tmp_path, capsys):
    from domains.recommendation import recommend
    from domains.recommendation.inference import Recommender

    rec = Recommender.load(ghost_run)
    placed = rec.cold_start_item("Blue shirt", ["Shirts"], k_users=rec.space.n_users)  # every user, the two without history too
    assert len(placed) == rec.space.n_users
    ghosts = placed[placed["user_id"].isin(GHOSTS)]
    assert len(ghosts) == 2
    assert ghosts["rank_in_user_list"].isna().all() and not ghosts["in_top_k"].any()  # the old code: a model rank, maybe in_top_k
    assert ghosts["fallback"].all() and ghosts["reason"].str.startswith("no training history").all()
    reason = ghosts["reason"].iloc[0]
    others = placed[~placed["user_id"].isin(GHOSTS)]
    assert not others["fallback"].any() and (others["reason"] == "").all() and others["rank_in_user_list"].notna().all()
    for user, score, rank, top in zip(others["user_id"], others["score"], others["rank_in_user_list"], others["in_top_k"]):
        ranked = rec.recommend(user, k=rec.space.n_items)  # the user's whole list
        assert rank == 1 + int((ranked["score"] > score).sum()) and top == (rank <= rec.k_default), user
    assert recommend.main(["--model-run", str(ghost_run), "--runs-dir", str(tmp_path), "--new-title", "Blue shirt", "--new-genres", "Shirts",
                           "--k", str(rec.space.n_users)]) == 0
    printed = capsys.readouterr().out
    assert reason in printed and "<NA>" in printed
    saved = pd.read_parquet(next((tmp_path / "recommendation").glob("*/recommendations.parquet")))
    assert saved.set_index("user_id").loc[list(GHOSTS), "rank_in_user_list"].isna().all()
