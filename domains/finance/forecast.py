"""Latest data → quantile forecasts per ticker, from a trained forecaster.

    python -m domains.finance.forecast                           # latest trained model, bundled panel
    python -m domains.finance.forecast --model-run runs/finance/train-... --tickers AAPL MSFT
    python -m domains.finance.forecast --data my_prices.csv      # tickers the model was trained on

For each ticker the forecast origin is its last date; the output has one row per (ticker,
target date, target) with quantile columns ``q_0.01 .. q_0.99``: target ``ret`` is the daily log
return of that day (``q_0.01`` is minus the 1-day 99% VaR at horizon 1), target ``rvol`` the
realised volatility of the 5 returns ending that day (daily units). Written to
``forecasts.parquet`` and ``forecasts.csv`` in a new run directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.cli import run_cli
from core.device import set_cpu_threads
from core.io import atomic_write_parquet, atomic_write_text
from core.runs import Run, RunNotFoundError, list_runs
from domains.finance.config import FinanceConfig
from domains.finance.data import PriceDataError, load_inputs
from domains.finance.features import base_features, extend_future
from domains.finance.model import Forecaster, predict_quantiles, quantile_rows

__all__ = ["ForecastConfig", "find_model_run", "forecast_frame", "latest_tensors", "rows_from_origins", "forecast", "main"]


@dataclass
class ForecastConfig(FinanceConfig):
    model_run: str = field(default="", metadata={"help": "run directory holding model/forecaster.json (default: the newest finance run that has one)"})


def find_model_run(model_run: str | Path | None = None, runs_dir: str | Path = "runs") -> Path:
    """The run directory of a trained forecaster: ``model_run`` or the newest completed finance
    run with ``model/forecaster.json``."""
    if model_run:
        p = Path(model_run)
        if not (p / "model" / "forecaster.json").is_file():
            raise RunNotFoundError(f"{p} holds no trained finance model (model/forecaster.json); train one with `python -m domains.finance.train`")
        return p
    for r in list_runs(runs_dir, "finance"):
        if r.get("status") == "completed" and (Path(r["path"]) / "model" / "forecaster.json").is_file():
            return Path(r["path"])
    raise RunNotFoundError(f"no trained finance model under {Path(runs_dir) / 'finance'}; create one with `python -m domains.finance.train`")


def forecast_frame(fc: Forecaster, panel: pd.DataFrame, covariates: pd.DataFrame | None, tickers: list[str] | None = None) -> pd.DataFrame:
    """Quantile forecasts from each ticker's last date: ``ticker, origin, date, horizon, target, q_*``."""
    if tickers:
        unknown = sorted(set(tickers) - set(fc.tickers))
        if unknown:
            raise PriceDataError(f"ticker(s) {unknown} unknown to this model (trained on {len(fc.tickers)}: {', '.join(fc.tickers[:8])}…); fine-tune with domains.finance.transfer")
        missing = sorted(set(tickers) - set(panel["ticker"]))
        if missing:
            raise PriceDataError(f"ticker(s) {missing} have no prices in the data")
    panel = panel[panel["ticker"].isin(tickers or fc.tickers)]
    if panel.empty:
        raise PriceDataError(f"no data for the model's tickers ({', '.join(fc.tickers[:8])}…)")
    T, o = latest_tensors(fc, panel, covariates)
    short = sorted(set(panel["ticker"]) - set(T.tickers[o]))
    if short:
        raise PriceDataError(f"ticker(s) {short} have fewer than encoder_length={fc.spec.encoder_length} days of history")
    return rows_from_origins(fc, T, o)


def latest_tensors(fc: Forecaster, panel: pd.DataFrame, covariates: pd.DataFrame | None):
    """(tensors, origins): ``panel`` (only tickers ``fc`` knows) extended by the horizon, and the
    row of each ticker's last date that has a full encoder window."""
    feat = extend_future(base_features(panel, covariates), fc.spec.horizon)
    T = fc.tensors(fc.scaler.transform(feat))
    return T, T.latest_origins()


def rows_from_origins(fc: Forecaster, T, o) -> pd.DataFrame:
    """Forecast rows (``ticker, origin, date, horizon, target, q_*``) for origins ``o`` of ``T``."""
    o = np.asarray(o, dtype=int)
    raw = fc.to_raw(T.tickers[o], predict_quantiles(fc.model, T, o))
    parts = [quantile_rows(raw[target][:, h, :], target, h + 1, ticker=T.tickers[o], origin=T.dates[o], date=T.dates[o + h + 1])
             for target in ("ret", "rvol") for h in range(fc.spec.horizon)]
    return pd.concat(parts, ignore_index=True).sort_values(["ticker", "target", "horizon"]).reset_index(drop=True)


def forecast(cfg: ForecastConfig) -> Path:
    set_cpu_threads(cfg.threads)
    model_dir = find_model_run(cfg.model_run, cfg.runs_dir)
    fc = Forecaster.load(model_dir / "model")
    panel, cov = load_inputs(cfg.data)
    with Run.start("finance", cfg, new_name=f"forecast-{pd.Timestamp.now():%Y%m%d-%H%M%S}", kind="job") as run:
        df = forecast_frame(fc, panel, cov, list(cfg.tickers) or None)
        atomic_write_parquet(df, run.path("forecasts.parquet"), index=False)
        atomic_write_text(run.path("forecasts.csv"), df.to_csv(index=False))
        h1 = df[(df["target"] == "ret") & (df["horizon"] == 1)]
        var = h1.assign(var99=-h1["q_0.01"], var95=-h1["q_0.05"])[["ticker", "origin", "date", "var99", "var95"]]
        print(var.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        run.finish({"model_run": str(model_dir), "tickers": int(df["ticker"].nunique()), "rows": int(len(df))})
        return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(ForecastConfig, forecast, argv, doc=__doc__.split("\n\n")[0], prog="python -m domains.finance.forecast", user_errors=(PriceDataError, ValueError))


if __name__ == "__main__":
    raise SystemExit(main())
