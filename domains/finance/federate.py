"""Federated training of the finance TFT on Flower: sites hold disjoint groups of tickers.

    python -m domains.finance.federate                          # 3 sites, FedAvg, 4 rounds, in-process simulation
    python -m domains.finance.federate --strategy fedprox --mu 0.01 --compare-central
    python -m domains.finance.federate --mode processes         # Flower's gRPC server on 127.0.0.1 + one process per site
    python -m domains.finance.federate --early-stopping --compare-central   # both keep their best round on a validation period

The result is a normal finance model run (command "federate"): forecast, score and the dashboards
use it like a trained model. metrics.json holds the held-out vol pinball (the same period and
metric as central training), rounds and bytes sent per round; with --compare-central also the
central model's metric on the same budget and the ratio. See domains/finance/federated.py.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.cli import run_cli
from core.device import set_cpu_threads
from core.runs import Run
from domains.finance.federated import FederateConfig, central_baseline, federate_model, run_site, validation_split
from domains.finance.trust import forecaster, new_model, prepare

__all__ = ["FederateConfig", "federate", "main"]


def federate(cfg: FederateConfig) -> Path | None:
    set_cpu_threads(cfg.threads)
    if cfg.server:  # a site process of --mode processes
        run_site(cfg)
        return None
    with Run.start("finance", cfg, new_name=f"federate-{pd.Timestamp.now():%Y%m%d-%H%M%S}", command="federate", kind="model") as run:
        p = prepare(cfg)
        train, heldout = (validation_split(p, cfg.val_days), p) if cfg.early_stopping else (p, None)
        initial = new_model(p, cfg.lr)  # after the run seeded
        model, metrics, _ = federate_model(cfg, train, initial, run, heldout=heldout)
        if cfg.compare_central:
            _, central = central_baseline(cfg, train, initial, heldout=heldout)
            metrics.update(central_val_pinball_vol=central["val_pinball_vol"], vs_central=metrics["val_pinball_vol"] / central["val_pinball_vol"])
        forecaster(model, p, {"federated": {k: metrics[k] for k in ("strategy", "mu", "sites", "rounds", "site_tickers")}}).save(run.path("model"))
        run.finish(metrics)
        print({k: (round(v, 5) if isinstance(v, float) else v) for k, v in metrics.items()})
        return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(FederateConfig, federate, argv, doc=__doc__.split("\n\n")[0], prog="python -m domains.finance.federate")


if __name__ == "__main__":
    raise SystemExit(main())
