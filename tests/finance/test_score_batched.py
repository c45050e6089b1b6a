"""``python -m domains.finance.score`` forecasts every ticker in one batched forward when a worker
loads, not one TFT forward per work item: per item that forward was ~0.2 s of op overhead on an
idle core and >1 s on the busy 2-core machine (0.17 items/s on the bundled 27-ticker panel). The
rows are those of the per-item path (float32 rounding apart) and exactly those of ``forecast``;
unknown and short tickers are still quarantined one by one. Tiny untrained GARCH-informed model on a
slice of the bundled real panel: fast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from core.scoring import WorkItem
from domains.finance import predictor
from domains.finance.data import load_panel_data
from domains.finance.features import CORE_REALS, FoldScaler, base_features
from domains.finance.model import Forecaster, TFTSpec, build_tft
from domains.finance.scoring import TFTScorer
from tests.finance_support import panel_slice

SPEC = TFTSpec(encoder_length=20, horizon=3, hidden_size=8, attention_heads=1, hidden_continuous_size=4, observed_reals=tuple(CORE_REALS) + ("gjr_z",))
KNOWN = ["AAPL", "JPM", "KO"]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """(model run folder, price file): a model of KNOWN and MSFT; the file also holds XOM (unknown to
    it) and only 18 days of MSFT (< encoder_length 20, kept with --min-history 10)."""
    root = tmp_path_factory.mktemp("score_batched")
    p = panel_slice(KNOWN + ["XOM"], "2019-01-01", "2020-06-30")
    short = panel_slice(["MSFT"], "2020-06-05", "2020-06-30")
    prices = root / "prices.csv"
    pd.concat([p, short])[["date", "ticker", "close"]].to_csv(prices, index=False)
    d = load_panel_data(str(prices), min_history=10)
    feat = base_features(d.panel[d.panel["ticker"] != "XOM"])
    gjr = {t: [0.05, 0.02, 0.05, 0.1, 0.85, 8.0] for t in KNOWN + ["MSFT"]}  # fixed GJR-GARCH-t (mu, omega, alpha, gamma, beta, nu): no fits
    torch.manual_seed(0)
    Forecaster(build_tft(SPEC, KNOWN + ["MSFT"]), SPEC, FoldScaler.fit(feat).with_gjr(gjr, SPEC.horizon), KNOWN + ["MSFT"]).save(root / "run" / "model")
    return root / "run", prices


def _scored(scorer, tickers):
    out, why = {}, {}
    for t in tickers:
        try:
            out[t] = scorer.score(WorkItem(id=t))
        except Exception as e:  # noqa: BLE001 - what the engine quarantines
            why[t] = str(e)
    return out, why


def test_items_cost_no_forward_and_match_the_per_item_path_and_forecast(job, monkeypatch):
    run, prices = job
    scorer = TFTScorer(str(run), str(prices), data_options={"min_history": 10})
    scorer.load()
    calls = []
    real = predictor.predict_quantiles
    monkeypatch.setattr(predictor, "predict_quantiles", lambda *a, **k: calls.append(1) or real(*a, **k))
    got, why = _scored(scorer, KNOWN + ["XOM", "MSFT", "NOPE"])
    assert calls == []  # was one TFT forward per item
    assert sorted(got) == KNOWN
    assert "unknown to the model" in why["XOM"] and "fewer than 20 days" in why["MSFT"] and "no prices" in why["NOPE"]

    # the per-item path of before: one origin per forward
    d = load_panel_data(str(prices), min_history=10)
    fc, feat = predictor.prepare_forecaster(Forecaster.load(run / "model"), d.panel, d.covariates)
    T, o = predictor.latest_tensors(fc, feat)
    for t in KNOWN:
        one = predictor.rows_from_origins(fc, T, [o[T.tickers[o] == t][0]])
        q = [c for c in one.columns if c.startswith("q_")]
        pd.testing.assert_frame_equal(got[t].drop(columns=q), one.drop(columns=q), check_exact=True)
        np.testing.assert_allclose(got[t][q].to_numpy(), one[q].to_numpy(), rtol=1e-6, atol=1e-7)  # float32 rounding: batch size changes the last bits
        assert len(got[t]) == 2 * SPEC.horizon and not got[t].isna().any().any()
    # and exactly what `forecast` writes for the same tickers
    ref = predictor.forecast_frame(Forecaster.load(run / "model"), d.panel, d.covariates, KNOWN)
    pd.testing.assert_frame_equal(pd.concat([got[t] for t in KNOWN], ignore_index=True), ref, check_exact=True)


def test_a_scored_frame_is_a_copy(job):
    """The engine inserts a lineage column into what ``score`` returns: the next score of the ticker
    (a rerun chunk) must not see it."""
    run, prices = job
    scorer = TFTScorer(str(run), str(prices), data_options={"min_history": 10})
    scorer.load()
    first = scorer.score(WorkItem(id="KO"))
    first.insert(0, "_work_item", "KO")
    again = scorer.score(WorkItem(id="KO"))
    assert "_work_item" not in again.columns
    pd.testing.assert_frame_equal(first.drop(columns="_work_item"), again)
