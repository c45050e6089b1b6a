"""Walk-forward backtest of the global TFT (seed ensemble) against the classical risk models.

    python -m domains.finance.backtest                 # 40 half-year folds, 2003-2022, 3 seeds, GARCH-informed TFT
    python -m domains.finance.backtest --no-garch-informed   # the plain TFT
    python -m domains.finance.backtest --quick         # 4 quarterly folds of 2022, 3 tickers, 2 seeds
    python -m domains.finance.backtest --folds 80 --test-days 63   # quarterly folds
    python -m domains.finance.backtest --rescore fin-full-garch   # a saved run's tables + vol_qlike_mean, no training
    python -m domains.finance.backtest --end 2002-12-12 --folds 10 --test-days 63 --seeds 2   # a validation period before the test span

The scheme, the early stopping on a validation period before each cutoff, the regimes and every
statistic are described in :mod:`domains.finance.walkforward`. Outputs (run directory):
``metrics_aggregate.csv``, ``metrics_by_ticker.csv``, ``metrics_by_fold.csv``,
``metrics_by_regime.csv``, ``var_tests_by_ticker_fold.csv``, ``risk_tests_pooled.csv``,
``diebold_mariano.csv``, ``metrics_by_seed.csv``, ``pinball_by_quantile.csv``,
``var_breaches.parquet``, ``predictions.parquet``, ``folds.json``, ``summary.md``, plots, the last
fold's forecaster (``model/``, ensemble member 0) and its interpretation. ``metrics.json`` holds the
issue-15 verdict.

Resume: each finished fold is committed to ``<run>/folds/`` (``walkforward.FoldStore``); rerunning a
killed backtest with the same command (the same ``--name``, or none: the default name
``backtest-<fingerprint>`` comes from the settings and data) reuses those folds and computes only the
rest, to the same results as an uninterrupted run. A rerun with other settings or data is refused in
one line naming the field; a second process on the same run is refused by the run folder's lock.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import pandas as pd

from core.cli import run_cli
from core.device import set_cpu_threads
from core.io import atomic_write_parquet
from core.logging import get_logger
from core.runs import Run, resolve_model_run
from domains.finance.config import BacktestConfig
from domains.finance.data import PANEL_DATASET, PriceDataError, load_panel_data
from domains.finance.features import base_features
from domains.finance.interpretation import interpret
from domains.finance.walkforward import FoldStore, backtest_fingerprint, fingerprint_id, rescore, run_walkforward, summarise, write_report

__all__ = ["BacktestConfig", "QUICK", "backtest", "end_date", "main"]

log = get_logger("finance.backtest")
QUICK = {"folds": 4, "test_days": 63, "seeds": 2, "epochs": 1, "refit_epochs": 1, "max_batches": 20, "refit_batches": 5,
         "tickers": ["SP500", "AAPL", "JPM"]}


def backtest(cfg: BacktestConfig) -> Path:
    """Run the walk-forward backtest; returns the run directory."""
    if cfg.rescore:
        return rescore_run(cfg)
    if cfg.quick:
        cfg = dataclasses.replace(cfg, **{k: v for k, v in QUICK.items() if not (k == "tickers" and cfg.tickers)})
    set_cpu_threads(cfg.threads)
    end = end_date(cfg.end)
    data = load_panel_data(cfg.data, cfg.tickers, **cfg.data_options())
    panel = data.panel if end is None else data.panel[data.panel["date"] <= end].reset_index(drop=True)
    if panel.empty:
        raise PriceDataError(f"--end {cfg.end}: no prices on or before it")
    feat = base_features(panel, data.covariates)
    fingerprint = backtest_fingerprint(panel, feat, cfg)
    # kind "model": the run saves a forecaster that forecast/score/the dashboard can use. The default
    # name comes from the fingerprint (stable_name), so the identical command continues a killed run
    # as the same --name does: its committed folds are reused (FoldStore), a changed setting is refused.
    with Run.start("finance", cfg, new_name=f"backtest-{fingerprint_id(fingerprint)}", stable_name=True, command="backtest") as run:
        store = FoldStore(run.path("folds"), fingerprint)
        store.open()  # a run whose committed folds used other settings or data is refused here, before any work
        res = run_walkforward(panel, feat, cfg, data_name=cfg.data or PANEL_DATASET, store=store,
                              on_fold=lambda k, info: run.log_metrics({"fold": k, "stress_share": info["stress_share"]}, step=k))
        atomic_write_parquet(res.losses, run.path("losses.parquet"), index=False)  # first: every table is computed from it
        out = summarise(res, cfg.horizon, cfg.variance_rule, cfg.ensemble_variance)
        write_report(out, res, run.dir)
        res.forecaster.save(run.path("model"))
        try:
            interpret(res.forecaster, feat, run.path("interpretation"))
        except Exception as e:  # noqa: BLE001 - interpretation is a by-product; the backtest stands without it
            log.warning(f"interpretation skipped: {type(e).__name__}: {e}")
        print((run.dir / "summary.md").read_text())
        metrics = {f"{r['model']}/{k}": v for r in out["aggregate"].to_dict("records") for k, v in r.items() if k != "model"}
        run.finish({**out["verdict"], **metrics, "folds": len(res.folds), "variance_rule": cfg.variance_rule, "ensemble_variance": cfg.ensemble_variance, "garch_informed": cfg.garch_informed})
        store.clear()  # the finished run's files hold every fold; a completed run is never continued
        return run.dir


def end_date(end: str) -> pd.Timestamp | None:
    """``--end`` as a day (None when empty); only ``YYYY-MM-DD``: ``2022`` would read as 2022-01-01."""
    if not end:
        return None
    try:
        return pd.to_datetime(end.strip(), format="%Y-%m-%d")
    except ValueError as e:
        raise PriceDataError(f"--end {end!r}: expected a day as YYYY-MM-DD, e.g. 2002-12-11") from e


def rescore_run(cfg: BacktestConfig) -> Path:
    """Recompute every table and the verdict of the saved backtest run ``cfg.rescore`` (losses and
    predictions, no training) into a new job run: adds ``vol_qlike_mean``; the source run is untouched."""
    src = resolve_model_run("finance", cfg.rescore)
    with Run.start("finance", cfg, new_name=f"rescore-{src.name}-{time.strftime('%Y%m%d-%H%M%S')}", command="backtest-rescore", kind="job") as run:
        res = rescore(src)
        horizon = int(json.loads((src / "config.json").read_text()).get("horizon", cfg.horizon)) if (src / "config.json").is_file() else cfg.horizon
        out = summarise(res, horizon, cfg.variance_rule, cfg.ensemble_variance)
        write_report(out, res, run.dir)
        print((run.dir / "summary.md").read_text())
        metrics = {f"{r['model']}/{k}": v for r in out["aggregate"].to_dict("records") for k, v in r.items() if k != "model"}
        run.finish({**out["verdict"], **metrics, "folds": len(res.folds), "rescored_from": str(src), "variance_rule": cfg.variance_rule, "ensemble_variance": cfg.ensemble_variance})
        return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(BacktestConfig, backtest, argv, doc=__doc__.split("\n\n")[0], prog="python -m domains.finance.backtest")


if __name__ == "__main__":
    sys.exit(main())
