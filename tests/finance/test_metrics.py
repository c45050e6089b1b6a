"""Risk metrics against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from domains.finance.baselines import baseline_forecasts
from domains.finance.metrics import christoffersen, coverage, kupiec_pof, pinball, qlike, var_backtest


def test_pinball_by_hand():
    y = np.array([1.0, -1.0])
    q = np.array([[0.0, 0.0], [0.0, 0.0]])
    # q=0.1: y=1 -> 0.1*1 ; y=-1 -> 0.9*1  => mean 0.5 ; q=0.9: 0.9 and 0.1 => 0.5
    np.testing.assert_allclose(pinball(y, q, [0.1, 0.9]), [0.5, 0.5])
    assert pinball(np.array([2.0]), np.array([[2.0]]), [0.3])[0] == 0


def test_kupiec_matches_formula_and_detects_miscalibration():
    b = np.zeros(250, bool)
    b[:2] = True
    lr, p = kupiec_pof(b, 0.01)
    x, n, ph = 2, 250, 2 / 250
    expect = -2 * ((n - x) * np.log(0.99) + x * np.log(0.01) - ((n - x) * np.log(1 - ph) + x * np.log(ph)))
    assert lr == pytest.approx(expect) and p == pytest.approx(stats.chi2.sf(expect, 1))
    assert p > 0.05
    b[:15] = True  # 6% breaches for a 1% VaR
    assert kupiec_pof(b, 0.01)[1] < 1e-4
    assert kupiec_pof(np.zeros(100, bool), 0.01)[1] > 0.05  # zero breaches in 100 days: not rejected
    assert kupiec_pof(np.zeros(250, bool), 0.01)[1] < 0.05  # ... in 250 days: too conservative, rejected


def test_christoffersen_flags_clustered_breaches():
    rng = np.random.default_rng(0)
    spread = np.zeros(500, bool)
    spread[rng.choice(500, 10, replace=False)] = True
    clustered = np.zeros(500, bool)
    clustered[200:210] = True  # same count, all in a row
    assert christoffersen(clustered, 0.02)["p_ind"] < 0.01
    assert christoffersen(spread, 0.02)["p_ind"] > christoffersen(clustered, 0.02)["p_ind"]
    r = var_backtest(np.where(clustered, -1.0, 0.0), np.full(500, -0.5), 0.02)
    assert r["breaches"] == 10 and not r["christoffersen_pass"]


def test_qlike_and_coverage():
    v = np.array([0.01, 0.02, 0.03])
    assert qlike(v, v) == pytest.approx(0)
    assert qlike(v, v * 2) > 0 and qlike(v, v / 2) > qlike(v, v * 2)  # under-prediction costs more
    assert coverage(np.array([0, 1, 2, 3]), np.full(4, 0.5), np.full(4, 2.5)) == 0.5


def test_baselines_are_calibrated_on_simulated_garch():
    """On returns simulated from a GARCH(1,1), the GARCH baseline's 99% VaR breaches close to 1%
    and beats the constant-vol random walk on vol pinball."""
    rng = np.random.default_rng(1)
    n, w, a, b = 3000, 2e-6, 0.08, 0.9
    s2, r = np.empty(n), np.empty(n)
    s2[0] = w / (1 - a - b)
    for t in range(n):
        r[t] = np.sqrt(s2[t]) * rng.standard_normal()
        if t + 1 < n:
            s2[t + 1] = w + a * r[t] ** 2 + b * s2[t]
    rv = np.sqrt(np.convolve(r ** 2, np.ones(5) / 5)[: n])
    origins = np.arange(2000, n - 5)
    q = (0.01, 0.05, 0.5, 0.95, 0.99)
    fc = baseline_forecasts(r, rv, 1999, origins, 5, q)
    breaches = r[origins + 1] < fc["garch"][0][:, 0, 0]
    assert 0.002 < breaches.mean() < 0.025
    vp = {m: pinball(rv[origins + 5], v, q).mean() for m, (_, v) in fc.items()}
    assert vp["garch"] < vp["random_walk"]
