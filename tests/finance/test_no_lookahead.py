"""No future value reaches a fold's normalisers, training windows, inputs, forecasts or baselines.

Method: take the real panel, replace every price and covariate dated after a cutoff by random
values, and check that everything a fold computes up to that cutoff is bit-identical."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from core.data import prepare
from domains.finance.baselines import BASELINES, baseline_rows
from domains.finance.walkforward import fold_windows
from domains.finance.data import DATASETS, derive_returns, load_covariates, load_panel
from domains.finance.features import FoldScaler, base_features, series_by_ticker
from domains.finance.model import Forecaster, TFTSpec, build_tft, predict_quantiles

TICKERS = ["AAPL", "JPM", "SP500", "XOM"]
CUT = pd.Timestamp("2017-06-30")
SPEC = TFTSpec(encoder_length=20, horizon=5, hidden_size=8, attention_heads=1, hidden_continuous_size=4)


def _scramble_after(panel: pd.DataFrame, cov: pd.DataFrame, cut: pd.Timestamp, seed: int = 0):
    rng = np.random.default_rng(seed)
    p = panel[["date", "ticker", "close"]].copy()
    fut = p["date"] > cut
    p.loc[fut, "close"] = p.loc[fut, "close"] * np.exp(rng.normal(0, 0.2, fut.sum()))
    c = cov.copy()
    cf = c["date"] > cut
    c.loc[cf, "vix"] = rng.uniform(5, 90, cf.sum())
    c.loc[cf, "wti"] = rng.uniform(10, 150, cf.sum())
    out = derive_returns(pd.concat([panel.groupby("ticker").head(1)[["date", "ticker", "close"]].assign(date=lambda d: d["date"] - pd.Timedelta(days=3)), p]))
    return out, c


@pytest.fixture(scope="module")
def worlds():
    prepare(DATASETS[0])
    panel = load_panel()
    panel = panel[panel["ticker"].isin(TICKERS)]
    cov = load_covariates()
    base = derive_returns(pd.concat([panel.groupby("ticker").head(1)[["date", "ticker", "close"]].assign(date=lambda d: d["date"] - pd.Timedelta(days=3)), panel[["date", "ticker", "close"]]]))
    alt_panel, alt_cov = _scramble_after(panel, cov, CUT)
    a, b = base_features(base, cov), base_features(alt_panel, alt_cov)
    assert not np.allclose(a.loc[a["date"] > CUT, "log_ret"], b.loc[b["date"] > CUT, "log_ret"])  # the futures really differ
    return a, b


def test_normalisers_ignore_the_future(worlds):
    a, b = worlds
    assert FoldScaler.fit(a, CUT).to_dict() == FoldScaler.fit(b, CUT).to_dict()
    assert FoldScaler.fit(a, CUT).to_dict() != FoldScaler.fit(a, CUT + pd.Timedelta(days=30)).to_dict()  # and do see the past


def test_training_windows_and_inputs_ignore_the_future(worlds):
    a, b = worlds
    torch.manual_seed(0)
    model = build_tft(SPEC, TICKERS)
    fa, fb = (Forecaster(model, SPEC, FoldScaler.fit(f, CUT), TICKERS) for f in (a, b))
    Ta, Tb = fa.tensors(fa.scaler.transform(a)), fb.tensors(fb.scaler.transform(b))
    test_end = CUT + pd.Timedelta(days=40)
    tr_a, _ = fold_windows(Ta, CUT, test_end)
    tr_b, _ = fold_windows(Tb, CUT, test_end)
    np.testing.assert_array_equal(tr_a, tr_b)
    assert Ta.dates[tr_a + SPEC.horizon].max() <= np.datetime64(CUT)  # every training target is on/before the cutoff
    xa, ya = Ta.batch(tr_a)
    xb, yb = Tb.batch(tr_b)
    for k in ("encoder_cont", "decoder_cont", "encoder_cat", "decoder_cat"):
        assert torch.equal(xa[k], xb[k]), k
    for u, v in zip(ya, yb):
        assert torch.equal(u, v)
    # forecasts issued at the cutoff day: the inputs (and so the outputs) are identical
    last_a = np.array([i for i in range(len(Ta.dates)) if Ta.dates[i] == np.datetime64(CUT)])
    last_b = np.array([i for i in range(len(Tb.dates)) if Tb.dates[i] == np.datetime64(CUT)])
    assert len(last_a) == len(TICKERS)
    xa, _ = Ta.batch(last_a)
    xb, _ = Tb.batch(last_b)
    for k in ("encoder_cont", "decoder_cont"):
        assert torch.equal(xa[k], xb[k]), k
    model.eval()
    pa, pb = predict_quantiles(model, Ta, last_a), predict_quantiles(model, Tb, last_b)
    np.testing.assert_array_equal(pa["ret_z"], pb["ret_z"])
    np.testing.assert_array_equal(pa["lrv_z"], pb["lrv_z"])


def test_decoder_sees_only_the_calendar(worlds):
    a, _ = worlds
    model = build_tft(SPEC, TICKERS)
    fc = Forecaster(model, SPEC, FoldScaler.fit(a, CUT), TICKERS)
    T = fc.tensors(fc.scaler.transform(a))
    x, _ = T.batch(T.origins()[:50])
    reals = list(model.hparams.x_reals)
    observed = [i for i, r in enumerate(reals) if not r.startswith(("dow", "moy"))]
    assert torch.count_nonzero(x["decoder_cont"][..., observed]) == 0
    assert torch.count_nonzero(x["decoder_cont"][..., [reals.index("dow_sin")]]) > 0


def test_baselines_ignore_the_future(worlds):
    a, b = worlds
    model = build_tft(SPEC, TICKERS)
    outs = []
    for f in (a, b):
        fc = Forecaster(model, SPEC, FoldScaler.fit(f, CUT), TICKERS)
        T = fc.tensors(fc.scaler.transform(f))
        o = np.array([i for i in range(len(T.dates)) if T.dates[i] == np.datetime64(CUT)])
        rows = baseline_rows(series_by_ticker(f), CUT, o, T, list(BASELINES), 0, SPEC.horizon)
        outs.append(rows.drop(columns=["y"]).sort_values(["model", "ticker", "target", "horizon"]).reset_index(drop=True))
    pd.testing.assert_frame_equal(outs[0], outs[1])


def test_garch_informed_inputs_and_target_scales_ignore_the_future(worlds):
    """The GARCH-informed TFT's GJR-GARCH-t: parameters fitted on rows <= the cutoff (the gjr_t
    baseline's fit), then filtered forward with them fixed — its input gjr_z and the per-origin target
    scales of every origin up to the cutoff, and the batches/forecasts issued there, are identical
    whatever happens after the cutoff."""
    from domains.finance.baselines import fold_gjr_params

    a, b = worlds
    spec = TFTSpec(**{**SPEC.__dict__, "observed_reals": tuple(SPEC.observed_reals) + ("gjr_z",)})
    torch.manual_seed(0)
    model = build_tft(spec, TICKERS)
    zs, Ts, origin_rows = [], [], []
    for f in (a, b):
        sc = FoldScaler.fit(f, CUT)
        for t, g in series_by_ticker(f).items():
            end = int(np.searchsorted(g["date"], np.datetime64(CUT), side="right")) - 1
            sc.gjr[t] = [float(x) for x in fold_gjr_params(g["log_ret"], end, 2520)]
        sc.gjr_horizon = spec.horizon
        z = sc.transform(f)
        zs.append(z[z["date"] <= CUT].reset_index(drop=True))
        T = Forecaster(model, spec, sc, TICKERS).tensors(z)
        Ts.append(T)
        origin_rows.append(np.array([i for i in range(len(T.dates)) if T.dates[i] == np.datetime64(CUT)]))
    cols = ["gjr_z"] + [c for c in zs[0].columns if c.startswith(("gjr_ret_h", "gjr_lrv_h"))]
    assert len(cols) == 1 + 2 * spec.horizon
    pd.testing.assert_frame_equal(zs[0][cols], zs[1][cols])
    assert zs[0][cols].notna().all().all()
    assert Ts[0].gscale is not None and Ts[1].gscale is not None
    model.eval()
    pa, pb = (predict_quantiles(model, T, o) for T, o in zip(Ts, origin_rows))
    np.testing.assert_array_equal(pa["ret_z"], pb["ret_z"])
    np.testing.assert_array_equal(pa["lrv_z"], pb["lrv_z"])
