"""A backtest's final model has normalisers only for the tickers its last fold used: a ticker listed shortly before
that cutoff (fewer days than --fold-min-history) is left out of it. Interpreting that model on the whole panel
raised 'ticker(s) ['NEW'] have no history on or before <cutoff>' (though it had), and the backtest skipped its
interpretation with that warning; such tickers are now left out of the interpretation."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from core.errors import UserInputError
from domains.finance.features import CORE_REALS, FoldScaler, base_features
from domains.finance.interpretation import interpret
from domains.finance.model import Forecaster, TFTSpec, build_tft
from tests.finance_support import panel_slice


def test_tickers_without_normalisers_are_left_out_of_the_interpretation(tmp_path):
    panel = panel_slice(["AAPL", "KO"], "2020-06-01", "2021-04-01")
    feat = base_features(panel)
    torch.manual_seed(0)
    spec = TFTSpec(encoder_length=20, horizon=5, hidden_size=8, attention_heads=1, hidden_continuous_size=4, observed_reals=tuple(CORE_REALS))
    fc = Forecaster(build_tft(spec, ["AAPL", "KO"]), spec, FoldScaler.fit(feat[feat["ticker"] == "AAPL"]), ["AAPL", "KO"])
    out = interpret(fc, feat, tmp_path / "interp", last_days=10)  # KO has no normalisers: was PriceDataError
    only_aapl = interpret(fc, feat[feat["ticker"] == "AAPL"], tmp_path / "interp_aapl", last_days=10)
    pd.testing.assert_frame_equal(out["variable_importance"], only_aapl["variable_importance"])
    assert (tmp_path / "interp" / "variable_importance.csv").is_file()
    with pytest.raises(UserInputError, match="none of the data's tickers"):
        interpret(fc, feat[feat["ticker"] == "KO"], tmp_path / "interp_ko", last_days=10)
