"""Finance data: the real bundled panel and the user-file validation rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.data import prepare
from domains.finance.data import DATASETS, FACTORS, INDEX, NASDAQ, STOCKS, PriceDataError, derive_returns, load_covariates, load_panel, load_price_file, validate_prices


@pytest.fixture(scope="module")
def panel():
    prepare(DATASETS[0])
    return load_panel()


def test_bundled_panel_is_real_and_complete(panel):
    # issue 15.1: the longest history the installed sources give (was 26 tickers, 2014-2019)
    assert set(panel["ticker"]) == set(STOCKS + [INDEX, NASDAQ] + FACTORS)
    assert panel["date"].min() >= pd.Timestamp("1990-01-01") and panel["date"].max() <= pd.Timestamp("2022-12-31")
    assert panel[["close", "log_ret", "rvol5"]].notna().all().all()
    assert (panel["close"] > 0).all()
    # derived columns are consistent with the closes
    a = panel[panel["ticker"] == "AAPL"].sort_values("date")
    np.testing.assert_allclose(a["log_ret"].iloc[1:].to_numpy(), np.diff(np.log(a["close"].to_numpy())), rtol=1e-9)
    np.testing.assert_allclose(a["rvol5"].iloc[10], np.sqrt(np.mean(a["log_ret"].iloc[6:11].to_numpy() ** 2)), rtol=1e-9)
    cov = load_covariates()
    assert len(cov) == panel["date"].nunique()
    vix = cov.set_index("date")["vix"]
    assert vix.loc["2014-01-06":"2019-01-03"].notna().all() and vix.loc[:"2013-12-31"].isna().all()  # covariates optional per period
    assert 8 < vix.min() and vix.max() < 60


def _prices(n=150, tickers=("AAA", "BBB"), seed=0):
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-01", periods=n)
    rows = []
    for t in tickers:
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        rows.append(pd.DataFrame({"date": dates, "ticker": t, "close": close}))
    return pd.concat(rows, ignore_index=True)


def test_csv_and_parquet_roundtrip_with_ohlcv_and_adj_close(tmp_path):
    df = _prices()
    df["Open"] = df["close"]
    df["Adj Close"] = df["close"] * 0.5
    df = df.rename(columns={"date": "Date", "ticker": "Ticker", "close": "Close"})
    df.to_csv(tmp_path / "p.csv", index=False)
    df.to_parquet(tmp_path / "p.parquet")
    a = load_price_file(tmp_path / "p.csv")
    b = load_price_file(tmp_path / "p.parquet")
    assert len(a) == len(b) == 2 * 149  # first day per ticker has no return
    assert np.allclose(a["close"].to_numpy(), b["close"].to_numpy())
    assert a["close"].iloc[0] == pytest.approx(df["Adj Close"].iloc[1])  # adjusted close preferred


def test_single_series_needs_ticker(tmp_path):
    df = _prices(tickers=("X",)).drop(columns="ticker")
    df.to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(PriceDataError, match="no 'ticker' column"):
        load_price_file(tmp_path / "one.csv")
    assert set(load_price_file(tmp_path / "one.csv", ticker="X")["ticker"]) == {"X"}


def test_missing_columns_and_bad_dates_are_rejected():
    with pytest.raises(PriceDataError, match="missing column"):
        validate_prices(pd.DataFrame({"date": [], "close": []}))
    df = _prices()
    df["date"] = df["date"].astype(str)
    df.loc[3, "date"] = "not-a-date"
    with pytest.raises(PriceDataError, match="unparseable date"):
        validate_prices(df)


def test_non_positive_prices_rejected_with_ticker_and_date():
    df = _prices()
    df.loc[df.index[160], "close"] = 0.0
    with pytest.raises(PriceDataError, match=r"non-positive.*BBB 2020-"):
        validate_prices(df)


def test_duplicates_identical_dropped_conflicting_rejected():
    df = _prices()
    dup = pd.concat([df, df.iloc[[5]]], ignore_index=True)
    clean, rep = validate_prices(dup)
    assert rep.duplicate_rows_dropped == 1 and len(clean) == len(df)
    conflict = dup.copy()
    conflict.loc[conflict.index[-1], "close"] += 1
    with pytest.raises(PriceDataError, match="more than once with different closes"):
        validate_prices(conflict)


def test_nan_rows_dropped_and_gap_spans_return():
    df = _prices()
    df.loc[10, "close"] = np.nan
    clean, rep = validate_prices(df)
    assert rep.nan_rows_dropped == 1 and rep.missing_days == 1
    out = derive_returns(clean)
    a = out[out["ticker"] == "AAA"].reset_index(drop=True)
    # the return after the gap spans two days: log(close_11 / close_9)
    expect = np.log(df.loc[11, "close"] / df.loc[9, "close"])
    assert a.loc[a["date"] == df.loc[11, "date"], "log_ret"].item() == pytest.approx(expect)


def test_long_gap_rejected_and_short_history_dropped():
    df = _prices()
    gap = df[(df["ticker"] == "AAA") & df.index.isin(range(20, 40))].index
    with pytest.raises(PriceDataError, match="no prices for 20 business days"):
        validate_prices(df.drop(index=gap))
    short = pd.concat([df, _prices(n=30, tickers=("SHORT",))], ignore_index=True)
    clean, rep = validate_prices(short, min_history=100)
    assert rep.tickers_dropped_short == ["SHORT"] and "SHORT" not in set(clean["ticker"])
    with pytest.raises(PriceDataError, match="no ticker has at least"):
        validate_prices(_prices(n=30), min_history=100)


def test_dashboard_inputs_are_read_again_only_when_the_file_changes(tmp_path):
    from domains.finance import api
    from domains.finance.data import data_tickers

    p = tmp_path / "p.csv"
    _prices(n=150).to_csv(p, index=False)
    first = api._inputs(str(p))[0]
    assert api._inputs(str(p))[0] is first  # cached: the dashboard's forecast does not re-read the file
    _prices(n=160).to_csv(p, index=False)
    again = api._inputs(str(p))[0]
    assert again is not first and len(again) == 2 * 159
    assert data_tickers(str(p)) == ["AAA", "BBB"]
