"""Differentially private training of the finance TFT (DP-SGD with Opacus): the library under
``python -m domains.finance.train_private``.

Privacy unit: ONE TRAINING WINDOW (a ticker's ``encoder_length + horizon`` consecutive days of
returns and inputs). Every step samples each window independently with probability
``batch_size / windows`` (Poisson sampling, what the accountant assumes), clips each window's
gradient to ``max_grad_norm`` and adds Gaussian noise (Opacus's ``DPOptimizer``); ε at ``delta``
comes from Opacus's PRV (or RDP) accountant. This protects one window, not a ticker's whole
history and not one day: a day's return sits in up to ``encoder_length + horizon`` windows, so
per-day or per-ticker guarantees are weaker (group privacy). There are no customers or persons in
this data; the unit is stated so that a reviewer can judge what the ε means.

Why per-window gradients by micro-batching: Opacus's hook-based grad sampler cannot follow the
pytorch-forecasting TFT (measured: ``nn.LSTM`` with packed sequences is unsupported, and with the
LSTMs swapped for ``opacus.layers.DPLSTM`` the hooks fail with "No activations detected" on the
TFT's shared/re-used layers). ``core.privacy.compute_grad_samples`` computes the exact per-window
gradients with one backward pass per window and hands them to Opacus's ``DPOptimizer``; clipping,
noise and accounting are Opacus's. ε = ∞ runs the same code with noise 0 and no clipping.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch

from core.config import RunConfig, SeedConfig, TrackingConfig
from core.logging import get_logger
from core.privacy import DPConfig, compute_grad_samples, epsilon_spent, make_dp_optimizer, poisson_batches
from domains.finance.config import DataConfig, ModelConfig, ThreadsConfig
from domains.finance.model import pinball_loss
from domains.finance.trust import Prepared, TrustDataConfig, heldout_metrics

__all__ = ["PrivateConfig", "PRIVACY_UNIT", "train_private_model"]

log = get_logger("finance.private")
PRIVACY_UNIT = "one training window (one ticker's encoder_length + horizon consecutive trading days)"


@dataclass
class PrivateConfig(DPConfig, TrustDataConfig, ModelConfig, DataConfig, ThreadsConfig, TrackingConfig, SeedConfig, RunConfig):
    steps: int = field(default=100, metadata={"help": "DP-SGD steps"})
    batch_size: int = field(default=64, metadata={"help": "expected windows per step (sampling rate = batch_size / training windows)"})
    lr: float = field(default=3e-3, metadata={"help": "Adam learning rate"})


def train_private_model(cfg: PrivateConfig, p: Prepared, initial: torch.nn.Module, run=None) -> tuple[torch.nn.Module, dict]:
    """DP-SGD from ``initial`` (left unchanged) on ``p``'s training windows; returns (model, metrics
    with the accountant's ε, δ, the noise multiplier and the held-out metrics)."""
    model = copy.deepcopy(initial)
    n = len(p.train_o)
    q, noise, clip = cfg.plan(cfg.batch_size, n, cfg.steps, unit="windows")
    private = not math.isinf(cfg.epsilon)
    opt = make_dp_optimizer(torch.optim.Adam(model.parameters(), lr=cfg.lr), noise_multiplier=noise, max_grad_norm=clip,
                            expected_batch_size=cfg.batch_size, seed=cfg.seed)
    params = [p_ for p_ in model.parameters() if p_.requires_grad]
    t0 = time.perf_counter()
    model.train()
    run_loss, clipped = 0.0, 0
    for step, idx in enumerate(poisson_batches(n, q, cfg.steps, seed=cfg.seed)):
        opt.zero_grad(set_to_none=True)
        origins = p.train_o[idx]
        if len(origins):
            def sample_loss(i: int) -> torch.Tensor:
                nonlocal run_loss
                x, y = p.T.batch(origins[i:i + 1])
                loss = pinball_loss(model, model(x)["prediction"], y)
                run_loss += float(loss) / len(origins)
                return loss

            compute_grad_samples(model, sample_loss, len(origins))
            norms = torch.stack([g.reshape(len(origins), -1).norm(dim=1) for g in (q_.grad_sample for q_ in params)], 1).norm(dim=1)
            clipped += int((norms > clip).sum())
        else:  # an empty Poisson batch: noise only
            for q_ in params:
                q_.grad_sample = torch.zeros((1, *q_.shape))
        opt.step()
        if run is not None and (step + 1) % 10 == 0:
            run.log_metrics({"train_pinball": run_loss / (step + 1)}, step=step + 1)
    model.eval()
    eps = epsilon_spent(noise, q, cfg.steps, cfg.delta, cfg.accountant)
    metrics = {**heldout_metrics(model, p), "epsilon": eps, "target_epsilon": cfg.epsilon, "delta": cfg.delta, "noise_multiplier": noise,
               "max_grad_norm": cfg.max_grad_norm if private else None, "sample_rate": q, "steps": cfg.steps, "training_windows": n,
               "clipped_fraction": clipped / max(1, cfg.steps * cfg.batch_size), "accountant": cfg.accountant, "privacy_unit": PRIVACY_UNIT,
               "seconds": round(time.perf_counter() - t0, 1), "cutoff": str(p.cutoff.date())}
    log.info(f"DP-SGD: ε={eps:.3g} at δ={cfg.delta:g}, noise {noise:.3g}, held-out vol pinball {metrics['val_pinball_vol']:.4f}")
    return model, metrics
