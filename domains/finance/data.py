"""Finance data: the bundled real daily panel, and validated user price files.

Bundled panel (data set ``finance-daily-panel``, prepared by ``python -m core.data prepare finance``):

* tickers: the 20 S&P 500 stocks of skfolio, the S&P 500 index (``SP500``) and the five factor
  ETFs (MTUM, QUAL, SIZE, USMV, VLUE) — adjusted closes;
* covariates (one row per date): VIX level and WTI crude oil spot price from ``arch.data``;
* window: the dates where every source exists, 2014-01-03 .. 2019-01-03 (VIX is the shortest source).

``panel.parquet`` is long format ``date, ticker, close, log_ret, rvol5``; ``covariates.parquet`` is
``date, vix, wti``. ``log_ret`` is the close-to-close log return; ``rvol5`` the realised volatility
of the last 5 returns (square root of their mean square — daily units, not annualised).

User files (:func:`load_price_file`): CSV or Parquet, one row per (date, ticker) with columns

=========== =========================================================================
``date``    required; anything ``pandas.to_datetime`` parses (ISO ``YYYY-MM-DD`` best)
``ticker``  required unless the file holds one series (then ``--ticker`` names it)
``close``   required (``adj_close``/``adj close`` is used instead when present)
``open``, ``high``, ``low``, ``volume``  optional (OHLCV files), kept but not needed
=========== =========================================================================

Column names are case-insensitive. :func:`validate_prices` handles bad rows as follows:

* unparseable dates, non-positive prices → rejected (``PriceDataError`` naming ticker and dates);
* duplicated (ticker, date) rows → identical duplicates dropped; conflicting ones rejected;
* NaN / infinite closes → those rows are dropped (counted in the report), i.e. treated as a missing day;
* missing days → not filled: the next return spans the gap (the model indexes trading days per
  ticker). A gap longer than ``max_gap_days`` business days is rejected, since a return over weeks
  is not a daily return;
* too-short histories (fewer than ``min_history`` rows) → that ticker is dropped with a warning;
  if no ticker is left it is an error.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.data import DatasetSpec, SourceMissingError, ensure_dataset
from core.io import atomic_write_parquet
from core.logging import get_logger

__all__ = [
    "DATASETS", "PANEL_DATASET", "PriceDataError", "ValidationReport", "load_panel", "load_covariates",
    "load_price_file", "validate_prices", "derive_returns", "load_inputs", "input_files", "data_tickers", "STOCKS", "INDEX", "FACTORS",
]

log = get_logger("finance.data")
PANEL_DATASET = "finance-daily-panel"
STOCKS = ["AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO", "LLY", "MRK", "MSFT", "PEP",
          "PFE", "PG", "RRC", "UNH", "WMT", "XOM"]
INDEX = "SP500"
FACTORS = ["MTUM", "QUAL", "SIZE", "USMV", "VLUE"]
RVOL_WINDOW = 5


class PriceDataError(ValueError):
    """A price file or panel cannot be used; the message names the input and what was expected."""


# ---------------------------------------------------------------------------------------------
# bundled real data
# ---------------------------------------------------------------------------------------------
def _package_file(package: str, *parts: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SourceMissingError(f"package {package!r} is not installed; install it with `{install}`")
    p = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
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


def _build(sources: dict[str, Path], out_dir: Path) -> None:
    stocks = _read_wide(sources["sp500_dataset.csv.gz"])
    index = _read_wide(sources["sp500_index.csv.gz"])
    factors = _read_wide(sources["factors_dataset.csv.gz"])
    vix = _read_wide(sources["vix.csv.gz"])
    wti = _read_wide(sources["wti.csv.gz"]).rename(columns={"DCOILWTICO": "wti"})
    start = max(factors.index.min(), vix.index.min())
    end = min(stocks.index.max(), vix.index.max(), wti.index.max())
    wide = pd.concat([stocks, index, factors], axis=1).loc[start:end]
    panel = wide.stack().rename("close").reset_index()
    panel.columns = ["date", "ticker", "close"]
    clean, report = validate_prices(panel, source="bundled skfolio panel", min_history=100)
    clean = derive_returns(clean)
    cov = pd.concat([vix["vix"], wti["wti"]], axis=1).sort_index()
    cov = cov.loc[:end].ffill().loc[start:end].reindex(sorted(clean["date"].unique())).ffill()  # past values only
    cov = cov.reset_index().rename(columns={"index": "date"})
    atomic_write_parquet(clean[["date", "ticker", "close", "log_ret", "rvol5"]], out_dir / "panel.parquet", index=False)
    atomic_write_parquet(cov, out_dir / "covariates.parquet", index=False)
    log.info(f"finance panel: {clean['ticker'].nunique()} tickers, {clean['date'].nunique()} dates ({report.summary()})")


DATASETS = [
    DatasetSpec(
        name=PANEL_DATASET,
        domain="finance",
        description="daily panel: 20 S&P 500 stocks + index + 5 factor ETFs, VIX/WTI covariates, 2014-2019",
        locate=_locate,
        build=_build,
        version="2",
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
@dataclass
class ValidationReport:
    rows_in: int = 0
    rows_out: int = 0
    nan_rows_dropped: int = 0
    duplicate_rows_dropped: int = 0
    tickers_dropped_short: list[str] = field(default_factory=list)
    missing_days: int = 0  # business days absent inside a ticker's history (not filled)

    def summary(self) -> str:
        return (f"{self.rows_in} rows in, {self.rows_out} kept; dropped {self.nan_rows_dropped} NaN and "
                f"{self.duplicate_rows_dropped} duplicate rows; {self.missing_days} missing business days not filled; "
                f"too-short tickers dropped: {self.tickers_dropped_short or 'none'}")


def load_price_file(path: str | Path, ticker: str | None = None, min_history: int = 100, max_gap_days: int = 10) -> pd.DataFrame:
    """Read a user CSV/Parquet of daily prices (schema in the module docstring) and validate it.

    Returns ``date, ticker, close, log_ret, rvol5`` (like :func:`load_panel`)."""
    path = Path(path)
    if not path.is_file():
        raise PriceDataError(f"{path}: no such file (expected a CSV or Parquet of date, ticker, close)")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif path.suffix.lower() in (".csv", ".gz", ".txt"):
            df = pd.read_csv(path)
        else:
            raise PriceDataError(f"{path}: unsupported file type {path.suffix!r}; expected .csv or .parquet")
    except PriceDataError:
        raise
    except Exception as e:  # noqa: BLE001 - parser errors from pandas/pyarrow
        raise PriceDataError(f"{path}: cannot be read as {path.suffix} ({type(e).__name__}: {e})") from e
    df = df.rename(columns={c: str(c).strip().lower().replace(" ", "_") for c in df.columns})
    if "adj_close" in df.columns:
        df["close"] = df["adj_close"]
    if "ticker" not in df.columns:
        if ticker is None:
            raise PriceDataError(f"{path}: no 'ticker' column; add one or pass ticker= (--ticker) for a single-series file")
        df["ticker"] = ticker
    clean, report = validate_prices(df, source=str(path), min_history=min_history, max_gap_days=max_gap_days)
    log.info(f"{path}: {report.summary()}")
    return derive_returns(clean)


def validate_prices(df: pd.DataFrame, source: str = "prices", min_history: int = 100, max_gap_days: int = 10) -> tuple[pd.DataFrame, ValidationReport]:
    """Check and clean a long price table; see the module docstring for the rules."""
    rep = ValidationReport(rows_in=len(df))
    missing = [c for c in ("date", "ticker", "close") if c not in df.columns]
    if missing:
        raise PriceDataError(f"{source}: missing column(s) {missing}; expected columns date, ticker, close (or OHLCV); found {list(df.columns)}")
    df = df.copy()
    dates = pd.to_datetime(df["date"], errors="coerce")
    bad = df.loc[dates.isna() & df["date"].notna(), "date"]
    if len(bad) or df["date"].isna().any():
        examples = list(bad.astype(str).head(3)) or ["<empty>"]
        raise PriceDataError(f"{source}: {int(dates.isna().sum())} row(s) with a missing or unparseable date, e.g. {examples}; expected dates like 2020-01-31")
    df["date"] = dates.dt.tz_localize(None) if dates.dt.tz is not None else dates
    df["date"] = df["date"].dt.normalize()
    df["ticker"] = df["ticker"].astype(str)
    df["close"] = pd.to_numeric(df["close"], errors="coerce")
    finite = np.isfinite(df["close"].to_numpy(dtype=float))
    rep.nan_rows_dropped = int((~finite).sum())
    df = df[finite]
    nonpos = df[df["close"] <= 0]
    if len(nonpos):
        ex = ", ".join(f"{t} {d:%Y-%m-%d} ({c})" for t, d, c in nonpos[["ticker", "date", "close"]].head(3).itertuples(index=False))
        raise PriceDataError(f"{source}: {len(nonpos)} non-positive close price(s), e.g. {ex}; prices must be > 0 (log returns)")
    dup_mask = df.duplicated(["ticker", "date"], keep=False)
    if dup_mask.any():
        dups = df[dup_mask]
        conflicting = dups.groupby(["ticker", "date"])["close"].nunique()
        conflicting = conflicting[conflicting > 1]
        if len(conflicting):
            ex = ", ".join(f"{t} {d:%Y-%m-%d}" for t, d in conflicting.index[:3])
            raise PriceDataError(f"{source}: {len(conflicting)} (ticker, date) pair(s) appear more than once with different closes, e.g. {ex}; keep one row per ticker and date")
        before = len(df)
        df = df.drop_duplicates(["ticker", "date"])
        rep.duplicate_rows_dropped = before - len(df)
    df = df.sort_values(["ticker", "date"]).reset_index(drop=True)
    keep = []
    for t, g in df.groupby("ticker", sort=True):
        if len(g) < min_history:
            rep.tickers_dropped_short.append(t)
            continue
        d = g["date"].to_numpy().astype("datetime64[D]")
        gaps = np.busday_count(d[:-1], d[1:]) - 1
        if len(gaps) and gaps.max() > max_gap_days:
            i = int(gaps.argmax())
            raise PriceDataError(f"{source}: ticker {t} has no prices for {int(gaps[i])} business days between {d[i]} and {d[i + 1]} "
                                 f"(more than max_gap_days={max_gap_days}); split the series or raise the limit")
        rep.missing_days += int(np.clip(gaps, 0, None).sum())
        keep.append(t)
    if rep.tickers_dropped_short:
        log.warning(f"{source}: dropped ticker(s) with fewer than {min_history} rows: {rep.tickers_dropped_short}")
    if not keep:
        raise PriceDataError(f"{source}: no ticker has at least {min_history} daily prices (found {df.groupby('ticker').size().to_dict()}); a forecast needs a longer history")
    df = df[df["ticker"].isin(keep)].reset_index(drop=True)
    rep.rows_out = len(df)
    cols = ["date", "ticker", "close"] + [c for c in ("open", "high", "low", "volume") if c in df.columns]
    return df[cols], rep


def load_inputs(data: str = "", tickers: list[str] | tuple[str, ...] = ()) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(panel, covariates) for a CLI: the bundled panel with VIX/WTI, or a user price file
    without covariates (their inputs are then zero). ``tickers`` restricts the panel."""
    if data:
        panel, cov = load_price_file(data), None
    else:
        panel, cov = load_panel(), load_covariates()
    if tickers:
        unknown = sorted(set(tickers) - set(panel["ticker"]))
        if unknown:
            raise PriceDataError(f"unknown ticker(s) {unknown}; the data has {sorted(panel['ticker'].unique())}")
        panel = panel[panel["ticker"].isin(list(tickers))].reset_index(drop=True)
    return panel, cov


def data_tickers(data: str = "") -> list[str]:
    """The tickers :func:`load_inputs` would return, reading only the ticker column of the bundled
    panel (a user file is validated as a whole: which tickers survive depends on every row)."""
    panel = load_inputs(data)[0] if data else load_panel(columns=["ticker"])
    return sorted(panel["ticker"].unique())


def input_files(data: str = "") -> list[Path]:
    """The files :func:`load_inputs` reads for ``data`` (e.g. to tell when they changed)."""
    if data:
        return [Path(data)]
    d = _panel_dir(None)
    return [d / "panel.parquet", d / "covariates.parquet"]
