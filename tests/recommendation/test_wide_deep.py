"""Wide and deep two-tower (``--wide``): a fixed EASE item-item part over the user's history plus the towers.

The wide part is fitted only on the rows a phase trains on (select: the fit part; refit: the training split), the
serving score is exactly deep + wide, and a saved run serves (and explains) the same scores after loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from domains.recommendation import training as T
from domains.recommendation.baselines import EASE, interaction_matrix
from domains.recommendation.config import TrainConfig
from domains.recommendation.model import Batcher, FeatureSpace, TwoTower, TwoTowerConfig, all_embeddings

TINY = dict(text="none", id_dim=8, feature_dim=4, hidden=[16], out_dim=8, batch_size=256, epochs=2, patience=0, baselines=False,
            track=False, threads=1, wide=True, wide_lambda=50.0, wide_folds=2, wide_mode="joint")


def _interactions(path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = [(u, int(i), 1_000_000 + 100 * u + t) for u in range(120) for t, i in enumerate(rng.choice(60, 15, replace=False))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(path, index=False)
    return path


def _tiny_model(n_users=6, n_items=9, seed=0) -> tuple[TwoTower, Batcher, FeatureSpace]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    users = pd.DataFrame({"user_id": np.arange(n_users), "age": rng.integers(18, 60, n_users), "gender": ["M", "F"] * (n_users // 2),
                          "occupation": ["a"] * n_users})
    items = pd.DataFrame({"item_id": np.arange(n_items), "title": [f"m{i}" for i in range(n_items)], "year": [1990] * n_items,
                          "genres": [["Drama"]] * n_items})
    space = FeatureSpace.build(users, items)
    model = TwoTower(space, TwoTowerConfig(id_dim=8, feature_dim=4, hidden=[8], out_dim=8, text_dim=0, temperature=0.05, wide=True))
    B = torch.randn(n_items, n_items)
    B.fill_diagonal_(0.0)
    model.set_wide(B)
    with torch.no_grad():
        model.wide_log_gain.fill_(np.log(7.0))
    hist = [rng.choice(n_items, 3, replace=False).astype(np.int64) for _ in range(n_users)]
    batcher = Batcher(space.user_feature_table(users), space.item_feature_arrays(items), None, history=hist)
    return model.eval(), batcher, space


def test_serving_score_is_the_deep_score_plus_the_gained_wide_score():
    model, batcher, space = _tiny_model()
    U, V = all_embeddings(model, batcher, space.n_users, space.n_items)
    assert U.shape[1] == V.shape[1] == 8 + space.n_items
    rows = torch.arange(space.n_users)
    with torch.no_grad():
        ud, vd = model(batcher.user_kjt(rows), batcher.item_kjt(torch.arange(space.n_items)))
        x = batcher.history_matrix(rows, space.n_items)
        assert x.sum() == 3 * space.n_users  # the multi-hot history, three items per user
        logits = ud @ vd.T / model.cfg.temperature + model.wide_scores(x)  # what the training loss sees
    torch.testing.assert_close(U @ V.T, model.cfg.temperature * logits, atol=1e-5, rtol=1e-5)
    # by hand: u·v + T·g·Σ_h B[h, j]
    hand = ud @ vd.T + model.cfg.temperature * 7.0 * (x @ model.wide_B)
    torch.testing.assert_close(U @ V.T, hand, atol=1e-5, rtol=1e-5)
    # the deep part of the serving vectors is the towers' own output
    torch.testing.assert_close(model.deep_part(V), vd)
    # a new item (unknown id) has no co-occurrence: its wide columns are zero
    v_new = model.item_embedding(batcher.item_kjt(torch.tensor([0]), id_dropout=1.0))
    assert torch.count_nonzero(v_new[0, 8:]) == 0


def test_the_wide_part_sees_only_the_rows_of_its_phase(tmp_path, monkeypatch):
    cfg = TrainConfig(data=str(_interactions(tmp_path / "inter.csv")), seed=0, **TINY)
    prep = T.prepare_inputs(cfg)
    calls = []
    real = T.wide_weights

    def spy(u, i, space, lam):
        calls.append(set(zip(u.tolist(), i.tolist())))
        return real(u, i, space, lam)

    monkeypatch.setattr(T, "wide_weights", spy)

    def make():
        m = T.build_model(cfg, prep.space)
        return T.local_trainer(cfg, m, torch.optim.Adam(m.parameters(), lr=cfg.lr))

    state, _, _ = T.fit_two_tower(prep, cfg, None, make)
    pairs = lambda u, i: set(zip(u.tolist(), i.tolist()))  # noqa: E731
    fit, train = pairs(prep.fit_u, prep.fit_i), pairs(prep.train_u, prep.train_i)
    valid, test = pairs(prep.valid_u, prep.valid_i), pairs(prep.test_u, prep.test_i)
    assert valid and test and cfg.wide_folds == 2 and cfg.wide_mode == "joint"  # joint: the cross-fitted weights are fitted too
    # select: the fit part, then its 2 cross-fitting folds; refit: the training split, then its 2 folds
    assert len(calls) == 6 and calls[0] == fit and calls[3] == train
    for c in calls[:3]:
        assert c <= fit and not c & valid and not c & test
    for c in calls[3:]:
        assert c <= train and not c & test
    assert calls[1] | calls[2] == fit and not calls[1] & calls[2]  # each row left out of exactly one fold's fit
    assert calls[4] | calls[5] == train and not calls[4] & calls[5]
    # the saved (averaged) weights carry the refit phase's B: EASE on the training split, exactly
    X = interaction_matrix(prep.train_u, prep.train_i, prep.space.n_users, prep.space.n_items)
    np.testing.assert_allclose(state["wide_B"].numpy(), EASE(50.0).fit(X).B, atol=1e-5)
    assert not np.allclose(state["wide_B"].numpy(), EASE(50.0).fit(interaction_matrix(prep.fit_u, prep.fit_i, prep.space.n_users,
                                                                                          prep.space.n_items)).B, atol=1e-3)


def test_a_saved_wide_run_serves_and_explains_the_same_scores(tmp_path):
    from safetensors import safe_open

    from domains.recommendation.because import LEAVE_ONE_OUT, because_you_watched
    from domains.recommendation.inference import Recommender
    from domains.recommendation.train import train

    cfg = TrainConfig(data=str(_interactions(tmp_path / "inter.csv")), seed=0, runs_dir=str(tmp_path / "runs"), name="wide", **TINY)
    run_dir = train(cfg)
    assert json.loads((Path(run_dir) / "model.json").read_text())["kwargs"]["wide"] is True
    with safe_open(str(Path(run_dir) / "model.safetensors"), "pt") as f:  # weights only, no pickle
        assert "wide_B" in f.keys() and "wide_log_gain" in f.keys()
    rec = Recommender.load(run_dir)
    assert rec.model.wide_dim == rec.space.n_items and rec.item_vecs.shape[1] == 8 + rec.space.n_items
    user = rec.space.user_ids[3]
    out = rec.recommend(user, k=5)
    assert not out["fallback"].any() and not set(out["item_id"]) & set(rec.items_df["item_id"].iloc[rec.seen[user]])
    # the served score is deep + wide, with the wide part recomputed from EASE on the run's training file
    train_df = pd.read_parquet(Path(run_dir) / "train.parquet")
    uidx, iidx = rec.space.user_index(), rec.space.item_index()
    X = interaction_matrix(train_df["user_id"].map(uidx).to_numpy(), train_df["item_id"].map(iidx).to_numpy(), rec.space.n_users, rec.space.n_items)
    B = torch.as_tensor(EASE(50.0).fit(X).B)
    row = rec.user_row(user)
    deep = rec.model.deep_part(rec.user_vecs[row]) @ rec.model.deep_part(rec.item_vecs).T
    wide = rec.model.cfg.temperature * rec.model.wide_gain().detach() * (torch.as_tensor(X[row].toarray()[0]) @ B)
    cols = [rec.item_row(i) for i in out["item_id"]]
    np.testing.assert_allclose(out["score"].to_numpy(), (deep + wide)[cols].numpy(), atol=1e-4)
    # "because you watched" still works: leave-one-out over the history, the wide part included
    table = because_you_watched(rec, user, k=5, top=2)
    assert set(table["method"]) == {LEAVE_ONE_OUT} and table["item_id"].nunique() == 5
    assert table["contribution"].abs().max() > 0
    sim = rec.similar_items(rec.space.item_ids[0], k=3)  # the item tower's space (wide columns left out)
    assert len(sim) == 3


def test_wide_part_is_turned_off_above_the_size_limit_and_under_dmp():
    users = pd.DataFrame({"user_id": [1, 2], "age": [20, 30], "gender": ["M", "F"], "occupation": ["a", "b"]})
    items = pd.DataFrame({"item_id": list(range(30)), "title": ["t"] * 30, "year": [1990] * 30, "genres": [["Drama"]] * 30})
    space = FeatureSpace.build(users, items)
    assert T.two_tower_kwargs(TrainConfig(wide=True, wide_max_items=30), space)["wide"] is True
    assert T.two_tower_kwargs(TrainConfig(wide=True, wide_max_items=29), space)["wide"] is False
    assert T.two_tower_kwargs(TrainConfig(wide=True, dmp=True), space)["wide"] is False
    # blend picks its weight on validation: without a validation part (the legacy procedure) it is off
    assert T.two_tower_kwargs(TrainConfig(wide=True, validation_ratio=0.0), space)["wide"] is False
    assert T.two_tower_kwargs(TrainConfig(wide=True, validation_ratio=0.0, wide_mode="joint"), space)["wide"] is True
    with pytest.raises(Exception, match="history"):
        TwoTower(space, TwoTowerConfig(text_dim=0, wide=True, history=False))


def test_blend_mode_trains_the_towers_alone_and_the_refit_keeps_the_weight_chosen_on_validation(tmp_path):
    data = str(_interactions(tmp_path / "inter.csv"))

    def fit(**over):
        torch.manual_seed(0)
        cfg = TrainConfig(data=data, seed=0, **{**TINY, "epochs": 1, **over})
        prep = T.prepare_inputs(cfg)

        def make():
            m = T.build_model(cfg, prep.space)
            return T.local_trainer(cfg, m, torch.optim.Adam(m.parameters(), lr=cfg.lr))

        return cfg, T.fit_two_tower(prep, cfg, None, make)

    cfg, (state, _, selection) = fit(wide_mode="blend")
    c = selection["wide_gain"] * cfg.temperature
    assert min(abs(c - g) for g in T.WIDE_BLEND_GRID) < 1e-9  # a point of the validation grid
    assert float(state["wide_log_gain"].exp()) == pytest.approx(selection["wide_gain"], rel=1e-5)
    # no wide term in the loss: the towers' weights are those of the plain two-tower trained with the same seed
    _, (plain, _, _) = fit(wide=False)
    assert set(state) - set(plain) == {"wide_B", "wide_log_gain"}
    for k, v in plain.items():
        torch.testing.assert_close(state[k], v, msg=k)
