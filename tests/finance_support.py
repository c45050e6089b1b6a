"""Finance test helpers: a slice of the bundled real panel (prepared offline on first use), and a real series given a fall
to a hundredth.

    from tests.finance_support import panel_slice, msft_falling_to_a_hundredth
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def panel_slice(tickers: list[str], start: str, end: str | None = None) -> pd.DataFrame:
    """The bundled daily panel restricted to ``tickers`` and ``start``..``end`` (inclusive), index reset."""
    from core.data import prepare
    from domains.finance.data import DATASETS, load_panel

    prepare(DATASETS[0])
    p = load_panel()
    keep = p["ticker"].isin(tickers) & (p["date"] >= start)
    if end is not None:
        keep &= p["date"] <= end
    return p[keep].reset_index(drop=True)


def msft_falling_to_a_hundredth(day: int) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """(dates, closes, the same closes falling to a hundredth on row ``day`` and staying there): the bundled panel's last
    300 real MSFT closes, for the rules that tell a crash from pence next to pounds."""
    from domains.finance.data import load_panel

    p = load_panel(columns=["date", "ticker", "close"])
    g = p[p["ticker"] == "MSFT"].tail(300).reset_index(drop=True)
    close = g["close"].to_numpy()
    fallen = close.copy()
    fallen[day:] /= 100.0
    return g["date"], close, fallen
