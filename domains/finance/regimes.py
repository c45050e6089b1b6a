"""Market regimes for the walk-forward backtest, defined ex ante.

The market series is the index (``SP500``) when the panel has it, else the cross-sectional mean
return. Its trailing realised volatility at date t uses returns up to and including t only. A fold
with cutoff c gets a threshold from data dated on or before c: the ``quantile`` (default 0.8) of
the trailing volatility over all dates <= c. A forecast issued at origin t of that fold is in the
**stress** regime when the trailing volatility at t is above the threshold, **calm** otherwise — so
the label of a forecast is known when the forecast is made, and the threshold never sees the test
block. A fold's own label is the label at its cutoff.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from domains.finance.data import INDEX

__all__ = ["CALM", "STRESS", "market_returns", "trailing_vol", "stress_threshold", "label"]

CALM, STRESS = "calm", "stress"


def market_returns(feat: pd.DataFrame) -> pd.Series:
    """Daily market log return by date (the index, else the mean over tickers), sorted by date."""
    obs = feat[~feat["is_future"]] if "is_future" in feat else feat
    if INDEX in set(obs["ticker"]):
        s = obs.loc[obs["ticker"] == INDEX].set_index("date")["log_ret"]
    else:
        s = obs.groupby("date")["log_ret"].mean()
    return s.sort_index()


def trailing_vol(ret: pd.Series, window: int = 63) -> pd.Series:
    """Realised volatility of the last ``window`` returns up to and including each date (RMS, daily
    units); needs at least half a window."""
    return np.sqrt((ret ** 2).rolling(window, min_periods=max(2, window // 2)).mean())


def stress_threshold(tvol: pd.Series, cutoff, quantile: float = 0.8) -> float:
    """The ``quantile`` of the trailing volatility over dates on or before ``cutoff``."""
    past = tvol.loc[: pd.Timestamp(cutoff)].dropna()
    if past.empty:
        return float("inf")
    return float(past.quantile(quantile))


def label(tvol: pd.Series, dates, threshold: float) -> np.ndarray:
    """``"stress"``/``"calm"`` per date: trailing volatility at (the last market date on or before)
    that date above ``threshold``."""
    d = pd.DatetimeIndex(pd.to_datetime(np.asarray(dates)))
    idx = tvol.index.searchsorted(d, side="right") - 1
    v = np.where(idx >= 0, tvol.to_numpy()[np.clip(idx, 0, None)], np.nan)
    return np.where(v > threshold, STRESS, CALM)
