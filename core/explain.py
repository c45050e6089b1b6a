"""Domain-agnostic explanation helpers on Captum (issue 17.3).

    attr, delta = integrated_gradients(f, x, baseline, n_steps=32)   # f: (B, *x.shape[1:]) -> (B,) scalar per input
    occ = occlusion(f, x, window=(1, x.shape[-1]), baseline=0.0)     # score change when a window is replaced by the baseline
    deletion_effect(f, x, mask, baseline)                            # f(x) - f(x with the masked part set to the baseline)

``f`` maps a batch of inputs to ONE number per input (a class score, a quantile, ...); the domains wrap
their model into such a function (the finance VaR quantile, a medical structure's mean logit).
Integrated gradients (Sundararajan et al. 2017) satisfy completeness: the attributions sum to
``f(x) - f(baseline)`` up to ``delta`` (reported, so a reader can see how well the path integral
converged). An input equal to its baseline gets exactly zero attribution.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["integrated_gradients", "occlusion", "deletion_effect"]


def integrated_gradients(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, baseline: torch.Tensor | float = 0.0,
                         n_steps: int = 32, internal_batch_size: int | None = None) -> tuple[torch.Tensor, float]:
    """(attributions shaped like ``x``, convergence delta) of ``f`` at ``x`` against ``baseline``
    (Captum ``IntegratedGradients``, Gauss-Legendre steps)."""
    from captum.attr import IntegratedGradients

    x = x.detach().clone().requires_grad_(True)
    base = baseline if isinstance(baseline, torch.Tensor) else torch.full_like(x, float(baseline))
    with torch.enable_grad():
        attr, delta = IntegratedGradients(f).attribute(x, baselines=base.detach(), n_steps=n_steps, return_convergence_delta=True,
                                                       internal_batch_size=internal_batch_size)
    return attr.detach(), float(delta.abs().max())


@torch.no_grad()
def occlusion(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, window: tuple[int, ...], stride: tuple[int, ...] | int = 1,
              baseline: torch.Tensor | float = 0.0, perturbations_per_eval: int = 16) -> torch.Tensor:
    """Occlusion sensitivity (Captum ``Occlusion``): for each position, ``f(x) - f(x with a window
    there replaced by the baseline)``, averaged over the windows covering it. ``window`` excludes
    the batch dimension."""
    from captum.attr import Occlusion

    return Occlusion(f).attribute(x, sliding_window_shapes=tuple(window), strides=stride, baselines=baseline,
                                  perturbations_per_eval=perturbations_per_eval).detach()


@torch.no_grad()
def deletion_effect(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mask: torch.Tensor,
                    baseline: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``f(x) - f(x')`` where ``x'`` is ``x`` with the ``mask``ed entries set to the baseline: how much
    removing that part moves the score (the sanity check of any attribution)."""
    base = baseline if isinstance(baseline, torch.Tensor) else torch.full_like(x, float(baseline))
    return f(x) - f(torch.where(mask.bool(), base, x))
