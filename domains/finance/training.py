"""Training the global TFT on a panel: the library under the ``train`` command.

:func:`train_forecaster` holds out the last ``val_days`` trading days (normalisers and weights never
see them), trains with per-epoch checkpoints through the given ``Run`` (so ``--resume`` continues
bit-exactly), and scores the held-out days (:func:`validation_metrics`). The observed inputs are
those the panel supports (``features.observed_inputs``) and are recorded in the forecaster.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from domains.finance.config import TrainConfig, spec_from_config
from domains.finance.data import PANEL_DATASET, PriceDataError
from domains.finance.features import QUANTILES, FoldScaler, observed_inputs
from domains.finance.metrics import coverage, pinball
from domains.finance.model import Forecaster, create_model, fit, predict_quantiles

__all__ = ["train_forecaster", "validation_metrics", "input_report"]


def input_report(feat: pd.DataFrame, inputs: list[str] | tuple[str, ...]) -> dict:
    """Which inputs a run used, and which tickers had the optional ones (OHLC range, volume)."""
    obs = feat[~feat["is_future"]] if "is_future" in feat else feat
    per = {"range_z": "lrange", "volume_z": "lvolu"}
    out: dict = {"inputs": list(inputs)}
    for name, col in per.items():
        if name in inputs:
            out[f"tickers_with_{name}"] = sorted(obs.loc[obs[col].notna(), "ticker"].unique().tolist())
    return out


def train_forecaster(cfg: TrainConfig, feat: pd.DataFrame, run, data_parallel) -> tuple[Forecaster, dict]:
    """Build (after the run has seeded), train and validate a forecaster on ``feat``
    (``features.base_features``); returns it and the run's metrics. ``run``: a ``core.runs.Run``
    (checkpoints, metrics, resume); ``data_parallel``: a ``core.distributed.DataParallel``."""
    dates = np.sort(feat["date"].unique())
    spec = spec_from_config(cfg, observed_inputs(feat))
    if cfg.val_days < 0 or cfg.val_days >= len(dates) - spec.encoder_length - spec.horizon:
        raise PriceDataError(f"--val-days {cfg.val_days}: must be >= 0 and leave a training history ({len(dates)} trading days in the data)")
    cutoff = pd.Timestamp(dates[-1 - cfg.val_days])
    tickers = sorted(feat["ticker"].unique())
    scaler = FoldScaler.fit(feat, cutoff)
    model = create_model("tft", spec=spec, tickers=tickers, learning_rate=cfg.lr)
    inputs = input_report(feat, spec.observed_reals)
    fc = Forecaster(model, spec, scaler, tickers, {"cutoff": str(cutoff.date()), "data": cfg.data or PANEL_DATASET,
                                              "data_options": cfg.data_options(), "covariates": bool(getattr(cfg, "covariates", True)), **inputs})
    T = fc.tensors(scaler.transform(feat))
    all_o = T.origins()
    train_o = all_o[T.targets_by(all_o, cutoff)]
    if len(train_o) == 0:
        raise PriceDataError(f"no training windows before {cutoff:%Y-%m-%d}: each ticker needs more than encoder_length + horizon = "
                             f"{spec.encoder_length + spec.horizon} trading days before the validation period (--val-days {cfg.val_days})")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=1e-5)
    state = run.resume(model, opt)

    def on_epoch_end(epoch: int, loss: float, optimizer) -> None:
        run.log_metrics({"train_pinball": loss}, step=epoch + 1)
        run.save_checkpoint(model, optimizer, step=epoch + 1, epoch=epoch + 1, extra={"train_pinball": loss})

    losses = fit(model, T, train_o, epochs=cfg.epochs, batch_size=cfg.batch_size, max_batches=cfg.max_batches or None,
                 lr=cfg.lr, seed=cfg.seed, optimizer=opt, start_epoch=int(state["epoch"]), on_epoch_end=on_epoch_end,
                 data_parallel=data_parallel)
    metrics = {"train_windows": int(len(train_o)), "epochs": cfg.epochs, "cutoff": str(cutoff.date()), "world_size": data_parallel.world_size,
               "inputs": ",".join(spec.observed_reals)}
    if losses:
        metrics["train_pinball"] = losses[-1]
    if cfg.val_days and run.is_main:
        metrics.update(validation_metrics(fc, T, all_o[T.dates[all_o] > np.datetime64(cutoff)]))
    return fc, metrics


def validation_metrics(fc: Forecaster, T, val_o: np.ndarray) -> dict:
    """Day-1 return pinball, 90% interval coverage and 99% VaR breach rate over origins ``val_o``."""
    if not len(val_o):
        return {}
    pred = predict_quantiles(fc.model, T, val_o)
    raw = fc.to_raw(T.tickers[val_o], pred)
    y = T.targets[torch.as_tensor(val_o + 1)].numpy()  # normalised realised day-1 return and log-vol
    r1 = fc.scaler.ret_to_raw(T.tickers[val_o], y[:, 0])
    q = raw["ret"][:, 0, :]
    i = list(QUANTILES).index
    return {
        "val_origins": int(len(val_o)),
        "val_pinball_ret_h1": float(pinball(r1, q, QUANTILES).mean()),
        "val_cov90_ret_h1": coverage(r1, q[:, i(0.05)], q[:, i(0.95)]),
        "val_var99_breach_rate": float(np.mean(r1 < q[:, i(0.01)])),
    }
