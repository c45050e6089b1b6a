"""Yahoo suffixes whose exchange exchange_calendars keeps (or the market it closes with) get that calendar, not XNYS:
the regional German exchanges (.BE Berlin, .BM Bremen, .HA Hanover, .MU Munich: Frankfurt's holidays), .ME Moscow,
Yahoo's pan-Euronext .NX (Paris's holidays) and its page's .SAU for Tadawul. They fell back to XNYS, so a Berlin
listing's forecast dates skipped July 4 and Thanksgiving and its own history was warned about (calendar_mismatch)."""

from __future__ import annotations

import pandas as pd

from domains.finance.calendars import SUFFIX_CALENDARS, calendar_of, calendars_for

NEW = {"SAP.BE": "XFRA", "SAP.BM": "XFRA", "SAP.HA": "XFRA", "SAP.MU": "XFRA", "sap.mu": "XFRA", "SBER.ME": "XMOS",
       "ALCOG.NX": "XPAR", "2222.SAU": "XSAU"}


def test_each_new_suffix_resolves_to_its_markets_calendar():
    assert {t: calendar_of(t) for t in NEW} == NEW
    assert calendars_for(list(NEW)) == NEW  # 'auto', the default of --calendar
    # suffixes Yahoo lists whose market exchange_calendars does not keep stay XNYS (logged, then warned about if off it)
    assert [calendar_of(t) for t in ("COMI.CA", "QNBK.QA", "X.TI")] == ["XNYS"] * 3
    assert "V" in SUFFIX_CALENDARS and SUFFIX_CALENDARS["V"] == "XTSE"  # TSX Venture: exchange_calendars 4.13 has no XTSX


def test_the_german_regional_exchanges_share_frankfurts_sessions():
    """Why .BE/.BM/.HA/.MU map to XFRA: the German calendars exchange_calendars keeps agree on every session (XSTU aside)."""
    import exchange_calendars as xcals

    span = dict(start="2022-01-01", end="2024-12-31")
    frankfurt = xcals.get_calendar("XFRA", **span).sessions
    for other in ("XETR", "XDUS", "XHAM"):
        assert frankfurt.equals(xcals.get_calendar(other, **span).sessions), other


def test_a_history_on_its_own_exchange_is_not_warned_as_off_its_calendar(tmp_path):
    """A Berlin listing's history on its exchange's sessions — which include NYSE's holidays — raised the
    calendar_mismatch warning (its forecast dates followed XNYS); it is now read as Frankfurt's and not warned.
    (XMOS would do as well, but building it takes ~2.5 s.)"""
    import exchange_calendars as xcals

    from domains.finance.data import load_panel, load_panel_data
    from domains.finance.predictor import warn_calendar_mismatch

    ticker = "SAP.BE"
    sessions = xcals.get_calendar("XFRA", start="2022-01-03", end="2023-06-30").sessions
    close = load_panel(columns=["date", "ticker", "close"]).query("ticker == 'KO'")["close"].to_numpy()[-len(sessions):]  # real closes
    path = tmp_path / "prices.csv"
    pd.DataFrame({"date": sessions.strftime("%Y-%m-%d"), "ticker": ticker, "close": close}).to_csv(path, index=False)
    data = load_panel_data(str(path))
    us_holidays_traded = sessions.isin(pd.to_datetime(["2022-07-04", "2022-11-24", "2023-01-16"])).sum()
    assert us_holidays_traded >= 2  # what made XNYS the wrong calendar for it
    warn_calendar_mismatch(data, calendars_for([ticker]))
    assert [w["kind"] for w in data.report.warnings] == []
