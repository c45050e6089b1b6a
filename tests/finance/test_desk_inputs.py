"""Seventh real-use pass (session 14): files a desk user brings — prices in pence next to prices in pounds, a ticker
column whose spellings differ in case or padding (two exports joined), and an LSEG/Refinitiv ``get_data`` export
(``Instrument, Date, Price Close, ...``). The files are written from the bundled real panel's prices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from domains.finance.data import PriceDataError, load_panel, read_price_file


@pytest.fixture(scope="module")
def real():
    """Real closes of MSFT and KO, their last 300 days in the bundled panel."""
    p = load_panel(columns=["date", "ticker", "close"])
    return {t: g.tail(300).reset_index(drop=True) for t, g in p[p["ticker"].isin(["MSFT", "KO"])].groupby("ticker")}


def _write(path, date, ticker, close, **extra):
    pd.DataFrame({"date": date.dt.strftime("%Y-%m-%d"), "ticker": ticker, "close": close, **extra}).to_csv(path, index=False)
    return path


# ---------------------------------------------------------------------------------------------------------------
# pence next to pounds
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["pence_from", "pounds_from", "pence_stretch"])
def test_prices_in_pence_next_to_pounds_are_rescaled_to_one_unit_and_warned(real, tmp_path, case):
    """A vendor that quotes an LSE stock in pence (GBX) next to one in pounds (GBP): the closes jump x100 (or /100) on one
    day and stay there. Neither the split rule (ratios up to 20) nor the spike rule (it does not revert) saw it, so the
    file loaded silently with a daily log return of +-4.6 that set the ticker's volatility scale. The closes (and open,
    high, low) before each jump are now rescaled to the latest close's unit, so every return is the real one, and a
    unit_change warning names the day."""
    g = real["MSFT"]
    close = g["close"].to_numpy()
    unit = np.ones(len(close))
    if case == "pence_from":
        unit[150:] = 100.0
    elif case == "pounds_from":
        unit[:150] = 100.0
    else:  # three days in pence, then pounds again
        unit[150:153] = 100.0
    path = _write(tmp_path / "vod.csv", g["date"], "VOD.L", close * unit, open=close * unit * 1.001, high=close * unit * 1.01, low=close * unit * 0.99)
    got, rep = read_price_file(path)
    clean, _ = read_price_file(_write(tmp_path / "clean.csv", g["date"], "VOD.L", close, open=close * 1.001, high=close * 1.01, low=close * 0.99))
    np.testing.assert_allclose(got["log_ret"].to_numpy(), clean["log_ret"].to_numpy(), atol=1e-12)  # the jump's day too
    np.testing.assert_allclose(got["rvol5"].to_numpy(), clean["rvol5"].to_numpy(), atol=1e-12)
    assert np.abs(got["log_ret"]).max() < 0.2
    latest_unit = unit[-1]  # closes in the unit of the latest price
    for col, f in (("close", 1.0), ("open", 1.001), ("high", 1.01), ("low", 0.99)):
        np.testing.assert_allclose(got[col].to_numpy(), close[1:] * f * latest_unit, rtol=1e-12)
    jumps = [w for w in rep.warnings if w["kind"] == "unit_change"]
    assert [w["date"] for w in jumps] == ([f"{g['date'][150]:%Y-%m-%d}"] if case != "pence_stretch" else
                                          [f"{g['date'][150]:%Y-%m-%d}", f"{g['date'][153]:%Y-%m-%d}"])
    assert "pence next to pounds" in jumps[0]["detail"] and [w["kind"] for w in rep.warnings] == ["unit_change"] * len(jumps)
    assert rep.metrics()["data/warnings/unit_change"] == len(jumps)


def test_a_one_day_x100_typo_that_reverts_is_still_a_dropped_spike_not_a_unit_change(real, tmp_path):
    g = real["MSFT"]
    close = g["close"].to_numpy().copy()
    close[100] *= 100
    got, rep = read_price_file(_write(tmp_path / "typo.csv", g["date"], "MSFT", close))
    assert [w["kind"] for w in rep.warnings] == ["price_spike"] and len(got) == len(close) - 2 and np.abs(got["log_ret"]).max() < 0.2


# ---------------------------------------------------------------------------------------------------------------
# ticker spellings
# ---------------------------------------------------------------------------------------------------------------
def test_ticker_spellings_that_differ_only_in_case_or_padding_are_one_ticker(real, tmp_path, caplog):
    """Two exports joined: 'aapl' rows (an older download) and 'AAPL ' rows. They were two tickers, each with half the
    history (or, here, one dropped as too short), and a model that knows AAPL was asked about 'aapl' too. They are now one
    ticker, AAPL, with the whole history (the fold is logged); rows both spellings hold are identical duplicates, dropped."""
    g = real["KO"]
    n = len(g)
    parts = [pd.DataFrame({"date": g["date"][:180], "ticker": "aapl", "close": g["close"][:180]}),
             pd.DataFrame({"date": g["date"][170:], "ticker": "AAPL ", "close": g["close"][170:]}),
             pd.DataFrame({"date": real["MSFT"]["date"], "ticker": "msft", "close": real["MSFT"]["close"]})]  # one spelling: left as it is
    path = tmp_path / "joined.csv"
    pd.concat(parts).to_csv(path, index=False)
    with caplog.at_level("WARNING"):
        got, rep = read_price_file(path, min_history=150)
    assert sorted(got["ticker"].unique()) == ["AAPL", "msft"]
    a = got[got["ticker"] == "AAPL"]
    np.testing.assert_array_equal(a["date"].to_numpy(), g["date"].to_numpy()[1:])
    np.testing.assert_allclose(a["close"].to_numpy(), g["close"].to_numpy()[1:])
    assert rep.duplicate_rows_dropped == 10 and rep.tickers_dropped_short == [] and n == 300
    assert "tickers 'AAPL', 'aapl' differ only in case (AAPL: 130 rows, aapl: 180 rows); read as one ticker, AAPL" in caplog.text


def test_case_spellings_with_different_prices_on_one_day_are_refused_in_one_line(real, tmp_path):
    g = real["KO"]
    other = g["close"] * 1.5  # another company's prices under a spelling of the same ticker
    path = tmp_path / "clash.csv"
    pd.concat([pd.DataFrame({"date": g["date"], "ticker": "ko", "close": g["close"]}),
               pd.DataFrame({"date": g["date"], "ticker": "KO", "close": other})]).to_csv(path, index=False)
    with pytest.raises(PriceDataError) as e:
        read_price_file(path)
    assert "appear more than once with different closes" in str(e.value) and "KO " in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------------------------
# an LSEG / Refinitiv Eikon get_data export
# ---------------------------------------------------------------------------------------------------------------
def test_an_lseg_get_data_export_of_tr_price_fields_is_read(real, tmp_path):
    """``ek.get_data(rics, ["TR.PriceClose.date", "TR.PriceClose", "TR.PriceOpen", "TR.PriceHigh", "TR.PriceLow",
    "TR.Volume"]).to_csv()`` writes ``Instrument, Date, Price Close, Price Open, ...`` (ISO dates with a Z). It was
    refused ('no close price column'); 'Price Close' is now the close and 'Instrument' (the RIC) the ticker."""
    rics = {"MSFT": "MSFT.O", "KO": "KO.N"}
    rows = pd.concat([g.assign(ticker=rics[t]) for t, g in real.items()])
    path = tmp_path / "get_data.csv"
    pd.DataFrame({"Instrument": rows["ticker"], "Date": rows["date"].dt.strftime("%Y-%m-%dT00:00:00Z"), "Price Close": rows["close"],
                  "Price Open": rows["close"] * 1.001, "Price High": rows["close"] * 1.01, "Price Low": rows["close"] * 0.99,
                  "Volume": 1_000_000}).to_csv(path, index=False)
    got, rep = read_price_file(path)
    assert sorted(got["ticker"].unique()) == ["KO.N", "MSFT.O"] and rep.warnings == []
    for t, ric in rics.items():
        g = got[got["ticker"] == ric]
        np.testing.assert_array_equal(g["date"].to_numpy(), real[t]["date"].to_numpy()[1:])
        np.testing.assert_allclose(g["close"].to_numpy(), real[t]["close"].to_numpy()[1:], rtol=1e-12)
        np.testing.assert_allclose(g["high"].to_numpy(), real[t]["close"].to_numpy()[1:] * 1.01, rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# a Bloomberg sheet of several securities side by side
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dates", ["per_block", "shared"])
def test_a_bloomberg_sheet_of_securities_side_by_side_is_read_as_one_ticker_each(real, tmp_path, dates):
    """BDH for each security next to each other, saved as CSV: a line naming each security above its block, then
    ``Date,PX_LAST,PX_VOLUME`` per block (each its own dates; a younger security's block ends earlier) — or one shared
    Date column. It was refused ('no close price column ... a wide file is not read'), the securities' line taken for
    the header. Each block is now one ticker named as the sheet names it; Bloomberg's '#N/A N/A' is a missing day."""
    ms, ko = real["MSFT"], real["KO"].iloc[:250]  # KO's block 50 rows shorter
    if dates == "per_block":
        lines = ["MSFT US Equity,,,KO US Equity,,", "Date,PX_LAST,PX_VOLUME,Date,PX_LAST,PX_VOLUME"]
        for i in range(len(ms)):
            right = f"{ko['date'][i]:%m/%d/%Y},{'#N/A N/A' if i == 17 else f'{ko.close[i]:.4f}'},2000" if i < len(ko) else ",,"
            lines.append(f"{ms['date'][i]:%m/%d/%Y},{ms.close[i]:.4f},1000,{right}")
    else:
        ko = real["KO"].set_index("date").reindex(ms["date"]).reset_index()
        lines = [",MSFT US Equity,,KO US Equity,", "Date,PX_LAST,PX_VOLUME,PX_LAST,PX_VOLUME"]
        lines += [f"{d:%m/%d/%Y},{ms.close[i]:.4f},1000,{'#N/A N/A' if i == 17 else f'{ko.close[i]:.4f}'},2000" for i, d in enumerate(ms["date"])]
    path = tmp_path / "bdh.csv"
    path.write_text("\n".join(lines) + "\n")
    got, rep = read_price_file(path)
    assert sorted(got["ticker"].unique()) == ["KO US Equity", "MSFT US Equity"] and rep.nan_rows_dropped == 1 and rep.warnings == []
    m = got[got["ticker"] == "MSFT US Equity"]
    np.testing.assert_array_equal(m["date"].to_numpy(), ms["date"].to_numpy()[1:])
    np.testing.assert_allclose(m["close"].to_numpy(), np.round(ms["close"].to_numpy()[1:], 4))
    assert (m["volume"] == 1000).all()
    k = got[got["ticker"] == "KO US Equity"]
    want = ko.drop(index=17).dropna()
    np.testing.assert_array_equal(k["date"].to_numpy(), want["date"].to_numpy()[1:])
    np.testing.assert_allclose(k["close"].to_numpy(), np.round(want["close"].to_numpy()[1:], 4))


@pytest.mark.parametrize("order", [("ticker", "field"), ("Field", "Ticker")])
def test_a_bloomberg_pull_saved_with_ticker_and_field_column_levels_is_read(real, tmp_path, order):
    """pdblp's ``con.bdh([...], ["PX_LAST", "PX_VOLUME"], ...)`` returns (ticker, field) column levels named ticker /
    field; ``.to_csv()`` writes ``ticker,MSFT US Equity,...`` / ``field,PX_LAST,...`` / ``date,,``. Saved as Parquet it
    loaded; as CSV it was refused ('no close price column', the two header rows read as one). Both now give the rows."""
    wide = pd.concat({f"{t} US Equity": pd.DataFrame({"PX_LAST": g["close"].to_numpy(), "PX_VOLUME": 1e6 + np.arange(len(g))},
                                                      index=pd.DatetimeIndex(g["date"], name="date")) for t, g in real.items()}, axis=1)
    wide.columns.names = ["ticker", "field"]
    if order[0].lower() == "field":
        wide = wide.swaplevel(axis=1)
    wide.columns.names = list(order)
    for path in (tmp_path / "bdh.csv", tmp_path / "bdh.parquet"):
        wide.to_csv(path) if path.suffix == ".csv" else wide.to_parquet(path)
        got, rep = read_price_file(path)
        assert sorted(got["ticker"].unique()) == ["KO US Equity", "MSFT US Equity"] and rep.warnings == [], path.name
        for t, g in real.items():
            x = got[got["ticker"] == f"{t} US Equity"]
            np.testing.assert_allclose(x["close"].to_numpy(), g["close"].to_numpy()[1:], rtol=1e-12)
            np.testing.assert_allclose(x["volume"].to_numpy(), 1e6 + np.arange(1, len(g)))


def test_a_ticker_written_in_another_case_than_the_models_is_named_in_the_refusal(real):
    """A file whose ticker column says 'ko' for a model trained on 'KO' was refused with 'no data for the model's tickers
    (KO, …)' and nothing pointing at the spelling; --tickers ko against a file's KO said only that tickers are
    case-sensitive. Both now name the two spellings."""
    from types import SimpleNamespace

    from domains.finance.predictor import prepare_forecaster

    model = SimpleNamespace(tickers=["KO", "AAPL"])  # what the refusals read of a Forecaster
    lower = real["KO"].assign(ticker="ko")
    with pytest.raises(PriceDataError) as e:
        prepare_forecaster(model, lower, None)
    assert "(ko is the model's KO in another case: write the ticker column as the model names them, e.g. KO)" in str(e.value)
    with pytest.raises(PriceDataError) as e:
        prepare_forecaster(model, real["KO"], None, ["ko"])
    assert "(ko is the data's KO in another case: e.g. --tickers KO)" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(PriceDataError) as e:  # no other spelling: no hint
        prepare_forecaster(model, real["KO"], None, ["PEP"])
    assert "another case" not in str(e.value)
