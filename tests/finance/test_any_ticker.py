"""Forecasting beyond the training panel (issue 15.3, 15.6, 15.7, 15.9): exchange-calendar forecast
dates, zero-shot tickers, refusing a model whose inputs the data lacks, OHLC/volume inputs, and
constant inputs reported as unimportant. Tiny untrained models on the bundled real panel: fast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from domains.finance.data import PriceDataError, load_covariates, load_panel
from domains.finance.features import CORE_REALS, FoldScaler, base_features, future_sessions, observed_inputs
from domains.finance.model import Forecaster, TFTSpec, build_tft
from domains.finance.predictor import forecast_frame
from tests.finance_support import panel_slice

SPEC = dict(encoder_length=20, horizon=5, hidden_size=8, attention_heads=1, hidden_continuous_size=4)


@pytest.fixture(scope="module")
def panel():
    return panel_slice(["AAPL", "KO", "JPM", "SP500"], "2020-06-01", "2021-04-01")


def _forecaster(panel, tickers, inputs, seed=0):
    torch.manual_seed(seed)
    spec = TFTSpec(**SPEC, observed_reals=tuple(inputs))
    feat = base_features(panel[panel["ticker"].isin(tickers)])
    return Forecaster(build_tft(spec, tickers), spec, FoldScaler.fit(feat), sorted(tickers))


def test_forecast_dates_follow_the_exchange_calendar(panel):
    assert pd.Timestamp("2021-04-02") not in future_sessions("2021-04-01", 5, "XNYS")  # Good Friday 2021: NYSE closed
    assert list(future_sessions("2021-04-01", 2, "business")) == [pd.Timestamp("2021-04-02"), pd.Timestamp("2021-04-05")]
    fc = _forecaster(panel, ["AAPL", "KO"], CORE_REALS)
    df = forecast_frame(fc, panel, None, ["AAPL"])
    assert df["origin"].max() == pd.Timestamp("2021-04-01")
    assert sorted(df["date"].unique()) == list(pd.to_datetime(["2021-04-05", "2021-04-06", "2021-04-07", "2021-04-08", "2021-04-09"]))
    with pytest.raises(PriceDataError, match="unknown exchange calendar 'NOPE'"):
        forecast_frame(fc, panel, None, ["AAPL"], calendar="NOPE")


def test_zero_shot_forecasts_an_unseen_ticker_without_touching_known_ones(panel):
    fc = _forecaster(panel, ["AAPL", "KO"], CORE_REALS)
    with pytest.raises(PriceDataError, match=r"\['JPM'\] unknown to this model.*--zero-shot"):
        forecast_frame(fc, panel, None, ["AAPL", "JPM"])
    before = forecast_frame(fc, panel, None, ["AAPL"])
    both = forecast_frame(fc, panel, None, ["AAPL", "JPM"], zero_shot=True)
    jpm = both[both["ticker"] == "JPM"]
    assert len(jpm) == 2 * 5 and jpm["zero_shot"].all() and not both.loc[both["ticker"] == "AAPL", "zero_shot"].any()
    q = [c for c in both.columns if c.startswith("q_")]
    np.testing.assert_allclose(both.loc[both["ticker"] == "AAPL", q].to_numpy(), before[q].to_numpy(), rtol=1e-4, atol=1e-7)  # float32 batch noise only
    # the unseen ticker is normalised by its own history: its volatility forecast scales with it
    emb = fc.model.input_embeddings.embeddings["ticker"].weight
    idx = [fc.model.ticker_index[t] for t in ("AAPL", "KO")]
    torch.testing.assert_close(emb[0], emb[idx].mean(dim=0))  # the "unknown ticker" row
    scaled = panel[panel["ticker"] == "JPM"].assign(ticker="JPMX2")
    scaled["log_ret"] *= 2
    scaled["rvol5"] *= 2
    x2 = forecast_frame(fc, pd.concat([panel, scaled]), None, ["JPM", "JPMX2"], zero_shot=True)
    v = x2[x2["target"] == "rvol"].groupby("ticker")["q_0.5"].mean()
    assert v["JPMX2"] == pytest.approx(2 * v["JPM"], rel=1e-4)


def test_a_model_whose_inputs_the_data_lacks_is_refused_in_one_line():
    cov = load_covariates()  # VIX and WTI end in 2019
    p = load_panel()
    panel = p[p["ticker"].isin(["AAPL", "KO", "SP500"]) & (p["date"] >= "2018-01-01") & (p["date"] <= "2018-12-31")].reset_index(drop=True)
    with_vix = observed_inputs(base_features(panel, cov))
    assert {"vix_z", "wti_ret_z"} <= set(with_vix)
    fc = _forecaster(panel, ["AAPL", "KO"], [r for r in with_vix if r in CORE_REALS + ["vix_z", "wti_ret_z"]])
    with pytest.raises(PriceDataError) as e:
        forecast_frame(fc, panel, None, ["AAPL"], source="prices.csv", model_run="runs/finance/x")
    msg = str(e.value)
    assert "\n" not in msg and "vix_z, wti_ret_z" in msg and "prices.csv" in msg and "runs/finance/x" in msg


def test_ohlc_range_and_volume_inputs_are_used_when_present_and_constant_ones_are_not_important(panel, tmp_path):
    from domains.finance.interpretation import interpret

    p = panel[panel["ticker"].isin(["AAPL", "KO"])].copy()
    assert observed_inputs(base_features(p[["date", "ticker", "close", "log_ret", "rvol5"]])) == CORE_REALS
    rng = np.random.default_rng(0)
    p["open"] = p["close"] * np.exp(rng.normal(0, 0.005, len(p)))
    p["high"] = p[["open", "close"]].max(axis=1) * np.exp(np.abs(rng.normal(0, 0.01, len(p))))
    p["low"] = p[["open", "close"]].min(axis=1) * np.exp(-np.abs(rng.normal(0, 0.01, len(p))))
    p.loc[p["ticker"] == "KO", ["open", "high", "low"]] = np.nan  # OHLC is optional per ticker
    p["volume"] = 1e6  # constant: no information
    feat = base_features(p)
    assert observed_inputs(feat) == CORE_REALS + ["range_z"]  # constant volume is not an input
    ko = feat[feat["ticker"] == "KO"]
    assert ko["lrange"].isna().all() and feat.loc[feat["ticker"] == "AAPL", "lrange"].notna().all()
    fc = _forecaster(p, ["AAPL", "KO"], CORE_REALS + ["range_z", "volume_z"])
    imp = interpret(fc, feat, tmp_path, last_days=20)["variable_importance"]
    enc = imp[imp["kind"] == "encoder"].set_index("variable")
    assert enc.loc["volume_z", "constant"] and enc.loc["volume_z", "importance"] == 0.0
    assert not enc.loc["range_z", "constant"] and enc.loc["range_z", "importance"] > 0
    assert enc["importance"].sum() == pytest.approx(1.0)
