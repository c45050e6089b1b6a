"""Forecast-evaluation metrics a risk reviewer expects: pinball loss per quantile, interval
coverage, QLIKE/RMSE for volatility, and VaR backtests (Kupiec POF, Christoffersen independence
and conditional coverage)."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["pinball", "coverage", "qlike", "rmse", "kupiec_pof", "christoffersen", "var_backtest"]


def pinball(y: np.ndarray, q_pred: np.ndarray, quantiles) -> np.ndarray:
    """Pinball loss per quantile: ``y`` (n,), ``q_pred`` (n, Q) -> (Q,) means."""
    y = np.asarray(y, dtype=float)[:, None]
    q = np.asarray(quantiles, dtype=float)[None, :]
    e = y - q_pred
    return np.mean(np.maximum(q * e, (q - 1) * e), axis=0)


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    y = np.asarray(y)
    return float(np.mean((y >= lo) & (y <= hi))) if len(y) else float("nan")


def qlike(realised_vol: np.ndarray, forecast_vol: np.ndarray, floor: float = 1e-4) -> float:
    """QLIKE on variances (Patton 2011): mean of rv²/f² − log(rv²/f²) − 1; 0 is perfect."""
    r = np.maximum(np.asarray(realised_vol, float), floor) ** 2
    f = np.maximum(np.asarray(forecast_vol, float), floor) ** 2
    ratio = r / f
    return float(np.mean(ratio - np.log(ratio) - 1))


def rmse(y: np.ndarray, f: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y, float) - np.asarray(f, float)) ** 2)))


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * np.log(y)


def kupiec_pof(breaches: np.ndarray, p: float) -> tuple[float, float]:
    """Kupiec proportion-of-failures LR test: (statistic, p-value); H0: breach rate = p."""
    b = np.asarray(breaches, bool)
    n, x = len(b), int(b.sum())
    if n == 0:
        return float("nan"), float("nan")
    phat = x / n
    ll0 = _xlogy(n - x, 1 - p) + _xlogy(x, p)
    ll1 = _xlogy(n - x, 1 - phat) + _xlogy(x, phat)
    lr = max(-2 * (ll0 - ll1), 0.0)
    return float(lr), float(stats.chi2.sf(lr, 1))


def christoffersen(breaches: np.ndarray, p: float) -> dict[str, float]:
    """Christoffersen (1998) independence test (breach clustering) and conditional coverage
    (Kupiec + independence, 2 d.o.f.)."""
    b = np.asarray(breaches, int)
    if len(b) < 2:
        return {"lr_ind": float("nan"), "p_ind": float("nan"), "lr_cc": float("nan"), "p_cc": float("nan")}
    prev, cur = b[:-1], b[1:]
    n00 = int(np.sum((prev == 0) & (cur == 0)))
    n01 = int(np.sum((prev == 0) & (cur == 1)))
    n10 = int(np.sum((prev == 1) & (cur == 0)))
    n11 = int(np.sum((prev == 1) & (cur == 1)))
    pi0 = n01 / max(n00 + n01, 1)
    pi1 = n11 / max(n10 + n11, 1)
    pi = (n01 + n11) / max(n00 + n01 + n10 + n11, 1)
    ll_null = _xlogy(n00 + n10, 1 - pi) + _xlogy(n01 + n11, pi)
    ll_alt = _xlogy(n00, 1 - pi0) + _xlogy(n01, pi0) + _xlogy(n10, 1 - pi1) + _xlogy(n11, pi1)
    lr_ind = max(-2 * (ll_null - ll_alt), 0.0)
    lr_pof, _ = kupiec_pof(b, p)
    lr_cc = lr_ind + lr_pof
    return {"lr_ind": float(lr_ind), "p_ind": float(stats.chi2.sf(lr_ind, 1)), "lr_cc": float(lr_cc), "p_cc": float(stats.chi2.sf(lr_cc, 2))}


def var_backtest(returns: np.ndarray, var_quantile: np.ndarray, p: float, alpha: float = 0.05) -> dict[str, float]:
    """VaR backtest of a ``p``-quantile return forecast (e.g. p=0.01 for 99% VaR): a breach is a
    return below the forecast quantile. ``*_pass`` means the test does not reject at ``alpha``."""
    br = np.asarray(returns) < np.asarray(var_quantile)
    lr, pv = kupiec_pof(br, p)
    ch = christoffersen(br, p)
    return {"n": int(len(br)), "breaches": int(br.sum()), "expected": float(p * len(br)), "breach_rate": float(br.mean()) if len(br) else float("nan"),
            "kupiec_lr": lr, "kupiec_p": pv, "kupiec_pass": bool(pv > alpha) if pv == pv else False,
            "christoffersen_p_ind": ch["p_ind"], "christoffersen_p_cc": ch["p_cc"],
            "christoffersen_pass": bool(ch["p_cc"] > alpha) if ch["p_cc"] == ch["p_cc"] else False}
