"""Variance point forecasts from quantile forecasts, recalibrated causally — what QLIKE scores.

QLIKE is consistent for the conditional MEAN of the variance proxy (Patton 2011): its point forecast
of rv² should be E[rv²]. A quantile model does not state E[rv²]; ``E[rv²] from the quantiles``
(:func:`metrics.second_moment_from_quantiles`, rule ``rms``) depends on how its tails are
extrapolated. The other rules map a model's quantiles to a variance forecast with a few parameters
fitted, for each fold k, on that model's OWN earlier forecasts whose realised value was known at
cutoff k (origin at least ``horizon`` trading days before the cutoff, so from folds < k: never the
fold being scored, never a value after the cutoff). Fold 0 has no such forecasts and keeps ``rms``.

* ``rms`` — E[rv²] from the quantiles, uncalibrated (``vol_qlike_mean``);
* ``scaled_median`` — c_k · median², c_k = mean(rv² / median²) (the QLIKE-optimal scale);
* ``scaled_rms`` — c_k · E[rv²], the same scale on the ``rms`` forecast;
* ``loglinear`` — exp(a_k + Σ_j b_jk · log q_j²) over the model's quantiles, fitted by minimising
  QLIKE (convex in (a, b); Newton steps with a small ridge on standardised inputs).

The same rule is applied to every model (baselines included), so a comparison can be made both
against the baselines' raw E[rv²] and against their recalibrated forecasts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from domains.finance.metrics import second_moment_from_quantiles

__all__ = ["VARIANCE_RULES", "DEFAULT_RULE", "rvol_quantile_columns", "recalibrated_variance"]

VARIANCE_RULES = ("rms", "scaled_median", "scaled_rms", "loglinear")
DEFAULT_RULE = "loglinear"  # adopted on the validation experiment before the test span (domains/finance/README.md)
FLOOR = 1e-8  # variance floor (QLIKE's vol floor 1e-4, squared)


def rvol_quantile_columns(quantiles) -> list[str]:
    """Names of the realised-vol quantile columns a losses frame carries (``rvq_0.01`` ...)."""
    return [f"rvq_{q:g}" for q in quantiles]


def _design(q: np.ndarray, quantiles, rule: str) -> np.ndarray:
    """(n, p) log-variance regressors of ``rule`` (``loglinear``: log q_j²; else the one base forecast)."""
    q = np.maximum(np.asarray(q, float), np.sqrt(FLOOR))
    if rule == "loglinear":
        return np.log(q ** 2)
    if rule == "scaled_median":
        return np.log(q[:, [list(quantiles).index(0.5)]] ** 2)
    return np.log(np.maximum(second_moment_from_quantiles(q, quantiles), FLOOR))[:, None]


def _fit_loglinear(X: np.ndarray, y: np.ndarray, ridge: float = 1e-3, iters: int = 30):
    """(mean, sd, coef) minimising mean(y·exp(-u) + u) + ridge·|b|², u = a + ((X - mean)/sd)·b."""
    mu, sd = X.mean(axis=0), X.std(axis=0) + 1e-9
    Z = np.column_stack([np.ones(len(X)), (X - mu) / sd])
    w = np.zeros(Z.shape[1])
    w[0] = np.log(np.mean(y))
    R = np.eye(len(w)) * ridge
    R[0, 0] = 0.0
    n = len(y)
    for _ in range(iters):
        e = y * np.exp(-np.clip(Z @ w, -50, 50))
        g = Z.T @ (1 - e) / n + 2 * R @ w
        Hm = (Z * e[:, None]).T @ Z / n + 2 * R
        step = np.linalg.solve(Hm + 1e-10 * np.eye(len(w)), g)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return mu, sd, w


def recalibrated_variance(losses: pd.DataFrame, folds: list[dict], horizon: int, quantiles, rule: str) -> np.ndarray:
    """Per row of ``losses`` (columns model, fold, origin, rvol and :func:`rvol_quantile_columns`), the
    variance forecast of its model under ``rule`` (see the module docstring); NaN where the row has
    no quantiles. Parameters per (model, fold) from that model's rows with ``origin`` at least
    ``horizon`` trading days (of the losses' origin calendar) before the fold's cutoff."""
    if rule not in VARIANCE_RULES:
        raise ValueError(f"unknown variance rule {rule!r}; choose from {VARIANCE_RULES}")
    cols = rvol_quantile_columns(quantiles)
    out = np.full(len(losses), np.nan)
    q_all = losses[cols].to_numpy(float)
    ok_all = np.isfinite(q_all).all(axis=1)
    base = np.full(len(losses), np.nan)
    base[ok_all] = np.maximum(second_moment_from_quantiles(q_all[ok_all], quantiles), FLOOR)
    if rule == "rms":
        return base
    dates = np.sort(losses["origin"].unique())
    opos = np.searchsorted(dates, losses["origin"].to_numpy())
    fold = losses["fold"].to_numpy()
    y_all = np.maximum(losses["rvol"].to_numpy(float), 1e-4) ** 2
    cut_pos = {int(f["fold"]): int(np.searchsorted(dates, np.datetime64(pd.Timestamp(f["cutoff"])), side="right")) - 1 for f in folds}
    for _, idx in losses.groupby(losses["model"].astype(str), sort=False).indices.items():
        idx = idx[ok_all[idx]]
        if not len(idx):
            continue
        X = _design(q_all[idx], quantiles, rule)
        for k in np.unique(fold[idx]):
            rows = fold[idx] == k
            known = (fold[idx] < k) & (opos[idx] + horizon <= cut_pos.get(int(k), -1))
            if known.sum() < 50:  # fold 0 (nothing known yet): the uncalibrated E[rv²]
                out[idx[rows]] = base[idx[rows]]
                continue
            y = y_all[idx[known]]
            if rule == "loglinear":
                mu, sd, w = _fit_loglinear(X[known], y)
                u = w[0] + ((X[rows] - mu) / sd) @ w[1:]
            else:
                c = float(np.mean(y / np.exp(X[known, 0])))
                u = X[rows, 0] + np.log(c)
            out[idx[rows]] = np.maximum(np.exp(np.clip(u, -50, 50)), FLOOR)
    return out
