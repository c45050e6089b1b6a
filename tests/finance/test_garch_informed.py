"""The GARCH-informed TFT (issue 15.5): the GJR-GARCH-t variance path it reads equals arch's own
forecast; its targets are the returns and realised volatility relative to GJR's forecast and map
back exactly; a saved model forecasts known and unseen (zero-shot: GJR fitted on the series' own
history) tickers. Tiny untrained models on a slice of the bundled real panel: fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from domains.finance.features import CORE_REALS, FoldScaler, base_features, series_by_ticker
from domains.finance.garch import fit_gjr, gjr_scales, gjr_variance_path
from domains.finance.model import Forecaster, TFTSpec, build_tft, predict_quantiles
from domains.finance.predictor import forecast_frame
from tests.finance_support import panel_slice

SPEC = TFTSpec(encoder_length=20, horizon=5, hidden_size=8, attention_heads=1, hidden_continuous_size=4, observed_reals=tuple(CORE_REALS) + ("gjr_z",))


@pytest.fixture(scope="module")
def panel():
    return panel_slice(["AAPL", "KO", "JPM"], "2017-01-01", "2021-04-01")


def _garch_forecaster(feat, tickers):
    sc = FoldScaler.fit(feat)
    for t, g in series_by_ticker(feat).items():
        sc.gjr[t] = [float(x) for x in fit_gjr(g["log_ret"])]
    sc.gjr_horizon = SPEC.horizon
    torch.manual_seed(0)
    return Forecaster(build_tft(SPEC, tickers), SPEC, sc, sorted(tickers))


def test_fast_variance_path_equals_arch_forecast_and_scales_are_consistent():
    r = np.random.default_rng(0).standard_t(5, 1500) * 0.01
    p = fit_gjr(r)
    fast, ref = gjr_variance_path(r, p, 5), gjr_variance_path(r, p, 5, fast=False)
    np.testing.assert_allclose(fast, ref, rtol=1e-10)
    np.testing.assert_allclose(gjr_variance_path(r, p, 5, start=700), ref[700:], rtol=1e-10)
    sigma1, ret_sd, rvol_sd = gjr_scales(r, fast)
    np.testing.assert_allclose(sigma1, np.sqrt(fast[:, 0]))
    np.testing.assert_allclose(rvol_sd[:, 4], np.sqrt(fast.mean(axis=1)))  # rvol5 at t+5: all five days forecast
    t = 100  # rvol5 at t+1: four observed squared returns and one forecast
    np.testing.assert_allclose(rvol_sd[t, 0], np.sqrt((np.sum(r[t - 3: t + 1] ** 2) + fast[t, 0]) / 5))


def test_targets_are_relative_to_gjr_and_map_back_exactly(panel):
    feat = base_features(panel[panel["ticker"].isin(["AAPL", "KO"])])
    fc = _garch_forecaster(feat, ["AAPL", "KO"])
    T = fc.tensors(fc.scaler.transform(feat))
    o = T.origins()[::7]
    _, y = T.batch(o)
    rows = o[:, None] + np.arange(1, SPEC.horizon + 1)
    ret_z, lrv_z = T.targets[rows, 0].numpy(), T.targets[rows, 1].numpy()
    # the model's return target is the return over GJR's forecast volatility: near unit variance
    assert 0.8 < float(y[0].std()) < 1.3 and float(torch.as_tensor(ret_z).std()) > 0
    back = T.from_model_units(o, {"ret_z": y[0].numpy()[..., None], "lrv_z": y[1].numpy()[..., None]})
    np.testing.assert_allclose(back["ret_z"][..., 0], ret_z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(back["lrv_z"][..., 0], lrv_z, rtol=1e-5, atol=1e-5)
    # a model that forecast the value 0 everywhere (in its units) forecasts GJR's own volatility
    zero = T.from_model_units(o, {"ret_z": np.zeros((len(o), 5, 1)), "lrv_z": np.zeros((len(o), 5, 1))})
    raw = fc.to_raw(T.tickers[o], zero)
    g = series_by_ticker(feat)
    t0 = T.tickers[o[0]]
    loc = int(np.searchsorted(g[t0]["date"], T.dates[o[0]]))
    _, _, rvol_sd = gjr_scales(g[t0]["log_ret"], gjr_variance_path(g[t0]["log_ret"], fc.scaler.gjr[t0], 5))
    np.testing.assert_allclose(raw["rvol"][0, 4, 0], rvol_sd[loc, 4], rtol=1e-4)


def test_saved_garch_informed_model_forecasts_known_and_zero_shot_tickers(panel, tmp_path):
    feat = base_features(panel[panel["ticker"].isin(["AAPL", "KO"])])
    fc = _garch_forecaster(feat, ["AAPL", "KO"])
    fc.save(tmp_path / "model")
    loaded = Forecaster.load(tmp_path / "model")
    assert loaded.scaler.gjr == fc.scaler.gjr and loaded.scaler.gjr_horizon == 5
    known = forecast_frame(loaded, panel, None, ["AAPL"])
    both = forecast_frame(loaded, panel, None, ["AAPL", "JPM"], zero_shot=True)
    q = [c for c in both.columns if c.startswith("q_")]
    np.testing.assert_allclose(both.loc[both["ticker"] == "AAPL", q].to_numpy(), known[q].to_numpy(), rtol=1e-4, atol=1e-7)
    jpm = both[both["ticker"] == "JPM"]
    assert len(jpm) == 2 * 5 and jpm["zero_shot"].all() and np.isfinite(jpm[q].to_numpy()).all()
    assert "JPM" not in loaded.scaler.gjr  # the zero-shot GJR lives in the extended copy only
    ext = loaded.zero_shot(base_features(panel[panel["ticker"].isin(["AAPL", "JPM"])]))
    jr = series_by_ticker(base_features(panel[panel["ticker"] == "JPM"]))["JPM"]["log_ret"]
    np.testing.assert_allclose(ext.scaler.gjr["JPM"], np.asarray(fit_gjr(jr)), rtol=1e-6)  # fitted on its own history
    assert predict_quantiles is not None
