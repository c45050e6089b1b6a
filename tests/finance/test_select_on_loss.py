"""``--select-on loss`` (issue 15.5 lever, session 11): the validation score the early-stopping choice minimises
is the training objective itself — the number ``model.fit`` reports for the same windows when nothing moves
and nothing is dropped out (GARCH-informed units, both QLIKE terms) — and the default stays pinball, so the
runs made before the flag keep their fingerprint (they resume under their old names)."""

from __future__ import annotations

from dataclasses import asdict
from types import SimpleNamespace

import pytest
import torch

from domains.finance import walkforward
from domains.finance.config import BacktestConfig
from domains.finance.features import base_features
from domains.finance.model import evaluate_objective, fit
from domains.finance.training import build_forecaster, init_output_bias
from tests.finance_support import panel_slice

TINY = dict(encoder_length=20, horizon=3, hidden_size=8, attention_heads=1, hidden_continuous_size=4, dropout=0.0, lr=3e-3)


@pytest.fixture(scope="module")
def model_and_windows():
    feat = base_features(panel_slice(["AAPL", "KO"], "2018-01-01", "2021-06-30"))
    cfg = SimpleNamespace(**TINY, garch_informed=True, variance_head=0.3)
    torch.manual_seed(0)
    fc = build_forecaster(cfg, feat, "2020-12-31")
    T = fc.tensors(fc.scaler.transform(feat))
    o = T.origins()[T.targets_by(T.origins(), "2020-12-31")]
    init_output_bias(fc.model, T, o, 0)
    with torch.no_grad():  # a head that is not the median, so its term is not a copy of the other
        fc.model.variance_head.bias.fill_(0.4)
    return fc.model, T, o[-400:]


def test_validation_objective_is_the_training_loss(model_and_windows):
    model, T, o = model_and_windows
    terms = dict(qlike_weight=0.1, variance_weight=0.3)
    got = evaluate_objective(model, T, o, batch_size=150, **terms)  # several batches, weighted by size
    frozen = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    # one batch holding every window, lr 0, no dropout: fit's epoch loss is the objective on exactly these windows
    (want,) = fit(model, T, o, epochs=1, batch_size=len(o), max_batches=1, optimizer=frozen, **terms)
    assert got == pytest.approx(want, rel=1e-4)
    pinball_only = evaluate_objective(model, T, o)
    (fit_pinball,) = fit(model, T, o, epochs=1, batch_size=len(o), max_batches=1, optimizer=frozen)
    assert pinball_only == pytest.approx(fit_pinball, rel=1e-4) and got > pinball_only * 1.001  # the QLIKE terms are in it


def test_select_on_chooses_the_score_and_the_default_keeps_old_fingerprints(model_and_windows):
    model, T, o = model_and_windows
    base = dict(qlike_weight=0.1, variance_head=0.3, qlike_cap=0.0)
    assert walkforward._val_score(model, T, o, SimpleNamespace(**base, select_on="pinball")) == walkforward._val_pinball(model, T, o)
    assert walkforward._val_score(model, T, o, SimpleNamespace(**base, select_on="loss")) == pytest.approx(
        evaluate_objective(model, T, o, qlike_weight=0.1, variance_weight=0.3))
    # the fingerprint of a default config has no select_on key (as before the flag); --select-on loss adds it
    conf = lambda c: {k: v for k, v in asdict(c).items() if k not in walkforward.NOT_IN_FINGERPRINT  # noqa: E731
                      and walkforward.ADDED_LATER.get(k, walkforward._UNSET) != v}
    assert "select_on" not in conf(BacktestConfig())
    assert conf(BacktestConfig(select_on="loss"))["select_on"] == "loss"
