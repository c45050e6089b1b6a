"""'Because you watched' for a user with n history items rebuilt n bags of n - 1 ids (n² id lookups: 73-115 s at 11,250
items, ~10 min at 37,500). The bag is now pooled once and each "all but one" bag follows from its sums. The
contributions equal the old computation (kept below as the reference) for every pooling, with and without the wide part,
and the ids the embedding bags read grow linearly with n."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch

from domains.recommendation.because import history_contributions
from domains.recommendation.model import Batcher, FeatureSpace, TwoTower, TwoTowerConfig


@torch.no_grad()
def _old_history_contributions(model, batcher, user_row, history, item_vecs, batch=512):
    """The previous implementation: one user-tower pass per history item on a bag rebuilt without it."""
    model.eval()
    full = model.user_embedding(batcher.user_kjt(torch.tensor([user_row])))[0]
    base = item_vecs @ full
    out = []
    hist = torch.as_tensor(np.asarray(history, dtype=np.int64))
    for s in range(0, len(hist), batch):
        h = hist[s:s + batch]
        u = model.user_embedding(batcher.user_kjt(torch.full((len(h),), user_row, dtype=torch.long), exclude_items=h))
        out.append(base[None, :] - u @ item_vecs.T)
    return base, torch.cat(out)


def _model(n_items: int, seed: int = 0, **cfg) -> tuple[TwoTower, FeatureSpace, pd.DataFrame, pd.DataFrame]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    users = pd.DataFrame({"user_id": np.arange(1, 5), "age": [20, 30, 40, 50], "gender": ["M", "F", "M", "F"], "occupation": ["a", "b", "a", "c"]})
    items = pd.DataFrame({"item_id": np.arange(n_items), "title": [f"t{i}" for i in range(n_items)], "year": rng.integers(1980, 2000, n_items),
                          "genres": [list(rng.choice(["A", "B", "C"], 2, replace=False)) for _ in range(n_items)]})
    space = FeatureSpace.build(users, items)
    model = TwoTower(space, TwoTowerConfig(id_dim=8, feature_dim=4, hidden=[16], out_dim=8, text_dim=0, **cfg))
    for name, p in model.named_parameters():  # larger weights than the init: contributions well above float noise
        if name != "wide_log_gain":
            torch.nn.init.normal_(p, std=1.0 if name == "history_logit" else 0.3)
    if model.wide_dim:
        B = torch.randn(n_items, n_items) * 0.1
        B.fill_diagonal_(0)
        model.set_wide(B)
    return model.eval(), space, users, items


def _setup(history, n_items=60, **cfg):
    model, space, users, items = _model(n_items, **cfg)
    batcher = Batcher(space.user_feature_table(users), space.item_feature_arrays(items), None,
                      history=[np.asarray(h, dtype=np.int64) for h in history])
    with torch.no_grad():
        V = model.item_embedding(batcher.item_kjt(torch.arange(n_items)))
    return model, batcher, V


HISTORIES = [[3, 7, 7, 12, 20, 33, 41, 50, 58], [5], [], list(range(0, 60, 2))]  # user 1 repeats item 7; user 2 has one item


@pytest.mark.parametrize("cfg", [dict(), dict(history_pooling="sqrt"), dict(history_pooling="weighted", history_heads=2),
                                 dict(wide=True), dict(wide=True, wide_gate=True)],
                         ids=["mean", "sqrt", "weighted-2-heads", "wide", "wide-gated"])
def test_contributions_equal_the_rebuilt_bags(cfg):
    model, batcher, V = _setup(HISTORIES, **cfg)
    if model.history_logit is not None:  # item 7 (twice in user 1's bag) takes all but ~1e-11 of the weight: leaving it out
        with torch.no_grad():            # must not subtract it from the total (cancellation), nor divide by ~0
            model.history_logit[7 + 1] += 30.0
    targets = V[[1, 4, 9, 30, 59]]
    for row, h in enumerate(HISTORIES):
        asked = np.unique(h + [2, 59])  # 2 and 59 are in no bag but user 3's: leaving them out changes nothing
        base_old, old = _old_history_contributions(model, batcher, row, asked, targets)
        base, new = history_contributions(model, batcher, row, asked, targets)
        torch.testing.assert_close(base, base_old)
        torch.testing.assert_close(new, old, rtol=1e-4, atol=2e-6)
        assert old.abs().max() > 1e-3 or len(h) == 0  # something to compare: contributions 500 times the tolerance at least
        if len(h) == 0:  # nothing to leave out: zero, up to the rounding of a batch of one against a batch of two
            assert new.abs().max() < 1e-6


def test_the_ids_read_grow_linearly_with_the_history():
    n_items = 3000
    reads = {}
    for n in (300, 2400):
        history = [np.random.default_rng(n).choice(n_items, n, replace=False)]
        model, batcher, V = _setup(history, n_items=n_items)
        ids = []
        model.user_ebc.register_forward_pre_hook(lambda m, args: ids.append(int(args[0].values().numel())))
        t0 = time.perf_counter()
        _, c = history_contributions(model, batcher, 0, np.unique(history[0]), V[:10])
        seconds = time.perf_counter() - t0
        assert c.shape == (n, 10)
        reads[n] = (len(ids), sum(ids), seconds)
    (calls_small, ids_small, _), (calls_big, ids_big, seconds_big) = reads[300], reads[2400]
    assert calls_big == calls_small <= 2  # the bag is pooled once or twice whatever its size (it was once per 512 items)
    assert ids_big <= 2 * (2400 + 4) and ids_small <= 2 * (300 + 4)  # was n·(n-1): 5.8 million ids at n = 2,400
    assert seconds_big < 5.0  # the old path read 5.8 million ids here
