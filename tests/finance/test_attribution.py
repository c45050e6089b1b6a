"""Per-forecast VaR attribution (integrated gradients over the encoder window of a tiny TFT)."""

from __future__ import annotations

import pytest
import torch

from core.explain import deletion_effect
from domains.finance.attribution import var_attribution, var_function
from domains.finance.data import load_covariates
from domains.finance.features import FoldScaler, base_features
from domains.finance.model import Forecaster, TFTSpec, build_tft, fit
from domains.finance.predictor import latest_tensors
from tests.finance_support import panel_slice

pytestmark = pytest.mark.slow  # ~20 s CPU (a minute under load): the panel, a short fit, two IG passes

TICKERS = ["AAPL", "KO"]
SPEC = TFTSpec(encoder_length=15, horizon=2, hidden_size=8, attention_heads=1, hidden_continuous_size=4)


@pytest.fixture(scope="module")
def setup():
    feat = base_features(panel_slice(TICKERS, "2019-01-01"), load_covariates())
    torch.manual_seed(0)
    fc = Forecaster(build_tft(SPEC, TICKERS), SPEC, FoldScaler.fit(feat), TICKERS)
    T = fc.tensors(fc.scaler.transform(feat))
    fit(fc.model, T, T.origins(), epochs=1, max_batches=3, batch_size=32)
    feat = feat.copy()
    feat["lvix"] = float(feat["lvix"].median())  # the VIX input never changes in the explained data
    return fc, feat, "vix_z"


def test_constant_input_gets_no_attribution_and_attributions_add_up(setup):
    fc, feat, constant = setup
    a = var_attribution(fc, feat, "AAPL", n_steps=24)
    assert constant in set(a.by_input["input"])
    assert abs(a.by_input.set_index("input").loc[constant, "attribution"]) < 1e-9
    assert a.by_input["abs_share"].sum() == pytest.approx(1.0)
    assert len(a.by_day) == SPEC.encoder_length and a.by_day["date"].is_monotonic_increasing
    assert a.date > a.origin and a.var > 0  # the 1 % quantile of a return is a loss
    # completeness: the attributions explain the VaR's distance from the baseline
    assert a.cells["attribution"].sum() == pytest.approx(a.var - a.baseline_var, abs=max(5 * a.delta, 1e-6) + 0.05 * abs(a.var - a.baseline_var))


def test_perturbing_the_top_attributed_day_moves_the_var_more_than_the_least_attributed(setup):
    fc, feat, _ = setup
    a = var_attribution(fc, feat, "KO", n_steps=24)
    T, o = latest_tensors(fc, feat[feat["ticker"] == "KO"])
    f, x = var_function(fc, T, int(o[0]))
    base = x.mean(dim=1, keepdim=True).expand_as(x)
    order = a.by_day.sort_values("abs_share")
    moved = {}
    for name, lag in (("top", order["lag"].iloc[-1]), ("least", order["lag"].iloc[0])):
        mask = torch.zeros_like(x, dtype=torch.bool)
        mask[:, SPEC.encoder_length - 1 + int(lag)] = True
        moved[name] = abs(float(deletion_effect(f, x, mask, base)[0]))
    assert moved["top"] > moved["least"]


def test_api_forecast_attribution_explains_the_latest_forecast(setup):
    from pathlib import Path

    from domains.finance import api

    fc, _, _ = setup
    model = api.LoadedForecaster(run_dir=Path("."), tickers=tuple(fc.tickers), calendar="XNYS", forecaster=fc)
    a = api.forecast_attribution(model, "AAPL", horizon=2)
    assert isinstance(a, api.VarAttribution) and a.horizon == 2
    assert list(a.cells.columns) == ["lag", "date", "input", "value", "attribution"]
    assert a.by_day["lag"].iloc[-1] == 0 and a.by_day["date"].iloc[-1] == a.origin
