"""``train --softmax full``: the softmax over the whole catalogue (no sampling, no log-Q)."""

from __future__ import annotations

import pytest
import torch

from domains.recommendation.model import full_softmax_loss, sampled_softmax_loss


def test_full_softmax_is_the_in_batch_softmax_when_the_batch_holds_every_item_once():
    g = torch.Generator().manual_seed(0)
    n, d = 7, 5
    u, v = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    items = torch.arange(n)
    full = full_softmax_loss(u, v, items, temperature=0.1)
    sampled = sampled_softmax_loss(u, v, items, torch.zeros(n), temperature=0.1, logq_weight=0.0)
    torch.testing.assert_close(full, sampled)
    # a row's target is an item index into the catalogue, not the row's position
    target = torch.tensor([3, 3, 0, 6, 1, 2, 5])
    logits = (u @ v.T) / 0.1
    expected = -(logits.log_softmax(1)[torch.arange(n), target]).mean()
    torch.testing.assert_close(full_softmax_loss(u, v, target, 0.1), expected)


@pytest.mark.slow
def test_train_with_full_softmax_runs_end_to_end(tmp_path):
    from domains.recommendation.train import TrainConfig, train

    run_dir = train(TrainConfig(runs_dir=str(tmp_path), name="full", track=False, softmax="full", text="none", epochs=1, max_steps=3,
                                baselines=False))
    import pandas as pd

    assert pd.read_parquet(run_dir / "eval_metrics.parquet").set_index("model").loc["two_tower", "ndcg@10"] > 0.0
