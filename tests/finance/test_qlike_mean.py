"""QLIKE on the mean functional (issue 15.5): QLIKE is consistent for E[rv²] (Patton 2011), so besides
the median-based ``vol_qlike`` every model is also scored on sqrt(E[rv²]) from its quantiles
(``vol_qlike_mean``); a saved run is rescored from its predictions without retraining."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from domains.finance.config import BacktestConfig
from domains.finance.data import derive_returns
from domains.finance.features import QUANTILES, base_features
from domains.finance.metrics import qlike_rows, second_moment_from_quantiles
from domains.finance.walkforward import LOSS_COLUMNS, rescore, rms_vol, run_walkforward, summarise

Q = np.array(QUANTILES)


@pytest.mark.parametrize("s", [0.2, 0.4, 0.6])
def test_second_moment_of_a_lognormal_from_its_quantiles(s):
    med = np.array([0.01, 0.02, 0.05])
    q = med[:, None] * np.exp(s * stats.norm.ppf(Q))[None, :]
    true = med**2 * np.exp(2 * s * s)
    np.testing.assert_allclose(second_moment_from_quantiles(q, Q), true, rtol=0.02)
    assert np.all(np.mean(q**2, axis=1) > 1.05 * true)  # the naive grid mean is biased up: the grid is not equally spaced
    np.testing.assert_allclose(second_moment_from_quantiles(q[:, ::-1], Q), true, rtol=0.02)  # order of the columns does not matter


def test_mean_functional_beats_the_median_on_qlike_for_a_lognormal_forecast():
    rng = np.random.default_rng(0)
    n, s = 200_000, 0.5
    sigma = np.exp(rng.normal(np.log(0.01), 0.3, n))  # each forecast's own median
    y = sigma * np.exp(s * rng.standard_normal(n))  # realised vol drawn from the forecast distribution itself
    q = sigma[:, None] * np.exp(s * stats.norm.ppf(Q))[None, :]
    on_median = qlike_rows(y, q[:, list(Q).index(0.5)], floor=0).mean()
    on_mean = qlike_rows(y, rms_vol(q), floor=0).mean()
    on_true_mean = qlike_rows(y, sigma * np.exp(s * s), floor=0).mean()
    assert on_mean < on_median - 0.05  # median: E[ratio - log ratio - 1] = e^{2s²} - 1 ≈ 0.65 vs ≈ 0.5 at the mean
    assert abs(on_mean - on_true_mean) < 0.01


N_DAYS = 900
TINY = dict(encoder_length=10, horizon=3, hidden_size=4, attention_heads=1, hidden_continuous_size=2, epochs=1, refit_epochs=1,
            max_batches=2, refit_batches=1, batch_size=32, seeds=2, folds=2, test_days=20, val_days=20, fold_min_history=210,
            save_predictions=True, track=False, baselines=["historical", "ewma", "gjr_t"])


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(1)
    dates = pd.bdate_range("2015-01-01", periods=N_DAYS)
    vol = np.where(np.arange(N_DAYS) >= 870, 0.03, 0.01)
    panel = derive_returns(pd.concat([pd.DataFrame({"date": dates, "ticker": t, "close": 100 * np.exp(np.cumsum(rng.normal(0, 1, N_DAYS) * vol))})
                                      for t in ("AAA", "BBB")], ignore_index=True))
    torch.manual_seed(0)
    res = run_walkforward(panel, base_features(panel, None), dataclasses.replace(BacktestConfig(), **TINY))
    return res, summarise(res, TINY["horizon"])


def test_every_table_and_the_verdict_carry_both_qlikes(tiny):
    res, out = tiny
    assert "vol_qlike_mean" in LOSS_COLUMNS
    for key in ("aggregate", "by_ticker", "by_fold", "by_regime", "seeds"):
        assert {"vol_qlike", "vol_qlike_mean"} <= set(out[key].columns), key
    assert out["aggregate"]["vol_qlike_mean"].notna().all()
    dm = out["dm"]
    assert set(dm.loc[dm["regime"] == "all", "loss"]) == {"vol_pinball", "vol_qlike", "vol_qlike_mean", "vol_qlike_cal", "vol_qlike_cal_vs_mean", "ret_pinball_h1"}
    v = out["verdict"]
    for k in ("vol_qlike_dm_p", "vol_qlike_target_met", "vol_qlike_mean_dm_p", "vol_qlike_mean_target_met", "vol_qlike_mean_tft_vs_best_rel",
              "all_targets_met", "all_targets_met_qlike_mean"):
        assert k in v, k
    L = res.losses
    np.testing.assert_allclose(L["vol_qlike"], qlike_rows(L["rvol"], L["rvol_median"]), rtol=1e-4, atol=1e-5)  # the median QLIKE is unchanged


def test_rescore_of_a_saved_run_reproduces_the_live_column(tiny, tmp_path):
    res, out = tiny
    res.losses.drop(columns=["vol_qlike_mean", "rvol_rms"]).to_parquet(tmp_path / "losses.parquet", index=False)  # a run saved before the column existed
    res.predictions.to_parquet(tmp_path / "predictions.parquet", index=False)
    (tmp_path / "folds.json").write_text(json.dumps(res.folds, default=str))
    re = rescore(tmp_path)
    main = ~res.losses["model"].astype(str).str.startswith("tft_seed")
    a = res.losses[main].sort_values(["model", "ticker", "origin"])
    b = re.losses[main.to_numpy()].sort_values(["model", "ticker", "origin"])
    np.testing.assert_allclose(b["vol_qlike_mean"], a["vol_qlike_mean"], rtol=1e-3, atol=1e-5)  # float32 predictions vs float64 in the run
    out2 = summarise(re, TINY["horizon"])
    np.testing.assert_allclose(out2["aggregate"]["vol_qlike"], out["aggregate"]["vol_qlike"])
    np.testing.assert_allclose(out2["aggregate"]["vol_pinball"], out["aggregate"]["vol_pinball"])
    ps, ps2 = out["pinball_by_quantile"], out2["pinball_by_quantile"]
    m = ps.merge(ps2, on=["model", "target", "quantile"])
    assert len(m) == len(ps) and np.allclose(m["pinball_x"], m["pinball_y"], rtol=1e-3)
    assert out2["verdict"]["vol_qlike_mean_target_met"] == out["verdict"]["vol_qlike_mean_target_met"]
    # the recalibrated variance forecasts (vol_qlike_cal, domains.finance.variance) come out the same from the saved predictions
    np.testing.assert_allclose(out2["aggregate"]["vol_qlike_cal"], out["aggregate"]["vol_qlike_cal"], rtol=2e-3)
    assert out2["verdict"]["vol_qlike_cal_target_met"] == out["verdict"]["vol_qlike_cal_target_met"]
    # the members' quantiles come from the run's losses (they are not in predictions.parquet): the ensemble's variance
    # (geometric mean of the members', --ensemble-variance members_geo) is rebuilt, not silently replaced by its own
    assert re.losses.loc[~main.to_numpy(), "rvol_var_cal"].notna().all()
    tft = (re.losses["model"] == "tft").to_numpy()
    np.testing.assert_allclose(re.losses.loc[tft, "rvol_var_cal"].to_numpy(), res.losses.loc[tft, "rvol_var_cal"].to_numpy(), rtol=2e-3)


@pytest.mark.slow
def test_quick_backtest_reports_vol_qlike_mean_and_rescores(tmp_path):
    from core.config import parse_config
    from domains.finance.backtest import backtest

    run = backtest(parse_config(BacktestConfig, ["--quick", "--runs-dir", str(tmp_path), "--no-track"]))
    agg = pd.read_csv(run / "metrics_aggregate.csv")
    assert agg["vol_qlike_mean"].notna().all() and (agg["vol_qlike_mean"] > 0).all()
    assert {"vol_qlike_mean"} <= set(pd.read_csv(run / "metrics_by_fold.csv").columns) & set(pd.read_csv(run / "metrics_by_regime.csv").columns)
    m = json.loads((run / "metrics.json").read_text())
    assert {"vol_qlike_target_met", "vol_qlike_mean_target_met", "vol_qlike_mean_dm_p", "all_targets_met_qlike_mean"} <= set(m)
    again = backtest(parse_config(BacktestConfig, ["--rescore", str(run), "--runs-dir", str(tmp_path), "--no-track"]))
    m2 = json.loads((again / "metrics.json").read_text())
    assert m2["rescored_from"] == str(run.resolve())
    assert abs(m2["tft/vol_qlike_mean"] - m["tft/vol_qlike_mean"]) < 1e-3 * m["tft/vol_qlike_mean"]
    assert m2["tft/vol_qlike"] == pytest.approx(m["tft/vol_qlike"], rel=1e-6)
