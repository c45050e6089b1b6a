"""Variance point forecasts for QLIKE (issue 15, QLIKE target): the recalibration is causal (fold k
reads only forecasts realised by its cutoff), recovers a biased model's scale, and never needs the
fold it scores. Synthetic losses frames: fast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from domains.finance.features import QUANTILES
from domains.finance.metrics import qlike_rows
from domains.finance.variance import VARIANCE_RULES, recalibrated_variance, rvol_quantile_columns

H = 5


def true_vol(rng, n: int, step_sd: float, s: float):
    """True vol sigma_t (log-AR(1), 0.97) and realised rv = sigma·lognormal(s) noise, n days."""
    ls = np.zeros(n)
    for t in range(1, n):
        ls[t] = 0.97 * ls[t - 1] + step_sd * rng.standard_normal()
    sigma = 0.01 * np.exp(ls)
    return sigma, sigma * np.exp(s * rng.standard_normal(n))


def realised_after_cutoff(df: pd.DataFrame, fl: list[dict], k: int) -> pd.Series:
    """Rows whose outcome is not known at fold k's cutoff: origin within H days before it, or fold >= k."""
    cut = pd.Timestamp(fl[k]["cutoff"])
    dates = np.sort(df["origin"].unique())
    return (df["origin"] > pd.Timestamp(dates[np.searchsorted(dates, np.datetime64(cut), side="right") - 1 - H])) | (df["fold"] >= k)


def _frame(bias: float = 0.5, folds: int = 4, days: int = 120, seed: int = 0):
    """One model, one ticker: true vol sigma_t (log-AR), realised rv = sigma·lognormal noise; the model's
    quantiles are the true conditional ones times ``bias`` (an under-predicting forecaster)."""
    rng = np.random.default_rng(seed)
    n = folds * days
    s = 0.4
    sigma, rv = true_vol(rng, n, 0.2, s)
    q = bias * sigma[:, None] * np.exp(s * stats.norm.ppf(QUANTILES))[None, :]
    dates = pd.bdate_range("2001-01-01", periods=n)
    df = pd.DataFrame({"model": "m", "ticker": "X", "fold": np.repeat(np.arange(folds), days), "origin": dates, "rvol": rv})
    for c, col in zip(rvol_quantile_columns(QUANTILES), q.T):
        df[c] = col
    fl = [{"fold": k, "cutoff": str(dates[k * days - 1].date()) if k else str((dates[0] - pd.Timedelta(days=1)).date())} for k in range(folds)]
    return df, fl


@pytest.mark.parametrize("rule", [r for r in VARIANCE_RULES if r != "rms"])
def test_recalibration_recovers_the_scale_of_a_biased_model(rule):
    df, fl = _frame(bias=0.5)
    raw = recalibrated_variance(df, fl, H, QUANTILES, "rms")
    cal = recalibrated_variance(df, fl, H, QUANTILES, rule)
    later = df["fold"].to_numpy() > 0
    np.testing.assert_allclose(cal[~later], raw[~later])  # fold 0: nothing realised yet -> uncalibrated E[rv²]
    rv = df["rvol"].to_numpy()
    assert qlike_rows(rv[later], np.sqrt(cal[later])).mean() < 0.7 * qlike_rows(rv[later], np.sqrt(raw[later])).mean()
    # the true E[rv²] = sigma² exp(2 s²): the calibrated forecasts are within 15 % of it on average
    truth = (df["rvq_0.5"].to_numpy() / 0.5) ** 2 * np.exp(2 * 0.4 ** 2)
    assert abs(np.median(cal[later] / truth[later]) - 1) < 0.15


def test_recalibration_reads_only_forecasts_realised_by_the_cutoff():
    df, fl = _frame()
    base = recalibrated_variance(df, fl, H, QUANTILES, "loglinear")
    k = 2
    # forecasts of fold k-1 issued in the last H days before the cutoff are realised after it: changing their
    # outcomes, or anything in folds >= k, must not change fold k's forecasts
    late = realised_after_cutoff(df, fl, k)
    other = df.copy()
    other.loc[late, "rvol"] *= 5.0
    again = recalibrated_variance(other, fl, H, QUANTILES, "loglinear")
    sel = (df["fold"] == k).to_numpy()
    np.testing.assert_allclose(again[sel], base[sel])
    early = (df["fold"] < k) & ~late  # ... while realised outcomes before the cutoff do
    other.loc[early, "rvol"] *= 2.0
    assert not np.allclose(recalibrated_variance(other, fl, H, QUANTILES, "loglinear")[sel], base[sel])


def test_training_qlike_term_equals_the_scored_qlike_of_the_implied_variance():
    import torch

    from domains.finance.metrics import second_moment_from_quantiles
    from domains.finance.model import qlike_loss

    rng = np.random.default_rng(1)
    z = np.sort(rng.normal(0, 1, (6, 5, len(QUANTILES))), axis=-1)
    y = rng.normal(0, 1, (6, 5))
    s = rng.uniform(0.3, 0.6, 6)
    zt = torch.tensor(z, requires_grad=True)
    got = qlike_loss(zt, torch.tensor(y), torch.tensor(s))
    c = 1.7  # any common level (the ticker's centre, the GARCH offset) cancels
    q_raw, rv = np.exp(s[:, None, None] * z + c), np.exp(s[:, None] * y + c)
    want = qlike_rows(rv.ravel(), np.sqrt(second_moment_from_quantiles(q_raw.reshape(-1, len(QUANTILES)), QUANTILES)), floor=0.0)
    np.testing.assert_allclose(got.detach().numpy().ravel(), want, rtol=1e-6)
    got.mean().backward()
    assert torch.isfinite(zt.grad).all() and zt.grad.abs().sum() > 0


def test_ensemble_variance_is_the_geometric_mean_of_its_members_and_leaves_other_rows_alone():
    from domains.finance.variance import ensemble_variance

    origins = pd.to_datetime(["2020-01-02", "2020-01-03"])
    rows = [(m, t, o) for m in ("tft", "tft_seed0", "tft_seed1", "gjr_t") for t in ("A", "B") for o in origins]
    L = pd.DataFrame(rows, columns=["model", "ticker", "origin"]).astype({"model": "category", "ticker": "category"})
    rng = np.random.default_rng(0)
    var = rng.uniform(1e-4, 4e-4, len(L))
    var[(L["model"] == "tft_seed1").to_numpy() & (L["ticker"] == "B").to_numpy() & (L["origin"] == origins[1]).to_numpy()] = np.nan
    out = ensemble_variance(L, var)
    for i, r in L.iterrows():
        if r["model"] != "tft":
            assert out[i] == var[i] or (np.isnan(out[i]) and np.isnan(var[i]))
            continue
        mem = [var[(L["model"] == m).to_numpy() & (L["ticker"] == r["ticker"]).to_numpy() & (L["origin"] == r["origin"]).to_numpy()][0]
               for m in ("tft_seed0", "tft_seed1")]
        if np.isnan(mem).any():  # a member without a forecast: the ensemble keeps its own
            assert out[i] == var[i]
        else:
            assert out[i] == pytest.approx(np.sqrt(mem[0] * mem[1]), rel=1e-12)
    # without members (e.g. a one-seed run) nothing changes
    solo = L[~L["model"].astype(str).str.startswith("tft_seed")].reset_index(drop=True)
    v = var[: len(solo)]
    assert np.array_equal(ensemble_variance(solo, v), v)
