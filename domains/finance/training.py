"""Training the global TFT on a panel: the library under the ``train`` command, and the one place a
forecaster is built (:func:`build_forecaster`, :func:`model_spec`, :func:`fit_scaler`) — train,
backtest and transfer all build the GARCH-informed TFT (default) or the plain one through it.

:func:`train_forecaster` holds out the last ``val_days`` trading days (normalisers and weights never
see them), trains with per-epoch checkpoints through the given ``Run`` (so ``--resume`` continues
bit-exactly), and scores the held-out days (:func:`validation_metrics`). The observed inputs are
those the panel supports (``features.observed_inputs``) and are recorded in the forecaster.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from core.checkpoint import CheckpointMismatchError
from domains.finance.config import TrainConfig, spec_from_config
from domains.finance.data import PANEL_DATASET, PriceDataError
from domains.finance.features import GARCH_REALS, GJR_FIT_DAYS, QUANTILES, FoldScaler, PanelTensors, fit_gjr_params, observed_inputs
from domains.finance.metrics import coverage, pinball
from domains.finance.model import Forecaster, TFTSpec, create_model, fit, has_variance_head, is_garch_informed, predict_quantiles

__all__ = ["train_forecaster", "validation_cutoff", "validation_metrics", "input_report", "model_spec", "fit_scaler", "build_forecaster", "init_output_bias", "loss_terms"]


def loss_terms(cfg) -> dict:
    """The training loss's extra terms as :func:`domains.finance.model.fit` takes them, read from a train, backtest or
    transfer config (``TrainingConfig``): ``--qlike-weight``, ``--variance-head`` and ``--qlike-cap``; one place,
    so every command trains on the same loss."""
    return {"qlike_weight": getattr(cfg, "qlike_weight", 0.0), "variance_weight": getattr(cfg, "variance_head", 0.0),
            "qlike_cap": getattr(cfg, "qlike_cap", 0.0)}


def model_spec(cfg, feat: pd.DataFrame) -> TFTSpec:
    """The TFT's shape from ``cfg`` and its observed inputs: those ``feat`` supports
    (``features.observed_inputs``), plus ``gjr_z`` when ``cfg.garch_informed`` (train, backtest, transfer)."""
    return spec_from_config(cfg, observed_inputs(feat) + (list(GARCH_REALS) if getattr(cfg, "garch_informed", False) else []))


def fit_scaler(feat: pd.DataFrame, cutoff, spec: TFTSpec, gjr: dict | None = None, fit_window: int | None = GJR_FIT_DAYS) -> FoldScaler:
    """Normalisers fitted on rows dated ``<= cutoff``; for a GARCH-informed ``spec`` (input ``gjr_z``)
    also one GJR-GARCH-t per ticker: ``gjr[ticker]`` when given (the backtest's ``gjr_t`` baseline
    fits), else fitted on the ticker's last ``fit_window`` returns up to the cutoff."""
    scaler = FoldScaler.fit(feat, cutoff)
    if not set(GARCH_REALS) & set(spec.observed_reals):
        return scaler
    params = dict(gjr or {})
    rest = sorted(set(scaler.ret_scale) - set(params))
    if rest:
        params.update(fit_gjr_params(feat, rest, cutoff=scaler.cutoff, fit_window=fit_window))
    return scaler.with_gjr(params, spec.horizon)


def build_forecaster(cfg, feat: pd.DataFrame, cutoff, tickers: list[str] | None = None, info: dict | None = None,
                     gjr: dict | None = None) -> Forecaster:
    """A fresh (untrained) forecaster for ``feat`` as ``train`` and ``transfer`` build it (the
    backtest builds its members from the same :func:`model_spec` and :func:`fit_scaler`): the TFT of
    :func:`model_spec`, normalisers (and, when ``cfg.garch_informed``, the GJR-GARCH-t fits) from rows
    dated ``<= cutoff``. Call after the run has seeded. ``info`` records ``garch_informed``."""
    spec = model_spec(cfg, feat)
    tickers = sorted(tickers if tickers is not None else feat["ticker"].unique())
    scaler = fit_scaler(feat, cutoff, spec, gjr)
    model = create_model("tft", spec=spec, tickers=tickers, learning_rate=cfg.lr)
    return Forecaster(model, spec, scaler, tickers, {**(info or {}), "garch_informed": bool(scaler.gjr)})


def init_output_bias(model, T: PanelTensors, origins: np.ndarray, seed: int, n: int = 20_000) -> None:
    """Start the quantile outputs at the empirical quantiles of the training targets (over all
    horizons, in the model's units): for a GARCH-informed TFT, the distribution of returns and
    realised volatility relative to GJR's forecast, so an untrained network already forecasts
    "GJR with its empirical standardised quantiles" and training learns the correction."""
    rng = np.random.default_rng(seed)
    o = origins if len(origins) <= n else rng.choice(origins, n, replace=False)
    _, y = T.batch(np.sort(o))
    with torch.no_grad():
        for layer, t in zip(model.output_layer, y):
            v = t.reshape(-1).numpy()
            layer.bias.copy_(torch.as_tensor(np.quantile(v[np.isfinite(v)], QUANTILES), dtype=layer.bias.dtype))
        if has_variance_head(model) and T.vol_scale is not None:  # the head's log-multiplier starts QLIKE-optimal for that median
            v = y[1].numpy()
            model.variance_head.bias.fill_(qlike_optimal_shift(v, float(np.quantile(v[np.isfinite(v)], 0.5)), T.vol_scale[torch.as_tensor(np.sort(o))].numpy()))


def qlike_optimal_shift(y: np.ndarray, m: float, scale: np.ndarray, iters: int = 50) -> float:
    """The constant d minimising mean QLIKE of the forecast rv² at z = m + d against realised ``y`` (n, H)
    in standardised log-vol units, ``scale`` (n,) each row's sd of log rvol (convex in d; Newton steps)."""
    s = np.broadcast_to(scale[:, None], y.shape)
    ok = np.isfinite(y)
    y, s = y[ok], s[ok]
    d = 0.0
    for _ in range(iters):
        e = np.exp(-np.clip(2 * s * (m + d - y), -20, 20))
        step = np.mean(2 * s * (1 - e)) / max(np.mean(4 * s ** 2 * e), 1e-12)
        d -= step
        if abs(step) < 1e-10:
            break
    return float(d)


def input_report(feat: pd.DataFrame, inputs: list[str] | tuple[str, ...]) -> dict:
    """Which inputs a run used, and which tickers had the optional ones (OHLC range, volume)."""
    obs = feat[~feat["is_future"]] if "is_future" in feat else feat
    per = {"range_z": "lrange", "volume_z": "lvolu"}
    out: dict = {"inputs": list(inputs)}
    for name, col in per.items():
        if name in inputs:
            out[f"tickers_with_{name}"] = sorted(obs.loc[obs[col].notna(), "ticker"].unique().tolist())
    return out


def validation_cutoff(cfg, feat: pd.DataFrame) -> pd.Timestamp:
    """The last training day: ``cfg.val_days`` trading days before the panel's end. Refuses (one line) a
    ``--val-days`` that leaves no training history, and tickers whose first price comes after the cutoff —
    e.g. a stock listed 20 years after the others, with a long validation period: nothing to train or
    normalise them on. :func:`train_forecaster` calls it; ``train`` calls it first, before a run exists."""
    dates = np.sort(feat["date"].unique())
    horizon, enc = cfg.horizon, cfg.encoder_length
    if cfg.val_days < 0 or cfg.val_days >= len(dates) - enc - horizon:
        raise PriceDataError(f"--val-days {cfg.val_days}: must be >= 0 and leave a training history ({len(dates)} trading days in the data)")
    cutoff = pd.Timestamp(dates[-1 - cfg.val_days])
    first = feat.groupby("ticker")["date"].min()
    late = first[first > cutoff].sort_values()
    if len(late):
        ex = ", ".join(f"{t} on {d:%Y-%m-%d}" for t, d in late.head(3).items())
        raise PriceDataError(f"--val-days {cfg.val_days}: training ends on {cutoff:%Y-%m-%d}, but {len(late)} ticker(s) start later ({ex}): "
                             f"nothing to train or normalise them on; lower --val-days or leave them out (--tickers)")
    return cutoff


def train_forecaster(cfg: TrainConfig, feat: pd.DataFrame, run, data_parallel) -> tuple[Forecaster, dict]:
    """Build (after the run has seeded), train and validate a forecaster on ``feat``
    (``features.base_features``); returns it and the run's metrics. ``run``: a ``core.runs.Run``
    (checkpoints, metrics, resume); ``data_parallel``: a ``core.distributed.DataParallel``."""
    cutoff = validation_cutoff(cfg, feat)
    fc = build_forecaster(cfg, feat, cutoff, info={"cutoff": str(cutoff.date()), "data": cfg.data or PANEL_DATASET,
                                                    "data_options": cfg.data_options(), "covariates": bool(getattr(cfg, "covariates", True))})
    model, spec, scaler = fc.model, fc.spec, fc.scaler
    fc.info.update(input_report(feat, spec.observed_reals))
    T = fc.tensors(scaler.transform(feat))
    all_o = T.origins()
    train_o = all_o[T.targets_by(all_o, cutoff)]
    if len(train_o) == 0:
        raise PriceDataError(f"no training windows before {cutoff:%Y-%m-%d}: each ticker needs more than encoder_length + horizon = "
                             f"{spec.encoder_length + spec.horizon} trading days before the validation period (--val-days {cfg.val_days})")
    if is_garch_informed(fc):
        init_output_bias(model, T, train_o, cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=1e-5)
    try:
        state = run.resume(model, opt)
    except CheckpointMismatchError as e:  # a damaged file is not about this flag
        other = "--no-garch-informed" if is_garch_informed(fc) else "--garch-informed"
        raise CheckpointMismatchError(f"{e} — was the run started with {other} (train's default became GARCH-informed)? resume it with that flag") from e

    terms = loss_terms(cfg)
    vh = terms["variance_weight"]
    loss_key = "train_loss" if terms["qlike_weight"] or vh else "train_pinball"  # with --qlike-weight/--variance-head the loss is pinball + W x QLIKE (+ W_v x head QLIKE)

    def on_epoch_end(epoch: int, loss: float, optimizer) -> None:
        run.log_metrics({loss_key: loss}, step=epoch + 1)
        run.save_checkpoint(model, optimizer, step=epoch + 1, epoch=epoch + 1, extra={loss_key: loss})

    losses = fit(model, T, train_o, epochs=cfg.epochs, batch_size=cfg.batch_size, max_batches=cfg.max_batches or None,
                 lr=cfg.lr, seed=cfg.seed, optimizer=opt, start_epoch=int(state["epoch"]), on_epoch_end=on_epoch_end,
                 data_parallel=data_parallel, **terms)
    metrics = {"train_windows": int(len(train_o)), "epochs": cfg.epochs, "cutoff": str(cutoff.date()), "world_size": data_parallel.world_size,
               "inputs": ",".join(spec.observed_reals), "garch_informed": is_garch_informed(fc), "qlike_weight": cfg.qlike_weight,
               "variance_head": vh}
    if losses:
        metrics[loss_key] = losses[-1]
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
