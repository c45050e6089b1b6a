"""What the dashboards call (contract in the team brief): read-only views of finance runs and
in-process forecasts. Nothing here trains."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from domains.finance.data import PANEL_DATASET, input_files, load_inputs
from domains.finance.model import Forecaster

__all__ = ["load_panel", "load_forecaster", "forecast", "load_backtest", "load_variable_importance"]


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


def load_forecaster(run_dir: str | Path) -> Forecaster:
    """The forecaster saved by a train or backtest run (``<run_dir>/model``)."""
    return Forecaster.load(_model_dir(run_dir))


def forecast(forecaster: Forecaster, tickers: list[str]) -> pd.DataFrame:
    """Quantile forecasts from each ticker's latest date: ``ticker, date, horizon, target,
    q_0.01..q_0.99`` (plus ``origin``). Tickers the model was not trained on are left out."""
    from domains.finance.forecast import forecast_frame

    known = [t for t in tickers if t in forecaster.tickers]
    data = forecaster.info.get("data", PANEL_DATASET)
    panel, cov = _inputs("" if data == PANEL_DATASET else data)
    have = set(panel["ticker"])
    known = [t for t in known if t in have]
    if not known:
        return pd.DataFrame(columns=["ticker", "origin", "date", "horizon", "target"])
    return forecast_frame(forecaster, panel, cov, known)


def load_backtest(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """A backtest run's tables: ``aggregate`` and ``by_ticker`` metrics per model,
    ``pinball_by_quantile``, ``var_breaches`` (date, ticker, model, ret, var99/95, breach99/95),
    ``predictions`` and ``folds``."""
    run_dir = Path(run_dir)
    files = {"aggregate": "metrics_aggregate.csv", "by_ticker": "metrics_by_ticker.csv", "pinball_by_quantile": "pinball_by_quantile.csv",
             "var_breaches": "var_breaches.parquet", "predictions": "predictions.parquet", "folds": "folds.json"}
    out = {}
    for key, name in files.items():
        p = run_dir / name
        if p.is_file():
            out[key] = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_json(p) if p.suffix == ".json" else pd.read_csv(p)
    if not out:
        raise FileNotFoundError(f"{run_dir} holds no backtest results; run `python -m domains.finance.backtest`")
    return out


def load_variable_importance(run_dir: str | Path) -> pd.DataFrame:
    """``kind`` (static/encoder/decoder), ``variable``, ``importance`` (sums to 1 per kind)."""
    p = Path(run_dir) / "interpretation" / "variable_importance.csv"
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist; a backtest run writes it, or run `python -m domains.finance.interpret --run-dir {run_dir}`")
    return pd.read_csv(p)
