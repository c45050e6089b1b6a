"""Exchange calendars of the forecast dates: which sessions follow a ticker's last price.

    from domains.finance.calendars import calendar_of, calendars_for, future_sessions
    calendar_of("7203.T")                       # 'XTKS' (Yahoo's suffix for Tokyo)
    calendars_for(["AAPL", "VOD.L"], "auto")    # {'AAPL': 'XNYS', 'VOD.L': 'XLON'}
    future_sessions("2021-04-01", 5, "XNYS")    # the next 5 NYSE sessions (Good Friday skipped)

``auto`` (the default of ``--calendar``) gives each ticker its exchange's calendar from its name: Yahoo
Finance's exchange suffixes (``.T`` Tokyo, ``.L`` London, ``.DE`` Xetra, ``.PA`` Paris, ``.HK`` Hong Kong,
``.TO`` Toronto, ``.ME`` Moscow, ``.BE``/``.MU``/``.HA`` Berlin/Munich/Hanover on Frankfurt's holidays, ...;
:data:`SUFFIX_CALENDARS`, with where each mapping comes from), stooq's country suffixes (``.US``, ``.UK``, ``.JP``, ``.DE``,
``.HK``, ``.HU``), Bloomberg's exchange codes (``VOD LN Equity`` London, ``7203 JT Equity`` Tokyo, ``SAP GY Equity``
Xetra, ...; :data:`BLOOMBERG_CALENDARS`), the main non-US indices (Yahoo's ``^FTSE``, ``^GDAXI``, ``^N225``, ... and Bloomberg's
``UKX Index``, ``NKY Index``, ...; :data:`INDEX_CALENDARS`), and crypto pairs (``BTC-USD``, ``BTC/USDT``, ``BTCUSDT``, ``XBTUSD Curncy``:
``24/7``), currency pairs (``EURUSD=X``, ``EURUSD``, ``EUR/USD``, ``EURUSD Curncy``: ``24/5``) and futures (``CL=F``: ``us_futures``;
the spellings read: :mod:`domains.finance.symbols`);
anything else — US tickers, the bundled panel, ``BRK.B`` — is NYSE (``XNYS``). An explicit ``--calendar``
(an ``exchange_calendars`` name such as ``XLON``, or ``business`` for Monday–Friday) is used for every ticker.
A name that is not a calendar is refused in one line listing a few that are.
"""

from __future__ import annotations

import re

import pandas as pd

from core.errors import one_line, plain
from core.logging import get_logger
from domains.finance.data import PriceDataError
from domains.finance.symbols import symbol_market

__all__ = ["AUTO", "US_CALENDAR", "BUSINESS_DAYS", "SUFFIX_CALENDARS", "BLOOMBERG_CALENDARS", "INDEX_CALENDARS", "CalendarError", "calendar_of", "calendars_for",
           "check_calendar", "future_sessions", "days_off_calendar"]

log = get_logger("finance.calendars")
AUTO = "auto"
US_CALENDAR = "XNYS"  # a ticker without a known exchange suffix (and every ticker of the bundled panel)
BUSINESS_DAYS = ("business", "bday", "none")  # plain Monday-Friday, no holidays

# Yahoo Finance's exchange suffixes -> exchange_calendars names. The suffixes are those of Yahoo's help page "Exchanges and
# data providers on Yahoo Finance" (help.yahoo.com/kb/SLN2310.html; GnuCash's manual, "Yahoo Codes for Exchanges and
# Markets", copies it); a suffix is mapped only where exchange_calendars (4.13) keeps the venue's holidays or those of the
# market it closes with. Where it has no calendar of that venue, the market whose holidays it keeps is named: Shenzhen (.SZ)
# closes with Shanghai, NSE (.NS) with BSE, TSX Venture and the CSE (.V, .CN, .NE) with the TSX (exchange_calendars has
# no XTSX), KOSDAQ (.KQ) with KRX, Taipei's OTC market (.TWO) with TWSE; the regional German exchanges Berlin (.BE),
# Bremen (.BM), Hanover (.HA) and Munich (.MU) with Frankfurt (XFRA, XETR, XDUS and XHAM hold the same sessions 2019-2026;
# XSTU also traded on Whit Monday 2019-2021 and 2019-10-03); Yahoo's pan-Euronext .NX with Paris (XPAR, XAMS, XBRU and
# XLIS hold the same sessions 2019-2026). Yahoo suffixes without such a calendar stay XNYS (logged, and a history off
# it gets the calendar_mismatch warning): .CA Cairo, .QA Qatar, .CR Caracas, .TI EuroTLX.
SUFFIX_CALENDARS = {
    # Americas
    "TO": "XTSE", "V": "XTSE", "CN": "XTSE", "NE": "XTSE", "SA": "BVMF", "MX": "XMEX", "BA": "XBUE", "SN": "XSGO",
    # Europe
    "L": "XLON", "IL": "XLON", "IR": "XDUB", "DE": "XETR", "F": "XFRA", "DU": "XDUS", "HM": "XHAM", "SG": "XSTU",
    "BE": "XFRA", "BM": "XFRA", "HA": "XFRA", "MU": "XFRA",
    "PA": "XPAR", "AS": "XAMS", "BR": "XBRU", "LS": "XLIS", "NX": "XPAR", "MI": "XMIL", "MC": "XMAD", "SW": "XSWX", "VX": "XSWX",
    "VI": "XWBO", "ST": "XSTO", "OL": "XOSL", "CO": "XCSE", "HE": "XHEL", "IC": "XICE", "WA": "XWAR", "PR": "XPRA", "BD": "XBUD",
    "AT": "ASEX", "IS": "XIST", "TL": "XTAL", "RG": "XRIS", "VS": "XLIT", "ME": "XMOS",
    # Middle East, Africa (Yahoo's page lists Tadawul as .SAU; its quotes use .SR)
    "TA": "XTAE", "JO": "XJSE", "SR": "XSAU", "SAU": "XSAU",
    # Asia-Pacific
    "T": "XTKS", "HK": "XHKG", "SS": "XSHG", "SZ": "XSHG", "KS": "XKRX", "KQ": "XKRX", "TW": "XTAI", "TWO": "XTAI",
    "SI": "XSES", "BO": "XBOM", "NS": "XBOM", "KL": "XKLS", "BK": "XBKK", "JK": "XIDX", "PS": "XPHS", "AX": "XASX", "NZ": "XNZE",
    # stooq's country suffixes (aapl.us.txt -> AAPL.US); .DE and .HK mean the same as Yahoo's
    "US": "XNYS", "UK": "XLON", "JP": "XTKS", "HU": "XBUD",
}
# Yahoo's symbols of the main non-US indices (US ones such as ^GSPC, ^DJI, ^IXIC, ^RUT, ^VIX are XNYS)
INDEX_CALENDARS = {
    "^FTSE": "XLON", "^FTMC": "XLON", "^FTAS": "XLON", "^GDAXI": "XETR", "^MDAXI": "XETR", "^TECDAX": "XETR", "^SDAXI": "XETR",
    "^STOXX50E": "XETR", "^STOXX": "XETR", "^FCHI": "XPAR", "^AEX": "XAMS", "^BFX": "XBRU", "^IBEX": "XMAD", "^SSMI": "XSWX",
    "^ATX": "XWBO", "^OMX": "XSTO", "^OMXC25": "XCSE", "^OMXH25": "XHEL", "^OSEAX": "XOSL", "^ISEQ": "XDUB",
    "^N225": "XTKS", "^HSI": "XHKG", "^HSCE": "XHKG", "^KS11": "XKRX", "^KQ11": "XKRX", "^TWII": "XTAI", "^STI": "XSES",
    "^BSESN": "XBOM", "^NSEI": "XBOM", "^KLSE": "XKLS", "^JKSE": "XIDX", "^AXJO": "XASX", "^AORD": "XASX", "^NZ50": "XNZE",
    "^GSPTSE": "XTSE", "^BVSP": "BVMF", "^MXX": "XMEX", "^MERV": "XBUE", "^IPSA": "XSGO",
    # Bloomberg's mnemonics of the same indices with their yellow key (as BDH pulls name them: 'UKX Index', 'NKY Index',
    # 'SX5E Index', 'AS51 Index', 'SPTSX Index', 'KOSPI Index', ...); US ones (SPX, INDU, CCMP, NDX) are XNYS
    "UKX INDEX": "XLON", "DAX INDEX": "XETR", "SX5E INDEX": "XETR", "SXXP INDEX": "XETR", "CAC INDEX": "XPAR",
    "AEX INDEX": "XAMS", "IBEX INDEX": "XMAD", "FTSEMIB INDEX": "XMIL", "SMI INDEX": "XSWX", "OMX INDEX": "XSTO",
    "OBX INDEX": "XOSL", "NKY INDEX": "XTKS", "TPX INDEX": "XTKS", "HSI INDEX": "XHKG", "HSCEI INDEX": "XHKG",
    "KOSPI INDEX": "XKRX", "KOSPI2 INDEX": "XKRX", "TWSE INDEX": "XTAI", "STI INDEX": "XSES", "SENSEX INDEX": "XBOM",
    "NIFTY INDEX": "XBOM", "SHCOMP INDEX": "XSHG", "AS51 INDEX": "XASX", "NZSE50FG INDEX": "XNZE", "SPTSX INDEX": "XTSE",
    "SPTSX60 INDEX": "XTSE", "IBOV INDEX": "BVMF", "MEXBOL INDEX": "XMEX", "TOP40 INDEX": "XJSE", "SET INDEX": "XBKK",
}
# Bloomberg's exchange codes (the two letters between the ticker and its yellow key: 'VOD LN Equity', '7203 JT Equity') ->
# exchange_calendars names; a country's composite code (US, JP, GR, SW, IN, BZ, CN, CH) and its exchanges' codes alike.
# Sources: a Bloomberg country/MIC/exchange-code list (gist.github.com/masaakif/5828070: AU XASX, BB XBRU, BS BVMF, CT XTSE,
# CN XTSX, SE/VX XSWX, CC XSGO, CG XSHG, CS XSHE, CP XPRA, DC XCSE, GY XETR, GF XFRA, FH XHEL, FP XPAR, LN XLON, GA XATH,
# HK XHKG, HB XBUD, IJ XIDX, IB XBOM, IS XNSE, ID XDUB, IT XTAE, IM MTAA, KP XKRX, KQ KOSDAQ, PL XLIS, RM MISX, SJ XJSE, and
# MM Mexico, NO Norway, NA Netherlands, AV Vienna, MK Malaysia, PM Philippines, NZ New Zealand, PW Poland); Optuma's
# "European Exchange Data - Symbology" (optuma.com/kb: GR German Xetra, GD Dusseldorf, GH Hamburg, GB Berlin, GI Hanover,
# GM Munich, GS Stuttgart, SM/SN Madrid, SS Stockholm, IR Iceland, ET Tallinn, LG Riga, LH Vilnius); seedalpha's ticker
# parser (exchanges.json: JP/JT Tokyo, KS Korea); stockmarketmba.com's exchange list (TT Taiwan, US the US composite);
# SMU library's Bloomberg FAQ (SP Singapore); OpenFIGI's IBM listings (US composite; UA, UC, UN, UP, UW its US venues); and
# Bloomberg names in public use for the rest (NESN SW Nestle in Zurich, RELIANCE IN Reliance on NSE, VALE3 BZ Vale on B3).
# Mapped as SUFFIX_CALENDARS maps (TSX Venture and Shenzhen and NSE close with the TSX, Shanghai and BSE; the German
# regional exchanges with Frankfurt). Bloomberg's SS is Stockholm (Yahoo's .SS is Shanghai): the two tables never mix.
BLOOMBERG_CALENDARS = {
    # Americas
    "US": "XNYS", "UA": "XNYS", "UC": "XNYS", "UN": "XNYS", "UP": "XNYS", "UW": "XNYS", "CN": "XTSE", "CT": "XTSE",
    "BZ": "BVMF", "BS": "BVMF", "MM": "XMEX", "CC": "XSGO",
    # Europe
    "LN": "XLON", "ID": "XDUB", "GR": "XETR", "GY": "XETR", "GF": "XFRA", "GD": "XDUS", "GH": "XHAM", "GS": "XSTU",
    "GB": "XFRA", "GI": "XFRA", "GM": "XFRA", "FP": "XPAR", "NA": "XAMS", "BB": "XBRU", "PL": "XLIS", "IM": "XMIL",
    "SM": "XMAD", "SN": "XMAD", "SW": "XSWX", "SE": "XSWX", "VX": "XSWX", "AV": "XWBO", "SS": "XSTO", "NO": "XOSL",
    "DC": "XCSE", "FH": "XHEL", "IR": "XICE", "PW": "XWAR", "CP": "XPRA", "HB": "XBUD", "GA": "ASEX", "RM": "XMOS",
    "ET": "XTAL", "LG": "XRIS", "LH": "XLIT",
    # Middle East, Africa
    "IT": "XTAE", "SJ": "XJSE",
    # Asia-Pacific
    "JP": "XTKS", "JT": "XTKS", "HK": "XHKG", "CH": "XSHG", "CG": "XSHG", "CS": "XSHG", "KS": "XKRX", "KP": "XKRX",
    "KQ": "XKRX", "TT": "XTAI", "SP": "XSES", "IN": "XBOM", "IB": "XBOM", "IS": "XBOM", "MK": "XKLS", "IJ": "XIDX",
    "PM": "XPHS", "AU": "XASX", "NZ": "XNZE",
}
# a Bloomberg security name: ticker, exchange code, yellow key ('VOD LN Equity'; any case, any spacing)
_BLOOMBERG_NAME = re.compile(r"^\S+(?:\s+\S+)*?\s+([A-Z][A-Z0-9])\s+(?:EQUITY|PFD|COMDTY)$")
# symbols of markets that are not one exchange (symbols.py): crypto pairs (BTC-USD, BTCUSDT, BTC/USD) trade every day,
# currency pairs (EURUSD=X, EURUSD, EURUSD Curncy) Monday-Friday around the clock, futures (CL=F, ES=F) on CME Globex's holidays
_MARKET_CALENDARS = {"crypto pair": "24/7", "currency pair": "24/5", "futures": "us_futures"}
_EXAMPLES = "XNYS, XLON, XETR, XPAR, XTKS, XHKG, XTSE, XASX"


class CalendarError(PriceDataError):
    """``--calendar`` names no exchange calendar, or a calendar does not cover the dates asked for."""


def calendar_of(ticker: str) -> str:
    """The exchange calendar of ``ticker`` read from its name (Yahoo/stooq suffix, Bloomberg exchange code, a non-US
    index), else XNYS."""
    return _read_name(ticker)[0]


def _read_name(ticker: str) -> tuple[str, bool]:
    """(:func:`calendar_of`'s answer, whether the name carries an exchange code none of the tables knows: a Bloomberg
    code or a Yahoo-style suffix, read as XNYS)."""
    name = " ".join(str(ticker).upper().split())
    if name in INDEX_CALENDARS:
        return INDEX_CALENDARS[name], False
    bloomberg = _BLOOMBERG_NAME.match(name)
    if bloomberg:
        code = bloomberg.group(1)
        return BLOOMBERG_CALENDARS.get(code, US_CALENDAR), code not in BLOOMBERG_CALENDARS
    market = symbol_market(name)
    if market:
        return _MARKET_CALENDARS[market], False
    stem, dot, suffix = name.rpartition(".")
    if not (dot and stem and suffix):
        return US_CALENDAR, False
    return SUFFIX_CALENDARS.get(suffix, US_CALENDAR), suffix not in SUFFIX_CALENDARS


def calendars_for(tickers, calendar: str = AUTO) -> dict[str, str]:
    """``{ticker: calendar}``: each ticker's own (:func:`calendar_of`) for ``auto``, else ``calendar`` for all."""
    if str(calendar).strip().lower() != AUTO:
        name = check_calendar(calendar)
        return {str(t): name for t in tickers}
    read = {str(t): _read_name(t) for t in tickers}
    out = {t: c for t, (c, _) in read.items()}
    unknown = sorted(t for t, (_, code_unknown) in read.items() if code_unknown and t not in _SAID)
    _SAID.update(unknown)  # once per ticker, not at every call
    if unknown:
        log.info(f"no exchange suffix or Bloomberg exchange code known in {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}: their forecast dates follow "
                 f"{US_CALENDAR}; name the exchange with --calendar (e.g. {_EXAMPLES}) if that is wrong")
    return out


def check_calendar(name: str) -> str:
    """``name`` as the calendar it means (``auto``, ``business`` or an exchange_calendars name, upper case); anything
    else is one :class:`CalendarError` line listing some valid names (and the calendar of a Yahoo suffix given instead)."""
    import exchange_calendars as xcals

    text = str(name).strip()
    if text.lower() in (AUTO, *BUSINESS_DAYS):
        return text.lower()
    names = {n.upper(): n for n in xcals.get_calendar_names(include_aliases=True)}  # 'us_futures' and '24/7' are lower case
    if text.upper() in names:
        return names[text.upper()]
    suffix = text.lstrip(".").upper()
    hint = (f" ({plain(text)} is the Yahoo ticker suffix of {SUFFIX_CALENDARS[suffix]}: use --calendar {SUFFIX_CALENDARS[suffix]}, or "
            f"'auto', which reads it from each ticker)" if suffix in SUFFIX_CALENDARS else "")
    raise CalendarError(f"--calendar: unknown exchange calendar {plain(text)}{hint}; expected 'auto' (each ticker's exchange from its "
                        f"suffix, e.g. 7203.T -> XTKS, else XNYS), an exchange_calendars name such as {_EXAMPLES} (all: python -c "
                        f"'import exchange_calendars; print(exchange_calendars.get_calendar_names())'), or 'business' for Monday-Friday")


def future_sessions(last, n: int, calendar: str = US_CALENDAR) -> pd.DatetimeIndex:
    """The ``n`` trading sessions after ``last`` on an exchange calendar (``exchange_calendars`` name such as XNYS,
    XLON, XTKS; ``"business"`` = plain Monday–Friday business days)."""
    last = pd.Timestamp(last).normalize()
    name = check_calendar(calendar)
    if name == AUTO:
        raise CalendarError("future_sessions needs one calendar; resolve 'auto' per ticker with calendars_for first")
    if name in BUSINESS_DAYS:
        return pd.bdate_range(last + pd.offsets.BDay(1), periods=n)
    cal = _exchange_calendar(name, last.year)
    first, end = last + pd.Timedelta(days=1), min(last + pd.Timedelta(days=15 + 3 * n), _naive(cal.last_session))
    sessions = cal.sessions_in_range(first, end) if first <= end else pd.DatetimeIndex([])
    if len(sessions) < n:
        raise CalendarError(f"calendar {name}: fewer than {n} sessions after {last:%Y-%m-%d} "
                            f"(it covers {cal.first_session:%Y-%m-%d}..{cal.last_session:%Y-%m-%d}: its holidays may not be published "
                            f"further yet); pass --calendar business (Monday-Friday) or a calendar that covers those days")
    return _naive(pd.DatetimeIndex(sessions[:n]))


def days_off_calendar(dates, calendar: str) -> pd.DatetimeIndex:
    """The dates of a price history that are not sessions of ``calendar`` — a sign the ticker trades on another exchange
    (a Tokyo stock has prices on NYSE's July 4 and Thanksgiving). Only dates from December of the year before the last
    one are checked (the span :func:`future_sessions` builds anyway); none when the calendar cannot say."""
    d = pd.DatetimeIndex(dates)  # not pd.to_datetime(Series): its format-cache probe boxes every date (0.4 s for the bundled panel)
    if d.empty:
        return d.normalize()
    name = check_calendar(calendar)
    if name in BUSINESS_DAYS:
        return d[d.dayofweek >= 5].normalize()
    try:
        cal = _exchange_calendar(name, d.max().year)
    except CalendarError:
        return d[:0].normalize()
    # only the calendar's span is normalised and compared: a long history is mostly before it
    d = d[(d >= _naive(cal.first_session)) & (d < _naive(cal.last_session) + pd.Timedelta(days=1))].normalize()
    return d[~d.isin(_naive(pd.DatetimeIndex(cal.sessions)))]


def _naive(t):
    return t.tz_localize(None) if getattr(t, "tz", None) is not None else t


def _exchange_calendar(name: str, year: int):
    import exchange_calendars as xcals

    key = (name, year)
    if key not in _CALENDARS:
        # through next year (a forecast from late December), else through this year only: calendars whose holidays are
        # recorded by year (XSHG, XBOM, XSES) end with the last year published, which may be this one
        for end in (f"{year + 1}-12-31", f"{year}-12-31"):
            try:
                _CALENDARS[key] = xcals.get_calendar(name, start=f"{year - 1}-12-01", end=end)
                break
            except ValueError as e:  # e.g. XTKS is only evaluated from 1997, XSHG's holidays recorded from 1991
                error = e
        else:
            raise CalendarError(f"calendar {name} does not cover {year} ({plain(one_line(error, None))}); forecast from "
                                f"another date or pass --calendar business (Monday-Friday)") from error
    return _CALENDARS[key]


_CALENDARS: dict = {}
_SAID: set = set()  # tickers whose unknown suffix has been logged
