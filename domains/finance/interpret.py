"""TFT interpretability: variable-selection weights (static, encoder, decoder) and attention
over encoder lags, averaged over recent forecast origins — saved as CSV and plots.

    python -m domains.finance.interpret                                  # the newest model run
    python -m domains.finance.interpret --model-run <train-or-backtest-run> --data prices.csv

Each call is its own job run (``runs/finance/interpret-*/interpretation/``); the model run is only
read. An input that is constant over the interpreted rows (e.g. a volume column that never
changes) carries no information, so it is reported with importance 0 and ``constant=True`` and the
other importances of its kind are renormalised.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from core.cli import run_cli
from core.runs import Run
from domains.finance.config import InterpretConfig
from domains.finance.data import load_panel_data
from domains.finance.interpretation import interpret
from domains.finance.predictor import load_forecaster_run, prepare_forecaster

__all__ = ["InterpretConfig", "interpret", "interpret_run", "main"]  # interpret: re-exported for backtest.py until it imports domains.finance.interpretation


def interpret_run(cfg: InterpretConfig) -> Path:
    """Interpret the forecaster of ``cfg.model_run`` (default: the newest model run) on ``cfg.data``
    into a new job run's ``interpretation/`` folder; returns the job's run directory."""
    model_dir, fc = load_forecaster_run(cfg.model_run, cfg.runs_dir)
    data = load_panel_data(cfg.data, cfg.tickers, **cfg.data_options())
    fc, feat = prepare_forecaster(fc, data.panel, data.covariates, list(cfg.tickers) or None, source=data.source, model_run=model_dir)
    with Run.start("finance", cfg, new_name=f"interpret-{pd.Timestamp.now():%Y%m%d-%H%M%S}", command="interpret", kind="job") as run:
        out = interpret(fc, feat, run.path("interpretation"), last_days=cfg.last_days)
        imp = out["variable_importance"]
        run.finish({"model_run": str(model_dir), "constant_inputs": ",".join(sorted(imp.loc[imp["constant"], "variable"]))})
        return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(InterpretConfig, interpret_run, argv, doc=__doc__.split("\n\n")[0], prog="python -m domains.finance.interpret")


if __name__ == "__main__":
    sys.exit(main())
