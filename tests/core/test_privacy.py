"""core.privacy: Opacus's accountant and DPOptimizer with micro-batched per-example gradients."""

from __future__ import annotations

import math

import pytest
import torch

from core.privacy import compute_grad_samples, epsilon_spent, make_dp_optimizer, noise_for_epsilon, poisson_batches


def test_epsilon_grows_with_steps_and_shrinks_with_noise():
    e = {(s, z): epsilon_spent(z, 0.01, s, 1e-5, "rdp") for s in (100, 1000) for z in (0.8, 2.0)}
    assert e[(1000, 0.8)] > e[(100, 0.8)]
    assert e[(1000, 2.0)] > e[(100, 2.0)]
    assert e[(100, 2.0)] < e[(100, 0.8)]
    assert e[(1000, 2.0)] < e[(1000, 0.8)]
    assert math.isinf(epsilon_spent(0.0, 0.01, 100, 1e-5))


def test_noise_for_epsilon_meets_the_target():
    z = noise_for_epsilon(3.0, 1e-5, 0.01, 500, "rdp")
    assert z > 0
    assert epsilon_spent(z, 0.01, 500, 1e-5, "rdp") == pytest.approx(3.0, abs=0.1)
    assert noise_for_epsilon(1.0, 1e-5, 0.01, 500, "rdp") > z


def _setup(n: int = 8):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(n, 3) * 50  # large inputs: per-example gradients far above the clip norm
    y = torch.randn(n, 1)

    def sample_loss(i):
        return torch.nn.functional.mse_loss(model(x[i:i + 1]), y[i:i + 1])
    return model, x, y, sample_loss


def test_grad_samples_sum_to_the_batch_gradient():
    model, x, y, sample_loss = _setup()
    compute_grad_samples(model, sample_loss, len(x))
    torch.nn.functional.mse_loss(model(x), y, reduction="sum").backward()
    for p in model.parameters():
        torch.testing.assert_close(p.grad_sample.sum(0), p.grad, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("clip", [0.1, 1.0])
def test_per_example_clipping_bounds_the_update_norm(clip):
    model, x, y, sample_loss = _setup()
    before = [p.detach().clone() for p in model.parameters()]
    opt = make_dp_optimizer(torch.optim.SGD(model.parameters(), lr=1.0), noise_multiplier=0.0, max_grad_norm=clip, expected_batch_size=len(x))
    opt.zero_grad()
    compute_grad_samples(model, sample_loss, len(x))
    raw = torch.stack([torch.cat([p.grad_sample[i].flatten() for p in model.parameters()]).norm() for i in range(len(x))])
    assert (raw > clip).all()  # unclipped, each example alone would move the weights further than the bound
    opt.step()
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)]).norm()
    assert 0 < step <= clip * 1.0001


def test_poisson_batches_sample_at_the_rate():
    sizes = [len(b) for b in poisson_batches(1000, 0.05, 200, seed=1)]
    assert abs(sum(sizes) / len(sizes) - 50) < 3
    assert len(set(sizes)) > 5  # sizes vary: Poisson, not fixed-size batches


def test_dp_config_plan_meets_the_target_and_refuses_impossible_batches():
    from core.errors import UserInputError
    from core.privacy import DPConfig

    q, noise, clip = DPConfig(epsilon=3.0, accountant="rdp").plan(10, 1000, 500)
    assert q == 0.01 and clip == 1.0 and epsilon_spent(noise, q, 500, 1e-5, "rdp") == pytest.approx(3.0, abs=0.1)
    assert DPConfig(epsilon=math.inf).plan(10, 1000, 500) == (0.01, 0.0, 1e12)  # ε = ∞: no noise, no clipping
    with pytest.raises(UserInputError, match="--batch-size 64 for 10 training patches"):
        DPConfig().plan(64, 10, 5, unit="patches")
