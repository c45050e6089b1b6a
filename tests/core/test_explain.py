"""core.explain on functions whose attributions are known in closed form."""

from __future__ import annotations

import pytest
import torch

from core.explain import deletion_effect, integrated_gradients, occlusion


def _f(x: torch.Tensor) -> torch.Tensor:  # (B, 3, 4) -> (B,): a weighted sum plus a product term
    w = torch.arange(12, dtype=x.dtype).view(3, 4)
    return (x * w).sum((1, 2)) + x[:, 0, 0] * x[:, 1, 1]


def test_integrated_gradients_is_complete_and_zero_where_input_equals_baseline():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 4)
    base = torch.zeros_like(x)
    base[0, 2] = x[0, 2]  # row 2 at its baseline: no attribution
    attr, delta = integrated_gradients(_f, x, base, n_steps=16)
    assert attr.shape == x.shape
    assert torch.all(attr[0, 2] == 0)
    assert float(attr.sum()) == pytest.approx(float(_f(x) - _f(base)), abs=1e-4) and delta < 1e-4
    # linear part: attribution = w * (x - baseline) exactly, away from the product term
    w = torch.arange(12, dtype=x.dtype).view(3, 4)
    assert torch.allclose(attr[0, 1, 2:], (w * x)[0, 1, 2:], atol=1e-5)


def test_occlusion_and_deletion_agree_with_the_function():
    x = torch.ones(1, 3, 4)
    occ = occlusion(_f, x, window=(1, 4), stride=(1, 4))  # one window per row
    for r in range(3):
        mask = torch.zeros_like(x, dtype=torch.bool)
        mask[0, r] = True
        eff = float(deletion_effect(_f, x, mask)[0])
        assert torch.allclose(occ[0, r], torch.full((4,), eff))
    assert float(occ[0, 2, 0]) > float(occ[0, 0, 0])  # row 2 carries the largest weights
