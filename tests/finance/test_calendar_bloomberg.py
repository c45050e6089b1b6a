"""Bloomberg security names get their exchange's calendar. A Bloomberg pull names its securities ``VOD LN Equity``,
``7203 JT Equity``, ``UKX Index`` (ticker, exchange code, yellow key); :func:`calendar_of` read only Yahoo/stooq
suffixes, so every one of them followed XNYS, and a Tokyo or London history from a Bloomberg sheet was warned about as
off its calendar (calendar_mismatch) while its forecast dates skipped NYSE's holidays instead of its own."""

from __future__ import annotations

import exchange_calendars as xcals
import pandas as pd

from domains.finance.calendars import BLOOMBERG_CALENDARS, INDEX_CALENDARS, SUFFIX_CALENDARS, calendar_of, calendars_for

BLOOMBERG = {
    "VOD LN Equity": "XLON", "7203 JT Equity": "XTKS", "7203 JP Equity": "XTKS", "SAP GY Equity": "XETR", "SAP GR Equity": "XETR",
    "AAPL US Equity": "XNYS", "AAPL UW Equity": "XNYS", "BHP AU Equity": "XASX", "RY CN Equity": "XTSE", "RY CT Equity": "XTSE",
    "700 HK Equity": "XHKG", "MC FP Equity": "XPAR", "ASML NA Equity": "XAMS", "SAN SM Equity": "XMAD", "ENI IM Equity": "XMIL",
    "NESN SW Equity": "XSWX", "NESN SE Equity": "XSWX", "005930 KS Equity": "XKRX", "2330 TT Equity": "XTAI",
    "D05 SP Equity": "XSES", "RELIANCE IN Equity": "XBOM", "ERICB SS Equity": "XSTO", "FPH NZ Equity": "XNZE",
    "VALE3 BZ Equity": "BVMF", "WALMEX* MM Equity": "XMEX", "600519 CH Equity": "XSHG", "NPN SJ Equity": "XJSE",
    "UKX Index": "XLON", "NKY Index": "XTKS", "SPX Index": "XNYS", "DAX Index": "XETR", "HSI Index": "XHKG", "AS51 Index": "XASX",
    # any case and spacing, as a hand-typed or re-saved sheet writes them
    "vod ln equity": "XLON", " 7203  JT   Equity ": "XTKS", "ukx index": "XLON",
}


def test_each_bloomberg_name_resolves_to_its_exchanges_calendar():
    assert {t: calendar_of(t) for t in BLOOMBERG} == BLOOMBERG
    assert calendars_for(list(BLOOMBERG)) == BLOOMBERG  # 'auto', the default of --calendar
    # Bloomberg's SS is Stockholm, Yahoo's .SS Shanghai: one table per naming scheme, one resolver
    assert calendar_of("ERICB SS Equity") == "XSTO" and calendar_of("600519.SS") == "XSHG" and SUFFIX_CALENDARS["SS"] == "XSHG"
    # a plain ticker equal to an index mnemonic (the Global X DAX ETF is 'DAX' on Nasdaq) is not that index
    assert calendar_of("DAX") == "XNYS" and calendar_of("UKX") == "XNYS"
    # an unknown code stays XNYS (logged, then warned about if its history is off it)
    assert calendar_of("XYZ QQ Equity") == "XNYS"
    names = set(xcals.get_calendar_names(include_aliases=True))
    assert set(BLOOMBERG_CALENDARS.values()) | set(INDEX_CALENDARS.values()) <= names


def test_a_bloomberg_named_tokyo_history_is_not_warned_as_off_its_calendar(tmp_path):
    """A Bloomberg sheet of two securities side by side: Toyota (7203 JT Equity) on Tokyo's sessions, which include
    NYSE's Thanksgiving, MLK Day and Good Friday, next to Apple on NYSE's. Toyota followed XNYS and got calendar_mismatch;
    it now follows XTKS and neither history is warned about. Real closes from the bundled panel."""
    from domains.finance.data import load_panel, load_panel_data
    from domains.finance.predictor import warn_calendar_mismatch

    tokyo = xcals.get_calendar("XTKS", start="2021-06-01", end="2022-12-28").sessions
    nyse = xcals.get_calendar("XNYS", start="2021-06-01", end="2022-12-28").sessions
    p = load_panel(columns=["date", "ticker", "close"])
    ko, aapl = (p.loc[p["ticker"] == t, "close"].to_numpy() for t in ("KO", "AAPL"))
    n = max(len(tokyo), len(nyse))
    lines = ["7203 JT Equity,,AAPL US Equity,", "Date,PX_LAST,Date,PX_LAST"]
    for i in range(n):
        left = f"{tokyo[i]:%m/%d/%Y},{ko[-len(tokyo) + i]:.4f}" if i < len(tokyo) else ","
        right = f"{nyse[i]:%m/%d/%Y},{aapl[-len(nyse) + i]:.4f}" if i < len(nyse) else ","
        lines.append(f"{left},{right}")
    path = tmp_path / "bdh.csv"
    path.write_text("\n".join(lines) + "\n")
    data = load_panel_data(str(path))
    assert sorted(data.panel["ticker"].unique()) == ["7203 JT Equity", "AAPL US Equity"]
    assert tokyo.isin(pd.to_datetime(["2021-11-25", "2022-01-17", "2022-04-15"])).sum() == 3  # what made XNYS wrong for it
    calendars = calendars_for(["7203 JT Equity", "AAPL US Equity"])
    assert calendars == {"7203 JT Equity": "XTKS", "AAPL US Equity": "XNYS"}
    warn_calendar_mismatch(data, calendars)
    assert data.report.warnings == []
    warn_calendar_mismatch(data, {"7203 JT Equity": "XNYS"})  # the check still sees it on NYSE's calendar
    assert [w["kind"] for w in data.report.warnings] == ["calendar_mismatch"]
