"""Sixth real-use pass (session 13): price files as a quant downloads them — yfinance >= 0.2.5x multi-ticker
downloads in either column order, investing.com and nasdaq.com "Historical Data" CSVs exactly as the sites write
them — and forecast dates on each ticker's own exchange calendar (7203.T -> XTKS, VOD.L -> XLON, SAP.DE -> XETR,
^FTSE -> XLON) with an explicit ``--calendar`` override. The files are written from the bundled real panel's prices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from domains.finance.data import load_panel, read_price_file


@pytest.fixture(scope="module")
def real():
    """Real closes of MSFT and KO (2016-2018; the bundled panel, prepared on first use), date-indexed, with
    open/high/low/volume made around them (the panel has none for its stocks) so every yfinance field is present."""
    p = load_panel(columns=["date", "ticker", "close"])
    p = p[p["ticker"].isin(["MSFT", "KO"]) & p["date"].between("2016-01-01", "2018-12-31")]
    out = {}
    for t, g in p.groupby("ticker"):
        g = g.set_index("date")
        c = g["close"]
        out[t] = pd.DataFrame({"Close": c, "High": c * 1.01, "Low": c * 0.99, "Open": c * 1.002, "Volume": np.arange(len(c)) + 10**6},
                              index=c.index.rename("Date"))
    return out


def _yf_download(real, tickers, group_by="column", labels=True) -> pd.DataFrame:
    """The frame ``yf.download(tickers, group_by=...)`` returns: dates as the index, columns (Price, Ticker) —
    (Ticker, Price) with group_by="ticker"; releases before 0.2.51 leave the level names empty."""
    df = pd.concat({t: real[t] for t in tickers}, axis=1, names=["Ticker", "Price"])  # (ticker, field)
    if group_by == "column":
        df = df.swaplevel(axis=1)[[(f, t) for f in real[tickers[0]].columns for t in tickers]]
    if not labels:
        df.columns.names = [None, None]
    return df


@pytest.mark.parametrize("labels", [True, False], ids=["yfinance>=0.2.51", "older"])
@pytest.mark.parametrize("tickers", [["MSFT", "KO"], ["MSFT"]], ids=["two", "one"])
def test_a_yfinance_download_grouped_by_ticker_is_read_like_one_grouped_by_field(real, tmp_path, tickers, labels):
    """``yf.download([...], group_by="ticker").to_csv()`` writes ``Ticker,MSFT,MSFT,...`` above ``Price,Close,High,...``.
    It was refused ("no close price column ... found ['Ticker', 'MSFT', 'MSFT.1', ...]"), and the older unlabelled
    form read the field names as tickers. Both orders now give the same rows, closes and volumes."""
    by_ticker, by_field = tmp_path / "by_ticker.csv", tmp_path / "by_field.csv"
    _yf_download(real, tickers, "ticker", labels).to_csv(by_ticker)
    _yf_download(real, tickers, "column", labels).to_csv(by_field)
    first = by_ticker.read_text().splitlines()[:3]
    assert first[0].startswith("Ticker,MSFT" if labels else ",MSFT") and first[2].startswith("Date,")  # what yfinance writes
    got, rep = read_price_file(by_ticker)
    same = read_price_file(by_field)[0]
    pd.testing.assert_frame_equal(got, same)
    assert sorted(got["ticker"].unique()) == sorted(tickers) and rep.warnings == []
    for t in tickers:
        g = got[got["ticker"] == t]
        np.testing.assert_array_equal(g["date"].to_numpy(), real[t].index.to_numpy()[1:])
        np.testing.assert_allclose(g["close"].to_numpy(), real[t]["Close"].to_numpy()[1:], rtol=1e-12)
        np.testing.assert_allclose(g["volume"].to_numpy(), real[t]["Volume"].to_numpy()[1:])
    if len(tickers) == 1:  # one ticker is a single series: --ticker renames it, as for the grouped-by-field file
        assert set(read_price_file(by_ticker, "MSFT_US")[0]["ticker"]) == {"MSFT_US"}
