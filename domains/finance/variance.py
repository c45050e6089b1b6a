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
* ``loglinear_gjr`` — a FORECAST COMBINATION with GJR-GARCH-t: exp(a_k + Σ_j b_jk · log q_j² +
  g_k · log V_gjr), V_gjr = the ``gjr_t`` baseline's own E[rv²] (its ``rms`` forecast) for the same
  (ticker, origin, horizon), fitted exactly as ``loglinear`` (same causal rows, same ridge). The
  result is not the model's forecast alone but a fitted blend with GJR's; ``gjr_t`` itself keeps
  ``loglinear`` (combining GJR with itself), as do rows without a GJR forecast. The fitted g_k of
  each model are logged (:func:`combination_weights` returns them).
* ``head`` — a TFT with a variance head (``--variance-head``, column ``rvol_var_head``): that head's
  E[rv²] as it forecasts it, uncalibrated (the ensemble's: its members' geometric mean); every row
  without a head forecast (baselines) gets ``loglinear``.
* ``loglinear_head`` — rows with a head forecast: exp(a_k + b_k · log V_head), fitted as ``loglinear``
  (same causal rows, same ridge; the raw head where nothing is known yet, fold 0); other rows ``loglinear``.

The same rule is applied to every model (baselines included), so a comparison can be made both
against the baselines' raw E[rv²] and against their recalibrated forecasts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.logging import get_logger
from domains.finance.metrics import second_moment_from_quantiles

__all__ = ["VARIANCE_RULES", "HEAD_RULES", "HEAD_COLUMN", "DEFAULT_RULE", "COMBINED_WITH", "ENSEMBLE_VARIANCE", "DEFAULT_ENSEMBLE_VARIANCE", "rvol_quantile_columns",
           "recalibrated_variance", "combination_weights", "ensemble_variance"]

log = get_logger("finance.variance")

VARIANCE_RULES = ("rms", "scaled_median", "scaled_rms", "loglinear", "loglinear_gjr", "head", "loglinear_head")
HEAD_RULES = ("head", "loglinear_head")  # rules that score a variance head's forecast (column HEAD_COLUMN) where a row has one
HEAD_COLUMN = "rvol_var_head"
COMBINED_WITH = "gjr_t"  # the baseline whose variance forecast ``loglinear_gjr`` adds as a regressor
# adopted on validation experiments before the test span (domains/finance/HISTORY.md): loglinear (session 3); head (session 6) —
# a TFT's variance-head forecast where the run has one, loglinear for every other row (so runs without a head score as before)
DEFAULT_RULE = "head"
FLOOR = 1e-8  # variance floor (QLIKE's vol floor 1e-4, squared)
# the ensemble's variance forecast: ``members_geo`` = geometric mean of its members' variance forecasts under the same
# rule (each member recalibrated on its own earlier forecasts); ``quantiles`` = the rule applied to the ensemble's
# averaged quantiles. members_geo adopted on the pre-2002 validation backtest (domains/finance/HISTORY.md).
ENSEMBLE_VARIANCE = ("members_geo", "quantiles")
DEFAULT_ENSEMBLE_VARIANCE = "members_geo"


def rvol_quantile_columns(quantiles) -> list[str]:
    """Names of the realised-vol quantile columns a losses frame carries (``rvq_0.01`` ...)."""
    return [f"rvq_{q:g}" for q in quantiles]


def _design(q: np.ndarray, quantiles, rule: str) -> np.ndarray:
    """(n, p) log-variance regressors of ``rule`` (``loglinear``: log q_j²; else the one base forecast)."""
    q = np.maximum(np.asarray(q, float), np.sqrt(FLOOR))
    if rule in ("loglinear", "loglinear_gjr"):
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
    return _recalibrate(losses, folds, horizon, quantiles, rule)[0]


def combination_weights(losses: pd.DataFrame, folds: list[dict], horizon: int, quantiles) -> pd.DataFrame:
    """``loglinear_gjr``'s fitted coefficients per (model, fold): ``gjr_weight`` (g_k, on log V_gjr)
    and ``own_weight`` (Σ_j b_jk, on the model's log q_j²), both on the raw (unstandardised) logs —
    how much of a model's combined log-variance forecast comes from GJR's."""
    return _recalibrate(losses, folds, horizon, quantiles, "loglinear_gjr")[1]


def _gjr_log_variance(losses: pd.DataFrame, base: np.ndarray) -> np.ndarray:
    """Per row, log of the ``gjr_t`` rows' E[rv²] (``base``) for the same (ticker, origin); NaN if none."""
    model = losses["model"].astype(str).to_numpy()
    g = model == COMBINED_WITH
    key = ["ticker", "origin"]
    left = losses[key].astype({"ticker": str}).reset_index(drop=True)
    right = losses.loc[g, key].astype({"ticker": str}).reset_index(drop=True).assign(_v=np.log(base[g]))
    right = right.drop_duplicates(key)
    return left.merge(right, on=key, how="left")["_v"].to_numpy(float)


def _causal_frame(losses: pd.DataFrame, folds: list[dict], horizon: int):
    """What every recalibration rule needs to stay causal: per row its fold and realised rv² (floored), and
    ``known(idx, k)`` — which of the rows ``idx`` were realised by fold k's cutoff (an earlier fold, origin at
    least ``horizon`` origins before the cutoff): the only rows fold k's parameters may be fitted on."""
    dates = np.sort(losses["origin"].unique())
    opos = np.searchsorted(dates, losses["origin"].to_numpy())
    fold = losses["fold"].to_numpy()
    y_all = np.maximum(losses["rvol"].to_numpy(float), 1e-4) ** 2
    cut_pos = {int(f["fold"]): int(np.searchsorted(dates, np.datetime64(pd.Timestamp(f["cutoff"])), side="right")) - 1 for f in folds}

    def known(idx: np.ndarray, k) -> np.ndarray:
        return (fold[idx] < k) & (opos[idx] + horizon <= cut_pos.get(int(k), -1))
    return fold, y_all, known


def _head_variance(losses: pd.DataFrame, folds: list[dict], horizon: int, quantiles, rule: str) -> np.ndarray:
    """``head`` / ``loglinear_head``: ``loglinear`` for every row, then the rows with a variance-head forecast replaced."""
    out = _recalibrate(losses, folds, horizon, quantiles, "loglinear")[0]
    if HEAD_COLUMN not in losses.columns:
        return out
    v_all = losses[HEAD_COLUMN].to_numpy(float)
    has = np.isfinite(v_all) & (v_all > 0)
    if rule == "head":
        out[has] = np.maximum(v_all[has], FLOOR)
        return out
    fold, y_all, known_by = _causal_frame(losses, folds, horizon)
    for name, idx in losses.groupby(losses["model"].astype(str), sort=False).indices.items():
        idx = idx[has[idx]]
        if not len(idx):
            continue
        X = np.log(np.maximum(v_all[idx], FLOOR))[:, None]
        for k in np.unique(fold[idx]):
            rows = fold[idx] == k
            known = known_by(idx, k)
            if known.sum() < 50:  # nothing known yet (fold 0): the head as it forecasts
                out[idx[rows]] = np.maximum(v_all[idx[rows]], FLOOR)
                continue
            mu, sd, w = _fit_loglinear(X[known], y_all[idx[known]])
            u = w[0] + ((X[rows] - mu) / sd) @ w[1:]
            out[idx[rows]] = np.maximum(np.exp(np.clip(u, -50, 50)), FLOOR)
    return out


def _recalibrate(losses: pd.DataFrame, folds: list[dict], horizon: int, quantiles, rule: str) -> tuple[np.ndarray, pd.DataFrame]:
    if rule not in VARIANCE_RULES:
        raise ValueError(f"unknown variance rule {rule!r}; choose from {VARIANCE_RULES}")
    if rule in HEAD_RULES:
        return _head_variance(losses, folds, horizon, quantiles, rule), pd.DataFrame(columns=["model", "fold", "gjr_weight", "own_weight", "n_fit"])
    cols = rvol_quantile_columns(quantiles)
    out = np.full(len(losses), np.nan)
    weights: list[dict] = []
    q_all = losses[cols].to_numpy(float)
    ok_all = np.isfinite(q_all).all(axis=1)
    base = np.full(len(losses), np.nan)
    base[ok_all] = np.maximum(second_moment_from_quantiles(q_all[ok_all], quantiles), FLOOR)
    if rule == "rms":
        return base, pd.DataFrame(weights)
    fold, y_all, known_by = _causal_frame(losses, folds, horizon)
    gjr = _gjr_log_variance(losses, base) if rule == "loglinear_gjr" else None
    for name, idx in losses.groupby(losses["model"].astype(str), sort=False).indices.items():
        idx = idx[ok_all[idx]]
        if not len(idx):
            continue
        X = _design(q_all[idx], quantiles, rule)
        combine = gjr is not None and name != COMBINED_WITH
        has_g = np.isfinite(gjr[idx]) if combine else np.zeros(len(idx), bool)
        if combine:
            X = np.column_stack([X, np.where(has_g, gjr[idx], 0.0)])
        for k in np.unique(fold[idx]):
            rows = fold[idx] == k
            known = known_by(idx, k)
            if known.sum() < 50:  # fold 0 (nothing known yet): the uncalibrated E[rv²]
                out[idx[rows]] = base[idx[rows]]
                continue
            y = y_all[idx[known]]
            if rule in ("loglinear", "loglinear_gjr"):
                p = X.shape[1] - int(combine)  # the model's own regressors
                # the combination on rows with a GJR forecast (fitted on known rows that have one), else plain loglinear
                parts = [(rows & ~has_g, known, p), (rows & has_g, known & has_g, X.shape[1])] if combine else [(rows, known, p)]
                for sel, fit_rows, ncol in parts:
                    if not sel.any():
                        continue
                    if fit_rows.sum() < 50:
                        out[idx[sel]] = base[idx[sel]]
                        continue
                    mu, sd, w = _fit_loglinear(X[fit_rows][:, :ncol], y_all[idx[fit_rows]])
                    u = w[0] + ((X[sel][:, :ncol] - mu) / sd) @ w[1:]
                    out[idx[sel]] = np.maximum(np.exp(np.clip(u, -50, 50)), FLOOR)
                    if ncol > p:
                        b = w[1:] / sd
                        weights.append({"model": name, "fold": int(k), "gjr_weight": float(b[p]), "own_weight": float(b[:p].sum()), "n_fit": int(fit_rows.sum())})
                continue
            c = float(np.mean(y / np.exp(X[known, 0])))
            u = X[rows, 0] + np.log(c)
            out[idx[rows]] = np.maximum(np.exp(np.clip(u, -50, 50)), FLOOR)
    wdf = pd.DataFrame(weights, columns=["model", "fold", "gjr_weight", "own_weight", "n_fit"])
    for name, g in wdf.groupby("model", sort=False):
        log.info(f"{rule}: {name}'s weight on log GJR-t variance, mean over {len(g)} cutoffs {g['gjr_weight'].mean():.3f} "
                 f"(min {g['gjr_weight'].min():.3f}, max {g['gjr_weight'].max():.3f}); on its own log quantiles² (sum) {g['own_weight'].mean():.3f}")
    return out, wdf


def ensemble_variance(losses: pd.DataFrame, var: np.ndarray, ensemble: str = "tft", member_prefix: str = "tft_seed") -> np.ndarray:
    """``var`` with the ``ensemble`` rows replaced by the geometric mean of its members' (``member_prefix``*)
    forecasts for the same (ticker, origin); rows without every member's finite forecast keep their own.
    Causal whenever ``var`` is (each member's forecast is)."""
    model = losses["model"].astype(str).to_numpy()
    members = sorted({m for m in model if m.startswith(member_prefix)})
    ens = model == ensemble
    if not members or not ens.any():
        return var
    key = ["ticker", "origin"]
    frame = losses[key].astype({"ticker": str}).reset_index(drop=True)
    logs = []
    for m in members:
        rows = model == m
        right = frame[rows].assign(_v=np.log(np.maximum(var[rows], FLOOR))).drop_duplicates(key)
        logs.append(frame[ens].merge(right, on=key, how="left")["_v"].to_numpy(float))
    geo = np.exp(np.mean(logs, axis=0))
    out = np.asarray(var, float).copy()
    idx = np.flatnonzero(ens)
    ok = np.isfinite(geo)
    out[idx[ok]] = geo[ok]
    return out
