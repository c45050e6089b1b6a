"""read_price_file read a long file's ticker column (strip, empty and formula checks, case folding) twice: once itself,
once more in validate_prices. Once now, same result; a single-series file's name (--ticker) is still checked."""

from __future__ import annotations

import pandas as pd
import pytest

from domains.finance import data
from domains.finance.data import PriceDataError, load_panel, read_price_file


def test_a_long_files_tickers_are_read_once_with_the_same_result(tmp_path, monkeypatch):
    p = load_panel(columns=["date", "ticker", "close"])
    g = p[p["ticker"].isin(["KO", "PFE"])].groupby("ticker").tail(150)
    g = g.assign(date=g["date"].dt.strftime("%Y-%m-%d"), ticker=g["ticker"].map({"KO": " ko", "PFE": "PFE "}))
    g.loc[g.index[:3], "ticker"] = "KO"  # a case-only spelling next to ' ko': one ticker, one warning
    path = tmp_path / "prices.csv"
    g.to_csv(path, index=False)
    calls = []
    real = data._ticker_names
    monkeypatch.setattr(data, "_ticker_names", lambda *a, **k: calls.append(1) or real(*a, **k))
    got, rep = read_price_file(path)
    assert len(calls) == 1
    assert sorted(set(got["ticker"])) == ["KO", "PFE"] and len(got) == 298
    assert [w["kind"] for w in rep.warnings] == ["ticker_spelling"]


def test_a_single_series_name_is_still_checked(tmp_path):
    p = load_panel(columns=["date", "ticker", "close"])
    g = p[p["ticker"] == "KO"].tail(150)
    path = tmp_path / "ko.csv"
    pd.DataFrame({"Date": g["date"].dt.strftime("%Y-%m-%d"), "Close": g["close"]}).to_csv(path, index=False)
    with pytest.raises(PriceDataError, match="formula"):
        read_price_file(path, ticker="=KO")
