"""The walk-forward library at tiny settings on a synthetic panel: fold eligibility, the seed
ensemble, early stopping chosen on validation data only, per-regime / per-fold / Diebold–Mariano
tables and the verdict."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from domains.finance.baselines import BASELINES
from domains.finance.config import BacktestConfig
from domains.finance.data import derive_returns
from domains.finance.features import base_features
from domains.finance.walkforward import fold_cutoffs, run_walkforward, summarise

N_DAYS, LATE_START = 900, 650
TINY = dict(encoder_length=10, horizon=3, hidden_size=4, attention_heads=1, hidden_continuous_size=2, epochs=1, refit_epochs=1,
            max_batches=2, refit_batches=1, batch_size=32, seeds=2, folds=2, test_days=20, val_days=20, fold_min_history=210, save_predictions=False,
            track=False)


def _panel(seed: int = 0, scramble_after=None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2015-01-01", periods=N_DAYS)
    vol = np.where((np.arange(N_DAYS) >= 870) & (np.arange(N_DAYS) < 885), 0.04, 0.01)  # a stress period inside the test blocks
    rows = []
    for i, t in enumerate(["AAA", "BBB", "LATE"]):
        r = rng.normal(0, 1, N_DAYS) * vol
        if scramble_after is not None:  # every return dated after this day
            later = dates > pd.Timestamp(scramble_after)
            r[later] = np.random.default_rng(99 + i).normal(0, 0.05, int(later.sum()))
        start = LATE_START if t == "LATE" else 0
        rows.append(pd.DataFrame({"date": dates[start:], "ticker": t, "close": 100 * np.exp(np.cumsum(r[start:]))}))
    return derive_returns(pd.concat(rows, ignore_index=True))


def _run(panel, **over):
    torch.manual_seed(0)  # dropout draws from the global generator (a Run seeds it once per command)
    cfg = dataclasses.replace(BacktestConfig(), **{**TINY, **over})
    return run_walkforward(panel, base_features(panel, None), cfg)


@pytest.fixture(scope="module")
def result():
    res = _run(_panel())
    return res, summarise(res, TINY["horizon"])


def test_folds_models_and_eligibility(result):
    res, out = result
    assert len(res.folds) == 2
    assert res.folds[0]["tickers"] == 2 and res.folds[-1]["tickers"] == 3  # LATE joins once it has 210 days of history
    L = res.losses
    sizes = L.groupby("model", observed=True).size()
    assert set(sizes.index) == {"tft", "tft_seed0", "tft_seed1", *BASELINES} and sizes.nunique() == 1  # same origins for every model
    assert set(L.loc[L["fold"] == 0, "ticker"].astype(str)) == {"AAA", "BBB"}
    for f in res.folds:
        assert f["val_windows"] > 0 and f["train_windows"] > 0
        assert all(e in (0, 1) for e in f["chosen_epochs"]) and len(f["chosen_epochs"]) == 2
    assert res.folds[0]["chosen_epochs"] == [1, 1]  # fold 0 has no "keep the old weights" option
    q = L[["var99", "var95"]].to_numpy()
    assert np.all(q[:, 0] <= q[:, 1] + 1e-12)


def test_tables_and_verdict(result):
    _, out = result
    assert set(out["by_regime"]["regime"]) == {"calm", "stress"}
    dm = out["dm"]
    assert set(dm["baseline"]) >= set(BASELINES) and set(dm["loss"]) == {"vol_pinball", "vol_qlike", "vol_qlike_mean", "vol_qlike_cal", "vol_qlike_cal_vs_mean", "ret_pinball_h1"}
    assert dm["p_two_sided"].between(0, 1).all()
    seeds = out["seeds"].set_index("model")
    assert {"tft_seed0", "tft_seed1", "tft", "members_mean", "members_sd"} <= set(seeds.index)
    assert seeds.loc["members_sd", "vol_pinball"] > 0  # the members differ
    pooled = out["pooled"].set_index("model")
    assert pooled.loc["tft", "cum10_var99_n"] > 0 and 0 <= pooled.loc["gjr_t", "var99_tickerfold_both_pass_rate"] <= 1
    v = out["verdict"]
    for k in ("vol_pinball_target_met", "vol_qlike_target_met", "stress_vol_pinball_target_met", "tft_var99_tickerfold_target_met",
              "all_targets_met", "tft_beats_best_baseline_vol", "best_baseline_vol"):
        assert k in v
    agg = out["aggregate"].set_index("model")
    assert agg.loc["gjr_t", "vol_pinball"] < agg.loc["random_walk", "vol_pinball"]  # a regime change: GARCH-type beats constant vol


@pytest.mark.slow
def test_model_selection_never_sees_the_test_block():
    """Everything fold 0 fits and chooses (early-stopping epoch, validation loss, network weights,
    normalisers) is unchanged when every price after the cutoff is replaced."""
    a = _panel()
    cut = fold_cutoffs(a["date"].to_numpy(), 1, TINY["test_days"], TINY["horizon"])[0][0]
    b = _panel(scramble_after=cut)
    ra, rb = _run(a, folds=1, seeds=1, epochs=2), _run(b, folds=1, seeds=1, epochs=2)
    assert ra.folds[0]["cutoff"] == rb.folds[0]["cutoff"]
    assert ra.folds[0]["val_pinball"] == rb.folds[0]["val_pinball"] and ra.folds[0]["chosen_epochs"] == rb.folds[0]["chosen_epochs"]
    assert not np.allclose(ra.losses["ret1"], rb.losses["ret1"])  # the test blocks really differ
    wa, wb = ra.forecaster.model.state_dict(), rb.forecaster.model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # the same trained (and validation-selected) network
    assert ra.forecaster.scaler.to_dict() == rb.forecaster.scaler.to_dict()
