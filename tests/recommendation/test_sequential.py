"""Sequence model (issue 16.5): causal attention has no future leakage, leave-last-out evaluation
ranks the full catalogue, the split is the project's leave-last-out + validation, the model learns
an order a bag-of-items model cannot see, and the registry rebuilds it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from domains.recommendation.model import FeatureSpace, create_model
from domains.recommendation.sequential import (LeaveLastOut, SequenceConfig, SequenceModel, SequenceTrainConfig, evaluate_next_item,
                                               leave_last_out_split, train_sequence_model, user_item_vectors)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: a second torch thread only adds contention on the shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(text_dim: int = 0, item_table: str = "torchrec", n_items: int = 30) -> SequenceModel:
    torch.manual_seed(0)
    text = torch.randn(n_items, text_dim) if text_dim else None
    cfg = SequenceConfig(max_len=8, dim=16, heads=2, layers=2, dropout=0.0, text_dim=text_dim, item_table=item_table)
    return SequenceModel(n_items, cfg, text).eval()


def _run(model: SequenceModel, seqs: list[list[int]]) -> torch.Tensor:
    lengths = torch.tensor([len(s) for s in seqs])
    values = torch.tensor([i + 1 for s in seqs for i in s])
    with torch.no_grad():
        return model(values, lengths)


def test_causal_attention_no_future_leakage():
    for model in (_model(), _model(text_dim=6), _model(item_table="plain")):
        a = _run(model, [[3, 7, 1, 9, 4, 2]])
        b = _run(model, [[3, 7, 1, 9, 11, 25]])  # the last two items changed
        L = model.cfg.max_len
        real = slice(L - 6, L)  # left-padded: the 6 items occupy the last 6 positions
        ha, hb = a[0, real], b[0, real]
        assert torch.allclose(ha[:4], hb[:4], atol=1e-6)  # states up to the 4th item do not see items 5-6
        assert not torch.allclose(ha[4:], hb[4:], atol=1e-4)  # later states do
        # nor do other rows of the batch or the amount of padding around them
        c = _run(model, [[3, 7, 1, 9, 4, 2], [5, 8], [1, 2, 3, 4, 5, 6, 7, 8]])
        assert torch.allclose(c[0, real], ha, atol=1e-5)


def test_evaluation_ranks_the_full_catalogue_and_removes_history():
    n_items, k = 200, 10
    scores = torch.arange(n_items, 0, -1, dtype=torch.float32)[None].repeat(3, 1)  # item r has rank r+1
    hist = [np.array([0]), np.empty(0, np.int64), np.empty(0, np.int64)]
    # user 0: item 0 (rank 1) is in the history, so item 10 moves up to rank 10; user 1: item 10 is rank 11
    targets = [np.array([10]), np.array([10]), np.array([199])]
    m = evaluate_next_item(scores, hist, targets, k)
    # against all 200 items only user 0 hits; any sampled-negatives protocol with < 190 negatives would
    # have ranked users 1 and 2's targets inside the top 10 most of the time
    assert m["hr@10"] == 1 / 3
    assert abs(m["ndcg@10"] - (1 / np.log2(11)) / 3) < 1e-9


def test_leave_last_out_split_matches_the_project_split():
    inter = pd.DataFrame({"user_id": [1, 1, 1, 1, 2, 2, 2, 3, 3],
                          "item_id": [10, 11, 12, 13, 11, 12, 10, 10, 11],
                          "timestamp": [4, 1, 3, 2, 5, 5, 6, 1, 2]})
    uidx, iidx = {1: 0, 2: 1, 3: 2}, {10: 0, 11: 1, 12: 2, 13: 3}
    s = leave_last_out_split(inter, uidx, iidx)
    # user 1 by time: 11, 13, 12, 10; user 2: 11, 12 (tie, file order), 10; user 3 is too short (2 items)
    assert [x.tolist() for x in s.train] == [[1, 3], [1], [0]]
    assert [x.tolist() for x in s.valid] == [[2], [2], []]
    assert [x.tolist() for x in s.test] == [[0], [0], [1]]
    assert [x.tolist() for x in s.history("test")] == [[1, 3, 2], [1, 2], [0]]


def test_learns_an_order_and_the_registry_rebuilds_it():
    n_items, n_users, rng = 20, 40, np.random.default_rng(0)
    seqs = [(int(rng.integers(n_items)) + np.arange(12)) % n_items for _ in range(n_users)]  # next item = current + 1
    split = LeaveLastOut([s[:-2] for s in seqs], [s[-2:-1] for s in seqs], [s[-1:] for s in seqs], n_items)
    text = torch.randn(n_items, 8)
    cfg = SequenceConfig(max_len=10, dim=16, heads=2, layers=1, dropout=0.0, text_dim=8, temperature=0.1)
    model, hist = train_sequence_model(split, cfg, SequenceTrainConfig(epochs=12, patience=12, batch_size=8, lr=1e-2), text)
    th = split.history("test")
    U, V = user_item_vectors(model, th)
    m = evaluate_next_item(U @ V.T, th, split.test, 10)
    assert hist["best_valid_ndcg"] > 0.8 and m["ndcg@10"] > 0.8  # popularity is uniform here: ≈ 0.2
    space = FeatureSpace(user_ids=list(range(n_users)), item_ids=list(range(n_items)), genders=[], occupations=[], genres=[], year_min=1900, year_max=2000)
    again = create_model(model.spec(), space)
    again.load_state_dict(model.state_dict())
    U2, V2 = user_item_vectors(again, th)
    assert torch.allclose(U @ V.T, U2 @ V2.T, atol=1e-5)


def test_sampled_softmax_with_every_item_as_candidate_is_the_full_softmax():
    """With the inclusion correction, candidates = the whole catalogue make every item's inclusion
    probability 1 (correction 0), so the sampled loss is exactly the full-catalogue cross entropy; with
    few negatives it differs (it is a sample), and the frequency correction shifts it."""
    from domains.recommendation.sequential import sequence_loss

    n_items = 30
    model = _model(text_dim=6, n_items=n_items)
    h = torch.nn.functional.normalize(torch.randn(12, 16), dim=-1)
    targets = torch.tensor([0, 3, 3, 7, 1, 29, 5, 5, 5, 2, 8, 9])
    log_q = torch.log(torch.bincount(targets, minlength=n_items).clamp(min=1) / len(targets)).float()
    g = torch.Generator().manual_seed(0)

    def loss(**kw):
        model.cfg = SequenceConfig(**{**vars(model.cfg), **kw})
        return sequence_loss(model, h, targets, log_q, g)

    full = loss(loss="ce")
    assert torch.allclose(loss(loss="sampled_softmax", negatives=n_items, correction="inclusion"), full, atol=1e-5)
    assert not torch.allclose(loss(loss="sampled_softmax", negatives=3, correction="inclusion"), full, atol=1e-3)
    assert not torch.allclose(loss(loss="sampled_softmax", negatives=n_items, correction="frequency"), full, atol=1e-3)


def test_tiled_windows_predict_every_training_target_once():
    from domains.recommendation.sequential import tiled_windows

    rng = np.random.default_rng(0)
    seqs = [rng.permutation(200)[:n] for n in (1, 2, 5, 11, 12, 13, 40)]
    wins = tiled_windows(seqs, max_len=5)
    assert all(2 <= len(w) <= 6 for w in wins)
    got = sorted(int(t) for w in wins for t in w[1:])  # every position after the first is a target
    assert got == sorted(int(t) for s in seqs for t in s[1:])


def test_text_init_puts_items_with_similar_text_close_together():
    """``id_init="text"``: the id table starts as the text vectors' principal components (scaled to the
    random init's std), so two items with near-identical text start nearer than two unrelated items."""
    from domains.recommendation.sequential import text_init

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 24, generator=g)
    text = centres.repeat_interleave(10, 0) + 0.05 * torch.randn(30, 24, generator=g)  # 3 clusters of 10 items
    for table in ("torchrec", "plain"):
        model = SequenceModel(30, SequenceConfig(max_len=8, dim=8, heads=2, text_dim=24, item_table=table, id_init="text"), text)
        w = torch.nn.functional.normalize(model._id_table()[1:].detach(), dim=-1)
        sim = w @ w.T
        same = sim[:10, 1:10].mean()
        other = sim[:10, 10:].mean()
        assert same > 0.9 and other < 0.5
        assert abs(float(model._id_table()[1:].detach().std()) - 0.05) < 1e-3
        assert torch.equal(model._id_table()[1:].detach(), text_init(text, 8, 0.05))
    with pytest.raises(ValueError, match="id_init"):
        SequenceModel(30, SequenceConfig(max_len=8, dim=8, heads=2, text_dim=0, id_init="text"))
