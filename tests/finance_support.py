"""Finance test helper: a slice of the bundled real panel (prepared offline on first use).

    from tests.finance_support import panel_slice
"""

from __future__ import annotations

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
