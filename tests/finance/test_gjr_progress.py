"""The per-ticker GJR-GARCH-t fits before train/transfer build a GARCH-informed model take ~0.4 s a ticker on a
busy 2-core machine (10-60 s for the bundled panel) and used to run without a word: they have a progress bar."""

from __future__ import annotations

import numpy as np
import pandas as pd

from domains.finance.features import fit_gjr_params


def _feat(tickers, n=200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    dates = pd.bdate_range("2020-01-01", periods=n)
    return pd.concat([pd.DataFrame({"date": dates, "ticker": t, "log_ret": rng.standard_t(5, n) * 0.01, "is_future": False}) for t in tickers])


def test_fitting_several_tickers_shows_a_progress_bar_and_one_ticker_does_not(monkeypatch, capsys):
    monkeypatch.setenv("SUITE_PROGRESS", "1")
    params = fit_gjr_params(_feat(["A", "B", "C"]))
    err = capsys.readouterr().err
    assert "GJR-GARCH-t fits" in err and "/3 " in err
    assert sorted(params) == ["A", "B", "C"] and all(len(p) == 5 and np.isfinite(p).all() for p in params.values())
    fit_gjr_params(_feat(["A"]))
    assert "GJR-GARCH-t fits" not in capsys.readouterr().err
