"""Classical baselines, forecast from the same origins as the TFT, using returns up to the
origin only (parameters fitted on the fold's training rows only):

* ``random_walk`` — zero-mean random walk: returns ~ N(0, σ²), σ the fold's training RMS return;
* ``historical`` — empirical quantiles of the last ``window`` returns / realised volatilities;
* ``ewma`` — RiskMetrics EWMA variance (λ = 0.94), normal returns;
* ``garch`` — GARCH(1,1), zero mean, normal innovations, fitted with ``arch`` on the training rows
  and filtered forward with fixed parameters; multi-step variance by the usual mean reversion.

Volatility quantiles for the variance models: the 5-day realised variance of normal returns with
daily variances σ²_h is ≈ mean(σ²_h)·χ²₅/5, so q_p(rvol5) = sqrt(mean(σ²_h)·χ²₅⁻¹(p)/5).
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import stats

__all__ = ["BASELINES", "baseline_forecasts", "garch_params"]

BASELINES = ("random_walk", "historical", "ewma", "garch")
EWMA_LAMBDA = 0.94


def _normal_ret_q(var_h: np.ndarray, quantiles) -> np.ndarray:
    """(n, H) variances -> (n, H, Q) normal return quantiles."""
    z = stats.norm.ppf(np.asarray(quantiles))
    return np.sqrt(var_h)[..., None] * z[None, None, :]


def _chi2_rvol_q(var_h: np.ndarray, quantiles, window: int) -> np.ndarray:
    """(n, H) daily variances -> (n, Q) quantiles of the realised vol of the last ``window`` of them."""
    vbar = var_h[:, -window:].mean(axis=1)
    c = stats.chi2.ppf(np.asarray(quantiles), window) / window
    return np.sqrt(vbar[:, None] * c[None, :])


def _filter_variance(ret: np.ndarray, omega: float, alpha: float, beta: float, v0: float) -> np.ndarray:
    """s2[t] = variance forecast for day t made at the end of day t-1 (uses ret[:t] only)."""
    s2 = np.empty(len(ret) + 1)
    s2[0] = v0
    r2 = ret ** 2
    for t in range(len(ret)):
        s2[t + 1] = omega + alpha * r2[t] + beta * s2[t]
    return s2


def garch_params(train_ret: np.ndarray) -> tuple[float, float, float]:
    """(omega, alpha, beta) of a zero-mean normal GARCH(1,1) fitted on ``train_ret`` (raw units)."""
    from arch import arch_model

    scale = 100.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = arch_model(train_ret * scale, mean="Zero", vol="GARCH", p=1, q=1, dist="normal", rescale=False).fit(disp="off", show_warning=False)
    p = res.params
    return float(p["omega"]) / scale ** 2, float(p["alpha[1]"]), float(p["beta[1]"])


def baseline_forecasts(ret: np.ndarray, rvol: np.ndarray, train_end: int, origins: np.ndarray, horizon: int, quantiles,
                       rvol_window: int = 5, hist_window: int = 250, models=BASELINES) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Forecasts of one ticker. ``ret``/``rvol``: its full daily series; ``train_end``: index of
    the fold's last training row; ``origins``: indices of forecast origins (information up to and
    including that row). Returns ``{model: (ret_q (n,H,Q), rvol_q_at_H (n,Q))}``."""
    origins = np.asarray(origins, dtype=int)
    ret = np.asarray(ret, dtype=float)
    train = ret[: train_end + 1]
    v_train = float(np.mean(train ** 2))
    n, H = len(origins), horizon
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if "random_walk" in models:
        var_h = np.full((n, H), v_train)
        out["random_walk"] = (_normal_ret_q(var_h, quantiles), _chi2_rvol_q(var_h, quantiles, rvol_window))
    if "historical" in models:
        w = min(hist_window, train_end + 1)
        r_pad = np.concatenate([np.full(w - 1, np.nan), ret])
        v_pad = np.concatenate([np.full(w - 1, np.nan), np.asarray(rvol, float)])
        rw = sliding_window_view(r_pad, w)[origins]  # window ending at the origin
        vw = sliding_window_view(v_pad, w)[origins]
        rq = np.nanquantile(rw, quantiles, axis=1).T
        vq = np.nanquantile(vw, quantiles, axis=1).T
        out["historical"] = (np.repeat(rq[:, None, :], H, axis=1), vq)
    if "ewma" in models:
        s2 = _filter_variance(ret, 0.0, 1 - EWMA_LAMBDA, EWMA_LAMBDA, v_train)
        var_h = np.repeat(s2[origins + 1][:, None], H, axis=1)
        out["ewma"] = (_normal_ret_q(var_h, quantiles), _chi2_rvol_q(var_h, quantiles, rvol_window))
    if "garch" in models:
        omega, alpha, beta = garch_params(train)
        s2 = _filter_variance(ret, omega, alpha, beta, v_train)
        pers = alpha + beta
        uv = omega / (1 - pers) if pers < 1 else v_train
        h = np.arange(H)[None, :]
        var_h = uv + (pers ** h) * (s2[origins + 1][:, None] - uv)
        out["garch"] = (_normal_ret_q(var_h, quantiles), _chi2_rvol_q(var_h, quantiles, rvol_window))
    return out
