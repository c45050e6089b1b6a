"""Latest data → quantile forecasts per ticker, from a trained model run.

    python -m domains.finance.forecast                           # newest trained model, bundled panel
    python -m domains.finance.forecast --model-run train-20261129-101500 --tickers AAPL MSFT
    python -m domains.finance.forecast --model-run my-run --data GOOG.csv --zero-shot   # a ticker the model never saw
    python -m domains.finance.forecast --data 7203.T.csv --zero-shot   # Tokyo sessions: the calendar comes from the suffix
    python -m domains.finance.forecast --calendar XLON             # every ticker's forecast dates on the London calendar
    python -m domains.finance.forecast --horizon 1                 # the next session only (at most the model's --horizon)

For each ticker the forecast origin is its last date and the target dates are the next sessions of its
exchange (exchange_calendars, so holidays such as Good Friday are skipped): by default (``--calendar auto``)
read from the ticker's Yahoo/stooq suffix or index symbol (7203.T -> XTKS, VOD.L -> XLON, SAP.DE -> XETR,
^FTSE -> XLON; ``domains.finance.calendars``), else XNYS; ``--calendar NAME`` sets one for every ticker. The
output has one row per (ticker, target date, target) with quantile columns ``q_0.01 .. q_0.99``:
target ``ret`` is the daily log return of that day (``q_0.01`` is minus the 1-day 99% VaR at
horizon 1), target ``rvol`` the realised volatility of the 5 returns ending that day (daily units);
``zero_shot`` marks tickers the model never saw, ``calendar`` names the calendar of the dates. Written to ``forecasts.parquet`` and
``forecasts.csv`` in a new job run. A model trained with inputs the data lacks is refused.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.cli import run_cli
from core.device import set_cpu_threads
from core.errors import UserInputError, plain
from core.io import atomic_write_parquet, atomic_write_text
from core.runs import Run
from domains.finance.calendars import check_calendar
from domains.finance.config import ForecastConfig
from domains.finance.data import load_panel_data
from domains.finance.model import is_garch_informed
from domains.finance.predictor import calendar_how, calendars_named, forecast_frame, load_forecaster_run, warn_calendar_mismatch

__all__ = ["ForecastConfig", "forecast", "main"]


def forecast(cfg: ForecastConfig) -> Path:
    set_cpu_threads(cfg.threads)
    check_calendar(cfg.calendar)  # a mistyped --calendar is refused before the model and the data are read
    model_dir, fc = load_forecaster_run(cfg.model_run, cfg.runs_dir)
    if cfg.horizon > fc.spec.horizon:
        raise UserInputError(f"--horizon {plain(cfg.horizon)}: model run {model_dir.name} forecasts {fc.spec.horizon} trading days ahead "
                             f"(trained with --horizon {fc.spec.horizon}); ask for at most {fc.spec.horizon}, or train a model with --horizon {plain(cfg.horizon)}")
    data = load_panel_data(cfg.data, **cfg.data_options())
    df = forecast_frame(fc, data.panel, data.covariates, list(cfg.tickers) or None, zero_shot=cfg.zero_shot, calendar=cfg.calendar,
                        source=data.source, model_run=model_dir)
    if cfg.horizon:
        df = df[df["horizon"] <= cfg.horizon].reset_index(drop=True)
    with Run.start("finance", cfg, new_name=f"forecast-{pd.Timestamp.now():%Y%m%d-%H%M%S}", command="forecast", kind="job") as run:
        calendars = dict(zip(df["ticker"], df["calendar"]))
        warn_calendar_mismatch(data, calendars)
        atomic_write_parquet(df, run.path("forecasts.parquet"), index=False)
        atomic_write_text(run.path("forecasts.csv"), df.to_csv(index=False))
        data.report.write(run.dir)
        h1 = df[(df["target"] == "ret") & (df["horizon"] == 1)]
        var = h1.assign(var99=-h1["q_0.01"], var95=-h1["q_0.05"])[["ticker", "origin", "date", "var99", "var95", "zero_shot"]]
        kind = "GARCH-informed TFT (a correction of each ticker's GJR-GARCH-t)" if is_garch_informed(fc) else "plain TFT"
        print(f"model: {kind}; forecast dates: {calendars_named(calendars)} sessions (exchange_calendars, {calendar_how(cfg.calendar)})")
        print(var.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print(f"var99 / var95: next session's value-at-risk, the loss (as a log return: 0.0500 = 5.0 percent) exceeded with 1 / 5 percent "
              f"probability; every quantile of returns and realised volatility for days 1-{int(df['horizon'].max())}: forecasts.parquet / forecasts.csv")
        run.finish({"model_run": str(model_dir), "garch_informed": is_garch_informed(fc), "calendar": ", ".join(sorted(set(calendars.values()))), "calendar_setting": cfg.calendar, "tickers": int(df["ticker"].nunique()), "rows": int(len(df)),
                    "zero_shot_tickers": int(df.loc[df["zero_shot"], "ticker"].nunique()), **data.report.metrics()})
        return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(ForecastConfig, forecast, argv, doc=__doc__.split("\n\n")[0], prog="python -m domains.finance.forecast")


if __name__ == "__main__":
    raise SystemExit(main())
