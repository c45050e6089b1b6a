"""The ``loglinear_gjr`` variance rule (issue 15, QLIKE): a causal forecast combination of a model's
quantiles with GJR-GARCH-t's own variance forecast. It reads only forecasts realised by the cutoff,
reduces to ``loglinear`` when GJR's term carries no information, and puts its weight on GJR when
only GJR is informative. Synthetic losses frames: fast."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from domains.finance.features import QUANTILES
from domains.finance.metrics import qlike_rows
from domains.finance.variance import COMBINED_WITH, combination_weights, recalibrated_variance, rvol_quantile_columns
from tests.finance.test_variance_recalibration import H, realised_after_cutoff, true_vol

Z = stats.norm.ppf(QUANTILES)


def _frame(model_info: float = 1.0, gjr_const: bool = False, folds: int = 4, days: int = 150, seed: int = 0):
    """Model ``m`` and ``gjr_t`` on one ticker. True vol sigma_t (log-AR), rv = sigma·lognormal noise.
    ``m``'s quantiles centre on sigma^model_info × independent noise (0: uninformative); ``gjr_t``'s
    are the true conditional ones times 0.8 (constant 0.01 if ``gjr_const``)."""
    rng = np.random.default_rng(seed)
    n = folds * days
    s = 0.4
    sigma, rv = true_vol(rng, n, 0.25, s)
    centre_m = 0.01 * (sigma / 0.01) ** model_info * np.exp(0.3 * rng.standard_normal(n))
    centre_g = np.full(n, 0.01) if gjr_const else 0.8 * sigma
    dates = pd.bdate_range("2001-01-01", periods=n)
    parts = []
    for name, centre in (("m", centre_m), (COMBINED_WITH, centre_g)):
        df = pd.DataFrame({"model": name, "ticker": "X", "fold": np.repeat(np.arange(folds), days), "origin": dates, "rvol": rv})
        for c, col in zip(rvol_quantile_columns(QUANTILES), (centre[:, None] * np.exp(s * Z)[None, :]).T):
            df[c] = col
        parts.append(df)
    fl = [{"fold": k, "cutoff": str(dates[k * days - 1].date()) if k else str((dates[0] - pd.Timedelta(days=1)).date())} for k in range(folds)]
    return pd.concat(parts, ignore_index=True), fl


def test_with_gjr_constant_it_is_the_loglinear_rule():
    df, fl = _frame(gjr_const=True)
    comb = recalibrated_variance(df, fl, H, QUANTILES, "loglinear_gjr")
    plain = recalibrated_variance(df, fl, H, QUANTILES, "loglinear")
    assert np.isfinite(comb).all()
    np.testing.assert_allclose(comb, plain, rtol=1e-6)


def test_gjr_itself_keeps_loglinear():
    df, fl = _frame()
    comb = recalibrated_variance(df, fl, H, QUANTILES, "loglinear_gjr")
    plain = recalibrated_variance(df, fl, H, QUANTILES, "loglinear")
    g = (df["model"] == COMBINED_WITH).to_numpy()
    np.testing.assert_allclose(comb[g], plain[g])
    assert not np.allclose(comb[~g], plain[~g])  # the other model's forecasts do change


def test_combination_reads_only_forecasts_realised_by_the_cutoff():
    df, fl = _frame(model_info=0.5)
    base = recalibrated_variance(df, fl, H, QUANTILES, "loglinear_gjr")
    k = 2
    late = realised_after_cutoff(df, fl, k)
    other = df.copy()
    other.loc[late, "rvol"] *= 5.0  # outcomes realised after the cutoff (every model)
    later_gjr = (other["model"] == COMBINED_WITH) & (other["fold"] > k)
    other.loc[later_gjr, rvol_quantile_columns(QUANTILES)] *= 3.0  # GJR's forecasts of later folds
    again = recalibrated_variance(other, fl, H, QUANTILES, "loglinear_gjr")
    sel = (df["fold"] == k).to_numpy()
    np.testing.assert_allclose(again[sel], base[sel])
    early = (df["fold"] < k) & ~late  # ... while outcomes realised before the cutoff do count
    other.loc[early, "rvol"] *= 2.0
    assert not np.allclose(recalibrated_variance(other, fl, H, QUANTILES, "loglinear_gjr")[sel], base[sel])


def test_weight_goes_to_gjr_when_only_gjr_is_informative():
    df, fl = _frame(model_info=0.0)
    w = combination_weights(df, fl, H, QUANTILES)
    assert set(w["model"]) == {"m"} and sorted(w["fold"]) == [1, 2, 3]
    assert (w["gjr_weight"] > 0.7).all() and (w["gjr_weight"] < 1.3).all()
    assert (w["own_weight"].abs() < 0.3).all()
    later = ((df["model"] == "m") & (df["fold"] > 0)).to_numpy()
    rv = df["rvol"].to_numpy()
    comb = recalibrated_variance(df, fl, H, QUANTILES, "loglinear_gjr")
    plain = recalibrated_variance(df, fl, H, QUANTILES, "loglinear")
    assert qlike_rows(rv[later], np.sqrt(comb[later])).mean() < qlike_rows(rv[later], np.sqrt(plain[later])).mean() - 0.05
