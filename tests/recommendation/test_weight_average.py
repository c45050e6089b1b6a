"""--ema-decay: the validated, refitted and saved weights are a (bias-corrected) exponential moving average of the raw ones."""

from __future__ import annotations

import pytest
import torch

from domains.recommendation.training import TrainingError, WeightAverage, local_trainer


class _Cfg:
    ema_decay = 0.5


def test_average_follows_the_exponential_moving_average_and_leaves_the_raw_weights_alone():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tr = local_trainer(_Cfg(), model, opt)
    assert torch.equal(tr.full_state()["weight"], model.weight)  # before the first step: the raw weights
    seen = []
    for _ in range(4):
        opt.zero_grad()
        model(torch.randn(5, 3)).pow(2).sum().backward()
        opt.step()
        tr.average.update()
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    # bias-corrected EMA: weights 0.5^(3-s) · 0.5 over the 4 steps, divided by 1 - 0.5^4 (the initial weights do not count)
    expect = {k: sum(0.5 ** (3 - s) * 0.5 * w[k] for s, w in enumerate(seen)) / (1 - 0.5 ** 4) for k in seen[0]}
    got = tr.full_state()
    for k, v in model.state_dict().items():
        assert torch.allclose(got[k], expect[k], atol=1e-6), k
        assert not torch.equal(got[k], v), k  # the average is not the raw weights
    got["weight"].add_(1.0)  # full_state() hands out a copy
    assert torch.allclose(tr.full_state()["weight"], expect["weight"], atol=1e-6)


def test_no_average_without_a_decay_and_a_decay_outside_0_1_is_refused():
    class Off:
        ema_decay = 0.0

    model = torch.nn.Linear(2, 2)
    tr = local_trainer(Off(), model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert tr.average is None and torch.equal(tr.full_state()["weight"], model.weight)
    with pytest.raises(TrainingError, match="ema-decay"):
        WeightAverage(model, 1.0)
