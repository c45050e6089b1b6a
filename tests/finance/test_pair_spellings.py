"""A desk's files spell crypto and currency pairs the way their source does, not only Yahoo's way: Binance/ccxt
(``BTCUSDT``, ``LUNAUSDT``, ``BTC/USD``, ``ETH/USDT``), Bloomberg's currency yellow key (``EURUSD Curncy``, ``JPY Curncy``,
``XBTUSD Curncy``) and plain pairs of ISO 4217 codes (``EURUSD`` from a file named EURUSD.csv, ``EUR/USD``). symbols.py
read only ``BTC-USD``, ``EURUSD=X`` and ``CL=F``, so these followed XNYS (a crypto's weekend dates and a currency's NYSE
holidays off its calendar) and a token's crash to a hundredth was rescaled away as pence next to pounds. The series is
real (the bundled panel's MSFT closes), renamed and given the fall, as in test_crypto_crash_kept.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from domains.finance.calendars import calendar_of, calendars_for
from domains.finance.data import load_panel, read_price_file
from domains.finance.symbols import symbol_market
from tests.finance_support import msft_falling_to_a_hundredth

CRYPTO = ["BTCUSDT", "LUNAUSDT", "btcusdt", "BTC/USD", "ETH/USDT", "ETH/BTC", "BTC_USDT", "BTC/USDT:USDT", "XBTUSD Curncy",
          "XBTUSD  BGN curncy", "BTCUSD", "XBTUSD"]
CURRENCY = ["EURUSD Curncy", "JPY Curncy", "eurusd curncy", "EURUSD BGN Curncy", "EURUSD", "USDJPY", "XAUUSD", "EUR/USD",
            "EUR_USD", "EUR-USD", "usd/jpy"]
# names that must stay what they were: share classes with a slash or dash, shares and ETFs ending in a crypto code,
# six letters that are not two ISO codes (XXX is ISO's 'no currency'), one code twice, Bloomberg's FX futures and equities
NOT_PAIRS = {"BRK/B": "XNYS", "BRK-B": "XNYS", "BF/B": "XNYS", "GBTC": "XNYS", "FBTC": "XNYS", "FETH": "XNYS", "XXXUSD": "XNYS",
             "USDUSD": "XNYS", "EURUSDX": "XNYS", "ABCDEF": "XNYS", "ECA Curncy": "XNYS", "VOD LN Equity": "XLON",
             "USDT": "XNYS", "EUR": "XNYS", "BTC": "XNYS", "ZC=F": "us_futures"}
DAY = 150  # the fall: every close from this row on is a hundredth


@pytest.mark.parametrize("ticker", CRYPTO)
def test_crypto_spellings_of_binance_ccxt_and_bloomberg_trade_every_day(ticker):
    assert symbol_market(ticker) == "crypto pair" and calendar_of(ticker) == "24/7"


@pytest.mark.parametrize("ticker", CURRENCY)
def test_currency_pairs_of_iso_codes_and_bloomberg_curncy_trade_monday_to_friday(ticker):
    assert symbol_market(ticker) == "currency pair" and calendar_of(ticker) == "24/5"


def test_share_tickers_and_other_names_keep_their_calendar():
    assert {t: calendar_of(t) for t in NOT_PAIRS} == NOT_PAIRS
    assert [symbol_market(t) for t in NOT_PAIRS if t != "ZC=F"] == [None] * (len(NOT_PAIRS) - 1)
    # one mechanism: the calendars a forecast names per ticker
    assert calendars_for(["BTCUSDT", "EUR/USD", "AAPL"]) == {"BTCUSDT": "24/7", "EUR/USD": "24/5", "AAPL": "XNYS"}
    # the bundled panel's tickers (the README's "every bundled name keeps its calendar"): US shares, XNYS, none a pair
    bundled = sorted(set(load_panel(columns=["ticker"])["ticker"]))
    assert len(bundled) > 20 and set(calendars_for(bundled).values()) == {"XNYS"} and {symbol_market(t) for t in bundled} == {None}


@pytest.fixture(scope="module")
def crash():
    """(dates, real closes, the same closes falling to a hundredth on row DAY and staying there)."""
    return msft_falling_to_a_hundredth(DAY)


@pytest.mark.parametrize("ticker", ["LUNAUSDT", "ETH/USDT", "XBTUSD Curncy", "EURUSD Curncy", "EUR/USD"])
def test_a_crash_to_a_hundredth_under_these_spellings_is_kept(crash, tmp_path, ticker):
    dates, close, fallen = crash
    path = tmp_path / "prices.csv"
    pd.DataFrame({"date": dates.dt.strftime("%Y-%m-%d"), "ticker": ticker, "close": fallen}).to_csv(path, index=False)
    got, rep = read_price_file(path)
    np.testing.assert_allclose(got["close"].to_numpy(), fallen[1:], rtol=1e-12)  # not rescaled
    assert got["log_ret"].to_numpy()[DAY - 1] == pytest.approx(np.log(close[DAY] / close[DAY - 1]) - np.log(100.0), abs=1e-9)
    assert [w["kind"] for w in rep.warnings] == ["price_jump"] and symbol_market(ticker) in rep.warnings[0]["detail"]


def test_a_file_named_eurusd_csv_is_a_currency_pair_and_a_share_named_alike_is_not(crash, tmp_path):
    """A single-series file named after its pair (EURUSD.csv, no ticker column) keeps its fall; the same file named
    XXXUSD.csv (not two ISO codes) is rescaled as a share's pence next to pounds, as before."""
    dates, close, fallen = crash
    for name, kept in (("EURUSD", True), ("XXXUSD", False)):
        path = tmp_path / f"{name}.csv"
        pd.DataFrame({"Date": dates.dt.strftime("%Y-%m-%d"), "Close": fallen}).to_csv(path, index=False)
        got, rep = read_price_file(path, ticker_from_name=True)
        assert set(got["ticker"]) == {name}
        want = fallen[1:] if kept else close[1:] / 100.0
        np.testing.assert_allclose(got["close"].to_numpy(), want, rtol=1e-12)
        assert [w["kind"] for w in rep.warnings] == (["price_jump"] if kept else ["unit_change"])
        assert calendar_of(name) == ("24/5" if kept else "XNYS")
