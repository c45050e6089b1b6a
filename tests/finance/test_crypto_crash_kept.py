"""A lasting one-day fall to a hundredth on a crypto pair or currency pair is a real move, not pence next
to pounds. Since f51f454 validate_prices rescaled the history before any lasting x80-125 (or /) jump (unit_change), so a
token's crash (LUNA-USD, May 2022) was rescaled away: a risk model trained on the file never saw it. These symbols have no
quote in a hundredth of their unit: their prices are kept, a price_jump warning names the day. The series is real (the
bundled panel's MSFT closes), renamed and given the fall."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from domains.finance.data import read_price_file, validate_prices
from domains.finance.symbols import symbol_market
from tests.finance_support import msft_falling_to_a_hundredth

DAY = 150  # the fall: every close from this row on is a hundredth


@pytest.fixture(scope="module")
def crash():
    """(dates, real closes, the same closes falling to a hundredth on row DAY and staying there)."""
    return msft_falling_to_a_hundredth(DAY)


def _read(tmp_path, dates, ticker, close):
    path = tmp_path / "prices.csv"
    pd.DataFrame({"date": dates.dt.strftime("%Y-%m-%d"), "ticker": ticker, "close": close}).to_csv(path, index=False)
    return read_price_file(path)


@pytest.mark.parametrize("ticker", ["LUNA-USD", "luna-usdt", "EURUSD=X"])
def test_a_crash_to_a_hundredth_on_a_crypto_or_currency_pair_is_kept_and_warned(crash, tmp_path, ticker):
    dates, close, fallen = crash
    got, rep = _read(tmp_path, dates, ticker, fallen)
    np.testing.assert_allclose(got["close"].to_numpy(), fallen[1:], rtol=1e-12)  # not rescaled
    crash_return = got["log_ret"].to_numpy()[DAY - 1]  # log_ret row k is the move into close k+1 (the first row has none)
    assert crash_return == pytest.approx(np.log(close[DAY] / close[DAY - 1]) - np.log(100.0), abs=1e-9)  # the crash is there
    assert [w["kind"] for w in rep.warnings] == ["price_jump"]
    w = rep.warnings[0]
    assert w["date"] == f"{dates[DAY]:%Y-%m-%d}" and w["value"] == pytest.approx(fallen[DAY] / fallen[DAY - 1])
    assert ticker in w["detail"] and symbol_market(ticker) in w["detail"] and "kept" in w["detail"]
    assert rep.metrics()["data/warnings/price_jump"] == 1 and "data/warnings/unit_change" not in rep.metrics()


def test_the_same_fall_under_a_share_ticker_is_still_rescaled_as_a_unit_change(crash, tmp_path):
    """VOD.L (and BRK-B, a share class, not a pair): pence next to pounds, as before; ZC=F (corn, quoted in cents): a
    futures file in cents next to dollars is rescaled too."""
    dates, close, fallen = crash
    for ticker in ("VOD.L", "BRK-B", "ZC=F"):
        got, rep = _read(tmp_path, dates, ticker, fallen)
        np.testing.assert_allclose(got["close"].to_numpy(), close[1:] / 100.0, rtol=1e-12)  # rescaled to the latest unit
        assert np.abs(got["log_ret"]).max() < 0.2
        assert [w["kind"] for w in rep.warnings] == ["unit_change"]


def test_without_repair_the_crypto_jump_is_a_price_jump_not_a_request_for_one_unit(crash):
    """validate_prices' default (no repair) only warns: a crypto pair's jump must not ask to 'write every price in one unit'."""
    dates, _, fallen = crash
    df = pd.DataFrame({"date": dates, "ticker": "BTC-USD", "close": fallen})
    got, rep = validate_prices(df, source="frame")
    assert [w["kind"] for w in rep.warnings] == ["price_jump"] and "one unit" not in rep.warnings[0]["detail"]
    np.testing.assert_allclose(got["close"].to_numpy(), fallen, rtol=1e-12)


def test_calendars_and_the_price_rule_read_one_definition_of_the_market_symbols():
    from domains.finance.calendars import calendar_of

    names = ("BTC-USD", "eth-eur", "EURUSD=X", "CL=F", "BRK-B", "VOD.L", "AAPL")
    assert [symbol_market(t) for t in names] == ["crypto pair", "crypto pair", "currency pair", "futures", None, None, None]
    assert [calendar_of(t) for t in names] == ["24/7", "24/7", "24/5", "us_futures", "XNYS", "XLON", "XNYS"]
