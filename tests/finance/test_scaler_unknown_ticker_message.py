"""A ticker the normalisers were not fitted on, though it has history before their cutoff (a backtest
fold leaves out a ticker with fewer than --fold-min-history days), was refused with 'have no history
on or before <cutoff>' — untrue; the message now says it was left out of the fitted set and names
that set. A ticker that really has no history up to the cutoff keeps the old reason."""

from __future__ import annotations

import pytest
import torch

from domains.finance.data import PriceDataError
from domains.finance.features import CORE_REALS, FoldScaler, base_features
from domains.finance.model import Forecaster, TFTSpec, build_tft
from domains.finance.predictor import forecast_frame
from tests.finance_support import panel_slice


@pytest.fixture(scope="module")
def feat():
    return base_features(panel_slice(["AAPL", "KO", "JPM"], "2020-06-01", "2021-04-01"))


def test_left_out_ticker_is_named_as_left_out_not_as_without_history(feat):
    scaler = FoldScaler.fit(feat[feat["ticker"] == "AAPL"], cutoff="2021-01-29")
    with pytest.raises(PriceDataError) as e:
        scaler.transform(feat[feat["ticker"].isin(["AAPL", "KO"])])
    msg = str(e.value)
    assert "\n" not in msg and "no history" not in msg
    assert "['KO'] have history on or before 2021-01-29 but are not among the 1 ticker(s) these normalisers were fitted on (AAPL)" in msg


def test_late_listing_keeps_no_history_and_both_reasons_are_told_apart(feat):
    scaler = FoldScaler.fit(feat[feat["ticker"] == "AAPL"], cutoff="2021-01-29")
    late = feat[(feat["ticker"] != "JPM") | (feat["date"] > "2021-02-01")]  # JPM "listed" after the cutoff
    with pytest.raises(PriceDataError) as e:
        scaler.transform(late)
    msg = str(e.value)
    assert "['KO'] have history on or before 2021-01-29 but are not among" in msg
    assert "['JPM'] have no history on or before 2021-01-29 (the normalisers' cutoff)" in msg
    assert "\n" not in msg and msg.index("['KO']") < msg.index("['JPM']")


def test_forecast_with_such_a_model_says_why(feat):
    torch.manual_seed(0)
    spec = TFTSpec(encoder_length=20, horizon=2, hidden_size=8, attention_heads=1, hidden_continuous_size=4, observed_reals=tuple(CORE_REALS))
    fc = Forecaster(build_tft(spec, ["AAPL", "KO"]), spec, FoldScaler.fit(feat[feat["ticker"] == "AAPL"]), ["AAPL", "KO"])
    panel = panel_slice(["AAPL", "KO"], "2020-06-01", "2021-04-01")
    with pytest.raises(PriceDataError, match=r"\['KO'\] have history on or before 2021-0\d-\d\d but are not among the 1 ticker\(s\)"):
        forecast_frame(fc, panel, None)
