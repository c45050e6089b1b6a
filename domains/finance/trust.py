"""What federated (``federated.py``) and private (``private.py``) training of the finance TFT share
with central training: the same panel, features, held-out period, normalisers and model.

:func:`prepare` mirrors ``training.train_forecaster`` up to the training loop (the last
``val_days`` trading days are held out; normalisers are fitted before them); :func:`heldout_metrics`
is the common yardstick: ``val_pinball_vol`` (mean pinball loss of the log realised-volatility
quantiles over horizons 1..H, normalised units) and the day-1 return metrics of
``training.validation_metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from domains.finance.config import spec_from_config
from domains.finance.data import PANEL_DATASET, PriceDataError, load_panel_data
from domains.finance.features import QUANTILES, FoldScaler, PanelTensors, base_features, observed_inputs
from domains.finance.metrics import pinball_rows
from domains.finance.model import Forecaster, TFTSpec, create_model, predict_quantiles
from domains.finance.training import input_report, validation_metrics

__all__ = ["TrustDataConfig", "Prepared", "prepare", "new_model", "heldout_metrics", "forecaster"]


@dataclass
class TrustDataConfig:
    val_days: int = field(default=63, metadata={"help": "last trading days held out (the common evaluation period of central, federated and private training)"})
    covariates: bool = field(default=True, metadata={"help": "read the bundled VIX/WTI covariates"})


@dataclass
class Prepared:
    feat: pd.DataFrame
    spec: TFTSpec
    cutoff: pd.Timestamp
    tickers: list[str]
    scaler: FoldScaler
    info: dict
    T: PanelTensors | None = None
    train_o: np.ndarray | None = None
    val_o: np.ndarray | None = None


def prepare(cfg) -> Prepared:
    """Panel, features, held-out cutoff, normalisers and tensors for ``cfg`` (a config with the
    data, model and ``TrustDataConfig`` fields)."""
    data = load_panel_data(cfg.data, cfg.tickers, **cfg.data_options())
    feat = base_features(data.panel, data.covariates if cfg.covariates else None)
    dates = np.sort(feat["date"].unique())
    spec = spec_from_config(cfg, observed_inputs(feat))
    if cfg.val_days <= 0 or cfg.val_days >= len(dates) - spec.encoder_length - spec.horizon:
        raise PriceDataError(f"--val-days {cfg.val_days}: must be > 0 and leave a training history ({len(dates)} trading days in the data)")
    cutoff = pd.Timestamp(dates[-1 - cfg.val_days])
    tickers = sorted(feat["ticker"].unique())
    scaler = FoldScaler.fit(feat, cutoff)
    info = {"cutoff": str(cutoff.date()), "data": cfg.data or PANEL_DATASET, "data_options": cfg.data_options(),
            "covariates": bool(cfg.covariates), **input_report(feat, spec.observed_reals)}
    p = Prepared(feat, spec, cutoff, tickers, scaler, info)
    fc = Forecaster(new_model(p, cfg.lr), spec, scaler, tickers, info)
    p.T = fc.tensors(scaler.transform(feat))
    all_o = p.T.origins()
    p.train_o = all_o[p.T.targets_by(all_o, cutoff)]
    p.val_o = all_o[p.T.dates[all_o] > np.datetime64(cutoff)]
    if not len(p.train_o) or not len(p.val_o):
        raise PriceDataError(f"need training windows before and held-out windows after {cutoff:%Y-%m-%d} (--val-days {cfg.val_days})")
    return p


def new_model(p: Prepared, lr: float = 3e-3) -> torch.nn.Module:
    """A fresh TFT from the registry (the same builder as central training)."""
    return create_model("tft", spec=p.spec, tickers=p.tickers, learning_rate=lr)


def heldout_metrics(model: torch.nn.Module, p: Prepared) -> dict:
    """``val_pinball_vol`` (+ the day-1 return metrics) of ``model`` on the held-out origins."""
    fc = Forecaster(model, p.spec, p.scaler, p.tickers, p.info)
    T, o = p.T, p.val_o
    pred = predict_quantiles(model, T, o)["lrv_z"]  # (n, H, Q), normalised log realised vol
    losses = []
    for h in range(p.spec.horizon):
        y = T.targets[torch.as_tensor(o + h + 1), 1].numpy()
        ok = np.isfinite(y)
        losses.append(pinball_rows(y[ok], pred[ok, h, :], QUANTILES))
    return {"val_pinball_vol": float(np.concatenate(losses).mean()), **validation_metrics(fc, T, o)}


def forecaster(model: torch.nn.Module, p: Prepared, extra: dict) -> Forecaster:
    """The saveable forecaster of ``model`` (``extra`` goes into its info, e.g. the privacy budget)."""
    return Forecaster(model, p.spec, p.scaler, p.tickers, {**p.info, **extra})
