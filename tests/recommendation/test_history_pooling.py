"""The user tower's history pooling options (tiny synthetic space, no data set): ``weighted`` with equal
logits is the mean of the bag, ``sqrt`` is the mean scaled by sqrt(bag size), empty bags pool to zeros."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from core.errors import UserInputError
from domains.recommendation.model import Batcher, FeatureSpace, TwoTower, TwoTowerConfig


def _space_and_batcher():
    rng = np.random.default_rng(0)
    users = pd.DataFrame({"user_id": [1, 2, 3], "age": [20, 30, 40], "gender": ["M", "F", "M"], "occupation": ["a", "b", "a"]})
    items = pd.DataFrame({"item_id": np.arange(10), "title": [f"m{i}" for i in range(10)], "year": rng.integers(1980, 2000, 10),
                          "genres": [["Drama"]] * 10})
    space = FeatureSpace.build(users, items)
    batcher = Batcher(space.user_feature_table(users), space.item_feature_arrays(items), None,
                      history=[np.array([0, 3, 5, 7]), np.array([2]), np.empty(0, np.int64)])  # user 3: empty bag
    return space, batcher


def _pooled(model: TwoTower, batcher: Batcher) -> torch.Tensor:
    kjt = batcher.user_kjt(torch.arange(3))
    if model.history_ebc is not None:
        return torch.cat(model._weighted_history(kjt["history"]), 1)
    return model.user_ebc(kjt)["history"] * (kjt["history"].lengths().float().sqrt()[:, None] if model.cfg.history_pooling == "sqrt" else 1)


def test_weighted_pooling_with_equal_logits_is_the_mean_and_sqrt_scales_it():
    space, batcher = _space_and_batcher()
    small = dict(id_dim=8, feature_dim=4, hidden=[16], out_dim=8, text_dim=0)
    torch.manual_seed(0)
    mean = TwoTower(space, TwoTowerConfig(**small))
    weighted = TwoTower(space, TwoTowerConfig(**small, history_pooling="weighted", history_heads=2))
    sqrt = TwoTower(space, TwoTowerConfig(**small, history_pooling="sqrt"))
    table = mean.user_ebc.embedding_bags["t_history"].weight
    with torch.no_grad():
        weighted.history_ebc.embedding_bags["t_history"].weight.copy_(table)
        sqrt.user_ebc.embedding_bags["t_history"].weight.copy_(table)
    m, w, s = _pooled(mean, batcher), _pooled(weighted, batcher), _pooled(sqrt, batcher)
    assert torch.allclose(w[:, :8], m, atol=1e-6) and torch.allclose(w[:, 8:], m, atol=1e-6)  # logits start at 0: uniform weights
    assert torch.allclose(s[0], m[0] * 2.0, atol=1e-6) and torch.allclose(s[1], m[1], atol=1e-6)  # bags of 4 and 1
    assert torch.equal(w[2], torch.zeros(16)) and torch.equal(m[2], torch.zeros(8))
    with torch.no_grad():  # a larger logit for item row 3 moves user 1's pooled vector towards its embedding (index 3 + 1)
        weighted.history_logit[4] = 5.0
    w2 = _pooled(weighted, batcher)
    assert torch.allclose(w2[0, :8], table[4], atol=0.05) and torch.allclose(w2[1], w[1])
    (w2[0] * torch.randn(16, generator=torch.Generator().manual_seed(0))).sum().backward()
    g = weighted.history_logit.grad  # the weights are learned: user 1's four items get gradients, the others none
    assert g is not None and (g[[1, 4, 6, 8]].abs().sum(1) > 0).all() and g[[0, 2, 3, 5, 7, 9, 10]].abs().sum() == 0


def test_unknown_pooling_is_refused():
    space, _ = _space_and_batcher()
    with pytest.raises(UserInputError, match="history_pooling"):
        TwoTower(space, TwoTowerConfig(text_dim=0, history_pooling="max"))
