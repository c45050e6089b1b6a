"""Forecasts from a trained forecaster: the library under ``forecast``, ``score``, ``interpret``
and the dashboards.

* :func:`load_forecaster_run` — the forecaster of a model run (``core.runs.resolve_model_run``);
  :func:`forecaster_run_meta` — its checked description only, for a driver whose workers load it;
* :func:`forecast_frame` — quantile rows from each ticker's latest date, on an exchange calendar;
* :func:`latest_tensors` / :func:`rows_from_origins` — the two halves of it, for batch scoring;
  :func:`with_calendars` — the ``calendar`` column of such rows; :func:`calendars_named` / :func:`calendar_how` — the
  words ``forecast`` and the dashboard name them with;
* :func:`warn_calendar_mismatch` — ``forecast``'s and ``score``'s warning for a history that trades on days its
  calendar is closed.

A panel the model cannot read (inputs it was trained with are missing) is refused in one line;
tickers the model has never seen are refused unless ``zero_shot`` (an "unknown ticker" embedding
and normalisers fitted on the series' own history, see ``Forecaster.zero_shot``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.checkpoint import load_weights
from core.logging import get_logger
from core.runs import RunNotFoundError, resolve_model_run
from domains.finance.calendars import AUTO, calendars_for, days_off_calendar
from domains.finance.data import PriceDataError
from domains.finance.features import DEFAULT_CALENDAR, base_features, extend_future
from domains.finance.model import Forecaster, predict_quantiles, quantile_rows

__all__ = ["load_forecaster_run", "forecaster_run_meta", "prepare_forecaster", "forecast_features", "forecast_frame", "latest_tensors", "rows_from_origins",
           "with_calendars", "calendars_named", "calendar_how", "warn_calendar_mismatch", "CALENDAR_MISMATCH_DAYS"]

log = get_logger("finance.forecast")
CALENDAR_MISMATCH_DAYS = 3  # a vendor's odd holiday row or two is not another exchange; NYSE and Tokyo differ on ~9 days a year


def load_forecaster_run(model_run: str | Path | None, runs_dir: str | Path = "runs") -> tuple[Path, Forecaster]:
    """(run folder, forecaster) of ``model_run`` (a run folder or name; None = the newest completed
    finance model run)."""
    run_dir = _model_run_dir(model_run, runs_dir)
    return run_dir, Forecaster.load(run_dir / "model")


def forecaster_run_meta(model_run: str | Path | None, runs_dir: str | Path = "runs") -> tuple[Path, dict]:
    """(run folder, checked ``forecaster.json``) of ``model_run`` as :func:`load_forecaster_run` finds it, its
    weights file readable, without building the model: ``score``'s driver, whose workers load the model, so it
    does not pay the pytorch-forecasting import (~15 s on this machine) before they start. Weights that do not
    fit the model are found by the workers' load."""
    run_dir = _model_run_dir(model_run, runs_dir)
    meta = Forecaster.read_meta(run_dir / "model")
    load_weights(run_dir / "model" / "model.safetensors")  # a missing, cut or foreign file: one line, before any job run folder
    return run_dir, meta


def _model_run_dir(model_run: str | Path | None, runs_dir: str | Path) -> Path:
    try:
        return resolve_model_run("finance", model_run, runs_dir)
    except RunNotFoundError as e:
        raise RunNotFoundError(f"no trained finance model: {e}") from e


def prepare_forecaster(fc: Forecaster, panel: pd.DataFrame, covariates: pd.DataFrame | None, tickers: list[str] | None = None, *,
                       zero_shot: bool = False, source: str = "the data", model_run: str | Path | None = None) -> tuple[Forecaster, pd.DataFrame]:
    """(forecaster, features) for forecasting ``tickers`` (default: the model's tickers present in
    ``panel``; with ``zero_shot`` every ticker of ``panel``). Refuses a panel without the model's inputs
    and, unless ``zero_shot``, tickers the model does not know."""
    have = set(panel["ticker"].unique())  # unique() first: iterating a pyarrow string column is ~3 µs a row
    if tickers:
        missing = sorted(set(tickers) - have)
        if missing:
            known = sorted(have)
            raise PriceDataError(f"ticker(s) {missing} have no prices in {source} (it has {len(known)}: {', '.join(known[:12])}{', …' if len(known) > 12 else ''}); "
                                 f"tickers are case-sensitive and named as in the data{_other_case(missing, have, 'the data', 'e.g. --tickers {}')}")
        unknown = sorted(set(tickers) - set(fc.tickers))
        if unknown and not zero_shot:
            raise PriceDataError(f"ticker(s) {unknown} unknown to this model (trained on {len(fc.tickers)}: {', '.join(fc.tickers[:8])}…); "
                                 f"forecast them zero-shot with --zero-shot, or fine-tune with domains.finance.transfer")
        want = list(tickers)
    else:
        want = sorted(have) if zero_shot else [t for t in fc.tickers if t in have]
    if not want:
        raise PriceDataError(f"no data for the model's tickers ({', '.join(fc.tickers[:8])}…) in {source}{_other_case(have, fc.tickers, 'the model', 'write the ticker column as the model names them, e.g. {}')}; "
                             f"pass --zero-shot to forecast its tickers anyway")
    feat = forecast_features(fc, panel, covariates, want, source=source, model_run=model_run)
    if zero_shot:
        fc = fc.zero_shot(feat)
    return fc, feat


def _other_case(names, known, where: str, fix: str) -> str:
    """'' or a hint naming the ``names`` that are ``known`` ones written in another case ('aapl' for the model's 'AAPL'),
    and ``fix`` (with ``{}`` for the first known spelling)."""
    by_upper = {str(k).upper(): str(k) for k in known}
    pairs = [(n, by_upper[str(n).upper()]) for n in sorted(map(str, names)) if str(n).upper() in by_upper and by_upper[str(n).upper()] != n]
    if not pairs:
        return ""
    said = ", ".join(f"{n} is {where}'s {k}" for n, k in pairs[:5])
    return f" ({said} in another case: {fix.format(pairs[0][1])})"


def forecast_features(fc: Forecaster, panel: pd.DataFrame, covariates: pd.DataFrame | None, tickers, *, source: str = "the data",
                      model_run: str | Path | None = None) -> pd.DataFrame:
    """The model's input features of ``tickers`` (computed on the whole ``panel``: the market return is the
    index's, or the mean of every ticker); a panel without the model's inputs is refused in one line."""
    feat = base_features(panel, covariates)
    feat = feat[feat["ticker"].isin(tickers)].reset_index(drop=True)
    fc.check_inputs(feat, source, model_run)
    return feat


def forecast_frame(fc: Forecaster, panel: pd.DataFrame, covariates: pd.DataFrame | None, tickers: list[str] | None = None, *,
                   zero_shot: bool = False, calendar: str = DEFAULT_CALENDAR, source: str = "the data",
                   model_run: str | Path | None = None) -> pd.DataFrame:
    """Quantile forecasts from each ticker's last date: ``ticker, origin, date, horizon, target, q_*, zero_shot,
    calendar`` (``date``: the ``calendar``'s sessions after the origin; ``zero_shot``: True for tickers the model
    never saw; ``calendar``: the ticker's calendar, :func:`with_calendars`)."""
    fc, feat = prepare_forecaster(fc, panel, covariates, tickers, zero_shot=zero_shot, source=source, model_run=model_run)
    T, o = latest_tensors(fc, feat, calendar=calendar)
    short = sorted(set(feat["ticker"].unique()) - set(T.tickers[o]))
    if short:
        raise PriceDataError(f"ticker(s) {short} have fewer than encoder_length={fc.spec.encoder_length} days of history")
    return with_calendars(rows_from_origins(fc, T, o), calendar)


def latest_tensors(fc: Forecaster, feat: pd.DataFrame, calendar: str = DEFAULT_CALENDAR):
    """(tensors, origins): the features ``feat`` (of tickers ``fc`` can normalise) extended by the
    horizon on ``calendar``, and the row of each ticker's last date that has a full encoder window."""
    T = fc.tensors(fc.scaler.transform(extend_future(feat, fc.spec.horizon, calendar)))
    return T, T.latest_origins()


def rows_from_origins(fc: Forecaster, T, o) -> pd.DataFrame:
    """Forecast rows (``ticker, origin, date, horizon, target, q_*, zero_shot``) for origins ``o`` of ``T``."""
    o = np.asarray(o, dtype=int)
    raw = fc.to_raw(T.tickers[o], predict_quantiles(fc.model, T, o))
    parts = [quantile_rows(raw[target][:, h, :], target, h + 1, ticker=T.tickers[o], origin=T.dates[o], date=T.dates[o + h + 1])
             for target in ("ret", "rvol") for h in range(fc.spec.horizon)]
    out = pd.concat(parts, ignore_index=True).sort_values(["ticker", "target", "horizon"]).reset_index(drop=True)
    out["zero_shot"] = out["ticker"].isin(fc.unknown)
    return out


def with_calendars(rows: pd.DataFrame, calendar: str = DEFAULT_CALENDAR) -> pd.DataFrame:
    """``rows`` (of :func:`rows_from_origins`) with the column ``calendar``: the exchange calendar of each ticker's
    forecast dates under the setting ``calendar`` (``auto``: from the ticker's name, ``domains.finance.calendars``)."""
    return rows.assign(calendar=rows["ticker"].map(calendars_for(rows["ticker"].unique(), calendar)))


def calendars_named(calendars: dict[str, str]) -> str:
    """The calendars of ``{ticker: calendar}`` in words: ``XNYS`` when there is one, else each with (up to 5 of) its
    tickers, ``XLON (VOD.L); XTKS (7203.T)``."""
    used = {c: sorted(t for t, k in calendars.items() if k == c) for c in sorted(set(calendars.values()))}
    if len(used) <= 1:
        return next(iter(used), "")
    return "; ".join(f"{c} ({', '.join(ts[:5])}{' ...' if len(ts) > 5 else ''})" for c, ts in used.items())


def calendar_how(setting: str) -> str:
    """How the calendar setting ``setting`` (``--calendar``) chose them, in words."""
    return "'auto': from each ticker's exchange suffix, XNYS without one" if str(setting).strip().lower() == AUTO else f"--calendar {setting}"


def warn_calendar_mismatch(data, calendars: dict[str, str]) -> None:
    """For each ticker of ``calendars`` (``{ticker: calendar}``) whose history in ``data`` (a
    :class:`~domains.finance.data.PanelData`) has prices on :data:`CALENDAR_MISMATCH_DAYS` or more days its calendar
    is closed — e.g. a Tokyo stock, named without .T, on NYSE's holidays — a ``calendar_mismatch`` warning in
    ``data.report`` (data_warnings.csv, metrics) and the log, naming the days and the fix."""
    panel = data.panel
    for t, g in panel[panel["ticker"].isin(list(calendars))].groupby("ticker"):
        off = days_off_calendar(g["date"], calendars[t])
        if len(off) >= CALENDAR_MISMATCH_DAYS:
            data.report.warn(t, "calendar_mismatch", off[-1], len(off), f"{len(off)} day(s) with a price on which {calendars[t]} is closed, e.g. "
                             f"{', '.join(f'{x:%Y-%m-%d}' for x in off[-3:])}: {t} trades on another exchange? its forecast dates follow "
                             f"{calendars[t]}; name its exchange with --calendar (XTKS, XLON, ...) or its exchange in the ticker (a Yahoo suffix, 7203.T, or a Bloomberg code, 7203 JT Equity)")
            log.warning(data.report.warnings[-1]["detail"])
