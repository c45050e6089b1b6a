"""The classical risk models a desk uses, forecast from the same origins as the TFT with the same
quantiles, using returns up to the origin only. Parameters are fitted once per fold and ticker on
the rows up to the fold's cutoff, then held fixed while the model filters forward through the
test block (the refit cost is one fit per fold and ticker). Every variance model is ``arch``'s own:

* ``random_walk`` — zero-mean random walk: returns ~ N(0, σ²), σ the fold's training RMS return;
* ``historical`` — historical simulation: empirical quantiles of the last ``hist_window`` returns
  (and of the last ``hist_window`` realised volatilities for the volatility target);
* ``ewma`` — RiskMetrics EWMA variance, λ = 0.94 (``arch.univariate.EWMAVariance``), normal;
* ``garch`` — GARCH(1,1), zero mean, normal innovations (``arch.univariate.GARCH``);
* ``gjr_t`` — GJR-GARCH(1,1,1) with Student-t innovations (asymmetric: bad news raises variance
  more); return quantiles from the standardised t of the fitted ν;
* ``har`` — HAR-RV (``arch.univariate.HARX``, lags 1/5/22 days) on a daily realised-variance proxy:
  the range-based Garman–Klass variance plus the squared overnight return where the ticker has
  open/high/low on that day, the squared close-to-close return otherwise; normal returns.

Multi-step variances come from each model's own (analytic) ``arch`` forecast. Volatility quantiles
of the variance models: the 5-day realised variance of returns with daily variances σ²_h is
≈ mean(σ²_h)·χ²₅/5, so q_p(rvol5) = sqrt(mean(σ²_h)·χ²₅⁻¹(p)/5) (a normal-returns approximation,
also used for ``gjr_t``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from scipy import stats

from domains.finance.features import QUANTILES, realised
from domains.finance.garch import fit_gjr, gjr_variance_path
from domains.finance.model import quantile_rows

__all__ = ["BASELINES", "EWMA_LAMBDA", "HAR_LAGS", "baseline_forecasts", "baseline_rows", "fold_gjr_params", "forecast_rows", "garch_params",
           "range_variance"]

BASELINES = ("random_walk", "historical", "ewma", "garch", "gjr_t", "har")
EWMA_LAMBDA = 0.94
HAR_LAGS = (1, 5, 22)
_SCALE = 100.0  # arch fits percent returns best


def range_variance(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, prev_close: np.ndarray) -> np.ndarray:
    """Daily variance proxy from a day's range: Garman–Klass (1980)
    ``0.5·ln(H/L)² − (2 ln 2 − 1)·ln(C/O)²`` plus the squared overnight return ``ln(O/C₋₁)²`` (GK
    measures the trading session only). NaN where any input is missing."""
    with np.errstate(divide="ignore", invalid="ignore"):
        hl, co, oc = np.log(high / low), np.log(close / open_), np.log(open_ / prev_close)
        return 0.5 * hl ** 2 - (2 * np.log(2) - 1) * co ** 2 + oc ** 2


def _normal_ret_q(var_h: np.ndarray, quantiles) -> np.ndarray:
    """(n, H) variances -> (n, H, Q) normal return quantiles."""
    z = stats.norm.ppf(np.asarray(quantiles))
    return np.sqrt(var_h)[..., None] * z[None, None, :]


def _chi2_rvol_q(var_h: np.ndarray, quantiles, window: int) -> np.ndarray:
    """(n, H) daily variances -> (n, Q) quantiles of the realised vol of the last ``window`` of them."""
    vbar = var_h[:, -window:].mean(axis=1)
    c = stats.chi2.ppf(np.asarray(quantiles), window) / window
    return np.sqrt(vbar[:, None] * c[None, :])


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def _arch_variance(model_cls, train: np.ndarray, upto: np.ndarray, origins: np.ndarray, horizon: int, start=None, **kw):
    """Fit ``model_cls`` (an arch mean model over ``volatility=...``) on ``train`` (from the
    ``start`` parameters when given, e.g. the previous fold's) and filter with those fixed parameters
    over ``upto`` (the series up to the last origin): (variance (n, H) in raw units, fitted params)."""
    def fit():
        m = model_cls(train * _SCALE, **kw)
        try:
            return m.fit(disp="off", show_warning=False, starting_values=start)
        except ValueError:  # starting values outside this window's constraints
            return m.fit(disp="off", show_warning=False)

    res = _quiet(fit)
    params = res.params
    fixed = _quiet(lambda: model_cls(upto * _SCALE, **kw).fix(params.to_numpy()))
    fc = _quiet(lambda: fixed.forecast(horizon=horizon, start=int(origins.min()), reindex=False))
    var = fc.variance.to_numpy()[origins - int(origins.min())] / _SCALE ** 2
    return var, params


def _values(params) -> np.ndarray | None:
    return None if params is None else np.asarray(params, dtype=float)


def garch_params(train_ret: np.ndarray) -> tuple[float, float, float]:
    """(omega, alpha, beta) of a zero-mean normal GARCH(1,1) fitted on ``train_ret`` (raw units)."""
    from arch.univariate import GARCH, Normal, ZeroMean

    res = _quiet(lambda: ZeroMean(train_ret * _SCALE, volatility=GARCH(1, 0, 1), distribution=Normal(), rescale=False).fit(disp="off", show_warning=False))
    p = res.params
    return float(p["omega"]) / _SCALE ** 2, float(p["alpha[1]"]), float(p["beta[1]"])


def fold_gjr_params(ret: np.ndarray, train_end: int, fit_window: int | None = None, warm: dict | None = None):
    """The ``gjr_t`` baseline's parameters for one fold and ticker: GJR-GARCH(1,1,1)-t fitted on the
    last ``fit_window`` returns up to row ``train_end`` (all when None), warm-started from
    ``warm["gjr_t"]`` (last fold's), which it updates. The GARCH-informed TFT reuses exactly this fit."""
    warm = {} if warm is None else warm
    ret = np.asarray(ret, dtype=float)
    first = max(0, train_end + 1 - fit_window) if fit_window else 0
    warm["gjr_t"] = fit_gjr(ret[first: train_end + 1], start=_values(warm.get("gjr_t")))
    return warm["gjr_t"]


def baseline_forecasts(ret: np.ndarray, rvol: np.ndarray, train_end: int, origins: np.ndarray, horizon: int, quantiles,
                       rvol_window: int = 5, hist_window: int = 250, models=BASELINES,
                       rv_proxy: np.ndarray | None = None, fit_window: int | None = None,
                       warm: dict | None = None, fitted: dict | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Forecasts of one ticker. ``ret``/``rvol``: its full daily series; ``train_end``: index of
    the fold's last training row; ``origins``: indices of forecast origins (information up to and
    including that row); ``rv_proxy``: the daily realised-variance proxy for ``har`` (default: the
    squared return); ``fit_window``: fit the parameters on the last that many training days only
    (default: all); ``warm``: a dict this function reads and updates with each model's fitted
    parameters, used as starting values of the next fit (pass the same dict fold after fold);
    ``fitted``: parameters already fitted for this fold (``{"gjr_t": fold_gjr_params(...)}``), not refitted.
    Returns ``{model: (ret_q (n,H,Q), rvol_q_at_H (n,Q))}``."""
    from arch.univariate import GARCH, HARX, EWMAVariance, Normal, StudentsT, ZeroMean

    origins = np.asarray(origins, dtype=int)
    ret = np.asarray(ret, dtype=float)
    first = max(0, train_end + 1 - fit_window) if fit_window else 0
    train = ret[first: train_end + 1]
    v_train = float(np.mean(train ** 2))
    warm = {} if warm is None else warm
    n, H = len(origins), horizon
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if n == 0:
        return {m: (np.zeros((0, H, len(quantiles))), np.zeros((0, len(quantiles)))) for m in models}
    upto = ret[: origins.max() + 1]

    def variance_model(var_h):
        return _normal_ret_q(var_h, quantiles), _chi2_rvol_q(var_h, quantiles, rvol_window)

    if "random_walk" in models:
        out["random_walk"] = variance_model(np.full((n, H), v_train))
    if "historical" in models:
        w = min(hist_window, train_end + 1)
        # the window of the w days ending at the origin (origins > train_end >= w - 1: always full)
        rq = np.quantile(sliding_window_view(ret, w)[origins - w + 1], quantiles, axis=1).T
        vq = np.quantile(sliding_window_view(np.asarray(rvol, float), w)[origins - w + 1], quantiles, axis=1).T
        out["historical"] = (np.repeat(rq[:, None, :], H, axis=1), vq)
    if "ewma" in models:
        fixed = _quiet(lambda: ZeroMean(upto * _SCALE, volatility=EWMAVariance(EWMA_LAMBDA), rescale=False).fix(np.array([])))
        fc = _quiet(lambda: fixed.forecast(horizon=H, start=int(origins.min()), reindex=False))
        out["ewma"] = variance_model(fc.variance.to_numpy()[origins - origins.min()] / _SCALE ** 2)
    if "garch" in models:
        var, warm["garch"] = _arch_variance(ZeroMean, train, upto, origins, H, start=_values(warm.get("garch")), volatility=GARCH(1, 0, 1),
                                            distribution=Normal(), rescale=False)
        out["garch"] = variance_model(var)
    if "gjr_t" in models:
        p = (fitted or {}).get("gjr_t")
        if p is None:
            p = fold_gjr_params(ret, train_end, fit_window, warm)
        var = gjr_variance_path(upto, p, H, start=int(origins.min()), fast=False)[origins - int(origins.min())]
        z = StudentsT().ppf(np.asarray(quantiles, float), np.array([float(p["nu"])]))
        out["gjr_t"] = (np.sqrt(var)[..., None] * z[None, None, :], _chi2_rvol_q(var, quantiles, rvol_window))
    if "har" in models:
        rv = ret ** 2 if rv_proxy is None else np.where(np.isfinite(rv_proxy) & (rv_proxy > 0), rv_proxy, ret ** 2)
        res = _quiet(lambda: HARX(rv[first: train_end + 1] * _SCALE ** 2, lags=list(HAR_LAGS), rescale=False).fit(disp="off"))
        fixed = _quiet(lambda: HARX(rv[: origins.max() + 1] * _SCALE ** 2, lags=list(HAR_LAGS), rescale=False).fix(res.params.to_numpy()))
        mean = _quiet(lambda: fixed.forecast(horizon=H, start=int(origins.min()), reindex=False)).mean.to_numpy()
        var = mean[origins - origins.min()] / _SCALE ** 2
        out["har"] = variance_model(np.maximum(var, 0.05 * v_train))  # a linear HAR can forecast ~0: floor at 5% of the fold's mean
    return out


def forecast_rows(model: str, fold: int, tickers, origins, ret_q, rvol_q, r_real, v_real, H) -> pd.DataFrame:
    """Prediction rows with their realised value ``y``: returns at horizons 1..H, volatility at H."""
    parts = [quantile_rows(ret_q[:, h, :], "ret", h + 1, ticker=tickers, origin=origins, y=r_real[:, h]) for h in range(H)]
    parts.append(quantile_rows(rvol_q, "rvol", H, ticker=tickers, origin=origins, y=v_real))
    out = pd.concat(parts, ignore_index=True)
    out["model"], out["fold"] = model, fold
    return out


def baseline_rows(series: dict, cut, test_o, T, models, fold, H) -> pd.DataFrame:
    """Baseline forecasts from the test origins ``test_o`` of ``T`` (a ``PanelTensors``), parameters
    fitted on each ticker's rows dated on or before ``cut``. ``series``: ``features.series_by_ticker``
    (an ``rv_proxy`` array per ticker, when present, feeds ``har``)."""
    out = []
    tick_all, dates_all = T.tickers[test_o], T.dates[test_o]
    for t in np.unique(tick_all):
        g = series[t]
        d = dates_all[tick_all == t]
        loc = np.searchsorted(g["date"], d)
        train_end = int(np.searchsorted(g["date"], np.datetime64(pd.Timestamp(cut)), side="right")) - 1
        fc = baseline_forecasts(g["log_ret"], g["rvol5"], train_end, loc, H, QUANTILES, models=tuple(models), rv_proxy=g.get("rv_proxy"))
        r_real, v_real = realised(g, loc, H)
        for name, (rq, vq) in fc.items():
            out.append(forecast_rows(name, fold, np.full(len(d), t), d, rq, vq, r_real, v_real, H))
    return pd.concat(out, ignore_index=True)
