"""Model inputs: per-day features, fold-fitted normalisers, and pre-built window tensors.

Feature roles in the TFT:

* static categorical: ``ticker``;
* known future reals (calendar of the target day): day-of-week and month-of-year on the unit circle;
* observed reals (only known up to the forecast origin): standardised return, log realised
  volatility, absolute return, market return (the S&P 500 index, or the cross-sectional mean when
  the panel has no index), log VIX and WTI log return (only when the panel has covariates; NaN
  periods of a covariate are fed as its mean); optional, when the data hold them: ``range_z``
  (log 5-day Garman–Klass range volatility, falling back per row to squared close returns where a
  ticker has no open/high/low) and ``volume_z`` (log volume relative to its trailing 63-day mean).
  :func:`observed_inputs` says which a panel supports; the model records the ones it was built with.

Targets (both standardised, both forecast for days t+1..t+H as quantiles):
``ret_z`` = log return / ticker's return std, and ``lrv_z`` = standardised log of ``rvol5``
(the realised volatility of the 5 returns ending that day; at horizon 5 it is exactly the
realised volatility of the forecast week).

**No look-ahead.** :class:`FoldScaler` is fitted on rows dated ``<= cutoff`` only, and
:meth:`PanelTensors.batch` zeroes every observed (non-calendar) input of the decoder window,
so neither a normaliser nor an input of a forecast issued at origin ``t`` can see a value
dated after ``t`` (``tests/finance/test_no_lookahead.py`` checks both by perturbing the future).

:class:`PanelTensors` replaces pytorch-forecasting's ``TimeSeriesDataSet`` for training and
prediction: the whole panel is one float32 matrix, a window is an index range into it, and a
batch is a single gather — no DataFrame round-trips and a few bytes per row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from core.errors import plain
from core.progress import progress
from domains.finance.calendars import AUTO, calendars_for, future_sessions
from domains.finance.data import INDEX, PriceDataError
from domains.finance.garch import fit_gjr, gjr_scales, gjr_variance_path

__all__ = ["QUANTILES", "KNOWN_REALS", "OBSERVED_REALS", "OPTIONAL_REALS", "GARCH_REALS", "TARGETS", "DEFAULT_CALENDAR", "base_features", "extend_future",
           "fit_gjr_params", "future_sessions", "observed_inputs", "series_by_ticker", "realised", "FoldScaler", "PanelTensors"]

QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
KNOWN_REALS = ["dow_sin", "dow_cos", "moy_sin", "moy_cos"]
OBSERVED_REALS = ["ret_z", "lrv_z", "absret_z", "mkt_ret_z", "vix_z", "wti_ret_z"]  # the inputs of models built before inputs were recorded
CORE_REALS = ["ret_z", "lrv_z", "absret_z", "mkt_ret_z"]  # every panel has these
COVARIATE_REALS = ["vix_z", "wti_ret_z"]  # need the bundled covariates
OPTIONAL_REALS = ["range_z", "volume_z"]  # need open/high/low, volume
GARCH_REALS = ["gjr_z"]  # the GJR-GARCH-t one-step volatility forecast: computed by a FoldScaler with GJR parameters, not read from the data
GJR_FIT_DAYS = 2520  # an unseen ticker's GJR parameters: fitted on its last this many days (as the backtest's baseline window)
# unscaled column -> scaled input, standardised per ticker with fold-fitted (center, scale)
_PER_TICKER = {"lrange": "range_z", "lvolu": "volume_z"}
DEFAULT_CALENDAR = AUTO  # each ticker's exchange from its name (7203.T: Tokyo), else NYSE: domains.finance.calendars
VOLUME_WINDOW = 63
TARGETS = ["ret_z", "lrv_z"]
LRV_FLOOR = 1e-4  # log of a zero realised volatility (five flat days) is clipped here


def _calendar(dates: pd.Series) -> pd.DataFrame:
    d = pd.to_datetime(dates)
    dow = d.dt.dayofweek.to_numpy(dtype=np.float32)
    moy = (d.dt.month.to_numpy(dtype=np.float32) - 1)
    return pd.DataFrame({
        "dow_sin": np.sin(2 * np.pi * dow / 5), "dow_cos": np.cos(2 * np.pi * dow / 5),
        "moy_sin": np.sin(2 * np.pi * moy / 12), "moy_cos": np.cos(2 * np.pi * moy / 12),
    }, index=dates.index).astype(np.float32)


def base_features(panel: pd.DataFrame, covariates: pd.DataFrame | None = None) -> pd.DataFrame:
    """Unscaled per-day features from a panel (``date, ticker, log_ret, rvol5``) and optional
    covariates (``date, vix, wti``). Sorted by ticker, date; ``is_future`` is False."""
    need = {"date", "ticker", "log_ret", "rvol5"}
    if not need <= set(panel.columns):
        raise PriceDataError(f"panel: missing columns {sorted(need - set(panel.columns))}; build it with domains.finance.data.derive_returns")
    extra = [c for c in ("open", "high", "low", "volume", "close", "close_unadjusted") if c in panel.columns]
    f = panel[["date", "ticker", "log_ret", "rvol5", *extra]].copy()
    f["date"] = pd.to_datetime(f["date"])
    f = f.sort_values(["ticker", "date"]).reset_index(drop=True)
    if f[["log_ret", "rvol5"]].isna().any().any():
        raise PriceDataError("panel: NaN in log_ret/rvol5; validate the prices first (domains.finance.data.validate_prices)")
    f["lrv"] = np.log(np.maximum(f["rvol5"].to_numpy(), LRV_FLOOR))
    f["absret"] = f["log_ret"].abs()
    if (f["ticker"] == INDEX).any():
        mkt = f.loc[f["ticker"] == INDEX, ["date", "log_ret"]].set_index("date")["log_ret"]
    else:
        mkt = f.groupby("date")["log_ret"].mean()
    f["mkt_ret"] = f["date"].map(mkt).fillna(0.0).to_numpy()
    if covariates is not None and len(covariates):
        cov = covariates.copy()
        cov["date"] = pd.to_datetime(cov["date"])
        cov = cov.sort_values("date").set_index("date")
        cov["lvix"] = np.log(cov["vix"])
        cov["wti_ret"] = np.log(cov["wti"].clip(lower=1e-3)).diff().fillna(0.0)
        # as-of join: the latest covariate value on or before each date (past only)
        idx = cov.index.searchsorted(f["date"].to_numpy(), side="right") - 1
        ok = idx >= 0
        f["lvix"] = np.where(ok, cov["lvix"].to_numpy()[np.clip(idx, 0, None)], np.nan)
        f["wti_ret"] = np.where(ok, cov["wti_ret"].to_numpy()[np.clip(idx, 0, None)], 0.0)
        first = cov["lvix"].dropna()
        if len(first) and first.index[0] <= f["date"].min():
            f["lvix"] = f["lvix"].fillna(float(first.iloc[0]))  # before the first covariate row (as-of join)
        # else: the covariate starts inside the panel; rows before it stay NaN (fed as the mean)
    else:
        f["lvix"] = 0.0
        f["wti_ret"] = 0.0
    f = _range_and_volume(f)
    f = pd.concat([f, _calendar(f["date"])], axis=1)
    f["is_future"] = False
    return f


def _range_and_volume(f: pd.DataFrame) -> pd.DataFrame:
    """``lrange``: log sqrt of the 5-day mean of the best daily variance estimate per row (Garman–Klass
    from open/high/low/close where the row has them, else the squared close-to-close return);
    ``lvolu``: log volume minus its trailing mean. NaN where a ticker has no such data at all."""
    g = f["ticker"]
    f["lrange"] = np.nan
    if {"open", "high", "low"} <= set(f.columns):
        c = f["close_unadjusted"] if "close_unadjusted" in f else f["close"]  # OHLC are unadjusted like the raw close
        o, h, lo = (f[k].astype(float) for k in ("open", "high", "low"))
        with np.errstate(divide="ignore", invalid="ignore"):
            gk = 0.5 * np.log(h / lo) ** 2 - (2 * np.log(2) - 1) * np.log(c / o) ** 2
        gk = gk.where((o > 0) & (h > 0) & (lo > 0) & (h >= lo) & np.isfinite(gk))
        has = gk.notna().groupby(g).transform("any")
        if has.any():
            var = gk.clip(lower=0).fillna(f["log_ret"] ** 2)
            rv = np.sqrt(var.groupby(g, sort=False).transform(lambda s: s.rolling(5, min_periods=1).mean()))
            f["lrange"] = np.log(np.maximum(rv.to_numpy(), LRV_FLOOR))
            f.loc[~has, "lrange"] = np.nan
    f["lvolu"] = np.nan
    if "volume" in f.columns:
        lv = np.log(f["volume"].astype(float).clip(lower=1.0))
        trail = lv.groupby(g, sort=False).transform(lambda s: s.shift(1).rolling(VOLUME_WINDOW, min_periods=5).mean())
        f["lvolu"] = lv - trail
    return f.drop(columns=[c for c in ("open", "high", "low", "volume", "close", "close_unadjusted") if c in f.columns])


def observed_inputs(feat: pd.DataFrame) -> list[str]:
    """The observed inputs this feature frame supports: the core four, VIX/WTI when it has
    covariates, ``range_z``/``volume_z`` when some ticker has OHLC/volume that is not constant."""
    obs = feat[~feat["is_future"]] if "is_future" in feat else feat
    out = list(CORE_REALS)
    if (obs["lvix"].notna().any() and obs["lvix"].std() > 0) or obs["wti_ret"].abs().sum() > 0:
        out += COVARIATE_REALS
    for col, name in _PER_TICKER.items():
        if col in obs and obs[col].notna().any() and float(obs[col].std(skipna=True) or 0.0) > 1e-9:
            out.append(name)
    return out


def extend_future(feat: pd.DataFrame, horizon: int, calendar: str = DEFAULT_CALENDAR) -> pd.DataFrame:
    """Append the ``horizon`` trading sessions after each ticker's last date (calendar inputs only, observed
    values NaN) so a forecast from the latest origin has a decoder window. ``calendar``: an exchange_calendars
    name or ``business`` for every ticker, or ``auto``: each ticker's exchange (``domains.finance.calendars``)."""
    rows = []
    cals = calendars_for(feat["ticker"].unique(), calendar)
    sessions: dict = {}  # most tickers end on the same day: one calendar query per (calendar, last date), not per ticker
    for t, g in feat.groupby("ticker", sort=False):
        key = (cals[str(t)], g["date"].iloc[-1])
        if key not in sessions:
            sessions[key] = future_sessions(key[1], horizon, key[0])
        rows.append(pd.DataFrame({"date": sessions[key], "ticker": t}))
    fut = pd.concat(rows, ignore_index=True)
    fut = pd.concat([fut, _calendar(fut["date"])], axis=1)
    fut["is_future"] = True
    out = pd.concat([feat, fut], ignore_index=True)
    return out.sort_values(["ticker", "date"]).reset_index(drop=True)


def series_by_ticker(feat: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """Each ticker's observed (not ``is_future``) ``date``, ``log_ret`` and ``rvol5`` as arrays, by date."""
    obs = feat[~feat["is_future"]] if "is_future" in feat else feat
    return {t: {"date": g["date"].to_numpy(), "log_ret": g["log_ret"].to_numpy(), "rvol5": g["rvol5"].to_numpy()}
            for t, g in obs.sort_values("date", kind="stable").groupby("ticker")}


def realised(series: dict[str, np.ndarray], origins: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """What happened after forecast origins of one ticker (``series``: one value of
    :func:`series_by_ticker`; ``origins``: positions in it): log returns of days t+1..t+H
    ``(n, H)`` and ``rvol5`` of day t+H ``(n,)``."""
    origins = np.asarray(origins, dtype=int)
    return series["log_ret"][origins[:, None] + np.arange(1, horizon + 1)], series["rvol5"][origins + horizon]


def fit_gjr_params(feat: pd.DataFrame, tickers=None, cutoff=None, fit_window: int | None = GJR_FIT_DAYS) -> dict[str, list[float]]:
    """Per ticker (default: every ticker of ``feat``), GJR-GARCH(1,1,1)-t parameters (arch order,
    percent units; :func:`domains.finance.garch.fit_gjr`) fitted on its observed log returns dated
    ``<= cutoff`` (all when None), the last ``fit_window`` of them (all when None/0) — what a
    GARCH-informed :class:`FoldScaler` reads (the backtest passes its ``gjr_t`` baseline's own fits)."""
    obs = feat[~feat["is_future"]] if "is_future" in feat else feat
    if cutoff is not None:
        obs = obs[obs["date"] <= pd.Timestamp(cutoff)]
    out = {}
    names = sorted(set(obs["ticker"].unique()) if tickers is None else set(tickers))
    # ~0.4 s a ticker on a busy 2-core machine: train/transfer sat silent for 10-60 s on the bundled panel before this bar
    for t in progress(names, desc="GJR-GARCH-t fits", unit="ticker", leave=False, disable=len(names) < 3):
        r = obs.loc[obs["ticker"] == t].sort_values("date")["log_ret"].to_numpy(dtype=float)
        if len(r) == 0:
            raise PriceDataError(f"ticker {t!r}: no returns{'' if cutoff is None else f' on or before {pd.Timestamp(cutoff):%Y-%m-%d}'} to fit its GJR-GARCH on")
        out[t] = [float(x) for x in fit_gjr(r[-fit_window:] if fit_window else r)]
    return out


@dataclass
class FoldScaler:
    """Standardisation fitted on rows dated ``<= cutoff`` only: per ticker for return and
    volatility, across the panel for the market covariates."""

    cutoff: str
    ret_scale: dict[str, float]
    absret_scale: dict[str, float]
    lrv_center: dict[str, float]
    lrv_scale: dict[str, float]
    cov_stats: dict[str, list[float]]
    ticker_stats: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # optional inputs: column -> ticker -> [center, scale]
    # GARCH-informed model: ticker -> GJR-GARCH-t parameters (arch order, percent units) fitted on rows <= cutoff, and the horizon;
    # when set, transform adds the input gjr_z and the per-origin target scales gjr_ret_h*, gjr_lrv_h* (see PanelTensors)
    gjr: dict[str, list[float]] = field(default_factory=dict)
    gjr_horizon: int = 0

    @classmethod
    def fit(cls, feat: pd.DataFrame, cutoff: pd.Timestamp | str | None = None) -> "FoldScaler":
        cutoff = pd.Timestamp(cutoff) if cutoff is not None else feat.loc[~feat["is_future"], "date"].max()
        tr = feat[(feat["date"] <= cutoff) & ~feat["is_future"]]
        if tr.empty:
            raise PriceDataError(f"no data on or before cutoff {cutoff:%Y-%m-%d} to fit the normalisers")
        g = tr.groupby("ticker")
        ret_scale = g["log_ret"].apply(lambda s: float(np.sqrt(np.mean(s.to_numpy() ** 2)))).clip(lower=1e-6)
        absret_scale = g["absret"].mean().clip(lower=1e-6)
        lrv_c = g["lrv"].mean()
        lrv_s = g["lrv"].std().fillna(1.0).clip(lower=1e-3)
        cov = {}
        for c in ("mkt_ret", "lvix", "wti_ret"):
            v = tr.drop_duplicates("date")[c].to_numpy(dtype=float)
            v = v[np.isfinite(v)]  # a covariate may be missing for part of the history
            cov[c] = [float(np.mean(v)), float(max(np.std(v), 1e-6))] if len(v) else [0.0, 1.0]
        extra = {}
        for col in _PER_TICKER:
            if col in tr and tr[col].notna().any():
                m, sd = g[col].mean().dropna(), g[col].std().reindex(g[col].mean().dropna().index).fillna(1.0).clip(lower=1e-3)
                extra[col] = {t: [float(m[t]), float(sd[t])] for t in m.index}
        return cls(str(pd.Timestamp(cutoff).date()), ret_scale.to_dict(), absret_scale.to_dict(), lrv_c.to_dict(), lrv_s.to_dict(), cov, extra)

    def with_own_history(self, feat: pd.DataFrame, tickers) -> "FoldScaler":
        """A copy that also normalises ``tickers`` (unknown to this scaler), each fitted on its own
        rows of ``feat`` (all of them: for a forecast from a ticker's last date they are its past).
        The market covariates keep this scaler's statistics."""
        tickers = sorted(set(tickers))
        if not tickers:
            return self
        obs = feat[feat["ticker"].isin(tickers) & ~feat["is_future"]] if "is_future" in feat else feat[feat["ticker"].isin(tickers)]
        own = FoldScaler.fit(obs.assign(is_future=False))
        d = self.to_dict()
        for k in ("ret_scale", "absret_scale", "lrv_center", "lrv_scale"):
            d[k] = {**d[k], **{t: v for t, v in getattr(own, k).items() if t in tickers}}
        d["ticker_stats"] = {col: {**d["ticker_stats"].get(col, {}), **{t: v for t, v in own.ticker_stats.get(col, {}).items()}}
                             for col in set(d["ticker_stats"]) | set(own.ticker_stats)}
        if self.gjr:  # a GARCH-informed model: the ticker's own GJR-GARCH-t, fitted on its own history
            d["gjr"].update(fit_gjr_params(obs, tickers))
        return FoldScaler.from_dict(d)

    def with_gjr(self, params: dict[str, list[float]], horizon: int) -> "FoldScaler":
        """A copy that is GARCH-informed: per ticker GJR-GARCH-t ``params`` (:func:`fit_gjr_params`)
        and the forecast ``horizon`` of the target scales (see :meth:`transform`)."""
        d = self.to_dict()
        d["gjr"] = {t: [float(x) for x in p] for t, p in params.items()}
        d["gjr_horizon"] = int(horizon)
        return FoldScaler.from_dict(d)

    def transform(self, feat: pd.DataFrame) -> pd.DataFrame:
        unknown = sorted(set(feat["ticker"].unique()) - set(self.ret_scale))
        if unknown:
            raise PriceDataError(self._unknown_tickers_message(feat, unknown))
        z = feat.copy()
        t = z["ticker"]
        z["ret_z"] = z["log_ret"] / t.map(self.ret_scale)
        z["absret_z"] = z["absret"] / t.map(self.absret_scale) - 1.0
        z["lrv_z"] = (z["lrv"] - t.map(self.lrv_center)) / t.map(self.lrv_scale)
        for c, out in (("mkt_ret", "mkt_ret_z"), ("lvix", "vix_z"), ("wti_ret", "wti_ret_z")):
            m, s = self.cov_stats[c]
            z[out] = (z[c] - m) / s
        for col, out in _PER_TICKER.items():
            st = self.ticker_stats.get(col, {})
            if col in z and st:
                z[out] = (z[col] - t.map({k: v[0] for k, v in st.items()})) / t.map({k: v[1] for k, v in st.items()})
            else:
                z[out] = np.nan  # fed as 0 (the mean) by PanelTensors
        if self.gjr:
            z = self._add_gjr(z)
        return z

    def _unknown_tickers_message(self, feat: pd.DataFrame, unknown: list[str]) -> str:
        """Why ``unknown`` (tickers of ``feat`` without normalisers) cannot be normalised: those with rows
        on or before the cutoff in ``feat`` were left out of the fitted set (a backtest fold leaves out a
        ticker with fewer than --fold-min-history days), the rest have no history up to the cutoff."""
        obs = feat[~feat["is_future"].astype(bool)] if "is_future" in feat else feat
        obs = obs[obs["ticker"].isin(unknown) & (pd.to_datetime(obs["date"]) <= pd.Timestamp(self.cutoff))]
        left_out = sorted(set(obs["ticker"].unique()))
        no_history = [t for t in unknown if t not in set(left_out)]
        fitted = sorted(self.ret_scale)
        parts = []
        if left_out:
            parts.append(f"ticker(s) {plain(left_out[:5])}{' …' if len(left_out) > 5 else ''} have history on or before {self.cutoff} but are not among the "
                         f"{len(fitted)} ticker(s) these normalisers were fitted on ({', '.join(fitted[:8])}{', …' if len(fitted) > 8 else ''}); they were left "
                         f"out of that fit (e.g. a backtest fold leaves out a ticker with fewer than --fold-min-history days up to its cutoff); "
                         f"forecast without them (--tickers) or train a model that includes them")
        if no_history:
            parts.append(f"ticker(s) {plain(no_history[:5])}{' …' if len(no_history) > 5 else ''} have no history on or before {self.cutoff} "
                         f"(the normalisers' cutoff) to normalise with")
        return "; ".join(parts)

    def _add_gjr(self, z: pd.DataFrame) -> pd.DataFrame:
        """The GARCH-informed columns, per ticker, from its GJR-GARCH-t filtered with the fixed
        parameters over its observed rows (row t reads returns <= t only): ``gjr_z`` (the log one-step
        volatility forecast in ``lrv_z`` units, an input), ``gjr_ret_h{h}`` = log(σ_GJR(t, h) / ret_scale)
        and ``gjr_lrv_h{h}`` = the GJR forecast of log rvol5 at t+h in ``lrv_z`` units (the origin's
        target scales; NaN on future rows)."""
        H = self.gjr_horizon
        missing = sorted(set(z["ticker"].unique()) - set(self.gjr))
        if missing:
            raise PriceDataError(f"ticker(s) {missing[:5]} have no GJR-GARCH parameters in this GARCH-informed model; forecast them with --zero-shot")
        cols = {"gjr_z": np.full(len(z), np.nan), **{f"gjr_{k}_h{h}": np.full(len(z), np.nan) for k in ("ret", "lrv") for h in range(1, H + 1)}}
        obs = ~z["is_future"].to_numpy(dtype=bool) if "is_future" in z else np.ones(len(z), bool)
        obs &= np.isfinite(z["log_ret"].to_numpy(dtype=float))
        for t, idx in z.groupby("ticker", sort=False).indices.items():
            idx = idx[obs[idx]]
            idx = idx[np.argsort(z["date"].to_numpy()[idx], kind="stable")]
            if len(idx) == 0:
                continue
            r = z["log_ret"].to_numpy(dtype=float)[idx]
            sigma1, ret_sd, rvol_sd = gjr_scales(r, gjr_variance_path(r, self.gjr[t], H))
            c, s = self.lrv_center[t], self.lrv_scale[t]
            cols["gjr_z"][idx] = (np.log(np.maximum(sigma1, LRV_FLOOR)) - c) / s
            for h in range(1, H + 1):
                cols[f"gjr_ret_h{h}"][idx] = np.log(np.maximum(ret_sd[:, h - 1], 1e-8) / self.ret_scale[t])
                cols[f"gjr_lrv_h{h}"][idx] = (np.log(np.maximum(rvol_sd[:, h - 1], LRV_FLOOR)) - c) / s
        return z.assign(**cols)

    def ret_to_raw(self, tickers: np.ndarray, z: np.ndarray) -> np.ndarray:
        s = np.array([self.ret_scale[t] for t in tickers])
        return z * s.reshape((-1,) + (1,) * (z.ndim - 1))

    def rvol_to_raw(self, tickers: np.ndarray, z: np.ndarray) -> np.ndarray:
        c = np.array([self.lrv_center[t] for t in tickers]).reshape((-1,) + (1,) * (z.ndim - 1))
        s = np.array([self.lrv_scale[t] for t in tickers]).reshape((-1,) + (1,) * (z.ndim - 1))
        return np.exp(z * s + c)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FoldScaler":
        return cls(**{"ticker_stats": {}, **d})


class PanelTensors:
    """The scaled panel as one float32 matrix; windows are index ranges, batches are gathers.

    ``reals`` must be the model's ``hparams.x_reals`` order; ``ticker_index`` maps a ticker to its
    embedding index (the TFT's categorical encoder)."""

    def __init__(self, zfeat: pd.DataFrame, reals: list[str], ticker_index: dict[str, int], encoder_length: int, horizon: int,
                 vol_scale: dict[str, float] | None = None):
        zfeat = zfeat.sort_values(["ticker", "date"]).reset_index(drop=True)
        missing = [t for t in zfeat["ticker"].unique() if t not in ticker_index]
        if missing:
            raise PriceDataError(f"ticker(s) {missing[:5]} are unknown to this model (known: {len(ticker_index)} tickers); fine-tune it with domains.finance.transfer")
        self.L, self.H = encoder_length, horizon
        self.reals = list(reals)
        vals = zfeat[self.reals].to_numpy(dtype=np.float32, na_value=np.nan)
        self.values = torch.from_numpy(np.nan_to_num(vals, nan=0.0))
        self.targets = torch.from_numpy(zfeat[TARGETS].to_numpy(dtype=np.float32, na_value=np.nan))
        self.codes = torch.from_numpy(zfeat["ticker"].map(ticker_index).to_numpy(dtype=np.int64))
        # per row, the ticker's lrv_z scale (sd of log rvol5): turns an lrv quantile gap into a log-vol ratio (the QLIKE loss term)
        self.vol_scale = None if vol_scale is None else torch.from_numpy(zfeat["ticker"].map(vol_scale).fillna(1.0).to_numpy(dtype=np.float32))
        self.dates = zfeat["date"].to_numpy()
        self.tickers = zfeat["ticker"].to_numpy()
        self.is_future = zfeat["is_future"].to_numpy(dtype=bool)
        first = zfeat.groupby("ticker", sort=False).cumcount().to_numpy()
        size = zfeat.groupby("ticker", sort=False)["ticker"].transform("size").to_numpy()
        self._pos, self._size = first, size
        # GARCH-informed targets: per origin o and horizon h, (log σ_GJR ratio of the return, GJR log-rvol forecast) in the
        # normalised units of ret_z / lrv_z; the model is trained on ret_z·exp(-g0) and lrv_z - g1 (see batch / target_offsets)
        gcols = [f"gjr_{k}_h{h}" for h in range(1, horizon + 1) for k in ("ret", "lrv")]
        self.gscale = None
        if all(c in zfeat.columns for c in gcols):
            g = zfeat[gcols].to_numpy(dtype=np.float32, na_value=np.nan).reshape(len(zfeat), horizon, 2)
            self.gscale = torch.from_numpy(np.nan_to_num(g, nan=0.0))
        observed = set(OBSERVED_REALS + OPTIONAL_REALS + GARCH_REALS)
        self.decoder_mask = torch.tensor([0.0 if r in observed else 1.0 for r in self.reals])
        self._arange = torch.arange(self.L + self.H)

    def origins(self, start=None, end=None, tickers=None, need_targets: bool = True) -> np.ndarray:
        """Row indices ``o`` usable as forecast origins: a full encoder ending at ``o`` and a decoder
        of ``H`` rows after it (with observed targets when ``need_targets``), dated in [start, end]."""
        ok = (self._pos >= self.L - 1) & (self._pos + self.H < self._size) & ~self.is_future
        if start is not None:
            ok &= self.dates >= np.datetime64(pd.Timestamp(start))
        if end is not None:
            ok &= self.dates <= np.datetime64(pd.Timestamp(end))
        if tickers is not None:
            ok &= np.isin(self.tickers, list(tickers))
        idx = np.nonzero(ok)[0]
        if need_targets and len(idx):
            fut = idx[:, None] + np.arange(1, self.H + 1)[None, :]
            good = ~self.is_future[fut].any(axis=1)
            idx = idx[good]
        return idx

    def from_model_units(self, origins, pred: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Quantiles in the units the model was trained on (``batch``'s targets) → ``ret_z``/``lrv_z`` units
        (identity unless GARCH-informed: the TFT's quantiles are a correction of the GJR forecast)."""
        if self.gscale is None:
            return pred
        g = self.gscale[torch.as_tensor(np.asarray(origins), dtype=torch.long)].numpy().astype(np.float64)
        out = dict(pred)
        out["ret_z"] = pred["ret_z"] * np.exp(g[..., 0])[..., None]
        out["lrv_z"] = pred["lrv_z"] + g[..., 1][..., None]
        if "lrv_var" in pred:  # the variance head's log-vol point (n, H), same offset as the log-vol quantiles
            out["lrv_var"] = pred["lrv_var"] + g[..., 1]
        return out

    def targets_by(self, origins: np.ndarray, cutoff) -> np.ndarray:
        """Mask of ``origins`` whose every target (days o+1..o+H) is dated on or before ``cutoff``:
        the windows a model fitted at ``cutoff`` may train on."""
        return self.dates[np.asarray(origins) + self.H] <= np.datetime64(pd.Timestamp(cutoff))

    def latest_origins(self, tickers=None) -> np.ndarray:
        """The last observed row of each ticker (needs :func:`extend_future` rows after it)."""
        last_obs = ~self.is_future & (np.roll(self.is_future, -1) | (self._pos == self._size - 1))
        idx = np.nonzero(last_obs & (self._pos >= self.L - 1) & (self._pos + self.H < self._size))[0]
        if tickers is not None:
            idx = idx[np.isin(self.tickers[idx], list(tickers))]
        return idx

    def batch(self, origins) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        """TFT input dict and decoder targets for forecasts issued at rows ``origins``."""
        o = torch.as_tensor(np.asarray(origins), dtype=torch.long)
        rows = (o - (self.L - 1)).unsqueeze(1) + self._arange
        cont = self.values[rows]
        enc, dec = cont[:, : self.L], cont[:, self.L:] * self.decoder_mask  # observed inputs of the future are zeroed
        cat = self.codes[rows].unsqueeze(-1)
        n = len(o)
        tgt = self.targets[rows[:, self.L:]]
        if self.gscale is not None:  # GARCH-informed: targets relative to the origin's GJR forecast
            g = self.gscale[o]
            tgt = torch.stack([tgt[..., 0] * torch.exp(-g[..., 0]), tgt[..., 1] - g[..., 1]], dim=-1)
        x = {
            "encoder_cat": cat[:, : self.L], "decoder_cat": cat[:, self.L:],
            "encoder_cont": enc, "decoder_cont": dec,
            "encoder_lengths": torch.full((n,), self.L, dtype=torch.long),
            "decoder_lengths": torch.full((n,), self.H, dtype=torch.long),
            "target_scale": [torch.tensor([[0.0, 1.0]]).expand(n, 2) for _ in TARGETS],
            "encoder_target": [self.targets[rows[:, : self.L], k] for k in range(len(TARGETS))],
        }
        return x, [tgt[..., k] for k in range(len(TARGETS))]
