"""Any price file (issue 15.7, 13.9): Yahoo/yfinance/stooq single-series CSVs as they are, `;` and `$`
files, adjusted and unadjusted tickers mixed, and data-quality warnings for forward-filled, split
and fat-finger prices. The files are written from the bundled real panel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.data import prepare
from domains.finance.data import DATASETS, PriceDataError, load_panel, load_panel_data, read_price_file


@pytest.fixture(scope="module")
def real():
    """Two real series from the bundled panel, 2015-2018 (date-indexed closes)."""
    prepare(DATASETS[0])
    p = load_panel(columns=["date", "ticker", "close"])
    p = p[(p["date"] >= "2015-01-01") & (p["date"] <= "2018-12-31")]
    return {t: p[p["ticker"] == t].set_index("date")["close"] for t in ("AAPL", "KO")}


def _yahoo(close: pd.Series, adjust: float = 1.3) -> pd.DataFrame:
    """What ``yf.download(...).to_csv()`` (older yfinance) and most Yahoo downloads look like."""
    return pd.DataFrame({"Open": close * adjust * 1.001, "High": close * adjust * 1.02, "Low": close * adjust * 0.98, "Close": close * adjust,
                         "Adj Close": close, "Volume": 1_000_000}, index=close.index.rename("Date"))


def test_single_series_files_load_as_they_are(real, tmp_path):
    y = _yahoo(real["AAPL"])
    y.to_csv(tmp_path / "AAPL.csv")
    y.rename_axis(None).to_csv(tmp_path / "apple.csv")  # an unnamed index column
    with open(tmp_path / "yf.csv", "w") as fh:  # yfinance >= 0.2.51: three header rows
        fh.write("Price,Adj Close,Close,High,Low,Open,Volume\nTicker,MSFT,MSFT,MSFT,MSFT,MSFT,MSFT\nDate,,,,,,\n")
        y[["Adj Close", "Close", "High", "Low", "Open", "Volume"]].to_csv(fh, header=False)
    a = real["AAPL"]
    pd.DataFrame({"<TICKER>": "AAPL.US", "<PER>": "D", "<DATE>": a.index.strftime("%Y%m%d").astype(int), "<TIME>": 0, "<OPEN>": a,
                  "<HIGH>": a * 1.01, "<LOW>": a * 0.99, "<CLOSE>": a, "<VOL>": 100, "<OPENINT>": 0}).to_csv(tmp_path / "aapl.us.txt", index=False)
    expect = np.diff(np.log(a.to_numpy()))
    for name, ticker in (("AAPL.csv", "AAPL"), ("apple.csv", "APPLE"), ("yf.csv", "MSFT"), ("aapl.us.txt", "AAPL.US")):
        d, rep = read_price_file(tmp_path / name, ticker_from_name=True)
        assert list(d["ticker"].unique()) == [ticker], name
        np.testing.assert_allclose(d["log_ret"].to_numpy(), expect, rtol=1e-9, err_msg=name)  # Adj Close preferred
        assert {"open", "high", "low", "volume"} <= set(d.columns) and rep.warnings == [], name
    named = load_panel_data(str(tmp_path / "apple.csv"), ticker="GOOG").panel  # --ticker names a single series
    assert set(named["ticker"]) == {"GOOG"}


def test_dollar_thousands_and_semicolon_files(real, tmp_path):
    a = real["KO"] * 40  # four-digit prices, so thousands separators appear
    us = pd.DataFrame({"Date": a.index.strftime("%Y-%m-%d"), "Close": [f"${v:,.2f}" for v in a]})
    us.to_csv(tmp_path / "us.csv", index=False)
    eu = pd.DataFrame({"Date": a.index.strftime("%d.%m.%Y"), "Close": [f"{v:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".") for v in a]})
    eu.to_csv(tmp_path / "eu.csv", index=False, sep=";")  # day-first dates, decimal commas
    inv = pd.DataFrame({"Date": a.index.strftime("%m/%d/%Y"), "Price": [f"{v:,.2f}" for v in a], "Vol.": "12.5M", "Change %": "0.1%"})
    inv.to_csv(tmp_path / "investing.csv", index=False)  # investing.com style: month-first dates, 12.5M volumes
    expect = np.round(a.to_numpy(), 2)
    assert load_panel_data(str(tmp_path / "investing.csv")).panel["volume"].eq(12.5e6).all()
    for name in ("us.csv", "eu.csv", "investing.csv"):
        d = load_panel_data(str(tmp_path / name), ticker="KO").panel
        assert len(d) == len(a) - 1 and (d["date"].to_numpy() == a.index.to_numpy()[1:]).all(), name
        np.testing.assert_allclose(d["close"].to_numpy(), expect[1:], rtol=1e-12, err_msg=name)
    bad = us.copy()
    bad.loc[5, "Close"] = "n.a. (halted)"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(PriceDataError) as e:
        load_panel_data(str(tmp_path / "bad.csv"))
    msg = str(e.value)
    assert "bad.csv" in msg and "'close'" in msg and "n.a. (halted)" in msg and "plain numbers" in msg and "np." not in msg


def test_mixed_adjusted_and_unadjusted_tickers_keep_all_rows(real, tmp_path):
    a, k = real["AAPL"], real["KO"]
    mixed = pd.concat([pd.DataFrame({"date": a.index, "ticker": "AAPL", "close": a * 1.3, "adj_close": a}),
                       pd.DataFrame({"date": k.index, "ticker": "KO", "close": k})], ignore_index=True)
    mixed.to_csv(tmp_path / "mixed.csv", index=False)
    d = load_panel_data(str(tmp_path / "mixed.csv"))
    assert d.panel.groupby("ticker").size().to_dict() == {"AAPL": len(a) - 1, "KO": len(k) - 1}  # KO is not dropped
    assert d.report.price_column == {"AAPL": "adj_close", "KO": "close"}
    np.testing.assert_allclose(d.panel.loc[d.panel["ticker"] == "AAPL", "close"], a.to_numpy()[1:])


def test_quality_warnings_forward_fill_split_spike_and_short(real, tmp_path):
    a = real["AAPL"].copy()
    split = a.copy()
    split[split.index >= "2017-06-01"] /= 4  # an unadjusted 1:4 split
    spike = real["KO"].copy()
    spike.iloc[300] *= 100  # a x100 fat finger that reverts
    weekends = pd.bdate_range(a.index[0], a.index[-1], freq="W-SAT")
    ff = pd.concat([a, pd.Series(np.nan, index=weekends)]).sort_index().ffill()  # forward-filled Saturdays
    frames = [pd.DataFrame({"date": s.index, "ticker": t, "close": s.to_numpy()}) for t, s in
              (("SPLIT", split), ("SPIKE", spike), ("FFILL", ff), ("SHORT", a.iloc[:50]))]
    pd.concat(frames).to_csv(tmp_path / "dirty.csv", index=False)
    d = load_panel_data(str(tmp_path / "dirty.csv"))
    w = d.report.warnings_frame()
    kinds = w.groupby("ticker")["kind"].apply(set).to_dict()
    assert kinds["SPLIT"] == {"suspected_split"} and w.loc[w["ticker"] == "SPLIT", "date"].tolist() == ["2017-06-01"]
    assert w.loc[w["ticker"] == "SPLIT", "value"].iloc[0] == pytest.approx(4.0, rel=0.03)  # the 1:4 split plus that day's own move
    assert kinds["SPIKE"] == {"price_spike"} and kinds["SHORT"] == {"short_history"}
    assert "forward_filled" in kinds["FFILL"]
    assert d.report.tickers_dropped_short == ["SHORT"] and "SHORT" not in set(d.panel["ticker"])
    # repaired: the spike row and the forward-filled Saturdays are gone, so neither distorts returns
    assert len(d.panel[d.panel["ticker"] == "SPIKE"]) == len(spike) - 2 and d.panel.loc[d.panel["ticker"] == "SPIKE", "log_ret"].abs().max() < 0.2
    assert d.panel.loc[d.panel["ticker"] == "FFILL", "date"].dt.dayofweek.max() < 5
    m = d.report.metrics()
    assert m["data/warnings/price_spike"] == 1 and m["data/tickers_dropped"] == 1 and m["data/rows_repaired"] == 1 + len(weekends)
    # without the Saturdays' repair the zero returns would be flagged as stale prices
    stale = pd.DataFrame({"date": ff.index, "ticker": "STALE", "close": ff.to_numpy()})
    stale = stale[stale["date"].dt.dayofweek < 5].copy()
    stale.loc[stale.index[::4], "close"] = np.nan
    stale["close"] = stale["close"].ffill()
    stale.to_csv(tmp_path / "stale.csv", index=False)
    assert "stale_prices" in set(load_panel_data(str(tmp_path / "stale.csv")).report.warnings_frame()["kind"])


def test_gap_and_history_limits_are_flags(real, tmp_path):
    a = real["AAPL"]
    gappy = a[(a.index < "2016-03-01") | (a.index > "2016-04-15")]
    pd.DataFrame({"Date": gappy.index, "Close": gappy.to_numpy()}).to_csv(tmp_path / "GAP.csv", index=False)
    with pytest.raises(PriceDataError, match="--max-gap-days"):
        load_panel_data(str(tmp_path / "GAP.csv"))
    assert len(load_panel_data(str(tmp_path / "GAP.csv"), max_gap_days=40).panel) == len(gappy) - 1
    with pytest.raises(PriceDataError, match="no ticker has at least 5000 daily prices \\(found GAP: \\d+\\)"):
        load_panel_data(str(tmp_path / "GAP.csv"), max_gap_days=40, min_history=5000)


def test_ticker_and_tickers_are_distinct_flags_and_config_lists_parse(tmp_path):
    import json

    from core.config import parse_config
    from domains.finance.config import ForecastConfig, TrainConfig

    cfg = parse_config(ForecastConfig, ["--ticker", "GOOG", "--max-gap-days", "30", "--min-history", "60"])
    assert cfg.ticker == "GOOG" and cfg.tickers == [] and cfg.data_options() == {"ticker": "GOOG", "max_gap_days": 30, "min_history": 60}
    with pytest.raises(SystemExit):  # no abbreviations: --tick is not silently --tickers
        parse_config(ForecastConfig, ["--tick", "GOOG"])
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"tickers": "AAPL", "epochs": 2}))
    cfg = parse_config(TrainConfig, ["--config", str(p)])
    assert cfg.tickers == ["AAPL"] and cfg.epochs == 2 and not hasattr(cfg, "model_run") and not hasattr(ForecastConfig(), "epochs")
