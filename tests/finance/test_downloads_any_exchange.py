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


# ---------------------------------------------------------------------------------------------------------------
# forecast dates on each ticker's exchange calendar
# ---------------------------------------------------------------------------------------------------------------
TOKYO_END, LONDON_END = "2021-04-28", "2022-08-26"  # before Showa Day + Golden Week; before London's summer bank holiday
NYSE_AFTER = {TOKYO_END: ["2021-04-29", "2021-04-30", "2021-05-03", "2021-05-04", "2021-05-05"],
              LONDON_END: ["2022-08-29", "2022-08-30", "2022-08-31", "2022-09-01", "2022-09-02"]}
OWN_AFTER = {"7203.T": ["2021-04-30", "2021-05-06", "2021-05-07", "2021-05-10", "2021-05-11"],  # XTKS: 04-29, 05-03..05 closed
             "VOD.L": ["2022-08-30", "2022-08-31", "2022-09-01", "2022-09-02", "2022-09-05"]}  # XLON: 08-29 closed, 09-05 open


@pytest.fixture(scope="module")
def foreign():
    """Real JPM and KO returns (bundled panel) under a Tokyo and a London ticker, ending just before a holiday of that
    exchange on which NYSE trades; a tiny untrained forecaster that knows both (dates are what is checked)."""
    import torch

    from domains.finance.features import CORE_REALS, FoldScaler, base_features
    from domains.finance.model import Forecaster, TFTSpec, build_tft

    p = load_panel()
    parts = []
    for src, name, end in (("JPM", "7203.T", TOKYO_END), ("KO", "VOD.L", LONDON_END)):
        g = p[(p["ticker"] == src) & (p["date"] <= end)].tail(120)
        parts.append(g.assign(ticker=name))
    panel = pd.concat(parts, ignore_index=True)
    torch.manual_seed(0)
    spec = TFTSpec(encoder_length=20, horizon=5, hidden_size=8, attention_heads=1, hidden_continuous_size=4, observed_reals=tuple(CORE_REALS))
    tickers = ["7203.T", "VOD.L"]
    return panel, Forecaster(build_tft(spec, tickers), spec, FoldScaler.fit(base_features(panel)), tickers)


def _dates(df: pd.DataFrame, ticker: str) -> list[str]:
    return sorted(df.loc[df["ticker"] == ticker, "date"].dt.strftime("%Y-%m-%d").unique())


def test_forecast_dates_follow_each_tickers_own_exchange_not_nyse(foreign):
    """A Tokyo (.T) and a London (.L) series were forecast on NYSE sessions: Tokyo's Golden Week and London's summer bank
    holiday appeared as forecast dates and the next days they trade were missing. By default each ticker now gets its
    exchange's calendar from its suffix; --calendar still sets one for all."""
    from domains.finance.calendars import calendar_of
    from domains.finance.features import base_features, extend_future
    from domains.finance.predictor import forecast_frame

    panel, fc = foreign
    assert [calendar_of(t) for t in ("7203.T", "VOD.L", "SAP.DE", "^FTSE", "^N225", "AAPL", "BRK.B", "AAPL.US", "aapl.us")] == \
        ["XTKS", "XLON", "XETR", "XLON", "XTKS", "XNYS", "XNYS", "XNYS", "XNYS"]
    own = forecast_frame(fc, panel, None)
    for t, expect in OWN_AFTER.items():
        assert _dates(own, t) == expect, t
    nyse = extend_future(base_features(panel), fc.spec.horizon, "XNYS")  # the explicit override (forecast_frame's dates), for every ticker
    nyse = nyse[nyse["is_future"]]
    assert _dates(nyse, "7203.T") == NYSE_AFTER[TOKYO_END] and _dates(nyse, "VOD.L") == NYSE_AFTER[LONDON_END]
    q = [c for c in own.columns if c.startswith("q_")]
    assert np.isfinite(own[q].to_numpy()).all()


def test_the_dashboard_forecast_names_each_tickers_calendar(foreign, tmp_path):
    from domains.finance import api

    panel, fc = foreign
    path = tmp_path / "two_exchanges.csv"
    panel[["date", "ticker", "close"]].to_csv(path, index=False)
    fc.info = {"data": str(path)}
    model = api.LoadedForecaster(run_dir=tmp_path, tickers=tuple(fc.tickers), calendar="auto", forecaster=fc)
    out = api.forecast(model, ["7203.T", "VOD.L"])
    assert out.groupby("ticker")["calendar"].unique().map(list).to_dict() == {"7203.T": ["XTKS"], "VOD.L": ["XLON"]}
    assert _dates(out, "7203.T") == OWN_AFTER["7203.T"]


@pytest.mark.parametrize("name, hint", [("NOPE", None), ("T", "XTKS"), (".L", "XLON"), ("TSE_TOKYO", None)])
def test_an_unknown_calendar_is_one_line_before_the_model_or_data_is_read(tmp_path, name, hint):
    """Was: the model run and the data were read first, then a PriceDataError from deep inside the forecast; a Yahoo
    suffix typed as the calendar now also names the calendar it means."""
    from domains.finance.calendars import CalendarError
    from domains.finance.config import ForecastConfig
    from domains.finance.forecast import forecast

    cfg = ForecastConfig(calendar=name, model_run="no-such-run", runs_dir=str(tmp_path / "runs"), data=str(tmp_path / "missing.csv"))
    with pytest.raises(CalendarError) as e:
        forecast(cfg)
    msg = str(e.value)
    assert "\n" not in msg and f"unknown exchange calendar '{name}'" in msg and "XNYS, XLON, XETR" in msg and "'auto'" in msg
    assert (f"use --calendar {hint}" in msg) if hint else ("Yahoo ticker suffix" not in msg)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------------------------
# investing.com and nasdaq.com "Historical Data" downloads, as the sites write and name them
# ---------------------------------------------------------------------------------------------------------------
def _investing(close: pd.Series, date_format: str) -> str:
    """investing.com's CSV: every cell quoted, newest day first, thousands separators, 850.5K / 1.23M volumes, Change %."""
    rows = ['"Date","Price","Open","High","Low","Vol.","Change %"']
    new_first = close.iloc[::-1]
    for i, (day, v) in enumerate(new_first.items()):
        prev = new_first.iloc[i + 1] if i + 1 < len(new_first) else v
        vol = ("850.5K", "1.23M", "2.1B", "")[i % 4]
        rows.append(",".join(f'"{c}"' for c in (day.strftime(date_format), f"{v:,.2f}", f"{v * 1.001:,.2f}", f"{v * 1.01:,.2f}",
                                                  f"{v * 0.99:,.2f}", vol, f"{100 * (v / prev - 1):.2f}%")))
    return "\r\n".join(rows) + "\r\n"


def _nasdaq(close: pd.Series) -> str:
    """nasdaq.com's CSV: Close/Last first, dollar prices (a space before the $ on some pages), MM/DD/YYYY, newest first."""
    rows = ["Date,Close/Last,Volume,Open,High,Low"]
    rows += [f"{d:%m/%d/%Y}, ${v:.2f},{23_456_789 + i}, ${v:.2f}, ${v * 1.01:.2f}, ${v * 0.99:.2f}" for i, (d, v) in enumerate(close.iloc[::-1].items())]
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("site", ["investing_month_name", "investing_slashes", "nasdaq"])
def test_site_downloads_load_with_their_values_and_a_site_file_name_is_not_a_ticker(real, tmp_path, site):
    """The values already loaded (asserted here so they stay so). The names the sites give the files did not: investing.com's
    'MSFT Historical Data.csv' became the ticker 'MSFT HISTORICAL DATA' (and its calendar, from a suffix, none), nasdaq.com's
    'HistoricalData_1700000000000.csv' the ticker 'HISTORICALDATA_1700000000000'. Now 'MSFT', and for nasdaq's a one-line
    request for --ticker."""
    from domains.finance.data import PriceDataError

    close = real["MSFT"]["Close"] * 40  # four-digit prices, so the thousands separators appear
    if site == "nasdaq":
        path = tmp_path / "HistoricalData_1700000000000.csv"
        path.write_text(_nasdaq(close))
        with pytest.raises(PriceDataError) as e:
            read_price_file(path, ticker_from_name=True)
        assert str(path) in str(e.value) and "names no ticker" in str(e.value) and "--ticker NAME" in str(e.value) and "\n" not in str(e.value)
        d, rep = read_price_file(path, "MSFT", ticker_from_name=True)
        np.testing.assert_allclose(d["volume"].to_numpy(), 23_456_789 + np.arange(len(close) - 1)[::-1])
    else:
        path = tmp_path / "MSFT Historical Data.csv"
        path.write_text(_investing(close, "%b %d, %Y" if site == "investing_month_name" else "%m/%d/%Y"), encoding="utf-8-sig")
        d, rep = read_price_file(path, ticker_from_name=True)
        n = len(close)  # the file's row i (newest first) has volume ("850.5K", "1.23M", "2.1B", "")[i % 4]
        np.testing.assert_array_equal(d["volume"].to_numpy(), [(850.5e3, 1.23e6, 2.1e9, np.nan)[(n - 1 - j) % 4] for j in range(1, n)])
    assert set(d["ticker"]) == {"MSFT"} and rep.warnings == []
    np.testing.assert_array_equal(d["date"].to_numpy(), close.index.to_numpy()[1:])  # oldest first, month and day not swapped
    np.testing.assert_allclose(d["close"].to_numpy(), np.round(close.to_numpy()[1:], 2), rtol=1e-12)


def test_crypto_currency_and_futures_symbols_get_their_markets_calendar():
    """BTC-USD trades every day: its forecast dates skipped weekends (NYSE) although its history has them. EURUSD=X trades
    Monday-Friday on US holidays, CL=F on CME's. exchange_calendars' lower-case names ('us_futures', '24/7') were refused
    as --calendar (the check upper-cased them)."""
    from domains.finance.calendars import calendar_of, check_calendar, future_sessions

    assert [calendar_of(t) for t in ("BTC-USD", "ETH-EUR", "EURUSD=X", "CL=F", "BRK-B", "BF-B")] == ["24/7", "24/7", "24/5", "us_futures", "XNYS", "XNYS"]
    assert [check_calendar(n) for n in ("us_futures", "US_FUTURES", "24/7", "xlon")] == ["us_futures", "us_futures", "24/7", "XLON"]
    day = "2022-12-23"  # a Friday before Christmas (Monday the 26th: NYSE closed)
    assert list(future_sessions(day, 3, calendar_of("BTC-USD")).strftime("%a")) == ["Sat", "Sun", "Mon"]
    assert list(future_sessions(day, 3, calendar_of("EURUSD=X")).strftime("%m-%d")) == ["12-26", "12-27", "12-28"]
    assert list(future_sessions(day, 3, calendar_of("AAPL")).strftime("%m-%d")) == ["12-27", "12-28", "12-29"]


def test_a_ticker_whose_download_failed_is_listed_as_dropped_not_silently_missing(real, tmp_path):
    """yf.download(["MSFT", "KO", "DELISTED"]) prints '1 Failed download' and still writes DELISTED's columns, empty.
    Every one of its rows was dropped as a NaN close, so the ticker vanished with no warning and no 'dropped' entry."""
    from domains.finance import api
    from domains.finance.data import PriceDataError, load_panel_data

    frame = _yf_download(real, ["MSFT", "KO"])
    for f in ("Close", "High", "Low", "Open", "Volume"):
        frame[(f, "DELISTED")] = np.nan
    path = tmp_path / "three.csv"
    frame.to_csv(path)
    d, rep = read_price_file(path)
    assert sorted(d["ticker"].unique()) == ["KO", "MSFT"] and rep.tickers_dropped_empty == ["DELISTED"]
    assert [(w["ticker"], w["kind"]) for w in rep.warnings] == [("DELISTED", "no_prices")] and rep.metrics()["data/tickers_dropped"] == 1
    rep.write(tmp_path)  # what a run records, read back by the dashboard
    assert api.data_quality(tmp_path).dropped.to_dict("records") == [{"ticker": "DELISTED", "reason": "no price on any row (a failed download?); dropped"}]
    with pytest.raises(PriceDataError, match=r"\['DELISTED'\] \(DELISTED dropped: no price on any row \(a failed download\?\)\)"):
        load_panel_data(str(path), ["DELISTED"])


def test_calendars_whose_holidays_are_published_by_year_forecast_from_this_years_last_weeks():
    """XSHG, XBOM and XSES hold holidays only through the last year published; the calendar was built through the end of
    next year, so a .SS/.NS/.SI ticker's forecast from late this year raised exchange_calendars' ValueError (a traceback)
    — e.g. from 2026-11-30 with exchange_calendars 4.13. It is now built through this year when next year is not
    published, and a date beyond what a calendar covers is one line."""
    from domains.finance.calendars import CalendarError, calendar_of, future_sessions

    assert [calendar_of(t) for t in ("600519.SS", "000001.SZ", "RELIANCE.NS", "D05.SI")] == ["XSHG", "XSHG", "XBOM", "XSES"]
    for name in ("XSHG", "XBOM", "XSES"):
        got = future_sessions("2026-11-30", 5, name)
        assert len(got) == 5 and got[0] > pd.Timestamp("2026-11-30") and (got.dayofweek < 5).all(), name
    with pytest.raises(CalendarError) as e:
        future_sessions("2100-06-01", 5, "XSHG")
    assert "calendar XSHG does not cover 2100" in str(e.value) and "--calendar business" in str(e.value) and "\n" not in str(e.value)


def test_days_a_history_trades_while_its_calendar_is_closed():
    """The check behind the forecast's calendar_mismatch warning: Tokyo's sessions include NYSE's holidays, NYSE's own do not."""
    import exchange_calendars as xcals

    from domains.finance.calendars import days_off_calendar

    tokyo = xcals.get_calendar("XTKS", start="2020-01-02", end=TOKYO_END).sessions
    off = days_off_calendar(tokyo, "XNYS")
    assert list(off.strftime("%Y-%m-%d")) == ["2020-12-25", "2021-01-18", "2021-02-15", "2021-04-02"]  # checked from the December before
    assert days_off_calendar(tokyo, "XTKS").empty and days_off_calendar(xcals.get_calendar("XNYS", start="2020-01-02", end=TOKYO_END).sessions, "XNYS").empty
    assert list(days_off_calendar(pd.to_datetime(["2021-04-02", "2021-04-03"]), "business").strftime("%a")) == ["Sat"]


@pytest.mark.slow  # two forecast commands: ~20 s on a loaded 2-core machine
def test_a_history_that_trades_on_days_its_calendar_is_closed_is_warned_about(tmp_path, capsys):
    """investing.com names a Tokyo stock '4502' (no suffix), so its forecast dates followed NYSE with nothing said —
    although its history has prices on NYSE holidays. forecast now warns (data_warnings.csv, metrics, the log) and
    names the fix; with --calendar XTKS the warning goes and the dates are Tokyo's. Real prices on Tokyo's sessions."""
    import json

    import exchange_calendars as xcals
    import torch

    from domains.finance.features import CORE_REALS, FoldScaler, base_features
    from domains.finance.forecast import main as forecast_main
    from domains.finance.model import Forecaster, TFTSpec, build_tft

    p = load_panel(columns=["date", "ticker", "close"])
    close = p.loc[p["ticker"] == "PFE", "close"].to_numpy()[-260:]
    tokyo = xcals.get_calendar("XTKS", start="2020-01-01", end=TOKYO_END).sessions[-260:]
    pd.DataFrame({"date": tokyo.strftime("%Y-%m-%d"), "ticker": "4502", "close": close}).to_csv(tmp_path / "prices.csv", index=False)
    feat = base_features(read_price_file(tmp_path / "prices.csv")[0])
    torch.manual_seed(0)
    spec = TFTSpec(encoder_length=20, horizon=5, hidden_size=8, attention_heads=1, hidden_continuous_size=4, observed_reals=tuple(CORE_REALS))
    run = tmp_path / "runs" / "finance" / "m"
    Forecaster(build_tft(spec, ["4502"]), spec, FoldScaler.fit(feat), ["4502"]).save(run / "model")
    (run / "run.json").write_text(json.dumps({"domain": "finance", "kind": "model", "status": "completed", "command": "train"}))
    args = ["--runs-dir", str(tmp_path / "runs"), "--model-run", "m", "--data", str(tmp_path / "prices.csv"), "--no-track"]
    results = {}
    for cal in ("auto", "XTKS"):
        assert forecast_main([*args, "--calendar", cal, "--name", f"f-{cal}"]) == 0
        out = tmp_path / "runs" / "finance" / f"f-{cal}"
        warned = pd.read_csv(out / "data_warnings.csv")
        results[cal] = (sorted(pd.read_csv(out / "forecasts.csv")["date"].unique()), warned, json.loads((out / "metrics.json").read_text()))
    dates, warned, metrics = results["auto"]
    assert dates == NYSE_AFTER[TOKYO_END] and list(warned["kind"]) == ["calendar_mismatch"] and metrics["data/warnings/calendar_mismatch"] == 1
    assert int(warned["value"].iloc[0]) >= 3 and "--calendar" in warned["detail"].iloc[0] and "XNYS is closed" in warned["detail"].iloc[0]
    dates, warned, metrics = results["XTKS"]
    assert dates == OWN_AFTER["7203.T"] and warned.empty and "data/warnings/calendar_mismatch" not in metrics and metrics["calendar"] == "XTKS"
    assert "forecast dates: XTKS sessions" in capsys.readouterr().out


def test_every_calendar_the_suffix_tables_name_exists():
    """A misspelt calendar in the tables would refuse every ticker with that suffix; the names are checked against the
    installed exchange_calendars (building each calendar would take ~1 s apiece)."""
    import exchange_calendars as xcals

    from domains.finance.calendars import INDEX_CALENDARS, SUFFIX_CALENDARS, calendar_of

    names = set(xcals.get_calendar_names(include_aliases=True))
    assert set(SUFFIX_CALENDARS.values()) | set(INDEX_CALENDARS.values()) <= names
    assert {calendar_of(f"X.{s.lower()}") for s in SUFFIX_CALENDARS} == set(SUFFIX_CALENDARS.values())  # any case


@pytest.mark.parametrize("labels", [True, False], ids=["yfinance>=0.2.51", "older"])
@pytest.mark.parametrize("group_by", ["column", "ticker"])
@pytest.mark.parametrize("tickers", [["LOW"], ["OPEN"], ["LOW", "KO"]], ids=["LOW", "OPEN", "LOW+KO"])
def test_a_download_of_a_ticker_named_like_a_price_field_is_read(real, tmp_path, tickers, group_by, labels):
    """Lowe's trades as LOW and Opendoor as OPEN: the field level of a download was told only by its names, so the ticker
    level of yf.download("LOW") looked like fields too and the file was refused ('no close price column'), saved as CSV
    or Parquet. yfinance's level names (Price / Ticker) now decide; unnamed, the level with more field names does."""
    prices = {"LOW": real["MSFT"], "OPEN": real["MSFT"], "KO": real["KO"]}
    frame = _yf_download(prices, tickers, group_by, labels)
    for path in (tmp_path / "download.csv", tmp_path / "download.parquet"):
        frame.to_csv(path) if path.suffix == ".csv" else frame.to_parquet(path)
        got, rep = read_price_file(path)
        assert sorted(got["ticker"].unique()) == sorted(tickers) and rep.warnings == [], path.name
        for t in tickers:
            np.testing.assert_allclose(got.loc[got["ticker"] == t, "close"].to_numpy(), prices[t]["Close"].to_numpy()[1:], rtol=1e-12)
