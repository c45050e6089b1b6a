"""A small real run on ML-100K feeds serving, scoring, cold start, evaluation and the dashboard API."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest


from domains.recommendation.train import TrainConfig, train


@pytest.fixture(scope="module")
def run_dir(session_runs_dir):
    # a 3-epoch run with the settings before the weight average (temperature 0.05, raw weights): after 3 epochs the default's
    # average (decay 0.995 over ~170 steps) has not yet separated cold-start vectors by genre (fans 0.066 vs never-horror 0.086
    # at temperature 0.05); the fully trained default does (0.238 vs 0.178): test_default_model_cold_start (slow)
    cfg = TrainConfig(runs_dir=str(session_runs_dir), name="test-two-tower", track=False, epochs=3, bpr_epochs=3, temperature=0.05, ema_decay=0.0)
    return train(cfg)


def test_run_beats_popularity_and_saves_everything(run_dir):
    m = pd.read_parquet(run_dir / "eval_metrics.parquet").set_index("model")
    assert set(m.index) == {"two_tower", "most_popular", "bpr_mf"}
    assert m.loc["two_tower", "ndcg@10"] > m.loc["most_popular", "ndcg@10"] + 0.05
    assert 0 < m.loc["two_tower", "coverage@10"] <= 1
    assert m.loc["most_popular", "pop_lift@10"] > m.loc["two_tower", "pop_lift@10"]
    for f in ("model.safetensors", "feature_space.json", "split.json", "train.parquet", "item_text.safetensors"):
        assert (run_dir / f).is_file(), f
    assert json.loads((run_dir / "split.json").read_text())["protocol"] == "ms"


def test_recommend_excludes_seen_and_falls_back_for_unknown_users(run_dir):
    from domains.recommendation.api import load_recommender

    rec = load_recommender(run_dir)
    out = rec.recommend(42, k=10)
    assert len(out) == 10 and not out["fallback"].any()
    assert out["score"].is_monotonic_decreasing
    seen = set(rec.history(42)["item_id"])
    assert len(seen) > 0 and not (set(out["item_id"]) & seen)
    unk = rec.recommend("no-such-user", k=5)
    assert unk["fallback"].all() and "unknown user" in unk["reason"].iloc[0]
    assert list(unk["item_id"]) == [rec.space.item_ids[i] for i in np.argsort(-rec.popularity, kind="stable")[:5]]
    sim = rec.similar_items(50, k=5)
    assert 50 not in set(sim["item_id"]) and len(sim) == 5
    from domains.recommendation.inference import UnknownItemError

    with pytest.raises(UnknownItemError, match="not in this run's catalogue"):
        rec.similar_items(999999)


def test_cold_start_item_reaches_the_right_users(run_dir):
    """A new horror film known only by title+genres must score higher for horror fans than for
    users who never watch horror."""
    _assert_cold_start_reaches_horror_fans(run_dir)


@pytest.mark.slow
def test_default_model_cold_start(tmp_path):
    """The same cold-start check on a fully trained default model (weight average, temperature 0.03, early stopping + refit)."""
    _assert_cold_start_reaches_horror_fans(train(TrainConfig(runs_dir=str(tmp_path), name="default", track=False, baselines=False)))


def _assert_cold_start_reaches_horror_fans(run_dir):
    from domains.recommendation.api import load_recommender

    rec = load_recommender(run_dir)
    items = rec.items_df.set_index("item_id")
    train = pd.read_parquet(run_dir / "train.parquet")
    horror = train["item_id"].map(lambda i: "Horror" in items.loc[i, "genres"])
    share = horror.groupby(train["user_id"]).mean()
    fans = share[share >= share.quantile(0.9)].index
    never = share[share == 0].index
    v = rec.item_vector("Night of the Screaming Dead", ["Horror", "Thriller"], year=1998)
    uidx = rec.space.user_index()
    s = (rec.user_vecs @ v).numpy()
    fan_s = s[[uidx[u] for u in fans]].mean()
    never_s = s[[uidx[u] for u in never]].mean()
    assert fan_s > never_s
    top = rec.cold_start_item("Night of the Screaming Dead", ["Horror", "Thriller"], k_users=20, year=1998)
    assert share.loc[top["user_id"]].mean() > share.mean()  # the users it reaches watch more horror than average
    assert (top["rank_in_user_list"] >= 1).all()
    for u, rank in zip(top["user_id"], top["rank_in_user_list"]):  # against the whole unseen catalogue of that user that a list can hold
        cat = (rec.item_vecs @ rec.user_vecs[uidx[u]]).numpy()
        cat[rec.seen.get(u, [])] = -np.inf
        if rec.untrained is not None:  # items without a training interaction are in no list (d5de968), so they do not push it down
            cat[rec.untrained.numpy()] = -np.inf
        assert (cat > s[uidx[u]] + 1e-6).sum() + 1 <= rank <= (cat > s[uidx[u]] - 1e-6).sum() + 1  # float rounding of near-ties


def test_score_writes_topk_for_all_users_with_faiss_recall(run_dir, tmp_path):
    from core.scoring import read_output
    from domains.recommendation.score import ScoreConfig, score

    out = tmp_path / "topk"
    res = score(ScoreConfig(model_run=str(run_dir), runs_dir=str(tmp_path / "runs"), out=str(out), k=10, index="hnsw", users_per_item=400, progress=False))
    df = read_output(out)
    exact = df[df["method"] == "exact"]
    assert exact["user_id"].nunique() == 943 and (exact.groupby("user_id").size() == 10).all()
    assert 0.8 <= res["approx_recall_vs_exact"]["faiss-hnsw"] <= 1.0
    assert res["index_build_seconds"] > 0 and len(res["index_build_seconds_per_worker"]) == 1  # measured by the one worker
    res2 = score(ScoreConfig(model_run=str(run_dir), runs_dir=str(tmp_path / "runs"), out=str(out), k=10, index="hnsw", users_per_item=400, progress=False))
    assert res2["rows"] == res["rows"]  # a rerun resumes (all chunks done), nothing duplicated
    assert res2["index_build_seconds"] is None  # no worker started, so no index was built


def test_evaluate_and_recommend_cli(run_dir, capsys, tmp_path):
    from domains.recommendation import evaluate, recommend

    jobs = ["--runs-dir", str(tmp_path), "--no-track"]
    assert evaluate.main(["--model-run", str(run_dir), *jobs]) == 0
    assert "two_tower" in capsys.readouterr().out
    assert recommend.main(["--model-run", str(run_dir), "--runs-dir", str(tmp_path), "--user", "42"]) == 0
    assert "Top 10 for user 42" in capsys.readouterr().out
    assert recommend.main(["--model-run", str(run_dir), "--runs-dir", str(tmp_path), "--user", "123456"]) == 0
    assert "FALLBACK" in capsys.readouterr().out
    assert recommend.main(["--model-run", str(run_dir), "--runs-dir", str(tmp_path), "--similar-to", "nope"]) == 2
    assert "not in this run's catalogue" in capsys.readouterr().err
    from domains.recommendation.api import load_metrics

    assert set(load_metrics(run_dir)["model"]) == {"two_tower", "most_popular", "bpr_mf"}


def test_train_cli_rejects_bad_user_file(tmp_path, capsys):
    from domains.recommendation.train import main

    p = tmp_path / "x.csv"
    p.write_text("user,foo\n1,2\n")
    assert main(["--data", str(p), "--runs-dir", str(tmp_path), "--no-track"]) == 2
    assert "missing column" in capsys.readouterr().err


@pytest.mark.slow
def test_default_run_meets_the_protocol_ms_target(tmp_path):
    """Issue 6 target: NDCG@10 ≥ 0.45 on protocol ms and above our own BPR in the same run — with the procedure
    that figure was made with (split stratified-75-legacy, 7 epochs on the whole training split, temperature 0.05, raw
    weights: no weight average). The current default (exact split, epoch chosen on validation, weight average) is in the README."""
    run_dir = train(TrainConfig(runs_dir=str(tmp_path), track=False, split="ms", epochs=7, validation_ratio=0, temperature=0.05, ema_decay=0.0))
    m = pd.read_parquet(run_dir / "eval_metrics.parquet").set_index("model")
    assert m.loc["two_tower", "ndcg@10"] >= 0.45
    assert m.loc["two_tower", "ndcg@10"] > m.loc["bpr_mf", "ndcg@10"]


def test_score_local_and_ray_engines_write_identical_outputs(run_dir, tmp_path, ray_address):
    from core.scoring import WorkItem
    from tests.scoring_support import assert_engines_agree
    from domains.recommendation.topk import TopKScorer

    items = [WorkItem(id=f"users-{s:07d}", start=s, stop=min(s + 250, 943)) for s in range(0, 943, 250)]
    rows = assert_engines_agree(items, TopKScorer(str(run_dir), 10, "none"), tmp_path, ray_address)
    assert rows["user_id"].nunique() == 943


def test_batch_scoring_and_recommend_agree_for_users_without_history(run_dir):
    from domains.recommendation.inference import Recommender

    rec = Recommender.load(run_dir)
    uid = rec.space.user_ids[5]
    rec.seen = {u: s for u, s in rec.seen.items() if u != uid}  # as if this user had no training history
    single = rec.recommend(uid, k=10)
    assert single["fallback"].all()
    rows, _ = rec.recommend_rows(np.array([5, 6]), 10)
    assert list(rows[0]) == [rec.space.item_index()[i] for i in single["item_id"]]  # popularity, like recommend()
    assert list(rows[1]) != list(rows[0])  # a user with history still gets model scores


def test_faiss_lists_follow_the_fallback_rule_and_users_with_history_keep_theirs(run_dir):
    """score's FAISS list of a user without training history is the exact (popularity) list recommend gives; it was
    the index's answer for the user's model vector. ML-100K users with history keep their lists."""
    from core.scoring import WorkItem
    from domains.recommendation.inference import POPULARITY_COLUMN
    from domains.recommendation.topk import TopKScorer

    scorer = TopKScorer(str(run_dir), 10, "flat")
    scorer.load()
    rec = scorer._rec
    users = WorkItem(id="users-0000000", start=0, stop=8)
    before = scorer.score(users)
    assert not before["fallback"].any()  # every ML-100K user has training history
    for r in (0, 3, 7):
        uid = rec.space.user_ids[r]
        lists = {m: list(g.sort_values("rank")["item_id"]) for m, g in before[before["user_id"] == str(uid)].groupby("method")}
        assert lists["exact"] == [str(i) for i in rec.recommend(uid, k=10)["item_id"]]
        assert set(lists["faiss-flat"]) == set(lists["exact"])
    uid = rec.space.user_ids[5]
    rec.seen = {u: s for u, s in rec.seen.items() if u != uid}  # as if this user had no training history
    after = scorer.score(users)
    served = [str(i) for i in rec.recommend(uid, k=10)["item_id"]]  # the popularity fallback
    for method in ("exact", "faiss-flat"):
        lst = after[(after["user_id"] == str(uid)) & (after["method"] == method)].sort_values("rank")
        assert list(lst["item_id"]) == served and lst["fallback"].all() and lst["score"].isna().all(), method
        assert (lst[POPULARITY_COLUMN] >= 1).all() and lst[POPULARITY_COLUMN].is_monotonic_decreasing
    others = after["user_id"] != str(uid)
    pd.testing.assert_frame_equal(after[others].reset_index(drop=True), before[before["user_id"] != str(uid)].reset_index(drop=True))


def test_blank_new_title_is_refused_and_fallback_rows_carry_popularity_count(run_dir, tmp_path, capsys):
    """Issue 16.7: a blank or whitespace-only --new-title is one error line (exit 2, no job folder);
    popularity fallback rows put the interaction count in popularity_count, never in the score column."""
    from domains.recommendation import recommend
    from domains.recommendation.api import load_recommender
    from domains.recommendation.inference import POPULARITY_COLUMN, InvalidQueryError

    for title in ("", "   ", "\t"):
        assert recommend.main(["--model-run", str(run_dir), "--runs-dir", str(tmp_path), "--new-title", title, "--new-genres", "Horror"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "blank" in err[0]
    assert not (tmp_path / "recommendation").exists()  # refused before any job run was created
    rec = load_recommender(run_dir)
    with pytest.raises(InvalidQueryError, match="blank"):
        rec.cold_start_item("  ", ["Horror"])
    unk = rec.recommend("no-such-user", k=5)
    assert unk["score"].isna().all() and (unk[POPULARITY_COLUMN] > 0).all()
    assert unk[POPULARITY_COLUMN].is_monotonic_decreasing
    known = rec.recommend(42, k=5)
    assert known["score"].notna().all() and known[POPULARITY_COLUMN].isna().all()
    assert recommend.main(["--model-run", str(run_dir), "--runs-dir", str(tmp_path), "--user", "123456", "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert POPULARITY_COLUMN in out and "FALLBACK" in out
