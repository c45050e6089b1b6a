"""The backtest's statistics against known values: Diebold–Mariano with Newey–West variance,
Kupiec/Christoffersen (per series and pooled), expected shortfall and its backtests, cumulative
VaR, and the ex-ante regime labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from domains.finance import regimes
from domains.finance.metrics import (acerbi_szekely_z2, christoffersen, christoffersen_from_counts, cumulative_var, diebold_mariano,
                                     es_from_quantiles, kupiec_pof, mcneil_frey, newey_west_variance, transition_counts)


def test_newey_west_by_hand():
    x = np.array([1.0, -1.0, 1.0, -1.0])
    assert newey_west_variance(x, lags=0) == pytest.approx(1.0)
    # gamma0 = 1, gamma1 = (-1 -1 -1)/4 = -0.75, Bartlett weight 1 - 1/2: 1 + 2 * 0.5 * (-0.75)
    assert newey_west_variance(x, lags=1) == pytest.approx(0.25)


def test_diebold_mariano_known_values():
    rng = np.random.default_rng(0)
    a = rng.gamma(2.0, 1.0, 800)
    same = diebold_mariano(a, a.copy())
    assert same["p_two_sided"] == pytest.approx(1.0) and same["dm"] == 0
    clearly = diebold_mariano(a, a + 0.3 + rng.normal(0, 0.2, 800))
    assert clearly["p_two_sided"] < 0.01 and clearly["dm"] < 0 and clearly["p_a_better"] < 0.01
    noise = diebold_mariano(a, a + rng.normal(0, 1.0, 800))
    assert noise["p_two_sided"] > 0.01
    # by hand, no lags: d = a - b = [1, 2, 3, 4]: mean 2.5, variance 1.25 -> DM = 2.5 / sqrt(1.25 / 4)
    r = diebold_mariano(np.array([1.0, 2, 3, 4]), np.zeros(4), lags=0)
    assert r["dm"] == pytest.approx(2.5 / np.sqrt(1.25 / 4)) and r["p_two_sided"] == pytest.approx(2 * stats.norm.sf(r["dm"]))


def test_diebold_mariano_hac_widens_under_autocorrelation():
    rng = np.random.default_rng(1)
    e = rng.normal(0, 1, 2000)
    d = 0.05 + np.convolve(e, np.ones(10) / 10, mode="same")  # strongly autocorrelated differential
    naive = diebold_mariano(d, np.zeros_like(d), lags=0)
    hac = diebold_mariano(d, np.zeros_like(d), lags=20)
    assert abs(hac["dm"]) < abs(naive["dm"])


def test_christoffersen_by_hand_and_pooled():
    b = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], bool)
    n00, n01, n10, n11 = transition_counts(b)
    assert (n00, n01, n10, n11) == (4, 2, 2, 1)
    pi0, pi1, pi = 2 / 6, 1 / 3, 3 / 9
    ll_null = 6 * np.log(1 - pi) + 3 * np.log(pi)
    ll_alt = 4 * np.log(1 - pi0) + 2 * np.log(pi0) + 2 * np.log(1 - pi1) + 1 * np.log(pi1)
    r = christoffersen(b, 0.05)
    assert r["lr_ind"] == pytest.approx(max(-2 * (ll_null - ll_alt), 0.0), abs=1e-12)
    lr_pof, _ = kupiec_pof(b, 0.05)
    assert r["lr_cc"] == pytest.approx(r["lr_ind"] + lr_pof) and r["p_cc"] == pytest.approx(stats.chi2.sf(r["lr_cc"], 2))
    # pooling two series = summing their transition counts
    c = np.add(transition_counts(b), transition_counts(b[::-1]))
    pooled = christoffersen_from_counts(*c, 0.05, breaches=2 * int(b.sum()), n=2 * len(b))
    assert np.isfinite(pooled["p_cc"]) and 0 <= pooled["p_ind"] <= 1


def test_expected_shortfall_and_its_backtests():
    z01, z05 = stats.norm.ppf(0.01), stats.norm.ppf(0.05)
    exact = -stats.norm.pdf(stats.norm.ppf(0.025)) / 0.025
    assert es_from_quantiles(np.array([z01]), np.array([z05]), 0.025)[0] == pytest.approx(exact, rel=0.03)
    # Z2 by hand: one breach of -2 with ES -2 at alpha 0.25 over 4 days: -2/2 / (4 * 0.25) + 1 = 0
    assert acerbi_szekely_z2(np.array([-2.0, 0, 0, 0]), np.full(4, -1.0), np.full(4, -2.0), 0.25) == pytest.approx(0.0)
    # correct normal ES on normal returns: Z2 near 0; ES half as deep: strongly negative
    rng = np.random.default_rng(2)
    r = rng.standard_normal(20000)
    q, es = np.full(r.size, stats.norm.ppf(0.025)), np.full(r.size, exact)
    assert abs(acerbi_szekely_z2(r, q, es, 0.025)) < 0.15
    assert acerbi_szekely_z2(r, q, es / 2, 0.025) < -0.7
    assert mcneil_frey(r, q, es)["p"] > 0.05 and mcneil_frey(r, q, es / 1.5)["p"] < 0.01


def test_cumulative_var_square_root_of_time():
    sigma, z = 0.01, stats.norm.ppf(0.01)
    q = np.full((3, 5), z * sigma)
    np.testing.assert_allclose(cumulative_var(q, 0.01, 5), z * sigma * np.sqrt(5))
    np.testing.assert_allclose(cumulative_var(q, 0.01, 10), z * sigma * np.sqrt(10))


def test_regime_threshold_uses_only_the_past():
    dates = pd.bdate_range("2010-01-01", periods=600)
    rng = np.random.default_rng(3)
    ret = pd.Series(rng.normal(0, 0.01, 600), index=dates)
    ret.iloc[450:] *= 4  # a crash after the cutoff
    cut = dates[400]
    tv = regimes.trailing_vol(ret, 63)
    calm_future = ret.copy()
    calm_future.iloc[401:] = rng.normal(0, 0.01, 199)
    thr = regimes.stress_threshold(tv, cut, 0.8)
    assert thr == regimes.stress_threshold(regimes.trailing_vol(calm_future, 63), cut, 0.8)  # the future does not move it
    lab = regimes.label(tv, dates[401:], thr)
    assert (lab[:40] == regimes.CALM).mean() > 0.6 and (lab[-100:] == regimes.STRESS).all()
