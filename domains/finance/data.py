"""Finance data: the bundled real daily panel, and validated user price files.

Bundled panel (data set ``finance-daily-panel``, prepared by ``python -m core.data prepare finance``):

* tickers: the 20 S&P 500 stocks of skfolio and the S&P 500 index (``SP500``), 1990-01-02 .. 2022-12-28;
  the five factor ETFs (MTUM, QUAL, SIZE, USMV, VLUE) from 2014; the NASDAQ composite (``NASDAQ``,
  from ``arch.data``) 1999-2018 — adjusted closes;
* ``open, high, low, volume``: from ``arch.data`` for ``SP500`` and ``NASDAQ`` 1999-2018, NaN elsewhere
  (optional per ticker and period);
* covariates (one row per date): VIX level (2014-2019) and WTI crude oil spot price (1986-2019) from
  ``arch.data``, NaN outside those ranges (optional per period).

``panel.parquet`` is long format ``date, ticker, close, log_ret, rvol5, open, high, low, volume``;
``covariates.parquet`` is ``date, vix, wti``. ``log_ret`` is the close-to-close log return; ``rvol5``
the realised volatility of the last 5 returns (square root of their mean square — daily units, not
annualised).

User files (:func:`load_price_file`): CSV or Parquet, one row per (date, ticker) with columns

=========== =========================================================================
``date``    required; anything ``pandas.to_datetime`` parses (ISO ``YYYY-MM-DD`` best)
``ticker``  required unless the file holds one series (then ``--ticker`` names it)
``close``   required (``adj_close``/``adj close`` is used instead when present)
``open``, ``high``, ``low``, ``volume``  optional (OHLCV files), kept but not needed
=========== =========================================================================

Column names are case-insensitive; accents and Yahoo's footnote stars are ignored. The headers of German, French,
Spanish, Italian, Dutch and Portuguese exports (onvista, comdirect, ariva, boursorama, investing.com, Yahoo) are read
through a small explicit table (``_FOREIGN_ALIASES``: e.g. ``Datum``/``Fecha``/``Data`` = date, ``Schluss``/``Clôture``/
``Cierre``/``Chiusura``/``Zuletzt``/``Dernier``/``Último`` = close, ``Hoch``/``Plus haut``/``Máximo`` = high), only where
no English column has that meaning; two such columns for one meaning, or no close at all, are refused in one line
naming the columns found and the names expected. :func:`validate_prices` handles bad rows as follows:

* unparseable dates, non-positive prices → rejected (``PriceDataError`` naming ticker and dates);
* duplicated (ticker, date) rows → identical duplicates dropped; conflicting ones rejected;
* NaN / infinite closes, and Bloomberg's ``#N/A ...`` cells (``#N/A N/A``, ``#N/A Field Not Applicable``, ``#N/A Requesting
  Data...``) → those rows are dropped (counted in the report), i.e. treated as a missing day;
* missing days → not filled: the next return spans the gap (the model indexes trading days per
  ticker). A gap longer than ``max_gap_days`` business days is rejected, since a return over weeks
  is not a daily return;
* too-short histories (fewer than ``min_history`` rows) and constant prices (every close the same:
  a forecast volatility and VaR of 0) → that ticker is dropped with a warning; if no ticker is left
  it is an error;
* a ticker starting with ``=``, ``+``, ``-``, ``@`` (a spreadsheet formula in the run's CSV outputs)
  → rejected;
* a one-day jump by ×100 or ÷100 that does not revert (a price in pence next to prices in pounds: LSE's GBX
  against GBP, Johannesburg's ZAc against ZAR, Tel Aviv's agorot against shekels; or an unadjusted 1:100 reverse split)
  → with ``repair`` (user files) the closes (and open/high/low) before it are rescaled to the latest close's unit, a
  ``unit_change`` warning; on a crypto pair or currency pair (``BTC-USD``, ``BTCUSDT``, ``EURUSD=X``, ``EUR/USD``: :mod:`domains.finance.symbols`),
  which has no quote in a hundredth of its unit, the prices are kept as they are (a real crash, LUNA-USD in May 2022), a
  ``price_jump`` warning. Futures are rescaled like shares: grains are quoted in cents (``ZC=F``), and no contract moves
  x100 in a day.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.data import DatasetSpec, SourceMissingError, ensure_dataset
from core.errors import UserInputError
from core.io import atomic_write_parquet, read_csv_text, text_encoding_of
from core.logging import get_logger
from domains.finance.symbols import NO_SUBUNIT_MARKETS, symbol_market

__all__ = [
    "DATASETS", "PANEL_DATASET", "PriceDataError", "ValidationReport", "load_panel", "load_covariates",
    "load_price_file", "read_price_file", "validate_prices", "derive_returns", "load_inputs", "load_panel_data", "PanelData", "WARNING_KINDS", "input_files", "data_tickers", "STOCKS", "INDEX", "NASDAQ", "FACTORS",
    "OHLCV", "PANEL_COLUMNS",
]

log = get_logger("finance.data")
PANEL_DATASET = "finance-daily-panel"
STOCKS = ["AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO", "LLY", "MRK", "MSFT", "PEP",
          "PFE", "PG", "RRC", "UNH", "WMT", "XOM"]
INDEX = "SP500"
NASDAQ = "NASDAQ"
FACTORS = ["MTUM", "QUAL", "SIZE", "USMV", "VLUE"]
RVOL_WINDOW = 5


class PriceDataError(UserInputError, ValueError):
    """A price file or panel cannot be used; the message names the input and what was expected."""


# ---------------------------------------------------------------------------------------------
# bundled real data
# ---------------------------------------------------------------------------------------------
def _package_file(package: str, *parts: str, install: str) -> Path:
    """A data file shipped inside an installed package, found without importing it: ``find_spec`` of a dotted name
    imports its parents (``skfolio`` pulls in scikit-learn and SciPy: 7.7 s before every up-to-date check), so only
    the top-level package is looked up and the rest of the name is a folder path below it."""
    top, *sub = package.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise SourceMissingError(f"package {package!r} is not installed; install it with `{install}`")
    p = Path(list(spec.submodule_search_locations)[0]).joinpath(*sub, *parts)
    if not p.is_file():
        raise SourceMissingError(f"{p} is missing; reinstall with `{install}`")
    return p


def _locate() -> dict[str, Path]:
    sk = "pip install -c requirements/lock.txt skfolio"
    ar = "pip install -c requirements/lock.txt arch"
    return {
        "sp500_dataset.csv.gz": _package_file("skfolio.datasets", "data", "sp500_dataset.csv.gz", install=sk),
        "sp500_index.csv.gz": _package_file("skfolio.datasets", "data", "sp500_index.csv.gz", install=sk),
        "factors_dataset.csv.gz": _package_file("skfolio.datasets", "data", "factors_dataset.csv.gz", install=sk),
        "sp500.csv.gz": _package_file("arch.data.sp500", "sp500.csv.gz", install=ar),
        "nasdaq.csv.gz": _package_file("arch.data.nasdaq", "nasdaq.csv.gz", install=ar),
        "vix.csv.gz": _package_file("arch.data.vix", "vix.csv.gz", install=ar),
        "wti.csv.gz": _package_file("arch.data.wti", "wti.csv.gz", install=ar),
    }


def _read_wide(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, index_col=0)
    df.index = pd.to_datetime(df.index)
    df.index.name = "date"
    return df.apply(pd.to_numeric, errors="coerce").sort_index()  # e.g. "." marks a missing FRED value


def derive_returns(panel: pd.DataFrame) -> pd.DataFrame:
    """Add ``log_ret`` and ``rvol5`` per ticker (first row of each ticker has NaN return and is dropped)."""
    panel = panel.sort_values(["ticker", "date"]).reset_index(drop=True)
    g = panel.groupby("ticker", sort=False)["close"]
    panel["log_ret"] = np.log(panel["close"]) - np.log(g.shift(1))
    panel = panel.dropna(subset=["log_ret"]).reset_index(drop=True)
    sq = panel["log_ret"] ** 2
    panel["rvol5"] = np.sqrt(sq.groupby(panel["ticker"], sort=False).transform(lambda s: s.rolling(RVOL_WINDOW, min_periods=1).mean()))
    return panel


OHLCV = ["open", "high", "low", "volume"]
PANEL_COLUMNS = ["date", "ticker", "close", "log_ret", "rvol5", *OHLCV]


def _ohlcv(path: Path, ticker: str) -> pd.DataFrame:
    """arch's OHLCV csv -> long rows ``date, ticker, close, open, high, low, volume`` (close = Adj Close;
    for an index the two are equal)."""
    df = _read_wide(path).rename(columns=lambda c: c.strip().lower().replace(" ", "_"))
    out = pd.DataFrame({"date": df.index, "ticker": ticker, "close": df["adj_close"].to_numpy()})
    for c in OHLCV:
        out[c] = df[c].to_numpy(dtype=float)
    # a range needs low <= open, close <= high; rows breaking that keep their close but lose the range
    bad = ~((out["low"] <= out[["open", "close"]].min(axis=1)) & (out["high"] >= out[["open", "close"]].max(axis=1)) & (out["low"] > 0))
    out.loc[bad, ["open", "high", "low"]] = np.nan
    return out


def _build(sources: dict[str, Path], out_dir: Path) -> None:
    """The longest real history the installed sources give (issue 15): skfolio's 20 stocks and the
    S&P 500 index 1990-2022, the factor ETFs from 2014, arch's NASDAQ composite 1999-2018 and the
    S&P 500's open/high/low/volume 1999-2018 (OHLCV columns are NaN where a source has none); VIX
    (2014-2019) and WTI (1986-2019) covariates are NaN outside their sources' ranges."""
    stocks = _read_wide(sources["sp500_dataset.csv.gz"])
    index = _read_wide(sources["sp500_index.csv.gz"])
    factors = _read_wide(sources["factors_dataset.csv.gz"])
    vix = _read_wide(sources["vix.csv.gz"])
    wti = _read_wide(sources["wti.csv.gz"]).rename(columns={"DCOILWTICO": "wti"})
    wide = pd.concat([stocks, index, factors], axis=1)
    closes = wide.stack().rename("close").reset_index()  # stack drops the NaN before a factor ETF starts
    closes.columns = ["date", "ticker", "close"]
    sp_ohlcv = _ohlcv(sources["sp500.csv.gz"], INDEX)
    closes = closes.merge(sp_ohlcv.drop(columns=["ticker", "close"]).assign(ticker=INDEX), on=["date", "ticker"], how="left")
    panel = pd.concat([closes, _ohlcv(sources["nasdaq.csv.gz"], NASDAQ)], ignore_index=True)
    clean, report = validate_prices(panel, source="bundled skfolio/arch panel", min_history=100)
    clean = derive_returns(clean)
    for c in OHLCV:
        if c not in clean:
            clean[c] = np.nan
    dates = pd.DatetimeIndex(sorted(clean["date"].unique()))
    cov = {}
    for name, s in (("vix", vix["vix"]), ("wti", wti["wti"])):
        s = s.dropna()
        aligned = s.reindex(s.index.union(dates)).ffill(limit=5).reindex(dates)  # past values only, short gaps
        aligned[(dates < s.index.min()) | (dates > s.index.max())] = np.nan  # no value outside the source's range
        cov[name] = aligned.to_numpy()
    cov = pd.DataFrame({"date": dates, **cov})
    atomic_write_parquet(clean[PANEL_COLUMNS], out_dir / "panel.parquet", index=False)
    atomic_write_parquet(cov, out_dir / "covariates.parquet", index=False)
    log.info(f"finance panel: {clean['ticker'].nunique()} tickers, {clean['date'].nunique()} dates, "
             f"{clean['date'].min():%Y-%m-%d}..{clean['date'].max():%Y-%m-%d} ({report.summary()})")


DATASETS = [
    DatasetSpec(
        name=PANEL_DATASET,
        domain="finance",
        description="daily panel 1990-2022: 20 S&P 500 stocks + index (OHLCV 1999-2018) + NASDAQ (OHLCV 1999-2018) + 5 factor ETFs (2014-), VIX/WTI covariates where available",
        locate=_locate,
        build=_build,
        version="3",
        tags=["timeseries", "finance"],
    )
]


def load_panel(root: Path | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """The prepared bundled panel: ``date, ticker, close, log_ret, rvol5`` (prepares it when
    missing); ``columns`` reads only those."""
    return pd.read_parquet(_panel_dir(root) / "panel.parquet", columns=columns)


def load_covariates(root: Path | None = None) -> pd.DataFrame:
    """``date, vix, wti`` for the dates of the bundled panel."""
    return pd.read_parquet(_panel_dir(root) / "covariates.parquet")


def _panel_dir(root: Path | None) -> Path:
    return ensure_dataset(DATASETS[0], root)


# ---------------------------------------------------------------------------------------------
# user price files
# ---------------------------------------------------------------------------------------------
WARNING_KINDS = {
    "forward_filled": "weekend rows repeating the previous close (forward-filled); dropped",
    "stale_prices": "many zero returns (stale or forward-filled prices); kept — volatility will be too low",
    "stale_tail": "the last closes all repeat one price (halted, delisted or forward-filled); kept — a forecast from the last date reads a "
                  "flat history, so its volatility and VaR are too low",
    "suspected_split": "a one-day jump by a split-like ratio (2:1 ... 20:1, or a 1:2 ... 1:50 reverse split) that does not revert; kept — "
                       "use split-adjusted prices (Adj Close)",
    "unit_change": "a one-day jump by x100 or /100 that does not revert (pence next to pounds, cents next to rand, or an unadjusted 1:100 "
                   "reverse split); the closes before it are rescaled to the unit of the latest close, so every return is the real one",
    "price_jump": "a one-day jump by x100 or /100 that does not revert on a crypto pair or currency pair (BTC-USD, EURUSD=X), "
                  "which has no quote in a hundredth of its unit; kept — a real crash (LUNA-USD, May 2022) stays in the history",
    "price_spike": "a single-day spike that reverts the next day (fat finger); the spike row is dropped",
    "partial_adjustment": "adj_close missing on some rows of a ticker; its unadjusted close is used instead",
    "short_history": "fewer rows than --min-history; the ticker is dropped",
    "calendar_mismatch": "the history has prices on days its forecast calendar is closed (another exchange's ticker?); its forecast dates may be "
                         "wrong — name the exchange with --calendar or a ticker suffix (7203.T)",
    "ticker_spelling": "spellings of one ticker that differ only in case (aapl next to AAPL: two exports joined); read as one ticker, the "
                       "upper-case spelling (else the most frequent) — check they are one security",
    "no_prices": "the ticker's columns hold no price on any row (a failed download: yfinance leaves them empty); the ticker is dropped",
    "constant_prices": "every close is the same: no volatility to forecast (a VaR of 0); the ticker is dropped",
}
STALE_ZERO_FRACTION = 0.05  # more zero returns than this is suspicious for a traded asset
STALE_TAIL_DAYS = 5  # this many identical closes in a row at the end of a series (a traded stock's close rarely repeats even twice)
SPIKE_LOG_MOVE = float(np.log(3.0))  # |one-day move| of 3x or more that reverts next day
SPLIT_LOG_MOVE = float(np.log(1.8))
# forward splits (old / new price 2, 3, ...) and reverse splits (1:10 ... 1:50, the consolidations of penny stocks before a
# listing rule bites); a ratio either way. 3:2 splits are missed: a 33% move is also an ordinary earnings day. From 80x the
# unit_change rule takes over (a 1:100 consolidation and pence next to pounds look the same)
SPLIT_RATIOS = (2, 3, 4, 5, 8, 10, 15, 20, 25, 30, 40, 50)
# a quote unit switching between a currency and its hundredth (GBX/GBP, ZAc/ZAR, ILA/ILS): a one-day ratio of 100 within
# a 25% move of its own. A traded stock rarely moves 80-125x in a day and stays there; one that does (a bankrupt penny stock
# falling to a hundredth) is rescaled too, named by its warning (README, Bad data). The markets without a sub-unit quote
# (symbols.NO_SUBUNIT_MARKETS: crypto and currency pairs) keep their jump (price_jump), so a token's crash stays a crash
UNIT_LOG_MOVE, UNIT_TOLERANCE = float(np.log(100.0)), float(np.log(1.25))


@dataclass
class ValidationReport:
    """What :func:`validate_prices` did to a price table: counts, dropped tickers and data-quality
    warnings (one dict per finding: ``ticker, kind, date, value, detail``; kinds in ``WARNING_KINDS``)."""

    rows_in: int = 0
    rows_out: int = 0
    nan_rows_dropped: int = 0
    duplicate_rows_dropped: int = 0
    tickers_dropped_short: list[str] = field(default_factory=list)
    tickers_dropped_constant: list[str] = field(default_factory=list)  # every close the same (a delisted or never-traded series)
    tickers_dropped_empty: list[str] = field(default_factory=list)  # no finite close on any row (a failed download)
    missing_days: int = 0  # business days absent inside a ticker's history (not filled)
    source: str = "prices"
    price_column: dict[str, str] = field(default_factory=dict)  # ticker -> the column its prices came from
    warnings: list[dict] = field(default_factory=list)
    rows_repaired: int = 0  # forward-filled weekend rows and spike rows dropped

    def warn(self, ticker: str, kind: str, date=None, value: float | None = None, detail: str = "") -> None:
        self.warnings.append({"ticker": str(ticker), "kind": kind, "date": None if date is None else str(pd.Timestamp(date).date()),
                              "value": None if value is None else float(value), "detail": detail})

    def warning_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.warnings:
            out[w["kind"]] = out.get(w["kind"], 0) + 1
        return out

    def warnings_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.warnings, columns=["ticker", "kind", "date", "value", "detail"])

    def summary(self) -> str:
        warn = ", ".join(f"{k}: {v}" for k, v in self.warning_counts().items()) or "none"
        return (f"{self.rows_in} rows in, {self.rows_out} kept; dropped {self.nan_rows_dropped} NaN and "
                f"{self.duplicate_rows_dropped} duplicate rows; {self.missing_days} missing business days not filled; "
                f"too-short tickers dropped: {', '.join(self.tickers_dropped_short) or 'none'}"
                + (f"; constant-price tickers dropped: {', '.join(self.tickers_dropped_constant)}" if self.tickers_dropped_constant else "")
                + (f"; tickers without any price dropped: {', '.join(self.tickers_dropped_empty)}" if self.tickers_dropped_empty else "")
                + f"; warnings: {warn}")

    def metrics(self) -> dict:
        """Flat numbers for a run's ``metrics.json`` (``data/...``)."""
        m = {"data/rows_in": self.rows_in, "data/rows_out": self.rows_out, "data/rows_repaired": self.rows_repaired,
             "data/tickers_dropped": len(self.tickers_dropped_short) + len(self.tickers_dropped_constant) + len(self.tickers_dropped_empty), "data/warnings": len(self.warnings)}
        m.update({f"data/warnings/{k}": v for k, v in self.warning_counts().items()})
        return m

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {**asdict(self), "warning_counts": self.warning_counts()}

    def write(self, directory: str | Path) -> Path:
        """``data_report.json`` (this report) and ``data_warnings.csv`` (one row per warning; also one
        ``short_history`` row per dropped ticker) into ``directory``; returns the CSV path."""
        from core.io import atomic_write_json, atomic_write_text

        directory = Path(directory)
        atomic_write_json(directory / "data_report.json", self.to_dict())
        path = directory / "data_warnings.csv"
        atomic_write_text(path, self.warnings_frame().to_csv(index=False))
        return path


_CLOSE_NAMES = ("'Close', 'Adj Close', 'Price', 'Last', Bloomberg's 'PX_LAST' or Refinitiv's 'TRDPRC_1' / 'Price Close'; or, from a German, French, Spanish, Italian, Dutch or Portuguese export, "
                "'Schluss', 'Zuletzt', 'Clôture', 'Dernier', 'Cierre', 'Último', 'Chiusura', 'Slot' or 'Fechamento'")


def _canonical(name) -> str:
    key = _clean_name(name)
    return _ALIASES.get(key, _FOREIGN_ALIASES.get(key, key))


def _column_names(columns: list, source: str) -> dict:
    """Raw header -> the reader's name: English names and their aliases first; a German/French/... name
    (``_FOREIGN_ALIASES``) only for a meaning no English column has, and never two for one meaning."""
    english = {c: _ALIASES.get(_clean_name(c), _clean_name(c)) for c in columns}
    taken = set(english.values())
    out, foreign = {}, {}
    for c, name in english.items():
        target = _FOREIGN_ALIASES.get(name)
        if target is not None and target not in taken:
            foreign.setdefault(target, []).append(c)
            name = target
        out[c] = name
    for target, cols in foreign.items():
        if len(cols) > 1:
            raise PriceDataError(f"{source}: columns {[str(c) for c in cols]} would both be read as the {target.replace('_', ' ')}; "
                                 f"keep one of them (or name the one to use '{ {'adj_close': 'Adj Close'}.get(target, target.title()) }')")
    return out


def _sniff_separator(first_line: str) -> str:
    counts = {sep: first_line.count(sep) for sep in (",", ";", "\t", "|")}
    sep = max(counts, key=counts.get)
    return sep if counts[sep] else ","


def _clean_name(c) -> str:
    """A header as a lookup key: lower case, no accents (``Clôture`` -> ``cloture``), spaces and ``-`` as ``_``, no
    ``.``, no stooq ``<>`` and no Yahoo footnote stars (``Schluss*``, ``Adj. Schluss**``)."""
    import unicodedata

    text = unicodedata.normalize("NFKD", str(c).strip().strip("<>").strip().rstrip("*").strip())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return text.lower().replace(" ", "_").replace("-", "_").replace(".", "")


_ALIASES = {"adjclose": "adj_close", "adjusted_close": "adj_close", "adj_close_price": "adj_close", "vol": "volume",
            "symbol": "ticker", "name": "ticker", "price": "close", "last": "close", "close/last": "close", "timestamp": "date", "datetime": "date",
            "day": "date", "unnamed:_0": "", "index": ""}
# field codes of terminal exports: Bloomberg BDH (PX_LAST is the day's close in a daily history) and Refinitiv/LSEG
# (TRDPRC_1 the last trade, i.e. the close, in a daily series); and the column titles of an LSEG/Eikon get_data export
# of TR fields (TR.PriceClose -> 'Price Close', its .date -> 'Date', .calcdate -> 'Calc Date'; the RIC in 'Instrument')
_ALIASES.update({"px_last": "close", "px_open": "open", "px_high": "high", "px_low": "low", "px_volume": "volume",
                 "trdprc_1": "close", "open_prc": "open", "high_1": "high", "low_1": "low", "acvol_uns": "volume",
                 "price_close": "close", "price_open": "open", "price_high": "high", "price_low": "low", "calc_date": "date",
                 "instrument": "ticker", "ric": "ticker"})
# headers of German, French, Spanish, Italian, Dutch and Portuguese exports (onvista, comdirect, ariva, boursorama,
# investing.com and Yahoo in those languages), as _clean_name writes them. Only names that mean one column: 'Hoch' is
# the high, never the close; investing.com's 'Zuletzt'/'Dernier'/'Último' (last) is its close, as 'Price' in English.
# A name used for several things elsewhere is left out. Applied only where the file has no English column of that
# meaning, and two of them for one column (e.g. 'Dernier' and 'Clôture') are refused rather than one chosen.
_FOREIGN_ALIASES = {
    **dict.fromkeys(["datum", "fecha", "data"], "date"),
    **dict.fromkeys(["schluss", "schlusskurs", "zuletzt", "letzter", "cloture", "clot", "dernier", "cierre", "cerrar", "ultimo",
                     "chiusura", "slot", "slotkoers", "laatste", "fechamento", "fecho"], "close"),
    **dict.fromkeys(["adj_schluss", "angepasster_schlusskurs", "cours_de_cloture_ajuste", "cloture_ajustee", "cierre_ajustado",
                     "chiusura_aggiustata", "chiusura_rettificata", "aangepaste_slotkoers", "fechamento_ajustado"], "adj_close"),
    **dict.fromkeys(["eroffnung", "eroffn", "erster", "ouverture", "ouv", "apertura", "abertura", "abrir", "openingskoers"], "open"),
    **dict.fromkeys(["hoch", "plus_haut", "haut", "eleve", "maximo", "massimo", "hoog", "maxima", "alto"], "high"),
    **dict.fromkeys(["tief", "plus_bas", "bas", "faible", "minimo", "laag", "minima", "bajo"], "low"),
    **dict.fromkeys(["volumen", "volumes"], "volume"),
    **dict.fromkeys(["symbole", "simbolo"], "ticker"),
}
_NUMERIC = ("close", "adj_close", "open", "high", "low", "volume")
# removed from number cells, with spaces and ' _ thousands separators; the no-break spaces of French and Swiss exports
# are listed as characters (not a raw string): pandas' pyarrow-backed strings use RE2, whose \s is ASCII only and
# which has no \u escapes
_CURRENCY = "[\\$€£¥\\s\u00a0\u2007\u2009\u202f'_]|US\\$|USD|EUR"


# Bloomberg's missing-value markers in a price cell: '#N/A N/A' (no value that day), '#N/A Field Not Applicable',
# '#N/A Invalid Security', '#N/A Requesting Data...' (a sheet saved before its pull finished), ... — each a day without a price
_BLOOMBERG_MISSING = "#N/A"


def _to_number(s: pd.Series, column: str, source: str, decimal_comma: bool) -> pd.Series:
    """Numbers from a text column: currency signs, spaces and thousands separators removed."""
    if pd.api.types.is_numeric_dtype(s):
        return s.astype(float)
    txt = s.astype("string").str.strip()
    txt = txt.mask(txt.str.upper().str.startswith(_BLOOMBERG_MISSING))  # before the spaces go: '#N/A Field Not Applicable'
    txt = txt.str.replace(_CURRENCY, "", regex=True)
    txt = txt.mask(txt.str.lower().isin(["", "nan", "null", "none", "na", "n/a", "-", "--", "."]))
    if decimal_comma:
        txt = txt.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
    else:
        txt = txt.str.replace(",", "", regex=False)
    scale = pd.Series(1.0, index=txt.index)
    if column == "volume":  # investing.com-style 1.23M / 45.6K
        unit = txt.str.extract(r"([KkMmBb])$", expand=False).str.upper()
        scale = unit.map({"K": 1e3, "M": 1e6, "B": 1e9}).fillna(1.0).astype(float)
        txt = txt.str.replace(r"[KkMmBb]$", "", regex=True)
    out = pd.to_numeric(txt, errors="coerce") * scale
    bad = s[out.isna() & txt.notna()]
    if len(bad):
        ex = ", ".join(repr(str(v)) for v in bad.head(3).tolist())
        raise PriceDataError(f"{source}: column {column!r} has {len(bad)} value(s) that are not numbers, e.g. {ex}; "
                             f"write plain numbers such as 1234.56 (a currency sign and thousands separators are removed; "
                             f"other text is not)")
    return out.astype(float)


def _uses_decimal_comma(frame: pd.DataFrame, sep: str) -> bool:
    """True when the price columns write decimals with a comma (``1.234,56`` or ``12,5``). Values
    that only one convention reads (``12,5`` or ``1.234,56``; ``127.5`` or ``1,234.56``) decide by
    majority; ``127.504`` or ``1,234`` read either way and only decide a ``;``-separated file (so a US
    file with three-decimal prices and one text cell such as ``-`` is not read as 127504)."""
    vals = pd.concat([frame[c].astype("string") for c in _NUMERIC if c in frame and not pd.api.types.is_numeric_dtype(frame[c])] or [pd.Series([], dtype="string")])
    vals = vals.dropna().str.replace(_CURRENCY, "", regex=True)
    if vals.empty:
        return False
    comma = int(vals.str.contains(r"^[^.]*,(?:\d{1,2}|\d{4,})$|\.\d{3},\d*$", regex=True).sum())
    point = int(vals.str.contains(r"^[^,]*\.(?:\d{1,2}|\d{4,})$|,\d{3}\.\d*$", regex=True).sum())
    if comma or point:
        return comma > point
    return sep == ";" and bool(vals.str.contains(r"^\d{1,3}(?:\.\d{3})+$", regex=True).any())


_TEXT_SUFFIXES = (".csv", ".txt", ".tsv")  # each also gzipped (.csv.gz, ...); and .parquet / .pq


def _read_table(path: Path) -> tuple[pd.DataFrame, str, str | None]:
    """(raw table, separator, ticker named inside a yfinance multi-row header or None)."""
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if suffix in (".parquet", ".pq") or magic == b"PAR1":  # a Parquet file named .csv is still a Parquet file
        table, symbol = _frame_as_table(pd.read_parquet(path))
        return table, ",", symbol
    if suffix not in (*_TEXT_SUFFIXES, *(s + ".gz" for s in _TEXT_SUFFIXES), ".gz"):
        raise PriceDataError(f"{path}: unsupported file type {path.suffix!r}; expected .csv, .txt, .tsv (each optionally .gz) or .parquet")
    if magic.startswith(b"PK\x03\x04") or magic == b"\xd0\xcf\x11\xe0":
        raise PriceDataError(f"{path}: is an Excel workbook (or another zip/binary file), not text; save it as CSV (File > Save As > CSV)")
    import gzip

    opener = gzip.open if suffix.endswith(".gz") else open
    with opener(path, "rt", encoding=text_encoding_of(path), errors="replace") as fh:
        head = [fh.readline() for _ in range(3)]
    tsv = suffix in (".tsv", ".tsv.gz")
    sep = "\t" if tsv else _sniff_separator(head[0])
    cells = [[c.strip() for c in h.rstrip("\r\n").split(sep)] for h in head]
    first = [c[0].lower() for c in cells]
    if {first[0], first[1]} in _LEVEL_LABELS or (first[0], first[1], first[2]) == ("", "", "date"):
        # yf.download(...).to_csv() writes one header row per column level — yfinance >= 0.2.51 labels them Price / Ticker
        # (Ticker / Price with group_by="ticker"), older releases leave the labels empty — then a Date row: read back as the
        # DataFrame it was and turned into rows like a saved one (_frame_as_table), whichever level holds the fields. A
        # Bloomberg pull through pdblp (or a frame built like it) labels its levels ticker / field: read the same way
        table, symbol = _frame_as_table(_read_text_csv(path, sep=sep, header=[0, 1], index_col=0))
        return table, sep, symbol
    blocks = _side_by_side_blocks(cells[0], cells[1])
    if blocks:
        return _read_side_by_side(path, sep, cells[1], blocks), sep, None
    title = [c for c in cells[0] if c]
    if len(title) == 1:  # a title line above the header (a Bloomberg sheet's 'AAPL US Equity', 'Historical prices ...'), saved as CSV
        sep2 = "\t" if tsv else _sniff_separator(head[1])
        if sum(1 for c in head[1].rstrip("\r\n").split(sep2) if c.strip()) >= 2:
            log.info(f"{path}: the first line ({title[0][:60]!r}) is a title above the header; skipped")
            return _read_text_csv(path, sep=sep2, skiprows=1), sep2, None
    return _read_text_csv(path, sep=sep), sep, None


def _side_by_side_blocks(top: list[str], names: list[str]) -> list[tuple[str, int, list[int]]]:
    """A Bloomberg sheet of several securities side by side (BDH per security, saved as CSV): the first line names each
    security above its block (``AAPL US Equity,,,KO US Equity,,``), the second the block's columns, each block its own
    dates (``Date,PX_LAST,PX_VOLUME,Date,PX_LAST,PX_VOLUME``) or one shared date column first. Returns (security, date
    column, field columns) per block, or [] for any other layout (a block without a date or a close is not this one)."""
    starts = [i for i, c in enumerate(top) if c]
    if len(starts) < 2 or len(names) < len(top):
        return []
    canon = [_canonical(c) for c in names]
    shared = not top[0] and canon[0] == "date"
    out = []
    for s, e in zip(starts, [*starts[1:], len(top)]):
        cols = list(range(s, e))
        date = cols[0] if canon[cols[0]] == "date" else 0 if shared else None
        fields = [i for i in cols if i != date]
        if date is None or not any(canon[i] in ("close", "adj_close") for i in fields) or any(canon[i] == "date" for i in fields):
            return []
        out.append((top[s], date, fields))
    return out


def _read_side_by_side(path: Path, sep: str, names: list[str], blocks: list[tuple[str, int, list[int]]]) -> pd.DataFrame:
    """The blocks of :func:`_side_by_side_blocks` as long rows (``Date``, the block's fields, ``ticker``); a block's rows
    after its last date (a shorter history than its neighbours') are left out."""
    raw = _read_text_csv(path, sep=sep, header=None, skiprows=2, dtype=str)
    parts = []
    for security, date, fields in blocks:
        part = raw.iloc[:, [date, *fields]].set_axis([names[date], *(names[i] for i in fields)], axis=1)
        part = part[part.iloc[:, 0].notna() & (part.iloc[:, 0].astype(str).str.strip() != "")]
        parts.append(part.assign(ticker=security))
    log.info(f"{path}: {len(blocks)} securities side by side ({', '.join(b[0] for b in blocks[:5])}{' ...' if len(blocks) > 5 else ''}); "
             f"read as one ticker each")
    return pd.concat(parts, ignore_index=True)


# pandas' default missing-value cells except "NA", which is a ticker (National Bank of Canada); in a price
# column "NA" is still read as missing (_to_number)
_NA_CELLS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NULL", "NaN",
             "None", "n/a", "nan", "null"]


# the names of the two column levels of a saved multi-ticker frame: yfinance >= 0.2.51's, and pdblp's (Bloomberg's bdh)
_LEVEL_LABELS = ({"price", "ticker"}, {"field", "ticker"})
# what yfinance names the columns of one ticker (prices, and with actions=True its corporate actions)
_YF_FIELDS = (*_NUMERIC, "dividends", "stock_splits", "capital_gains")


def _frame_as_table(df: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """A saved DataFrame as plain columns, and the one ticker it holds or None: ``yf.download(...)`` keeps the dates
    as the index and (field, ticker) column pairs — (ticker, field) with ``group_by="ticker"`` — whose levels are named
    Price / Ticker (unnamed before yfinance 0.2.51: the field level is told by its names, Close, Volume, ...) -> long
    rows with a ``ticker``; a download of one ticker -> its rows and that ticker (as the name of a single series)."""
    symbol = None
    if isinstance(df.columns, pd.MultiIndex) and df.columns.nlevels == 2:
        labels = [str(n).strip().lower() for n in df.columns.names]
        if set(labels) in _LEVEL_LABELS:  # yfinance >= 0.2.51 names the levels: Lowe's (LOW), Opendoor (OPEN) are tickers
            level = labels.index("ticker")
        else:  # unnamed (older yfinance): the level more of whose names are fields, on a tie the one with more field names
            named = [[_canonical(v) in _YF_FIELDS for v in set(df.columns.get_level_values(k))] for k in (0, 1)]
            rank = [(np.mean(f), sum(f)) for f in named]
            level = (1 if rank[0] > rank[1] else 0) if rank[0] != rank[1] and max(rank)[0] >= 0.5 else None  # the ticker level
        if level is not None:
            symbols = [str(t) for t in dict.fromkeys(df.columns.get_level_values(level)) if str(t).strip()]
            df = df.stack(level=level, future_stack=True)
            df.index = df.index.set_names([df.index.names[0] or "date", "ticker"])
            if len(symbols) == 1:
                symbol, df = symbols[0].strip(), df.droplevel("ticker")
    if isinstance(df.columns, pd.MultiIndex):
        df.columns = [" ".join(str(c) for c in col if str(c)) for col in df.columns]
    return (df if isinstance(df.index, pd.RangeIndex) else df.reset_index()), symbol


def _read_text_csv(path: Path, **kw) -> pd.DataFrame:
    """:func:`core.io.read_csv_text` (UTF-8 with or without a BOM, UTF-16 with one, else a Windows/Excel export in
    cp1252 — logged), with this loader's missing-value cells."""
    kw.update(keep_default_na=False, na_values=_NA_CELLS)
    return read_csv_text(path, **kw)


def _date_column(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Find the date column: ``date`` (or an alias), else an unnamed first (index) column holding dates."""
    if "date" in df.columns:
        col = df["date"]
    else:
        first = df.columns[0]
        if first != "" and first in _NUMERIC + ("ticker",):
            raise PriceDataError(f"{source}: no date column (expected 'Date' or an unnamed first column of dates); found {[str(c) for c in df.columns]}")
        col = df[first]
        df = df.rename(columns={first: "date"})
    if pd.api.types.is_integer_dtype(col) and len(col) and col.between(19000101, 21001231).all():
        df["date"] = pd.to_datetime(col.astype(str), format="%Y%m%d", errors="coerce")  # stooq's 20200131
    elif pd.api.types.is_datetime64_any_dtype(col):
        df["date"] = col
    elif col.dtype == object or pd.api.types.is_string_dtype(col):
        df["date"] = _parse_dates(col)
    return df


_UTC_OFFSET = r"(?<=\d:\d\d)(?::\d\d(?:\.\d+)?)?\s*(?:Z|UTC|GMT|[+-]\d\d:?\d\d)$"


def _local_dates(col: pd.Series) -> pd.Series:
    """Text timestamps without their time of day and UTC offset (``2020-01-31 00:00:00-05:00`` ->
    ``2020-01-31 00:00``): a daily price belongs to the exchange's local date, and a file spanning a
    daylight-saving change mixes offsets (-05:00 / -04:00), which pandas refuses to parse together."""
    txt = col.astype("string").str.strip()
    return txt.str.replace(_UTC_OFFSET, "", regex=True) if txt.str.contains(_UTC_OFFSET, regex=True).any() else col


def _parse_dates(col: pd.Series) -> pd.Series:
    """Text dates, month-first or day-first (``01/31/2020`` or ``31.01.2020``), one format or several
    mixed in a column: the reading that parses more rows wins; on a tie, the one that keeps the file's
    rows in date order. Unparseable text stays as it is, so validation names it."""
    import warnings

    col = _local_dates(col)

    def score(d: pd.Series) -> tuple[int, int]:
        ok = d.dropna()
        return int(d.notna().sum()), int(ok.is_monotonic_increasing or ok.is_monotonic_decreasing)

    reads = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format" for day-first text
        for mixed in ({}, {"format": "mixed"}):  # one format per column first; element-wise parsing is slow
            for kw in ({}, {"dayfirst": True}):
                try:
                    reads.append(pd.to_datetime(col, errors="coerce", **mixed, **kw))
                except (ValueError, TypeError, OverflowError):  # e.g. an out-of-range year
                    continue
            if reads and max(reads, key=score).notna().all():
                break
    best = max(reads, key=score) if reads else col
    return best if reads and best.notna().all() else col  # validate_prices reports the bad rows


def _choose_close(df: pd.DataFrame, source: str, rep: ValidationReport) -> pd.DataFrame:
    """``close`` per ticker: ``adj_close`` where the ticker has it on every row, else its ``close``
    (a file may mix adjusted and unadjusted tickers; no ticker loses rows for another's columns)."""
    if "adj_close" not in df.columns:
        rep.price_column.update({t: "close" for t in df["ticker"].astype(str).unique()})
        return df
    if "close" not in df.columns:
        df["close"] = df["adj_close"]
        rep.price_column.update({t: "adj_close" for t in df["ticker"].astype(str).unique()})
        return df
    adj_ok = df["adj_close"].notna()
    full = adj_ok.groupby(df["ticker"]).transform("all")
    some = adj_ok.groupby(df["ticker"]).transform("any")
    df["close_unadjusted"] = df["close"]
    df["close"] = df["adj_close"].where(full, df["close"])
    for t, g in df.groupby("ticker", sort=True):
        use_adj = bool(full.loc[g.index].iloc[0])
        rep.price_column[str(t)] = "adj_close" if use_adj else "close"
        if not use_adj and bool(some.loc[g.index].iloc[0]):
            n = int((~adj_ok.loc[g.index]).sum())
            rep.warn(t, "partial_adjustment", value=n, detail=f"adj_close missing on {n} of {len(g)} rows; the unadjusted close is used for {t}")
    return df


def _without_repeated_headers(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Drop rows that repeat the header cell for cell: two downloads joined with ``cat a.csv b.csv`` (or appended to
    one file) carry the second header as a data row, whose 'Close' would otherwise be refused as text in the prices."""
    named = [c for c in raw.columns if str(c).strip() and not str(c).startswith("Unnamed: ")]  # pandas' name for an empty header cell
    if not named or raw.empty:
        return raw
    if not all(raw[c].dtype == object or pd.api.types.is_string_dtype(raw[c]) for c in named):
        return raw  # a column read as numbers holds no header text
    same = (raw[named[0]] == named[0]).fillna(False).to_numpy(dtype=bool, copy=True)
    for c in named[1:]:
        if not same.any():
            break
        same[same] &= (raw.loc[same, c] == c).fillna(False).to_numpy(dtype=bool)
    if same.any():
        log.warning(f"{path}: {int(same.sum())} row(s) repeat the header (files joined?); dropped")
        raw = raw[~same].reset_index(drop=True)
    return raw


def read_price_file(path: str | Path, ticker: str | None = None, *, min_history: int = 100, max_gap_days: int = 10,
                    ticker_from_name: bool = False) -> tuple[pd.DataFrame, ValidationReport]:
    """Read and validate a user price file; returns (``date, ticker, close, log_ret, rvol5`` [+ OHLCV],
    report). Accepted as they are: long files (``date, ticker, close``), single-series Yahoo/yfinance
    and stooq CSVs (``Date`` column or an unnamed index column, ``Adj Close`` preferred per ticker),
    ``,``/``;``/tab separators, ``$`` and thousands separators, ``YYYYMMDD`` dates. A single series is
    named by ``ticker`` (``--ticker``), the yfinance header, or, with ``ticker_from_name``, the file name."""
    path = Path(path)
    if path.is_dir():
        raise PriceDataError(f"{path}: is a folder; pass one CSV or Parquet file of date, ticker, close")
    if not path.is_file():
        raise PriceDataError(f"{path}: no such file (expected a CSV or Parquet of date, ticker, close)")
    if path.stat().st_size == 0:
        raise PriceDataError(f"{path}: the file is empty (expected a CSV or Parquet of date, ticker, close)")
    try:
        raw, sep, header_ticker = _read_table(path)
    except PriceDataError:
        raise
    except Exception as e:  # noqa: BLE001 - parser errors from pandas/pyarrow
        raise PriceDataError(f"{path}: cannot be read as {path.suffix} ({type(e).__name__}: {e})") from e
    raw = _without_repeated_headers(raw, path)
    if raw.empty:
        raise PriceDataError(f"{path}: no data rows (columns {[str(c) for c in raw.columns]}); expected one row per date")
    source = str(path)
    df = raw.rename(columns=_column_names(list(raw.columns), source))
    if df.columns.duplicated().any():
        df = df.loc[:, ~df.columns.duplicated()]
    if "close" not in df.columns and "adj_close" not in df.columns:
        raise PriceDataError(f"{source}: no close price column (expected {_CLOSE_NAMES}); found {[str(c) for c in raw.columns]}"
                             + ("; the file looks like one column: is it separated by something other than , ; or tab?" if raw.shape[1] == 1 else
                                "; it has open/high/low columns: name its closing price 'Close'" if {"open", "high", "low"} & set(df.columns) else
                                "; a wide file (one column of closes per ticker) is not read: write rows of date, ticker, close"))
    df = _date_column(df, source)
    comma = _uses_decimal_comma(df, sep)
    for c in _NUMERIC:
        if c in df.columns:
            try:
                df[c] = _to_number(df[c], c, source, comma)
            except PriceDataError as e:
                if c in ("close", "adj_close"):
                    raise
                log.warning(f"{e}; the optional column {c!r} is ignored")
                df = df.drop(columns=c)
    long_file = "ticker" in df.columns  # else one series, named below
    rep = ValidationReport(source=source)
    if not long_file:
        name = ticker or header_ticker or (ticker_of_file_name(path) if ticker_from_name else None)
        if name is None:
            raise PriceDataError(f"{path}: no 'ticker' column" + (" and its file name names no ticker (a site's download name)" if ticker_from_name else "")
                                 + "; add one or pass ticker= (--ticker NAME) for a single-series file")
        df["ticker"] = name
    else:
        df["ticker"] = _ticker_names(df, source, rep)
    if ticker and long_file:
        if ticker not in set(df["ticker"]):
            raise PriceDataError(f"{path}: --ticker {ticker} is not in its ticker column (it has {', '.join(sorted(set(df['ticker']))[:10])})")
        df = df[df["ticker"] == ticker]
    df = _choose_close(df, source, rep)
    clean, rep = validate_prices(df, source=source, min_history=min_history, max_gap_days=max_gap_days, repair=True, report=rep,
                                tickers_named=long_file)
    latest = pd.Timestamp.now().normalize() + pd.Timedelta(days=1)  # a day of slack for a user ahead of UTC
    future = clean[clean["date"] > latest]
    if len(future):
        ex = ", ".join(f"{t} {d:%Y-%m-%d}" for t, d in future[["ticker", "date"]].head(3).itertuples(index=False))
        raise PriceDataError(f"{source}: {len(future)} row(s) dated after today, e.g. {ex}; a price file holds past prices "
                             f"(a mistyped year, or dates read in the wrong order?)")
    log.info(f"{path}: {rep.summary()}")
    for w in rep.warnings:
        log.warning(f"{path}: {w['ticker']} {w['kind']}" + (f" on {w['date']}" if w["date"] else "") + f": {w['detail']}")
    return derive_returns(clean), rep


_PRICE_FILE_SUFFIXES = (*_TEXT_SUFFIXES, ".parquet", ".pq", ".gz")


def ticker_of_file_name(path: str | Path) -> str | None:
    """The ticker a single-series file is named after: its name without the file-type suffixes, upper case
    (``GOOG.csv`` -> ``GOOG``, ``BRK.B.csv`` -> ``BRK.B``, ``aapl.us.txt`` -> ``AAPL.US``, ``^GSPC.csv.gz`` -> ``^GSPC``),
    without a browser's duplicate-download counter (``GOOG (1).csv`` -> ``GOOG``) or a site's download name
    (``7203 Historical Data.csv`` -> ``7203``); None when nothing is left (nasdaq.com's ``HistoricalData_1700000000000.csv``)."""
    name = Path(path).name.lstrip(".")
    while Path(name).suffix.lower() in _PRICE_FILE_SUFFIXES:
        name = name[: -len(Path(name).suffix)]
    name = re.sub(r"\s*\(\d+\)$", "", name).strip()
    return _SITE_DOWNLOAD_NAME.sub("", name).strip().upper() or None


# the names sites give their downloads, which are not tickers: investing.com's "<name> Historical Data.csv" and
# "<name> Stock Price History.csv" (the name before is kept), nasdaq.com's "HistoricalData_<epoch ms>.csv" (no name left)
_SITE_DOWNLOAD_NAME = re.compile(r"(?i)\s*\b(?:historical\s+data|stock\s+price\s+history|price\s+history)$|^historicaldata_\d+$")


def load_price_file(path: str | Path, ticker: str | None = None, min_history: int = 100, max_gap_days: int = 10,
                    ticker_from_name: bool = False) -> pd.DataFrame:
    """:func:`read_price_file` without the report."""
    return read_price_file(path, ticker, min_history=min_history, max_gap_days=max_gap_days, ticker_from_name=ticker_from_name)[0]


def _ticker_names(df: pd.DataFrame, source: str, report: ValidationReport | None = None) -> pd.Series:
    """The ticker column as text without surrounding spaces (``'AAPL '`` from a padded export is
    ``AAPL``), spellings that differ only in case (``aapl`` rows next to ``AAPL`` rows: two exports joined) read as one
    ticker (the upper-case spelling, else the most frequent; a ``ticker_spelling`` warning in ``report``, else logged); a
    row without a ticker is refused rather than silently dropped."""
    names = df["ticker"].astype("string").str.strip()
    empty = names.isna() | (names == "")
    if empty.any():
        where = [str(v)[:10] for v in df.loc[empty, "date"].head(3).tolist()] if "date" in df else []
        raise PriceDataError(f"{source}: {int(empty.sum())} row(s) with an empty ticker" + (f", e.g. dated {where}" if where else "")
                             + "; fill in the ticker column or remove those rows")
    formula = names.str.match(r"[=+\-@\t\r]")
    if formula.any():
        raise PriceDataError(f"{source}: ticker {names[formula].iloc[0][:20]!r} starts with {names[formula].iloc[0][:1]!r}: a spreadsheet would run it as "
                             f"a formula when it opens the run's CSV outputs; rename the ticker")
    names = names.astype(str)
    spellings: dict[str, list[str]] = {}
    for name in pd.unique(names):  # the distinct names only: a long panel has a few hundred
        spellings.setdefault(name.upper(), []).append(name)
    folded = {}
    for upper, variants in spellings.items():
        if len(variants) > 1:
            counts = names[names.isin(variants)].value_counts()
            one = upper if upper in variants else str(counts.index[0])
            folded.update({v: one for v in variants if v != one})
            detail = (f"tickers {', '.join(repr(v) for v in sorted(variants))} differ only in case "
                      f"({', '.join(f'{v}: {int(counts[v])} rows' for v in sorted(variants))}); read as one ticker, {one}")
            if report is None:
                log.warning(f"{source}: {detail}")
            else:  # read_price_file logs the report's warnings
                report.warn(one, "ticker_spelling", value=int(counts.drop(one, errors="ignore").sum()), detail=detail)
    return names.replace(folded) if folded else names


def _quality(df: pd.DataFrame, rep: ValidationReport, repair: bool) -> pd.DataFrame:
    """Data-quality warnings per ticker (see ``WARNING_KINDS``); with ``repair`` forward-filled weekend
    rows and reverting single-day spikes are dropped (counted in ``rep.rows_repaired``), and the prices before a ×100 / ÷100
    jump that does not revert are rescaled to the latest close's unit (not those of a crypto or currency pair: no sub-unit
    quote exists for them, the jump is real; futures are rescaled, grains are quoted in cents)."""
    if df.empty:
        return df
    drop = np.zeros(len(df), dtype=bool)
    spike = np.zeros(len(df), dtype=bool)  # reverting spikes, whether dropped or not: the move back from one is no jump of its own
    close = df["close"].to_numpy(dtype=float, copy=True)
    prices = [c for c in ("open", "high", "low", "close_unadjusted") if c in df.columns]  # rescaled with the close
    levels = {c: df[c].to_numpy(dtype=float, copy=True) for c in prices}
    rescaled = False
    dow = df["date"].dt.dayofweek.to_numpy()
    tick = df["ticker"].to_numpy()
    starts = np.flatnonzero(np.r_[True, tick[1:] != tick[:-1]])
    ends = np.r_[starts[1:], len(df)]
    for a, b in zip(starts, ends):
        t = tick[a]
        c = close[a:b]
        same = np.r_[False, c[1:] == c[:-1]]
        ff = same & (dow[a:b] >= 5)
        if ff.any():
            rep.warn(t, "forward_filled", value=int(ff.sum()), detail=f"{int(ff.sum())} Saturday/Sunday rows repeat the previous close"
                     + ("; dropped" if repair else ""))
            if repair:
                drop[a:b] |= ff
        keep = ~drop[a:b]
        idx = np.flatnonzero(keep) + a
        if len(idx) < 3:
            continue
        r = np.diff(np.log(close[idx]))
        for i in np.flatnonzero(np.abs(r[:-1]) >= SPIKE_LOG_MOVE):
            if abs(r[i] + r[i + 1]) < 0.25 * abs(r[i]) and not drop[idx[i + 1]]:
                day = df["date"].iloc[idx[i + 1]]
                rep.warn(t, "price_spike", day, close[idx[i + 1]], f"close {close[idx[i + 1]]:.6g} on {day:%Y-%m-%d} is {np.exp(r[i]):.3g}x the day "
                         f"before and reverts the next day" + ("; row dropped" if repair else ""))
                spike[idx[i + 1]] = True
                if repair:
                    drop[idx[i + 1]] = True
        jumps = 0
        for i in np.flatnonzero(np.abs(np.abs(r) - UNIT_LOG_MOVE) < UNIT_TOLERANCE):
            if spike[idx[i + 1]] or spike[idx[i]] or (i + 1 < len(r) and abs(r[i] + r[i + 1]) < 0.5 * abs(r[i])):
                continue  # a reverting spike (found above, dropped with repair: the moves to and from it), not a new unit
            day, unit = df["date"].iloc[idx[i + 1]], 100.0 if r[i] > 0 else 0.01  # new unit / old unit
            market = symbol_market(t)
            if market in NO_SUBUNIT_MARKETS:  # no pence of a BTC-USD: rescaling would erase a real crash, the worst error for a risk model
                rep.warn(t, "price_jump", day, float(np.exp(r[i])), f"close jumps x{np.exp(r[i]):.4g} on {day:%Y-%m-%d} and stays there; "
                         f"{t} is a {market} symbol, which has no quote in a hundredth of its unit: kept as a real move (a crash "
                         f"like LUNA-USD's in May 2022) — its returns and volatility include it; check the file if it is not one")
                continue
            rep.warn(t, "unit_change", day, float(np.exp(r[i])), f"close jumps x{np.exp(r[i]):.4g} on {day:%Y-%m-%d} and stays there: prices in "
                     f"pence next to pounds (GBX/GBP; or cents, agorot), or an unadjusted 1:100 split? " + (f"the {idx[i] - a + 1} closes before it were multiplied by {unit:g} "
                     f"to the unit of the latest close" if repair else "write every price in one unit"))
            if repair:  # every row up to the jump, so a later jump back rescales the stretch between the two again
                close[a:idx[i] + 1] *= unit
                for v in levels.values():
                    v[a:idx[i] + 1] *= unit
                jumps += 1
        if jumps:
            rescaled = True
            r = np.diff(np.log(close[idx]))
        for i in np.flatnonzero(np.abs(r) >= SPLIT_LOG_MOVE):
            if spike[idx[i + 1]] or (i + 1 < len(r) and abs(r[i] + r[i + 1]) < 0.5 * abs(r[i])) or spike[idx[i]]:
                continue
            ratio = float(np.exp(-r[i]))  # old / new price: 4 for a 1:4 split
            near = min(SPLIT_RATIOS, key=lambda k: min(abs(ratio - k), abs(1 / ratio - k)) / k)
            if min(abs(ratio - near), abs(1 / ratio - near)) / near < 0.03:
                day = df["date"].iloc[idx[i + 1]]
                split = f"{near}:1 split" if ratio > 1 else f"1:{near} reverse split"
                rep.warn(t, "suspected_split", day, ratio, f"close moved {100 * (np.exp(r[i]) - 1):+.1f}% on {day:%Y-%m-%d} (ratio {ratio:.3g}) "
                         f"and did not revert: an unadjusted {split}? use split-adjusted prices (Adj Close)")
        kept = np.flatnonzero(~drop[a:b]) + a
        r = np.diff(np.log(close[kept]))
        zero = float(np.mean(r == 0)) if len(r) else 0.0
        if zero > STALE_ZERO_FRACTION and (r == 0).sum() >= 5:
            rep.warn(t, "stale_prices", value=zero, detail=f"{100 * zero:.0f}% of daily returns are exactly zero (stale or forward-filled prices); "
                     f"volatility forecasts will be too low")
        moved = np.flatnonzero(r != 0)
        tail = len(r) - (int(moved[-1]) + 1) if len(moved) else 0  # every close the same: constant_prices, dropped later
        if tail >= STALE_TAIL_DAYS:
            day = df["date"].iloc[kept[-tail - 1]]
            rep.warn(t, "stale_tail", day, tail, f"the last {tail} closes all repeat the close of {day:%Y-%m-%d} (halted, delisted or forward-filled?); "
                     f"a forecast from its last date reads a flat history: its volatility and VaR will be too low")
    if rescaled:
        df = df.assign(close=close, **levels)
    if repair and drop.any():
        rep.rows_repaired = int(drop.sum())
        df = df[~drop].reset_index(drop=True)
    return df


def _refuse_dates_shifted_by_a_time_zone(df: pd.DataFrame, stamps: pd.Series, source: str) -> None:
    """Refuse daily prices stamped on a Saturday or Sunday at a time other than midnight: an exchange's midnight
    written in another time zone (Tokyo's Monday 00:00 is Sunday 15:00 UTC, Frankfurt's 23:00 UTC) — every row
    of such a series sits one day early, so its returns line up with the wrong days of the other tickers and of
    the calendar. Dates at midnight on a weekend (crypto, Sunday-Thursday exchanges) are kept."""
    odd = (stamps.dt.dayofweek >= 5) & (stamps != stamps.dt.normalize())
    if not odd.any():
        return
    first = stamps[odd].iloc[0]
    t = str(df.loc[odd].iloc[0]["ticker"])
    raise PriceDataError(f"{source}: ticker {t} has {int(odd.sum())} row(s) on a Saturday or Sunday at {first:%H:%M}, e.g. {first:%Y-%m-%d %H:%M} "
                         f"({first:%A}): daily prices stamped at an exchange's midnight and written in another time zone (UTC?) fall on "
                         f"the day before; write the exchange's local dates (e.g. index.tz_convert('Asia/Tokyo') before saving) or plain dates")


def validate_prices(df: pd.DataFrame, source: str = "prices", min_history: int = 100, max_gap_days: int = 10, *,
                    repair: bool = False, report: ValidationReport | None = None,
                    tickers_named: bool = False) -> tuple[pd.DataFrame, ValidationReport]:
    """Check and clean a long price table; see the module docstring for the rules. Data-quality
    findings (``WARNING_KINDS``) go into the report; ``repair`` drops forward-filled weekend rows
    and reverting single-day spikes (user files), else they are only reported. ``tickers_named``: the ticker column
    already went through ``_ticker_names`` (read_price_file's long files), so it is not read a second time."""
    if min_history < 2 or max_gap_days < 0:
        raise PriceDataError(f"{source}: min_history={min_history}, max_gap_days={max_gap_days}: a ticker needs at least 2 prices "
                             f"(one return) and a gap limit of 0 business days or more (--min-history, --max-gap-days)")
    rep = report or ValidationReport(source=source)
    rep.rows_in = len(df)
    missing = [c for c in ("date", "ticker", "close") if c not in df.columns]
    if missing:
        raise PriceDataError(f"{source}: missing column(s) {missing}; expected columns date, ticker, close (or OHLCV); found {[str(c) for c in df.columns]}")
    df = df.copy()
    if pd.api.types.is_numeric_dtype(df["date"]) and not pd.api.types.is_bool_dtype(df["date"]):
        ex = [str(v) for v in df["date"].head(3).tolist()]
        raise PriceDataError(f"{source}: the date column holds numbers, e.g. {ex}, not dates (Excel serial days or epoch seconds "
                             f"are not guessed); write dates like 2020-01-31 (or YYYYMMDD)")
    if pd.api.types.is_datetime64_any_dtype(df["date"]):
        dates = df["date"]
    else:  # text: e.g. '2020-01-31' next to '2020-02-03 00:00:00' or a UTC offset that changes with daylight saving
        dates = _parse_dates(df["date"])
        if not pd.api.types.is_datetime64_any_dtype(dates):
            dates = pd.to_datetime(_local_dates(df["date"]), errors="coerce", format="mixed")
    bad = df.loc[dates.isna() & df["date"].notna(), "date"]
    if len(bad) or df["date"].isna().any():
        examples = [str(v) for v in bad.head(3).tolist()] or ["<empty>"]
        raise PriceDataError(f"{source}: {int(dates.isna().sum())} row(s) with a missing or unparseable date, e.g. {examples}; expected dates like 2020-01-31")
    df["date"] = dates.dt.tz_localize(None) if dates.dt.tz is not None else dates
    stamps = df["date"]  # with the time of day, for _refuse_dates_shifted_by_a_time_zone
    df["date"] = df["date"].dt.normalize()
    if not tickers_named:
        df["ticker"] = _ticker_names(df, source, rep)
    if not pd.api.types.is_numeric_dtype(df["close"]):
        df["close"] = _to_number(df["close"], "close", source, decimal_comma=False)
    df["close"] = pd.to_numeric(df["close"], errors="coerce")
    finite = np.isfinite(df["close"].to_numpy(dtype=float))
    rep.nan_rows_dropped = int((~finite).sum())
    for t in sorted(set(df["ticker"]) - set(df.loc[finite, "ticker"])):  # would vanish with its rows, unlisted
        rep.tickers_dropped_empty.append(t)
        rep.warn(t, "no_prices", value=0, detail=f"no price on any of its {int((df['ticker'] == t).sum())} rows (a failed download?); dropped")
    df = df[finite]
    nonpos = df[df["close"] <= 0]
    if len(nonpos):
        ex = ", ".join(f"{t} {d:%Y-%m-%d} ({float(c):g})" for t, d, c in nonpos[["ticker", "date", "close"]].head(3).itertuples(index=False))
        raise PriceDataError(f"{source}: {len(nonpos)} non-positive close price(s), e.g. {ex}; prices must be > 0 (log returns)")
    dup_mask = df.duplicated(["ticker", "date"], keep=False)
    if dup_mask.any():
        dups = df[dup_mask]
        conflicting = dups.groupby(["ticker", "date"])["close"].nunique()
        conflicting = conflicting[conflicting > 1]
        if len(conflicting):
            ex = ", ".join(f"{t} {d:%Y-%m-%d}" for t, d in conflicting.index[:3])
            raise PriceDataError(f"{source}: {len(conflicting)} (ticker, date) pair(s) appear more than once with different closes, e.g. {ex}; keep one row per ticker and date "
                                 f"(intraday prices? use the daily close)")
        before = len(df)
        df = df.drop_duplicates(["ticker", "date"])
        rep.duplicate_rows_dropped = before - len(df)
    _refuse_dates_shifted_by_a_time_zone(df, stamps.loc[df.index], source)
    df = df.sort_values(["ticker", "date"]).reset_index(drop=True)
    df = _quality(df, rep, repair)
    keep = []
    for t, g in df.groupby("ticker", sort=True):
        if len(g) < min_history:
            rep.tickers_dropped_short.append(t)
            rep.warn(t, "short_history", value=len(g), detail=f"{len(g)} rows, fewer than min_history={min_history}; dropped (lower --min-history to keep it)")
            continue
        if g["close"].nunique() == 1:  # its volatility forecast and VaR would be 0.0000, silently
            rep.tickers_dropped_constant.append(t)
            rep.warn(t, "constant_prices", value=float(g["close"].iloc[0]), detail=f"all {len(g)} closes are {float(g['close'].iloc[0]):g}: "
                     f"no volatility to forecast; dropped (a delisted, suspended or placeholder series?)")
            continue
        d = g["date"].to_numpy().astype("datetime64[D]")
        gaps = np.busday_count(d[:-1], d[1:]) - 1
        if len(gaps) and np.median(gaps) >= 2:  # returns over a week would be read as daily returns
            raise PriceDataError(f"{source}: ticker {t} has a price every {int(np.median(gaps)) + 1} business days (median), e.g. "
                                 f"{d[0]}, {d[1]}, {d[2] if len(d) > 2 else ''}: weekly or monthly data? the model needs daily prices "
                                 f"(download with interval 1d)")
        if len(gaps) and gaps.max() > max_gap_days:
            i = int(gaps.argmax())
            raise PriceDataError(f"{source}: ticker {t} has no prices for {int(gaps[i])} business days between {d[i]} and {d[i + 1]} "
                                 f"(more than max_gap_days={max_gap_days}); split the series or raise the limit (--max-gap-days)")
        rep.missing_days += int(np.clip(gaps, 0, None).sum())
        keep.append(t)
    if rep.tickers_dropped_short:
        log.warning(f"{source}: dropped ticker(s) with fewer than {min_history} rows: {', '.join(rep.tickers_dropped_short)}")
    if rep.tickers_dropped_constant:
        log.warning(f"{source}: dropped ticker(s) whose every close is the same: {', '.join(rep.tickers_dropped_constant)}")
    if rep.tickers_dropped_empty:
        log.warning(f"{source}: dropped ticker(s) without a price on any row (failed downloads?): {', '.join(rep.tickers_dropped_empty)}")
    if not keep and rep.tickers_dropped_constant:
        raise PriceDataError(f"{source}: every ticker with enough history has a constant price ({', '.join(rep.tickers_dropped_constant[:5])}): "
                             f"no volatility to forecast; check the close column")
    if not keep:
        found = ", ".join(f"{t}: {int(n)}" for t, n in df.groupby("ticker").size().items()) or "no valid rows"
        raise PriceDataError(f"{source}: no ticker has at least {min_history} daily prices (found {found}); a forecast needs a longer history "
                             f"(or lower --min-history)")
    df = df[df["ticker"].isin(keep)].reset_index(drop=True)
    rep.rows_out = len(df)
    cols = ["date", "ticker", "close"] + [c for c in ("open", "high", "low", "volume", "close_unadjusted") if c in df.columns]
    return df[cols], rep


@dataclass
class PanelData:
    """What a command reads: the price panel, its covariates (None for user files) and the
    validation report (empty for the bundled panel, which was validated when prepared)."""

    panel: pd.DataFrame
    covariates: pd.DataFrame | None
    report: ValidationReport
    source: str


def load_panel_data(data: str = "", tickers: list[str] | tuple[str, ...] = (), *, ticker: str | None = None,
                    max_gap_days: int = 10, min_history: int = 100) -> PanelData:
    """The bundled panel with VIX/WTI, or a validated user price file (a single series named by
    ``ticker`` or its file name) without covariates. ``tickers`` restricts the panel."""
    if data:
        panel, rep = read_price_file(data, ticker, min_history=min_history, max_gap_days=max_gap_days, ticker_from_name=True)
        cov, source = None, str(data)
    else:
        panel, cov, source = load_panel(), load_covariates(), PANEL_DATASET
        rep = ValidationReport(rows_in=len(panel), rows_out=len(panel), source=source)
    if tickers:
        unknown = sorted(set(tickers) - set(panel["ticker"]))
        if unknown:
            reasons = ((rep.tickers_dropped_short, f"history shorter than --min-history {min_history}"), (rep.tickers_dropped_constant, "constant prices"),
                       (rep.tickers_dropped_empty, "no price on any row (a failed download?)"))
            why = "; ".join(f"{', '.join(hit)} dropped: {reason}" for dropped, reason in reasons if (hit := sorted(set(unknown) & set(dropped))))
            why = f" ({why})" if why else ""
            raise PriceDataError(f"unknown ticker(s) {unknown}{why}; {source} has {sorted(panel['ticker'].unique())}")
        panel = panel[panel["ticker"].isin(list(tickers))].reset_index(drop=True)
    return PanelData(panel, cov, rep, source)


def load_inputs(data: str = "", tickers: list[str] | tuple[str, ...] = (), **options) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(panel, covariates) of :func:`load_panel_data` (``options``: ``ticker``, ``max_gap_days``, ``min_history``)."""
    d = load_panel_data(data, tickers, **options)
    return d.panel, d.covariates


def data_tickers(data: str = "", **options) -> list[str]:
    """The tickers :func:`load_inputs` would return, reading only the ticker column of the bundled
    panel (a user file is validated as a whole: which tickers survive depends on every row)."""
    panel = load_inputs(data, **options)[0] if data else load_panel(columns=["ticker"])
    return sorted(panel["ticker"].unique())


def input_files(data: str = "") -> list[Path]:
    """The files :func:`load_inputs` reads for ``data`` (e.g. to tell when they changed)."""
    if data:
        return [Path(data)]
    d = _panel_dir(None)
    return [d / "panel.parquet", d / "covariates.parquet"]
