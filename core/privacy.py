"""Differentially private training (DP-SGD) with Opacus: the domain-agnostic parts.

* :func:`poisson_batches` — each step takes every example independently with probability
  ``sample_rate`` (the sampling the accountant's analysis assumes; Opacus's
  ``UniformWithReplacementSampler`` does the same);
* :func:`compute_grad_samples` — per-example gradients by micro-batching (one backward pass per
  example), stored as ``p.grad_sample`` where Opacus's ``DPOptimizer`` reads them. Exact for any
  model; used where Opacus's hook-based grad sampler cannot follow the model (the finance TFT:
  see domains/finance/private.py);
* :func:`make_dp_optimizer` — Opacus's ``DPOptimizer``: clip each example's gradient to
  ``max_grad_norm``, sum, add Gaussian noise ``noise_multiplier * max_grad_norm``, divide by the
  expected batch size, then the wrapped optimizer's step;
* :func:`noise_for_epsilon` / :func:`epsilon_spent` — Opacus's accountants (``prv`` default,
  ``rdp``): the noise that reaches a target (ε, δ) after ``steps`` steps, and the ε spent.

``noise_multiplier=0`` and ``max_grad_norm=inf`` is the same code without privacy (ε = ∞).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

__all__ = ["ACCOUNTANTS", "DPConfig", "poisson_batches", "compute_grad_samples", "make_dp_optimizer", "noise_for_epsilon", "epsilon_spent"]

ACCOUNTANTS = ("prv", "rdp")


@dataclass
class DPConfig:
    """The DP-SGD settings every private training command takes (a config mixin, combined by
    inheritance like ``core.config``'s): the target (ε, δ), the per-example clipping norm and the
    accountant. One "example" is the domain's privacy unit (a training window, a patch)."""

    epsilon: float = field(default=8.0, metadata={"help": "target privacy budget ε at --delta after --steps steps ('inf' = no noise and no clipping, the same code)",
                                                  "above": 0, "infinite_ok": True, "why": "ε = 0 would need infinite noise; 'inf' trains without noise"})
    delta: float = field(default=1e-5, metadata={"help": "δ of the (ε, δ) guarantee (keep it below 1 / the number of training examples)",
                                                 "above": 0, "below": 1, "why": "δ is a probability of failure"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "per-example gradient clipping norm C (one example = the domain's privacy unit)",
                                                        "above": 0, "why": "a norm of 0 clips every gradient to nothing"})
    accountant: str = field(default="prv", metadata={"help": "Opacus accountant", "choices": list(ACCOUNTANTS)})

    def plan(self, batch_size: int, n: int, steps: int, unit: str = "examples") -> tuple[float, float, float]:
        """(sampling rate q, noise multiplier, clipping norm) of ``steps`` Poisson-sampled steps of
        expected size ``batch_size`` over ``n`` examples reaching this (ε, δ). ε = ∞ is the same code
        without noise and without clipping (a norm far above any gradient's). A batch size that is
        not a sampling rate in (0, 1] is a one-line user error naming the ``unit``."""
        from core.errors import UserInputError

        q = batch_size / n if n else 0.0
        if not 0 < q <= 1:
            raise UserInputError(f"--batch-size {batch_size} for {n} training {unit}: the expected batch must be between 1 and {n}")
        if math.isinf(self.epsilon):
            return q, 0.0, 1e12
        return q, noise_for_epsilon(self.epsilon, self.delta, q, steps, self.accountant), self.max_grad_norm


def poisson_batches(n: int, sample_rate: float, steps: int, seed: int = 0) -> Iterator[np.ndarray]:
    """``steps`` index arrays into ``range(n)``: each index is in a batch with probability
    ``sample_rate``, independently (batches vary in size and may be empty)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        yield torch.nonzero(torch.rand(n, generator=g) < sample_rate).flatten().numpy()


def compute_grad_samples(model: torch.nn.Module, sample_loss: Callable[[int], torch.Tensor], n: int) -> None:
    """Set ``p.grad_sample`` (shape ``(n, *p.shape)``) of every trainable parameter to the gradient
    of ``sample_loss(i)`` for each example ``i < n`` (one backward pass per example)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [torch.zeros((n, *p.shape), dtype=p.dtype) for p in params]
    for i in range(n):
        gs = torch.autograd.grad(sample_loss(i), params, allow_unused=True)
        for buf, g in zip(grads, gs):
            if g is not None:
                buf[i] = g
    for p, buf in zip(params, grads):
        p.grad_sample = buf


def make_dp_optimizer(optimizer: torch.optim.Optimizer, *, noise_multiplier: float, max_grad_norm: float, expected_batch_size: int,
                      seed: int | None = None):
    """Opacus's ``DPOptimizer`` around ``optimizer`` (mean loss reduction over the expected batch)."""
    from opacus.optimizers import DPOptimizer

    gen = None if seed is None else torch.Generator().manual_seed(seed)
    return DPOptimizer(optimizer, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                       expected_batch_size=expected_batch_size, loss_reduction="mean", generator=gen)


def _accountant(name: str):
    from opacus.accountants import PRVAccountant, RDPAccountant

    if name not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {name!r} (choose from {', '.join(ACCOUNTANTS)})")
    return PRVAccountant() if name == "prv" else RDPAccountant()


def noise_for_epsilon(epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "prv") -> float:
    """The noise multiplier that spends ``epsilon`` at ``delta`` after ``steps`` Poisson-sampled steps
    (0 for ε = ∞)."""
    if math.isinf(epsilon):
        return 0.0
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps,
                                      accountant=accountant, epsilon_tolerance=0.01))


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "prv") -> float:
    """ε after ``steps`` steps at ``noise_multiplier`` and ``sample_rate`` (∞ without noise)."""
    if noise_multiplier <= 0:
        return math.inf
    acc = _accountant(accountant)
    acc.history = [(noise_multiplier, sample_rate, steps)]
    return float(acc.get_epsilon(delta=delta))
