"""The finance page's contract with this domain (imported statically by ``dashboards/views/finance.py``).

Read-only views of finance runs and in-process forecasts, returned as the dataclasses (and
documented DataFrames) defined here, so the page never reads a run file itself. Nothing here trains.

    run = finance_run(run_dir)                 # FinanceRun: .has_model .has_backtest
    bt = load_backtest(run_dir)                # Backtest: .aggregate .by_ticker .var_breaches .predictions .verdict ...
    model = load_forecaster(run_dir)           # LoadedForecaster: .tickers .calendar (the setting, 'auto' by default)
    fc = forecast(model, ["AAPL"])             # DataFrame: ticker, origin, date, horizon, target, q_*, zero_shot, calendar
    cal = forecast_calendars(model, ["AAPL"])  # ForecastCalendars: .by_ticker .named .how .mismatches, as forecast names them
    dq = data_quality(run_dir)                 # DataQuality: .warnings .counts .dropped
    a = forecast_attribution(model, "AAPL")    # VarAttribution: which inputs / past days drove the latest VaR (.by_input .by_day .cells)
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from domains.finance.attribution import VarAttribution, var_attribution
from domains.finance.calendars import calendars_for, check_calendar
from domains.finance.data import PANEL_DATASET, PanelData, ValidationReport, input_files, load_inputs
from domains.finance.features import DEFAULT_CALENDAR
from domains.finance.model import Forecaster
from domains.finance.predictor import calendar_how, calendars_named, forecast_frame, prepare_forecaster, warn_calendar_mismatch

__all__ = ["FinanceRun", "Verdict", "Backtest", "LoadedForecaster", "DataQuality", "finance_run", "load_panel",
           "load_forecaster", "forecast", "load_backtest", "load_variable_importance", "data_quality",
           "VarAttribution", "forecast_attribution", "SavedVariant", "saved_variant", "ForecastCalendars", "forecast_calendars"]


@dataclass(frozen=True)
class FinanceRun:
    """What a finance run folder holds."""

    path: Path
    has_model: bool      # a forecaster (train, backtest or transfer runs)
    has_backtest: bool   # the walk-forward tables (backtest runs)


@dataclass(frozen=True)
class Verdict:
    """The backtest's headline: the TFT's volatility pinball against the best baseline's."""

    tft_vol_pinball: float
    best_baseline: str
    best_baseline_vol_pinball: float
    tft_beats_best_baseline: bool


@dataclass
class Backtest:
    """A backtest run's tables (empty frames for the ones a run did not write)."""

    aggregate: pd.DataFrame             # model, <metric>... averaged over tickers
    by_ticker: pd.DataFrame             # model, ticker, <metric>...
    pinball_by_quantile: pd.DataFrame
    var_breaches: pd.DataFrame          # date, ticker, model, ret, var99/var95, breach99/breach95
    predictions: pd.DataFrame           # origin, ticker, model, target, horizon, y, q_*
    folds: pd.DataFrame
    by_fold: pd.DataFrame = field(default_factory=pd.DataFrame)        # model, fold, <metric>..., cutoff, test_end, regime
    by_regime: pd.DataFrame = field(default_factory=pd.DataFrame)      # model, regime (calm/stress/all), <metric>...
    diebold_mariano: pd.DataFrame = field(default_factory=pd.DataFrame)  # regime, loss, baseline, rel_diff, dm_stat, p_two_sided, p_tft_better
    risk_tests: pd.DataFrame = field(default_factory=pd.DataFrame)     # model, VaR/ES backtests pooled and pass rates per ticker-fold
    by_seed: pd.DataFrame = field(default_factory=pd.DataFrame)        # model (tft_seed<k>), <metric>...: the ensemble's members
    verdict: Verdict | None = None

    def __getitem__(self, key: str) -> pd.DataFrame:  # the dict of tables this used to be
        return getattr(self, key)


@dataclass
class LoadedForecaster:
    """A trained forecaster (opaque to the page: pass it to :func:`forecast`)."""

    run_dir: Path
    tickers: tuple[str, ...]
    # the setting of its forecast dates' calendar, as forecast's --calendar: 'auto' (each ticker's exchange from its name,
    # 7203.T -> XTKS, else XNYS) or one exchange_calendars code. A forecast-time choice, not the model's: no command
    # records one with a model. Each ticker's own calendar under it: forecast_calendars
    calendar: str
    forecaster: Forecaster = field(repr=False)


class ForecastCalendars(NamedTuple):
    """The calendars of a forecast's dates, named as ``forecast`` names them (``calendar`` column, the printed header,
    ``metrics.json`` ``calendar`` / ``calendar_setting``, ``calendar_mismatch`` warnings)."""
    by_ticker: dict[str, str]  # each ticker's calendar (the rows' calendar column)
    named: str                 # 'XNYS', or 'XLON (VOD.L); XTKS (7203.T)' when they differ
    setting: str               # the setting they came from ('auto' or one calendar)
    how: str                   # the setting in words
    mismatches: pd.DataFrame   # ticker, kind, date, value, detail: histories with prices on days their calendar is closed


@dataclass
class DataQuality:
    """What the run's price checks found (issue 15.7): warnings per ticker, their counts by kind,
    and the tickers dropped or without test days, each with the reason."""

    warnings: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["ticker", "kind", "detail"]))
    counts: dict[str, int] = field(default_factory=dict)
    dropped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["ticker", "reason"]))

    @property
    def empty(self) -> bool:
        return self.warnings.empty and not any(self.counts.values()) and self.dropped.empty


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _read_run_csv(p: Path) -> pd.DataFrame:
    """A table a run wrote (``to_csv`` writes a missing value as an empty cell): only empty cells are
    missing, so a ticker named ``NA`` (National Bank of Canada) stays a ticker."""
    return pd.read_csv(p, keep_default_na=False, na_values=[""])


def finance_run(run_dir: str | Path) -> FinanceRun:
    run_dir = Path(run_dir)
    return FinanceRun(path=run_dir, has_model=(_model_dir(run_dir) / "forecaster.json").is_file(),
                      has_backtest=(run_dir / "metrics_aggregate.csv").is_file())


def load_panel() -> pd.DataFrame:
    """The bundled panel: ``date, ticker, close, log_ret, rvol5`` (plus ``vix, wti`` by date)."""
    panel, cov = _inputs("")
    return panel.merge(cov, on="date", how="left")


def _inputs(data: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """``load_inputs(data)``, read again only when one of its files changed (path, size, mtime).
    Callers must not modify the frames in place: they are shared between calls."""
    return _inputs_of(data, tuple(_stamp(p) for p in input_files(data)))


def _stamp(p: Path) -> tuple[str, int, int] | None:
    try:
        st = p.stat()
    except OSError:
        return None  # load_inputs says what is wrong with the path
    return str(p.resolve()), st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=4)
def _inputs_of(data: str, stamp: tuple) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    return load_inputs(data)


def _model_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir if (run_dir / "forecaster.json").is_file() else run_dir / "model"


class SavedVariant(NamedTuple):
    """What a ``transfer`` run saved: the variant, and (``--save auto``) the validation vol pinball of each
    candidate and how many of the short history's last days it was measured on (empty / 0 otherwise)."""
    name: str
    selection: dict[str, float]
    val_days: int


def saved_variant(run_dir: str | Path) -> SavedVariant | None:
    """For a ``transfer`` run: its :class:`SavedVariant`; None for other runs. Reads ``forecaster.json`` only."""
    meta = _read_json(_model_dir(run_dir) / "forecaster.json")
    info = meta.get("info") if isinstance(meta, dict) else None
    if not isinstance(info, dict) or not isinstance(info.get("transfer"), str):
        return None
    sel = info.get("transfer_selection")
    days = info.get("transfer_val_days")
    return SavedVariant(info["transfer"], {str(k): float(v) for k, v in sel.items()} if isinstance(sel, dict) else {},
                        int(days) if isinstance(days, (int, float)) else 0)


def load_forecaster(run_dir: str | Path, calendar: str = DEFAULT_CALENDAR) -> LoadedForecaster:
    """The forecaster saved by a train, backtest or transfer run (``<run_dir>/model``), forecasting on ``calendar``
    (forecast's ``--calendar``; an unknown name is a one-line ``CalendarError``)."""
    calendar = check_calendar(calendar)
    fc = Forecaster.load(_model_dir(run_dir))
    return LoadedForecaster(run_dir=Path(run_dir), tickers=tuple(fc.tickers), calendar=calendar, forecaster=fc)


def forecast(model: LoadedForecaster, tickers: list[str], zero_shot: bool = False) -> pd.DataFrame:
    """Quantile forecasts from each ticker's latest date: ``ticker, origin, date, horizon, target,
    q_0.01..q_0.99, zero_shot, calendar``; the dates are sessions of ``calendar``, each ticker's exchange calendar
    under ``model.calendar`` (``auto``: from the ticker's name, ``domains.finance.calendars``). Tickers the model was
    not trained on are left out, unless ``zero_shot`` (then forecast from their own history)."""
    fc = model.forecaster
    data = fc.info.get("data", PANEL_DATASET)
    panel, cov = _inputs("" if data == PANEL_DATASET else data)
    have = set(panel["ticker"])
    want = [t for t in tickers if t in have and (zero_shot or t in fc.tickers)]
    if not want:
        return pd.DataFrame(columns=["ticker", "origin", "date", "horizon", "target", "zero_shot", "calendar"])
    return forecast_frame(fc, panel, cov, want, zero_shot=zero_shot and any(t not in fc.tickers for t in want), calendar=model.calendar)


def forecast_calendars(model: LoadedForecaster, tickers) -> ForecastCalendars:
    """The calendars :func:`forecast` gives ``tickers``' dates (``calendars_for``, the mechanism of its ``calendar``
    column), in ``forecast``'s words, with its ``calendar_mismatch`` warnings for those whose history in the model's
    data has prices on days their calendar is closed (a Tokyo stock named without .T). Tickers not in the data are left out."""
    data = model.forecaster.info.get("data", PANEL_DATASET)
    panel, cov = _inputs("" if data == PANEL_DATASET else data)
    have = set(panel["ticker"])
    tickers = [str(t) for t in dict.fromkeys(tickers) if t in have]
    by_ticker = calendars_for(tickers, model.calendar)
    checked = PanelData(panel=panel, covariates=cov, report=ValidationReport(source=str(data)), source=str(data))
    warn_calendar_mismatch(checked, by_ticker)
    return ForecastCalendars(by_ticker, calendars_named(by_ticker), model.calendar, calendar_how(model.calendar),
                             checked.report.warnings_frame())


def forecast_attribution(model: LoadedForecaster, ticker: str, origin=None, horizon: int = 1, quantile: float = 0.01) -> VarAttribution:
    """Which inputs and which past days drove ``ticker``'s VaR forecast issued at ``origin`` (default:
    the latest): integrated gradients of -q_``quantile`` over the encoder window
    (``domains.finance.attribution``). Tickers the model was not trained on are refused."""
    fc = model.forecaster
    data = fc.info.get("data", PANEL_DATASET)
    panel, cov = _inputs("" if data == PANEL_DATASET else data)
    fc, feat = prepare_forecaster(fc, panel, cov, [ticker])
    return var_attribution(fc, feat, ticker, origin=origin, horizon=horizon, quantile=quantile, calendar=model.calendar)


def load_backtest(run_dir: str | Path) -> Backtest:
    """A backtest run's tables and verdict; ``FileNotFoundError`` for a run without them."""
    run_dir = Path(run_dir)
    files = {"aggregate": "metrics_aggregate.csv", "by_ticker": "metrics_by_ticker.csv", "pinball_by_quantile": "pinball_by_quantile.csv",
             "var_breaches": "var_breaches.parquet", "predictions": "predictions.parquet", "folds": "folds.json",
             "by_fold": "metrics_by_fold.csv", "by_regime": "metrics_by_regime.csv", "diebold_mariano": "diebold_mariano.csv",
             "risk_tests": "risk_tests_pooled.csv", "by_seed": "metrics_by_seed.csv"}
    out: dict[str, pd.DataFrame] = {}
    for key, name in files.items():
        p = run_dir / name
        out[key] = pd.DataFrame()
        if p.is_file() and p.stat().st_size:
            out[key] = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_json(p) if p.suffix == ".json" else _read_run_csv(p)
    if all(df.empty for df in out.values()):
        raise FileNotFoundError(f"{run_dir} holds no backtest results; run `python -m domains.finance.backtest`")
    m = _read_json(run_dir / "metrics.json") or {}
    verdict = None
    if isinstance(m, dict) and "best_baseline_vol" in m:
        def number(key: str) -> float:  # metrics.json writes an undefined value as null (strict JSON): NaN here
            v = m.get(key)
            return float("nan") if v is None else float(v)

        verdict = Verdict(tft_vol_pinball=number("tft_vol_pinball"), best_baseline=str(m["best_baseline_vol"]),
                          best_baseline_vol_pinball=number("best_baseline_vol_pinball"),
                          tft_beats_best_baseline=bool(m.get("tft_beats_best_baseline_vol")))
    return Backtest(**out, verdict=verdict)


def data_quality(run_dir: str | Path) -> DataQuality:
    """The price checks' findings the run recorded (``data_warnings.csv``, ``data_report.json``) and
    the tickers it dropped (too short a history) or could not test (``folds.json``: no test days in a
    fold); empty when it recorded none (e.g. the bundled panel)."""
    run_dir = Path(run_dir)
    warnings = DataQuality().warnings
    p = run_dir / "data_warnings.csv"
    if p.is_file() and p.stat().st_size:
        try:
            warnings = _read_run_csv(p)
        except pd.errors.EmptyDataError:
            pass
    report = _read_json(run_dir / "data_report.json") or {}
    counts = {str(k): int(v) for k, v in (report.get("warning_counts") or {}).items()} if isinstance(report, dict) else {}
    if not counts and "kind" in warnings and len(warnings):
        counts = {str(k): int(v) for k, v in warnings["kind"].value_counts().items()}
    reasons = {"tickers_dropped_short": "history shorter than --min-history; dropped", "tickers_dropped_constant": "every close the same (no "
               "volatility to forecast); dropped", "tickers_dropped_empty": "no price on any row (a failed download?); dropped"}
    dropped = [{"ticker": t, "reason": why} for key, why in reasons.items() for t in (report.get(key) or [] if isinstance(report, dict) else [])]
    folds = _read_json(run_dir / "folds.json")
    no_test: dict[str, list] = {}
    for f in folds if isinstance(folds, list) else []:
        if not isinstance(f, dict):  # a hand-edited or damaged folds.json: nothing to list from that entry
            continue
        for t in f.get("without_test_days") or []:
            no_test.setdefault(str(t), []).append(f.get("fold"))
    dropped += [{"ticker": t, "reason": f"no test days in fold(s) {', '.join(str(k) for k in ks)}"} for t, ks in sorted(no_test.items())]
    return DataQuality(warnings=warnings, counts=counts, dropped=pd.DataFrame(dropped, columns=["ticker", "reason"]))


def load_variable_importance(run_dir: str | Path) -> pd.DataFrame:
    """``kind`` (static/encoder/decoder), ``variable``, ``importance`` (sums to 1 per kind)."""
    p = Path(run_dir) / "interpretation" / "variable_importance.csv"
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist; a backtest run writes it, or run `python -m domains.finance.interpret --run-dir {run_dir}`")
    return pd.read_csv(p)
