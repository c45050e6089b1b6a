"""One global Temporal Fusion Transformer (pytorch-forecasting) across tickers.

The network is pytorch-forecasting's ``TemporalFusionTransformer`` built ``from_dataset`` on a
tiny ``TimeSeriesDataSet`` template (so variable roles, embeddings and the two-target
``MultiLoss([QuantileLoss, QuantileLoss])`` are exactly the library's), with identity scalers:
all normalisation is done by our fold-fitted :class:`~domains.finance.features.FoldScaler`.
Training and prediction then run on :class:`~domains.finance.features.PanelTensors` batches —
the library's ``TimeSeriesDataSet`` pipeline is only the reference in ``bench/finance.py``.

A trained :class:`Forecaster` is saved as ``model.safetensors`` (weights) + ``forecaster.json``
(the model's registry entry ``{"name", "kwargs"}``, tickers, scaler, inputs) — no pickles;
:meth:`Forecaster.load` rebuilds the network with :func:`create_model` and loads the weights safely.

Registry (timm's ``register_model``/``create_model`` pattern): :data:`MODELS` maps a name to a
builder; :func:`model_entry` is what a run stores, :func:`create_model` what train, backtest,
forecast, score, transfer and the dashboards call to rebuild it.
"""

from __future__ import annotations

import json
import math
import threading
import warnings
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from core.checkpoint import CheckpointError, load_weights, save_weights
from core.io import atomic_write_json
from core.logging import get_logger
from core.progress import progress
from core.registry import Registry
from domains.finance.data import PriceDataError
from domains.finance.features import GARCH_REALS, KNOWN_REALS, OBSERVED_REALS, OPTIONAL_REALS, QUANTILES, TARGETS, FoldScaler, PanelTensors, observed_inputs

__all__ = ["TFTSpec", "MODELS", "register_model", "create_model", "model_entry", "build_tft", "build_timeseries_dataset", "Forecaster", "is_garch_informed",
           "fit", "training_objective", "evaluate_objective", "qlike_loss", "qlike_of_log_ratio", "variance_qlike_loss", "add_variance_head", "has_variance_head", "variance_output", "vol_output_name", "predict_quantiles",
           "quantile_columns", "quantile_rows"]

log = get_logger("finance.model")
warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module` and is already saved during checkpointing.*")
warnings.filterwarnings("ignore", message=".*Attribute 'loss' is an instance of `nn.Module`.*")
warnings.filterwarnings("ignore", message=".*Attribute 'logging_metrics' is an instance of `nn.Module`.*")
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


@dataclass
class TFTSpec:
    encoder_length: int = 63
    horizon: int = 5
    hidden_size: int = 16
    attention_heads: int = 2
    hidden_continuous_size: int = 8
    lstm_layers: int = 1
    dropout: float = 0.1
    quantiles: tuple[float, ...] = QUANTILES
    observed_reals: tuple[str, ...] = tuple(OBSERVED_REALS)  # the observed inputs (features.observed_inputs of the training panel)
    variance_head: bool = False  # a dedicated variance output (see add_variance_head); runs saved without the field have none

    @classmethod
    def from_dict(cls, d: dict) -> "TFTSpec":
        d = dict(d)
        d["quantiles"] = tuple(d["quantiles"])
        d["observed_reals"] = tuple(d.get("observed_reals", OBSERVED_REALS))
        return cls(**d)


def quantile_columns(quantiles=QUANTILES) -> list[str]:
    return [f"q_{q:g}" for q in quantiles]


def quantile_rows(q: np.ndarray, target: str, horizon: int, *, ticker, origin, date=None, **extra) -> pd.DataFrame:
    """One row per forecast of one (target, horizon): ``ticker, origin, [date,] horizon, target,
    q_0.01..q_0.99`` from quantiles ``q`` (n, Q), then the ``extra`` columns (e.g. realised ``y``)."""
    df = pd.DataFrame(q, columns=quantile_columns(QUANTILES))
    lead = {"ticker": ticker, "origin": origin, **({} if date is None else {"date": date}), "horizon": horizon, "target": target}
    for i, (k, v) in enumerate(lead.items()):
        df.insert(i, k, v)
    return df.assign(**extra)


def _template_frame(tickers: list[str], spec: TFTSpec) -> pd.DataFrame:
    n = spec.encoder_length + spec.horizon + 1
    rows = []
    for t in tickers:
        d = {"ticker": t, "time_idx": np.arange(n)}
        for c in KNOWN_REALS + list(spec.observed_reals):
            d[c] = np.zeros(n, dtype=np.float32)
        rows.append(pd.DataFrame(d))
    return pd.concat(rows, ignore_index=True)


def build_timeseries_dataset(frame: pd.DataFrame, spec: TFTSpec, tickers: list[str], predict: bool = False):
    """pytorch-forecasting's ``TimeSeriesDataSet`` over an already-scaled frame (needs a
    ``time_idx`` column): used as the model template and as the library reference in benchmarks."""
    from pytorch_forecasting import TimeSeriesDataSet
    from pytorch_forecasting.data import MultiNormalizer, NaNLabelEncoder, TorchNormalizer

    encoder = NaNLabelEncoder(add_nan=True).fit(pd.Series(sorted(tickers)))
    return TimeSeriesDataSet(
        frame,
        time_idx="time_idx",
        target=list(TARGETS),
        group_ids=["ticker"],
        max_encoder_length=spec.encoder_length,
        min_encoder_length=spec.encoder_length,
        max_prediction_length=spec.horizon,
        min_prediction_length=spec.horizon,
        static_categoricals=["ticker"],
        time_varying_known_reals=list(KNOWN_REALS),
        time_varying_unknown_reals=list(spec.observed_reals),
        target_normalizer=MultiNormalizer([TorchNormalizer(method="identity") for _ in TARGETS]),
        scalers={c: None for c in KNOWN_REALS + list(spec.observed_reals) if c not in TARGETS},
        categorical_encoders={"ticker": encoder},
        add_relative_time_idx=False,
        add_target_scales=False,
        add_encoder_length=False,
        predict_mode=predict,
    )


MODELS: Registry[Callable] = Registry("finance model", error=CheckpointError)


def register_model(fn: Callable) -> Callable:
    """Register a model builder under its function name (``fn(spec: TFTSpec, tickers, **kw)``)."""
    return MODELS.register(fn.__name__, fn)


def model_entry(spec: TFTSpec, tickers: list[str], name: str = "tft") -> dict:
    """What a run stores to rebuild its network: ``{"name": ..., "kwargs": {...}}`` (JSON)."""
    return {"name": name, "kwargs": {"spec": asdict(spec), "tickers": sorted(tickers)}}


def create_model(name: str, **kwargs):
    """Build the registered model ``name`` from stored kwargs (``spec`` may be a dict)."""
    builder = MODELS.lookup(name)
    if isinstance(kwargs.get("spec"), dict):
        kwargs["spec"] = TFTSpec.from_dict(kwargs["spec"])
    return builder(**kwargs)


@register_model
def tft(spec: TFTSpec, tickers: list[str], learning_rate: float = 3e-3):
    """pytorch-forecasting's Temporal Fusion Transformer for ``tickers`` (see :func:`build_tft`)."""
    return build_tft(spec, tickers, learning_rate)


def build_tft(spec: TFTSpec, tickers: list[str], learning_rate: float = 3e-3):
    """A fresh TFT for ``tickers`` (embedding index = position in ``sorted(tickers)`` + 1; index 0
    is the "unknown ticker" row, see :meth:`Forecaster.zero_shot`)."""
    from pytorch_forecasting import TemporalFusionTransformer
    from pytorch_forecasting.metrics import MultiLoss, QuantileLoss

    tsd = build_timeseries_dataset(_template_frame(sorted(tickers), spec), spec, tickers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TemporalFusionTransformer.from_dataset(
            tsd,
            hidden_size=spec.hidden_size,
            attention_head_size=spec.attention_heads,
            hidden_continuous_size=spec.hidden_continuous_size,
            lstm_layers=spec.lstm_layers,
            dropout=spec.dropout,
            loss=MultiLoss([QuantileLoss(quantiles=list(spec.quantiles)) for _ in TARGETS]),
            learning_rate=learning_rate,
            log_interval=-1,
            reduce_on_plateau_patience=1000,
        )
    model.ticker_index = {t: int(i) for t, i in tsd.categorical_encoders["ticker"].classes_.items()}
    # the heads fine-tuning trains in full (core.finetune.head_names): the log-vol quantile output, and the variance head when added
    model.suite_heads = [vol_output_name(model)]
    if spec.variance_head:
        add_variance_head(model, spec.hidden_size)
    return model


I50 = list(QUANTILES).index(0.5)


def add_variance_head(model, hidden_size: int) -> None:
    """Give ``model`` a dedicated variance output (``--variance-head W``): per horizon, the log-vol point
    h = (the model's own median log-vol quantile, detached) + ``variance_head``(the decoder representation the
    quantile output layers read), so E[rv²] is forecast as exp(2·h) in the target's units (rv² at z = h) and
    ``variance_head`` is a learned log-multiplier of the median — zero weights: the median itself; its bias
    is set to the QLIKE-optimal constant by ``training.init_output_bias``. Trained with QLIKE against the
    realised vol (:func:`variance_qlike_loss`); the quantiles (pinball, VaR) are computed exactly as without it.
    The head runs inside the forward, in a hook on the log-vol output layer (it reads that layer's input), so the
    library's forward, :func:`_forward_from_embeddings` and DDP all see it; its output is tied into the layer's
    output by adding 0 × it (numerically nothing) so DDP finds the head's parameters in the forward's graph.
    The hook (:class:`_VarianceTap`) keeps the head's output per thread and per model, so concurrent
    forecasts from one model (dashboard sessions share a cached model across threads) read their own, and a
    deep copy of the model (int8/ONNX export, federated and private copies) runs and reads its own head."""
    head = torch.nn.Linear(hidden_size, 1)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    model.variance_head = head
    model.suite_heads = [*getattr(model, "suite_heads", [vol_output_name(model)]), "variance_head"]
    model.get_submodule(vol_output_name(model)).register_forward_hook(_VarianceTap(model))


def vol_output_name(model) -> str:
    """The module name of the TFT's log-vol quantile output layer."""
    return f"output_layer.{TARGETS.index('lrv_z')}" if isinstance(model.output_layer, torch.nn.ModuleList) else "output_layer"


class _Tapped(threading.local):
    """Per thread: model -> the variance head's output of that model's last forward (weak keys: a dropped model's entry goes)."""

    def __init__(self) -> None:
        self.outputs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


_TAPPED = _Tapped()


class _VarianceTap:
    """The forward hook of :func:`add_variance_head`. An object holding its model (not a closure): a deep copy
    of the model copies the hook with it and the copy's hook runs the copy's head."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, module, args, output):
        delta = self.model.variance_head(args[0]).squeeze(-1)  # (B, H) log-multiplier of the median
        _TAPPED.outputs[self.model] = delta
        return output + 0.0 * delta.unsqueeze(-1)


def has_variance_head(model) -> bool:
    return isinstance(getattr(model, "variance_head", None), torch.nn.Module)


def variance_output(model, lrv_pred: torch.Tensor) -> torch.Tensor:
    """The variance head's log-vol point h (B, H) for the forward pass that produced ``lrv_pred``
    (B, H, Q), the log-vol quantiles in the model's units: E[rv²] = rv² at z = h."""
    med = torch.sort(lrv_pred, dim=-1).values[..., I50].detach()
    delta = _TAPPED.outputs.get(model)
    if delta is None:
        raise RuntimeError("variance_output: this thread has run no forward pass of this model")
    return med + delta


def qlike_of_log_ratio(u: torch.Tensor, cap: float = 0.0) -> torch.Tensor:
    """QLIKE = 1/M + log M − 1 as a function of u = log M, M = forecast variance / rv². ``cap`` c > 0 bounds
    the gradient for forecasts far too low: below u = −c the loss continues along its tangent at −c (slope
    1 − e^c), so one row whose realised variance is e^20 times its forecast cannot steer a whole batch;
    unchanged for u ≥ −c (c = 5: realised vol ≥ 12× the forecast). 0 = plain QLIKE (u clamped at ±20)."""
    u = torch.clamp(u, -20, 20)
    if not cap:
        return torch.exp(-u) + u - 1.0
    c = torch.as_tensor(float(cap), dtype=u.dtype)
    lo = torch.exp(c) - c - 1.0 + (1.0 - torch.exp(c)) * (u + c)
    return torch.where(u >= -c, torch.exp(-torch.maximum(u, -c)) + u - 1.0, lo)


def variance_qlike_loss(h: torch.Tensor, y: torch.Tensor, scale: torch.Tensor, cap: float = 0.0) -> torch.Tensor:
    """QLIKE of the variance head's forecast, per forecast: ``h`` and the realised ``y`` (B, H) in
    standardised log-vol units (as :func:`qlike_loss`), ``scale`` (B,) the ticker's sd of log rvol.
    M = forecast variance / rv² = exp(2·scale·(h − y)); QLIKE = 1/M + log M − 1 (``cap``: :func:`qlike_of_log_ratio`)."""
    return qlike_of_log_ratio(2 * scale[:, None] * (h - y), cap)


def pinball_loss(model, out_pred: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """Mean of pytorch-forecasting's ``QuantileLoss`` over both targets (normalised units)."""
    total = 0.0
    for metric, p, y in zip(model.loss.metrics, out_pred, targets):
        total = total + metric.loss(p, y).mean()
    return total / len(targets)


def qlike_loss(z_q: torch.Tensor, y: torch.Tensor, scale: torch.Tensor, quantiles=QUANTILES, cap: float = 0.0) -> torch.Tensor:
    """QLIKE of the variance forecast E[rv²] implied by log-vol quantiles, per forecast: ``z_q`` (B, H, Q)
    and the realised ``y`` (B, H) in standardised log-vol units (``lrv_z``, or its GARCH-informed
    offset — the origin's offset cancels), ``scale`` (B,) the ticker's sd of log rvol (rv = exp(scale·z + c)).
    E[rv²] uses the rule of :func:`domains.finance.metrics.second_moment_from_quantiles` (piecewise linear
    quantile function in vol units, linear tails clipped at 0), computed relative to the realised vol:
    QLIKE = 1/M + log M − 1 with M = E[rv²] / rv² (``cap``: :func:`qlike_of_log_ratio`)."""
    b = torch.exp(torch.clamp(scale[:, None, None] * (torch.sort(z_q, dim=-1).values - y[..., None]), -20, 20))  # quantiles / realised vol
    p = torch.as_tensor(quantiles, dtype=b.dtype)
    lo = torch.clamp(b[..., 0] - (b[..., 1] - b[..., 0]) / (p[1] - p[0]) * p[0], min=0.0)
    hi = b[..., -1] + (b[..., -1] - b[..., -2]) / (p[-1] - p[-2]) * (1 - p[-1])
    knots = torch.cat([lo[..., None], b, hi[..., None]], dim=-1)
    w = torch.diff(torch.cat([torch.zeros(1, dtype=b.dtype), p, torch.ones(1, dtype=b.dtype)]))
    m = torch.clamp(torch.sum(w * (knots[..., :-1] ** 2 + knots[..., :-1] * knots[..., 1:] + knots[..., 1:] ** 2) / 3, dim=-1), min=1e-8)
    if not cap:
        return 1.0 / m + torch.log(m) - 1.0
    return qlike_of_log_ratio(torch.log(m), cap)


def training_objective(model, out: dict, y: list[torch.Tensor], tensors: PanelTensors, idx, *, qlike_weight: float = 0.0,
                       variance_weight: float = 0.0, qlike_cap: float = 0.0) -> torch.Tensor:
    """The loss :func:`fit` minimises for one batch: the model output ``out`` and targets ``y`` of windows
    ``idx`` (``tensors.batch(idx)``, model units) — pinball, plus ``qlike_weight`` × the mean :func:`qlike_loss` of
    the realised-vol quantiles, plus ``variance_weight`` × the variance head's mean :func:`variance_qlike_loss`."""
    loss = pinball_loss(model, out["prediction"], y)
    if not (qlike_weight or (variance_weight and has_variance_head(model))):
        return loss
    if tensors.vol_scale is None:
        raise ValueError("the QLIKE terms need PanelTensors built with vol_scale (Forecaster.tensors)")
    scale = tensors.vol_scale[torch.as_tensor(np.asarray(idx))]
    if qlike_weight:
        loss = loss + qlike_weight * qlike_loss(out["prediction"][1], y[1], scale, cap=qlike_cap).mean()
    if variance_weight and has_variance_head(model):
        h = variance_output(model, out["prediction"][1])
        loss = loss + variance_weight * variance_qlike_loss(h, y[1], scale, cap=qlike_cap).mean()
    return loss


@torch.no_grad()
def evaluate_objective(model, tensors: PanelTensors, origins: np.ndarray, *, batch_size: int = 1024, qlike_weight: float = 0.0,
                       variance_weight: float = 0.0, qlike_cap: float = 0.0) -> float:
    """:func:`training_objective` over windows ``origins`` with the model in eval mode (no dropout), the
    mean over windows: what ``--select-on loss`` keeps the best epoch by."""
    model.eval()
    origins = np.asarray(origins, dtype=np.int64)
    total = 0.0
    for s in range(0, len(origins), batch_size):
        idx = origins[s:s + batch_size]
        x, y = tensors.batch(idx)
        loss = training_objective(model, model(x), y, tensors, idx, qlike_weight=qlike_weight, variance_weight=variance_weight, qlike_cap=qlike_cap)
        total += float(loss) * len(idx)
    return total / max(len(origins), 1)


def fit(model, tensors: PanelTensors, origins: np.ndarray, *, epochs: int = 3, batch_size: int = 128,
        max_batches: int | None = 60, lr: float = 3e-3, weight_decay: float = 1e-5, seed: int = 0,
        optimizer: torch.optim.Optimizer | None = None, start_epoch: int = 0,
        on_epoch_end: Callable[[int, float, torch.optim.Optimizer], None] | None = None, desc: str = "train",
        data_parallel=None, qlike_weight: float = 0.0, variance_weight: float = 0.0, qlike_cap: float = 0.0,
        of_epochs: int | None = None) -> list[float]:
    """Plain mini-batch training on pre-built tensors (random origins each epoch). Returns the
    mean training loss per epoch (pinball, plus the QLIKE term below when ``qlike_weight``). ``data_parallel`` (a :class:`core.distributed.DataParallel` under
    torchrun): each rank trains on its own 1/world of every epoch's shuffled windows through DDP.
    ``qlike_weight`` > 0 adds that times the mean :func:`qlike_loss` of the realised-vol quantiles
    (every horizon) to the pinball loss (needs ``tensors.vol_scale``); ``variance_weight`` > 0, for a model with a
    variance head (:func:`add_variance_head`), adds that times the mean :func:`variance_qlike_loss` of its output.
    ``qlike_cap`` > 0 bounds both QLIKE terms' gradient for far-too-low forecasts (:func:`qlike_of_log_ratio`).
    ``of_epochs``: the whole budget, for the progress label only, when a caller runs one epoch per call."""
    from core.distributed import DataParallel

    if len(origins) == 0:
        raise PriceDataError("no training windows: the history is shorter than encoder_length + horizon")
    dp = data_parallel or DataParallel()
    net = dp.wrap(model, find_unused_parameters=True)  # the TFT leaves some inputs' selection weights unused
    opt = optimizer or torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    shard = len(origins) // dp.world_size  # every rank runs the same number of steps
    if shard == 0:
        raise PriceDataError(f"{len(origins)} training windows cannot be split over {dp.world_size} processes")
    n_batches = math.ceil(shard / batch_size)
    if max_batches:
        n_batches = min(n_batches, max_batches)
    losses = []
    model.train()
    total = max(of_epochs or epochs, epochs)
    for epoch in range(start_epoch, epochs):
        # one generator per epoch: a resumed run draws the same windows as an uninterrupted one
        perm = torch.randperm(len(origins), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        perm = perm[dp.rank::dp.world_size][:shard]  # this rank's disjoint share (all of it in one process)
        run = 0.0
        bar = progress(range(n_batches), desc=f"{desc} epoch {epoch + 1}/{total}", leave=False, disable=not dp.is_main)
        for b in bar:
            idx = origins[perm[b * batch_size:(b + 1) * batch_size].numpy()]
            x, y = tensors.batch(idx)
            out = net(x)
            loss = training_objective(model, out, y, tensors, idx, qlike_weight=qlike_weight, variance_weight=variance_weight, qlike_cap=qlike_cap)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
            run += loss.item()
            bar.set_postfix(loss=f"{run / (b + 1):.4f}")
        losses.append(dp.mean(run / n_batches))
        what = f"pinball + {qlike_weight:g} x QLIKE" if qlike_weight else "pinball"
        if variance_weight and has_variance_head(model):
            what += f" + {variance_weight:g} x variance-head QLIKE"
        log.info(f"{desc} epoch {epoch + 1}/{total}: {what} {losses[-1]:.4f} ({n_batches} batches)")
        if on_epoch_end is not None:
            on_epoch_end(epoch, losses[-1], opt)
    model.eval()
    return losses


@torch.no_grad()
def _row_embeddings(model, tensors: PanelTensors, rows: np.ndarray, chunk: int = 8192):
    """Variable selection of every needed panel row, once.

    In the TFT the static, encoder and decoder variable-selection networks act on each time step
    independently (given the ticker's static context), so a row's selected embedding is the same
    in every window that contains it. Computing it per row instead of per (window, position)
    removes ~(L+H)x redundant work; the LSTM, attention and output layers still run per window."""
    enc, dec, stat = [], [], []
    observed = tensors.decoder_mask
    for s in range(0, len(rows), chunk):
        r = torch.as_tensor(rows[s:s + chunk], dtype=torch.long)
        cat = tensors.codes[r].view(-1, 1, 1)
        cont = tensors.values[r].unsqueeze(1)
        iv = model.input_embeddings(cat)
        iv.update({name: cont[..., i].unsqueeze(-1) for i, name in enumerate(model.hparams.x_reals) if name in model.reals})
        static_embedding, _ = model.static_variable_selection({n: iv[n][:, 0] for n in model.static_variables})
        ctx = model.static_context_variable_selection(static_embedding)[:, None]
        e, _ = model.encoder_variable_selection({n: iv[n] for n in model.encoder_variables}, ctx)
        dcont = (cont * observed)  # the decoder sees calendar inputs only (as in PanelTensors.batch)
        div = dict(iv)
        div.update({name: dcont[..., i].unsqueeze(-1) for i, name in enumerate(model.hparams.x_reals) if name in model.reals})
        d, _ = model.decoder_variable_selection({n: div[n] for n in model.decoder_variables}, ctx)
        enc.append(e[:, 0]); dec.append(d[:, 0]); stat.append(static_embedding)
    return torch.cat(enc), torch.cat(dec), torch.cat(stat)


def _forward_from_embeddings(model, emb_enc, emb_dec, static_embedding):
    """The TFT forward after variable selection (mirrors TemporalFusionTransformer.forward for
    full-length windows): LSTM encoder/decoder, gates, static enrichment, attention, output."""
    B, L, H = emb_enc.size(0), emb_enc.size(1), emb_dec.size(1)
    enc_len = torch.full((B,), L, dtype=torch.long)
    dec_len = torch.full((B,), H, dtype=torch.long)
    ih = model.static_context_initial_hidden_lstm(static_embedding).expand(model.hparams.lstm_layers, -1, -1)
    ic = model.static_context_initial_cell_lstm(static_embedding).expand(model.hparams.lstm_layers, -1, -1)
    enc_out, (h, c) = model.lstm_encoder(emb_enc, (ih, ic), lengths=enc_len, enforce_sorted=False)
    dec_out, _ = model.lstm_decoder(emb_dec, (h, c), lengths=dec_len, enforce_sorted=False)
    lo_enc = model.post_lstm_add_norm_encoder(model.post_lstm_gate_encoder(enc_out), emb_enc)
    lo_dec = model.post_lstm_add_norm_decoder(model.post_lstm_gate_decoder(dec_out), emb_dec)
    lstm_output = torch.cat([lo_enc, lo_dec], dim=1)
    enrich = model.static_context_enrichment(static_embedding)
    attn_input = model.static_enrichment(lstm_output, model.expand_static_context(enrich, L + H))
    attn_output, _ = model.multihead_attn(q=attn_input[:, L:], k=attn_input, v=attn_input,
                                          mask=model.get_attention_mask(encoder_lengths=enc_len, decoder_lengths=dec_len))
    attn_output = model.post_attn_gate_norm(attn_output, attn_input[:, L:])
    output = model.pos_wise_ff(attn_output)
    output = model.pre_output_gate_norm(output, lstm_output[:, L:])
    if model.n_targets > 1:
        return [layer(output) for layer in model.output_layer]
    return [model.output_layer(output)]


@torch.no_grad()
def predict_quantiles(model, tensors: PanelTensors, origins: np.ndarray, batch_size: int = 2048, return_attention: bool = False,
                      with_variance: bool = False):
    """Batched prediction on pre-built tensors: normalised quantiles, (n, H, Q) per target,
    sorted along Q. By default variable selection runs once per panel row (see
    :func:`_row_embeddings`); ``return_attention`` uses the library's full forward to also return
    attention and variable-selection weights. ``with_variance`` (a model with a variance head): also
    ``lrv_var`` (n, H), the head's log-vol point in ``lrv_z`` units (E[rv²] = rv² at z = lrv_var)."""
    model.eval()
    origins = np.asarray(origins, dtype=np.int64)
    outs: list[list[np.ndarray]] = [[] for _ in TARGETS]
    with_variance = with_variance and has_variance_head(model)
    var: list[np.ndarray] = []
    if len(origins) == 0:
        empty = {name: np.zeros((0, tensors.H, len(model.loss.metrics[0].quantiles))) for name in TARGETS}
        return {**empty, "lrv_var": np.zeros((0, tensors.H))} if with_variance else empty
    if not return_attention:
        L, H = tensors.L, tensors.H
        rows = (origins[:, None] - (L - 1) + np.arange(L + H)[None, :])
        uniq, inv = np.unique(rows, return_inverse=True)
        inv = torch.as_tensor(inv.reshape(rows.shape))
        enc, dec, stat = _row_embeddings(model, tensors, uniq)
        for s in range(0, len(origins), batch_size):
            ix = inv[s:s + batch_size]
            pred = _forward_from_embeddings(model, enc[ix[:, :L]], dec[ix[:, L:]], stat[ix[:, L - 1]])
            for k, p in enumerate(pred):
                outs[k].append(torch.sort(p, dim=-1).values.numpy())  # identity target normaliser: no rescaling needed
            if with_variance:
                var.append(variance_output(model, pred[1]).numpy())
        res = {name: np.concatenate(o) for name, o in zip(TARGETS, outs)}
        return tensors.from_model_units(origins, {**res, "lrv_var": np.concatenate(var)} if with_variance else res)
    attn, enc_w, dec_w, stat_w = [], [], [], []
    for s in range(0, len(origins), batch_size):
        x, _ = tensors.batch(origins[s:s + batch_size])
        out = model(x)
        for k, p in enumerate(out["prediction"]):
            outs[k].append(torch.sort(p, dim=-1).values.numpy())
        if with_variance:
            var.append(variance_output(model, out["prediction"][1]).numpy())
        attn.append(out["encoder_attention"].mean(dim=2).numpy())  # mean over heads: (n, H, L)
        enc_w.append(out["encoder_variables"].squeeze(-2).mean(dim=1).numpy())
        dec_w.append(out["decoder_variables"].squeeze(-2).mean(dim=1).numpy())
        stat_w.append(out["static_variables"].squeeze(-2).numpy() if out["static_variables"].ndim > 1 else out["static_variables"].numpy())
    res = {name: np.concatenate(o) for name, o in zip(TARGETS, outs)}
    res = tensors.from_model_units(origins, {**res, "lrv_var": np.concatenate(var)} if with_variance else res)
    res.update(attention=np.concatenate(attn), encoder_variables=np.concatenate(enc_w),
               decoder_variables=np.concatenate(dec_w), static_variables=np.concatenate(stat_w))
    return res


def is_garch_informed(fc: "Forecaster | dict") -> bool:
    """True for a forecaster whose quantiles are a correction of a GJR-GARCH-t forecast: a :class:`Forecaster`, or
    the ``forecaster.json`` it saved (:meth:`Forecaster.read_meta`, what ``score``'s driver reads without building
    the model). A file written before its ``garch_informed`` key says so by its scaler's GJR fits."""
    if isinstance(fc, dict):
        return bool(fc.get("garch_informed", (fc.get("scaler") or {}).get("gjr")))
    return bool(fc.scaler.gjr)


@dataclass
class Forecaster:
    """A trained TFT with everything needed to turn a price panel into raw-unit quantiles."""

    model: torch.nn.Module
    spec: TFTSpec
    scaler: FoldScaler
    tickers: list[str]
    info: dict = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)  # tickers forecast zero-shot (see zero_shot)

    def tensors(self, zfeat: pd.DataFrame) -> PanelTensors:
        index = {**self.model.ticker_index, **{t: 0 for t in self.unknown}}
        return PanelTensors(zfeat, list(self.model.hparams.x_reals), index, self.spec.encoder_length, self.spec.horizon, vol_scale=self.scaler.lrv_scale)

    def check_inputs(self, feat: pd.DataFrame, source: str = "the data", model_run: str | Path | None = None) -> None:
        """Refuse, in one line, a panel that lacks inputs this model was trained with (e.g. a price
        file without the VIX/WTI covariates for a model trained on the bundled panel)."""
        have = set(observed_inputs(feat))
        # optional inputs: fed as their mean; GARCH inputs: computed from the prices by the scaler
        missing = [r for r in self.spec.observed_reals if r not in have and r not in OPTIONAL_REALS and r not in GARCH_REALS]
        if missing:
            where = f"the model in {model_run}" if model_run else "this model"
            raise PriceDataError(f"{where} was trained with input(s) {', '.join(missing)} that {source} does not provide "
                                 f"(it supports {', '.join(sorted(have))}); use a model trained without them (`python -m domains.finance.train "
                                 f"--no-covariates`) or on such data (`--data FILE`)")

    def zero_shot(self, feat: pd.DataFrame) -> "Forecaster":
        """This forecaster extended to the tickers of ``feat`` it was not trained on: each gets the
        "unknown ticker" embedding (row 0, set to the mean of the trained tickers' rows) and
        normalisers fitted on its own history; known tickers are unchanged."""
        new = sorted(set(feat["ticker"].unique()) - set(self.tickers))
        if not new:
            return self
        emb = self.model.input_embeddings.embeddings["ticker"]
        known = sorted(i for t, i in self.model.ticker_index.items() if t in set(self.tickers))
        with torch.no_grad():
            emb.weight[0] = emb.weight[known].mean(dim=0)
        return Forecaster(self.model, self.spec, self.scaler.with_own_history(feat, new), self.tickers, dict(self.info), sorted(set(self.unknown) | set(new)))

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        save_weights(directory / "model.safetensors", self.model)
        atomic_write_json(directory / "forecaster.json", {
            "format": "finance-tft-v1", "model": model_entry(self.spec, self.tickers), "spec": asdict(self.spec), "scaler": self.scaler.to_dict(),
            "garch_informed": is_garch_informed(self),  # quantiles = a correction of the scaler's per-ticker GJR-GARCH-t forecast
            "tickers": self.tickers, "ticker_index": self.model.ticker_index, "info": self.info,
            "inputs": {"static_categoricals": ["ticker"], "known_future_reals": KNOWN_REALS, "observed_reals": list(self.spec.observed_reals)},
            "outputs": {"targets": {"ret_z": "daily log return", "lrv_z": "log 5-day realised volatility"},
                        "quantiles": list(self.spec.quantiles), "horizon_days": self.spec.horizon},
        })
        return directory

    @staticmethod
    def read_meta(directory: str | Path) -> dict:
        """The checked ``forecaster.json`` of a saved forecaster, without building the model (no
        pytorch-forecasting import: what a scoring driver reads while its workers load the model)."""
        directory = Path(directory)
        meta_path = directory / "forecaster.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{directory} holds no trained finance forecaster (forecaster.json); train one with `python -m domains.finance.train`")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            raise CheckpointError(f"{meta_path}: not valid JSON ({e}); the model run is damaged (a copy cut short?): train it again") from e
        if not isinstance(meta, dict) or meta.get("format") != "finance-tft-v1":
            raise CheckpointError(f"{meta_path}: unknown format {meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r} (expected finance-tft-v1)")
        return meta

    @classmethod
    def load(cls, directory: str | Path) -> "Forecaster":
        directory = Path(directory)
        meta_path = directory / "forecaster.json"
        meta = cls.read_meta(directory)
        try:
            entry = meta.get("model") or model_entry(TFTSpec.from_dict(meta["spec"]), meta["tickers"])
            model = create_model(entry["name"], **entry["kwargs"])
            spec = TFTSpec.from_dict(entry["kwargs"]["spec"])
            model.ticker_index = {k: int(v) for k, v in meta["ticker_index"].items()}
            scaler, tickers = FoldScaler.from_dict(meta["scaler"]), list(meta["tickers"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{meta_path}: missing or malformed entry ({type(e).__name__}: {e}); the model run is damaged or was "
                                  f"written by another program: train it again") from e
        load_weights(directory / "model.safetensors", model)
        model.eval()
        return cls(model, spec, scaler, tickers, meta.get("info", {}))

    def to_raw(self, tickers: np.ndarray, pred: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Normalised quantiles → log-return and realised-volatility quantiles."""
        raw = {"ret": self.scaler.ret_to_raw(tickers, pred["ret_z"]), "rvol": self.scaler.rvol_to_raw(tickers, pred["lrv_z"])}
        if "lrv_var" in pred:  # the variance head's forecast of rv² (n, H): rv at z = lrv_var, squared
            raw["rvol_var"] = self.scaler.rvol_to_raw(tickers, pred["lrv_var"]) ** 2
        return raw
