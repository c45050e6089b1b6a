"""The dedicated variance output (``--variance-head W``, issue 15.5): its QLIKE gradient moves the
forecast towards the realised variance, training on a biased start recovers the scale, the quantiles
(pinball, VaR) are computed as without it, the scored rules ``head``/``loglinear_head`` read it
causally, and a model saved without a head still loads."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from domains.finance.features import base_features
from domains.finance.model import Forecaster, fit, has_variance_head, predict_quantiles, variance_qlike_loss
from domains.finance.training import build_forecaster, init_output_bias, qlike_optimal_shift
from domains.finance.variance import recalibrated_variance
from tests.finance_support import panel_slice

TINY = dict(encoder_length=20, horizon=3, hidden_size=8, attention_heads=1, hidden_continuous_size=4, dropout=0.1, lr=3e-3)


@pytest.fixture(scope="module")
def feat():
    return base_features(panel_slice(["AAPL", "KO"], "2018-01-01", "2021-06-30"))


def test_variance_qlike_gradient_points_to_the_realised_variance():
    y = torch.zeros(4, 3)
    s = torch.full((4,), 0.5)
    for start, sign in ((-1.0, -1), (1.0, 1)):  # forecast below the realised vol: the gradient is negative (raise it), and vice versa
        h = torch.full((4, 3), start, requires_grad=True)
        variance_qlike_loss(h, y, s).mean().backward()
        assert (torch.sign(h.grad) == sign).all()
    assert float(variance_qlike_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2)).abs().max()) == 0.0  # exact forecast: 0


def test_qlike_optimal_shift_is_the_log_of_the_mean_variance():
    rng = np.random.default_rng(0)
    y = rng.normal(0.0, 1.0, (20_000, 2))
    s = np.full(20_000, 0.4)
    d = qlike_optimal_shift(y, 0.0, s)
    # rv² ∝ exp(2·s·y): the QLIKE-optimal constant forecast is its mean, exp(2·s·d) = E[exp(2·s·y)] = exp(2·s²)
    assert d == pytest.approx(np.log(np.mean(np.exp(2 * s[0] * y))) / (2 * s[0]), abs=1e-6) and d == pytest.approx(0.4, abs=0.02)


def test_head_trains_recovers_a_biased_scale_and_leaves_the_quantiles_alone(feat, tmp_path):
    cfg = SimpleNamespace(**TINY, garch_informed=True, variance_head=1.0)
    torch.manual_seed(0)
    fc = build_forecaster(cfg, feat, "2020-12-31")
    assert fc.spec.variance_head is True and has_variance_head(fc.model)
    T = fc.tensors(fc.scaler.transform(feat))
    o = T.origins()[T.targets_by(T.origins(), "2020-12-31")]
    init_output_bias(fc.model, T, o, 0)
    ref = predict_quantiles(fc.model, T, o[:300])
    out = predict_quantiles(fc.model, T, o[:300], with_variance=True)
    assert set(out) == {"ret_z", "lrv_z", "lrv_var"} and out["lrv_var"].shape == out["lrv_z"].shape[:2]
    np.testing.assert_array_equal(out["lrv_z"], ref["lrv_z"])  # the head adds an output, the quantiles are the same
    # the head forecasts the mean variance, above the median's square
    assert np.mean(out["lrv_var"] - out["lrv_z"][..., 4]) > 0
    with torch.no_grad():
        fc.model.variance_head.bias.fill_(-3.0)  # a badly biased start: variance far too low

    def mean_log_ratio() -> float:
        raw = fc.to_raw(T.tickers[o], predict_quantiles(fc.model, T, o, with_variance=True))
        rv = T.targets[torch.as_tensor(o + T.H)].numpy()[:, 1]
        realised = fc.scaler.rvol_to_raw(T.tickers[o], rv) ** 2
        return float(np.log(np.mean(realised) / np.mean(raw["rvol_var"][:, -1])))

    before = mean_log_ratio()
    fit(fc.model, T, o, epochs=3, batch_size=64, max_batches=20, seed=0, variance_weight=1.0)
    after = mean_log_ratio()
    assert before > 1.0 and abs(after) < 0.5 * before, (before, after)
    # saved and loaded: the head comes back with its weights
    fc.save(tmp_path / "m")
    back = Forecaster.load(tmp_path / "m")
    assert has_variance_head(back.model)
    np.testing.assert_allclose(predict_quantiles(back.model, T, o[:50], with_variance=True)["lrv_var"],
                               predict_quantiles(fc.model, T, o[:50], with_variance=True)["lrv_var"], rtol=1e-5)


def test_model_without_head_loads_and_predicts_as_before(feat, tmp_path):
    torch.manual_seed(0)
    fc = build_forecaster(SimpleNamespace(**TINY, garch_informed=True), feat, "2020-12-31")
    assert not fc.spec.variance_head and not has_variance_head(fc.model)
    fc.save(tmp_path / "m")
    import json
    meta = json.loads((tmp_path / "m" / "forecaster.json").read_text())
    for d in (meta["spec"], meta["model"]["kwargs"]["spec"]):  # as a run saved before the field existed
        d.pop("variance_head")
    (tmp_path / "m" / "forecaster.json").write_text(json.dumps(meta))
    back = Forecaster.load(tmp_path / "m")
    T = back.tensors(back.scaler.transform(feat))
    out = predict_quantiles(back.model, T, T.origins()[:20], with_variance=True)
    assert "lrv_var" not in out and not has_variance_head(back.model)


def test_head_output_is_per_thread_and_follows_a_deep_copy(feat):
    """Dashboard sessions share one cached model across threads, and int8/ONNX export, federated and
    private training deep-copy models: each forward must read its own head's output."""
    import copy
    import sys
    import threading

    cfg = SimpleNamespace(**TINY, garch_informed=True, variance_head=1.0)
    torch.manual_seed(0)
    fc = build_forecaster(cfg, feat, "2020-12-31")
    with torch.no_grad():
        fc.model.variance_head.weight.normal_(0.0, 0.5)  # a head that depends on the input
    T = fc.tensors(fc.scaler.transform(feat))
    o = T.origins()
    a, b = o[:64], o[-64:]
    ref_a, ref_b = (predict_quantiles(fc.model, T, x, batch_size=8, with_variance=True)["lrv_var"] for x in (a, b))
    assert np.abs(ref_a - ref_b).max() > 1e-3  # the two inputs give different variance outputs
    got, errors, start = {}, [], threading.Barrier(2)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: a shared per-model slot would be overwritten

    def run(name, x):
        try:
            start.wait()
            got[name] = [predict_quantiles(fc.model, T, x, batch_size=2, with_variance=True)["lrv_var"] for _ in range(3)]
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=run, args=("a", a)), threading.Thread(target=run, args=("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sys.setswitchinterval(switch)
    assert not errors
    for r in got["a"]:
        np.testing.assert_allclose(r, ref_a, rtol=1e-5, atol=1e-6)
    for r in got["b"]:
        np.testing.assert_allclose(r, ref_b, rtol=1e-5, atol=1e-6)
    twin = copy.deepcopy(fc.model)
    with torch.no_grad():
        twin.variance_head.bias.add_(1.0)  # the copy's head, not the original's, must run in the copy
    np.testing.assert_allclose(predict_quantiles(twin, T, a, with_variance=True)["lrv_var"], ref_a + 1.0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(predict_quantiles(fc.model, T, a, with_variance=True)["lrv_var"], ref_a, rtol=1e-5, atol=1e-6)


def _losses(v_head, folds):
    dates = pd.bdate_range("2020-01-01", periods=len(v_head))
    q = np.sqrt(v_head)[:, None] * np.linspace(0.6, 1.6, 9)[None, :]
    rv = np.sqrt(2.0 * v_head)  # the realised variance is twice the head's forecast
    return pd.DataFrame({"model": "tft", "ticker": "A", "fold": folds, "origin": dates, "rvol": rv,
                         "rvol_var_head": v_head, **{f"rvq_{p:g}": q[:, i] for i, p in enumerate([0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99])}})


def test_head_rules_read_the_head_and_recalibrate_causally():
    rng = np.random.default_rng(1)
    n = 400
    v = np.exp(rng.normal(-8, 0.5, n))
    folds = np.repeat([0, 1], n // 2)
    L = _losses(v, folds)
    cutoff = str(L["origin"].iloc[n // 2 - 1].date())
    fl = [{"fold": 0, "cutoff": "2019-12-31"}, {"fold": 1, "cutoff": cutoff}]
    Q = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
    raw = recalibrated_variance(L, fl, 5, Q, "head")
    np.testing.assert_allclose(raw, v, rtol=1e-6)
    cal = recalibrated_variance(L, fl, 5, Q, "loglinear_head")
    np.testing.assert_allclose(cal[: n // 2], v[: n // 2], rtol=1e-6)  # fold 0: nothing known, the raw head
    np.testing.assert_allclose(cal[n // 2:], 2 * v[n // 2:], rtol=0.02)  # fold 1: the scale learnt on fold 0 (x 2)
    L2 = L.copy()
    L2.loc[n // 2:, "rvol"] *= 5  # fold 1's outcomes change: its own forecasts must not
    np.testing.assert_allclose(recalibrated_variance(L2, fl, 5, Q, "loglinear_head"), cal)
    # rows without a head forecast (baselines) get loglinear, exactly as under that rule
    L3 = L.assign(rvol_var_head=np.nan)
    np.testing.assert_allclose(recalibrated_variance(L3, fl, 5, Q, "loglinear_head"), recalibrated_variance(L3, fl, 5, Q, "loglinear"))


def test_lora_transfer_trains_the_vol_output_in_full_with_or_without_a_head(feat):
    """``finetune_lora`` keeps the log-vol quantile output layer fully trainable (not adapted) whether or
    not the model has a variance head — the model declares both as its heads (``suite_heads``); without
    that, ``core.finetune`` would guess "the last Linear", which is the variance head when there is one."""
    from core.finetune import head_names
    from domains.finance.finetuning import apply_lora_for_transfer

    for head in (0.0, 1.0):
        torch.manual_seed(0)
        m = build_forecaster(SimpleNamespace(**TINY, garch_informed=True, variance_head=head), feat, "2020-12-31").model
        assert head_names(m) == (["output_layer.1", "variance_head"] if head else ["output_layer.1"])
        apply_lora_for_transfer(m, 4)
        params = dict(m.named_parameters())
        vol = [n for n in params if n.startswith("output_layer.1.")]
        assert vol and all(params[n].requires_grad for n in vol) and not any("lora_" in n for n in vol), vol
        assert any("lora_" in n for n in params) and params["output_layer.0.base_layer.weight"].requires_grad is False
        if head:
            assert all(p.requires_grad for n, p in params.items() if n.startswith("variance_head."))


def test_bounded_qlike_matches_qlike_above_the_cap_and_caps_the_gradient_below():
    """``--qlike-cap c``: plain QLIKE for log(forecast/realised variance) >= -c; below, its tangent — continuous,
    with the gradient held at 1 - e^c instead of growing as e^-u."""
    from domains.finance.model import qlike_of_log_ratio

    u = torch.linspace(-12, 6, 181, dtype=torch.float64, requires_grad=True)
    plain, capped = qlike_of_log_ratio(u), qlike_of_log_ratio(u, cap=5.0)
    above = u.detach() >= -5
    torch.testing.assert_close(capped[above], plain[above])
    assert torch.all(capped[~above] < plain[~above])
    (g,) = torch.autograd.grad(capped.sum(), u)
    assert float(g.min()) >= 1 - np.exp(5) - 1e-9 and float(g[0]) == pytest.approx(1 - np.exp(5))
    eps = 1e-6
    left, right = (qlike_of_log_ratio(torch.tensor([-5.0 + d], dtype=torch.float64), cap=5.0) for d in (-eps, eps))
    assert float(right - left) == pytest.approx(2 * eps * (1 - np.exp(5)), rel=1e-3)  # continuous, smooth at -c
