"""Train the global TFT on the daily panel and save a forecaster.

    python -m domains.finance.train                       # bundled real panel, minutes on 2 cores
    python -m domains.finance.train --data prices.csv --epochs 10 --max-batches 0
    python -m domains.finance.train --data AAPL.csv --ticker AAPL   # one Yahoo-style series
    python -m domains.finance.train --name my-run --resume  # continue an interrupted run
    torchrun --standalone --nproc-per-node=2 -m domains.finance.train   # data-parallel (DDP), see core/distributed.py

The model is the backtest's GARCH-informed TFT (a GJR-GARCH-t per ticker fitted on its returns up to the
cutoff; ``--no-garch-informed``: the plain TFT), built by ``training.build_forecaster``.
The last ``--val-days`` trading days are held out (normalisers and weights never see them) and
scored at the end (pinball loss, 1-day 90% interval coverage, 99% VaR breach rate); ``--val-days 0``
trains on everything. After every epoch a training checkpoint (model + optimiser + RNG, loaded
with ``weights_only=True``) is written through ``core.runs.Run``; ``--resume`` restarts from it.
The forecaster is saved as ``model/model.safetensors`` + ``model/forecaster.json`` (with the inputs
it used); a ``--data`` file's validation report goes to ``data_report.json`` / ``data_warnings.csv``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.cli import run_cli
from core.device import set_cpu_threads
from core.distributed import DataParallel
from core.runs import Run, check_resumable
from domains.finance.config import TrainConfig
from domains.finance.data import load_panel_data
from domains.finance.features import base_features
from domains.finance.training import train_forecaster, validation_cutoff

__all__ = ["TrainConfig", "train", "main"]


def train(cfg: TrainConfig) -> Path:
    """Train, validate, save; returns the run directory."""
    set_cpu_threads(cfg.threads)
    check_resumable("finance", cfg, "train")  # --resume of a run that cannot be continued: refused before the data load
    data = load_panel_data(cfg.data, cfg.tickers, **cfg.data_options())
    feat = base_features(data.panel, data.covariates if cfg.covariates else None)
    validation_cutoff(cfg, feat)  # a --val-days the data cannot serve: refused before a run folder exists
    with DataParallel(cfg.device) as dp, Run.start("finance", cfg, new_name=f"train-{pd.Timestamp.now():%Y%m%d-%H%M%S}", command="train",
                                                   data_parallel=dp) as run:
        fc, metrics = train_forecaster(cfg, feat, run, dp)
        if not run.is_main:  # validation and the saved forecaster are rank 0's
            return run.dir
        data.report.write(run.dir)
        fc.save(run.path("model"))
        run.finish({**metrics, **data.report.metrics()})
        print({k: (round(v, 5) if isinstance(v, float) else v) for k, v in metrics.items()})
        return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(TrainConfig, train, argv, doc=__doc__.split("\n\n")[0], prog="python -m domains.finance.train")


if __name__ == "__main__":
    raise SystemExit(main())
