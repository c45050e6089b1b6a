"""Train the global TFT on the daily panel and save a forecaster.

    python -m domains.finance.train                       # bundled real panel, minutes on 2 cores
    python -m domains.finance.train --data prices.csv --epochs 10 --max-batches 0
    python -m domains.finance.train --name my-run --resume  # continue an interrupted run
    torchrun --standalone --nproc-per-node=2 -m domains.finance.train   # data-parallel (DDP), see core/distributed.py

The last ``--val-days`` trading days are held out (normalisers and weights never see them) and
scored at the end (pinball loss, 1-day 90% interval coverage, 99% VaR breach rate); ``--val-days 0``
trains on everything. After every epoch a training checkpoint (model + optimiser + RNG, loaded
with ``weights_only=True``) is written through ``core.runs.Run``; ``--resume`` restarts from it.
The forecaster is saved as ``model/model.safetensors`` + ``model/forecaster.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.cli import run_cli
from core.device import seed_everything, set_cpu_threads
from core.distributed import DataParallel
from core.runs import Run
from domains.finance.config import FinanceConfig, spec_from_config
from domains.finance.data import PANEL_DATASET, PriceDataError, load_inputs
from domains.finance.features import QUANTILES, FoldScaler, base_features
from domains.finance.metrics import coverage, pinball
from domains.finance.model import Forecaster, build_tft, fit, predict_quantiles

__all__ = ["TrainConfig", "train", "main"]


@dataclass
class TrainConfig(FinanceConfig):
    val_days: int = field(default=63, metadata={"help": "last trading days held out for validation (0 = train on everything)"})


def train(cfg: TrainConfig) -> Path:
    """Train, validate, save; returns the run directory."""
    set_cpu_threads(cfg.threads)
    seed_everything(cfg.seed, cfg.deterministic)  # the initial weights depend on it
    panel, cov = load_inputs(cfg.data, cfg.tickers)
    feat = base_features(panel, cov)
    dates = np.sort(feat["date"].unique())
    spec = spec_from_config(cfg)
    H = spec.horizon
    if cfg.val_days < 0 or cfg.val_days >= len(dates) - spec.encoder_length - H:
        raise PriceDataError(f"--val-days {cfg.val_days}: must be >= 0 and leave a training history ({len(dates)} trading days in the data)")
    cutoff = pd.Timestamp(dates[-1 - cfg.val_days])
    tickers = sorted(feat["ticker"].unique())
    scaler = FoldScaler.fit(feat, cutoff)
    model = build_tft(spec, tickers, cfg.lr)
    fc = Forecaster(model, spec, scaler, tickers, {"cutoff": str(cutoff.date()), "data": cfg.data or PANEL_DATASET})
    T = fc.tensors(scaler.transform(feat))
    all_o = T.origins()
    train_o = all_o[T.targets_by(all_o, cutoff)]
    with DataParallel(cfg.device) as dp, Run.start("finance", cfg, new_name=f"train-{pd.Timestamp.now():%Y%m%d-%H%M%S}", data_parallel=dp) as run:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=1e-5)
        state = run.resume(model, opt)

        def on_epoch_end(epoch: int, loss: float, optimizer) -> None:
            run.log_metrics({"train_pinball": loss}, step=epoch + 1)
            run.save_checkpoint(model, optimizer, step=epoch + 1, epoch=epoch + 1, extra={"train_pinball": loss})

        losses = fit(model, T, train_o, epochs=cfg.epochs, batch_size=cfg.batch_size, max_batches=cfg.max_batches or None,
                     lr=cfg.lr, seed=cfg.seed, optimizer=opt, start_epoch=int(state["epoch"]), on_epoch_end=on_epoch_end, data_parallel=dp)
        metrics = {"train_windows": int(len(train_o)), "epochs": cfg.epochs, "cutoff": str(cutoff.date()), "world_size": dp.world_size}
        if not run.is_main:  # validation and the saved forecaster are rank 0's
            return run.dir
        if losses:
            metrics["train_pinball"] = losses[-1]
        if cfg.val_days:
            val_o = all_o[T.dates[all_o] > np.datetime64(cutoff)]
            if len(val_o):
                pred = predict_quantiles(model, T, val_o)
                raw = fc.to_raw(T.tickers[val_o], pred)
                y = T.targets[torch.as_tensor(val_o + 1)].numpy()  # normalised realised day-1 return and log-vol
                r1 = fc.scaler.ret_to_raw(T.tickers[val_o], y[:, 0])
                q = raw["ret"][:, 0, :]
                i = list(QUANTILES).index
                metrics.update({
                    "val_origins": int(len(val_o)),
                    "val_pinball_ret_h1": float(pinball(r1, q, QUANTILES).mean()),
                    "val_cov90_ret_h1": coverage(r1, q[:, i(0.05)], q[:, i(0.95)]),
                    "val_var99_breach_rate": float(np.mean(r1 < q[:, i(0.01)])),
                })
        fc.save(run.path("model"))
        run.finish(metrics)
        print({k: (round(v, 5) if isinstance(v, float) else v) for k, v in metrics.items()})
        return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(TrainConfig, train, argv, doc=__doc__.split("\n\n")[0], prog="python -m domains.finance.train", user_errors=(PriceDataError, ValueError))


if __name__ == "__main__":
    raise SystemExit(main())
