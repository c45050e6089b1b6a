"""Two findings of a desk file that only the log knew or that refused the file:

* tickers whose spellings differ only in case (``aapl`` rows next to ``AAPL `` rows: two exports joined) are read as one
  ticker (commit f51f454), but the fold was only logged: the run's data report (``data_warnings.csv``, ``metrics.json``,
  the dashboard's warnings table) did not say two spellings were merged. It is now a ``ticker_spelling`` warning there.
* Bloomberg writes its missing values as ``#N/A`` texts: ``#N/A N/A`` was read as a missing day, but ``#N/A Field Not
  Applicable`` (an index's PX_VOLUME), ``#N/A Invalid Security`` and ``#N/A Requesting Data...`` (a sheet saved before its
  pull finished) refused the whole file as 'not numbers'. They are missing days too.

The files are written from the bundled real panel's prices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from domains.finance.data import load_panel, read_price_file


@pytest.fixture(scope="module")
def real():
    p = load_panel(columns=["date", "ticker", "close"])
    return {t: g.tail(200).reset_index(drop=True) for t, g in p[p["ticker"].isin(["KO", "MSFT"])].groupby("ticker")}


def test_case_folded_tickers_are_a_ticker_spelling_warning_in_the_runs_data_report(real, tmp_path):
    from domains.finance import api

    g = real["KO"]
    path = tmp_path / "joined.csv"
    pd.concat([pd.DataFrame({"date": g["date"][:120], "ticker": "ko", "close": g["close"][:120]}),
               pd.DataFrame({"date": g["date"][110:], "ticker": "KO ", "close": g["close"][110:]}),
               pd.DataFrame({"date": real["MSFT"]["date"], "ticker": "MSFT", "close": real["MSFT"]["close"]})]).to_csv(path, index=False)
    got, rep = read_price_file(path, min_history=50)
    assert sorted(got["ticker"].unique()) == ["KO", "MSFT"] and len(got[got["ticker"] == "KO"]) == len(g) - 1
    assert [(w["ticker"], w["kind"], w["value"]) for w in rep.warnings] == [("KO", "ticker_spelling", 120)]  # rows read as KO
    assert "tickers 'KO', 'ko' differ only in case (KO: 90 rows, ko: 120 rows); read as one ticker, KO" == rep.warnings[0]["detail"]
    assert rep.metrics()["data/warnings/ticker_spelling"] == 1 and rep.metrics()["data/warnings"] == 1
    run = tmp_path / "run"
    run.mkdir()
    rep.write(run)  # what train/forecast/score write into their run folder
    csv = pd.read_csv(run / "data_warnings.csv")
    assert csv[["ticker", "kind", "value"]].values.tolist() == [["KO", "ticker_spelling", 120.0]]
    shown = api.data_quality(run)  # the dashboard's warnings table
    assert shown.counts == {"ticker_spelling": 1} and list(shown.warnings["kind"]) == ["ticker_spelling"]


def test_one_spelling_per_ticker_is_no_warning(real, tmp_path):
    path = tmp_path / "plain.csv"
    pd.concat([g.assign(ticker=t.lower() if t == "KO" else f" {t} ") for t, g in real.items()]).to_csv(path, index=False)
    got, rep = read_price_file(path, min_history=50)
    assert sorted(got["ticker"].unique()) == ["MSFT", "ko"] and rep.warnings == []


def test_bloombergs_other_na_texts_are_missing_days(real, tmp_path):
    """A BDH sheet of KO (three days Bloomberg could not price, and the last two rows still 'Requesting Data...'), an
    index whose PX_VOLUME is '#N/A Field Not Applicable' on every row, and a security Bloomberg did not know."""
    ko, ms = real["KO"], real["MSFT"]
    na = {5: "#N/A N/A", 40: "#N/A Field Not Applicable", 77: "#n/a invalid security", 198: "#N/A Requesting Data...",
          199: "#N/A Requesting Data..."}
    rows = [(f"{d:%Y-%m-%d}", "KO US Equity", na.get(i, f"{c:.4f}"), "1000") for i, (d, c) in enumerate(zip(ko["date"], ko["close"]))]
    rows += [(f"{d:%Y-%m-%d}", "UKX Index", f"{c:.4f}", "#N/A Field Not Applicable") for d, c in zip(ms["date"], ms["close"])]
    rows += [(f"{d:%Y-%m-%d}", "XXXX US Equity", "#N/A Invalid Security", "#N/A Invalid Security") for d in ms["date"][:10]]
    path = tmp_path / "bdh.csv"
    pd.DataFrame(rows, columns=["Date", "Security", "PX_LAST", "PX_VOLUME"]).rename(columns={"Security": "ticker"}).to_csv(path, index=False)
    got, rep = read_price_file(path, min_history=50)
    assert sorted(got["ticker"].unique()) == ["KO US Equity", "UKX Index"]
    assert rep.nan_rows_dropped == len(na) + 10 and rep.tickers_dropped_empty == ["XXXX US Equity"]
    k = got[got["ticker"] == "KO US Equity"]
    want = ko.drop(index=list(na))
    np.testing.assert_array_equal(k["date"].to_numpy(), want["date"].to_numpy()[1:])
    np.testing.assert_allclose(k["close"].to_numpy(), np.round(want["close"].to_numpy()[1:], 4))
    assert (k["volume"] == 1000).all()
    u = got[got["ticker"] == "UKX Index"]
    assert len(u) == len(ms) - 1 and u["volume"].isna().all()  # not applicable to an index: missing, not refused
    assert [w["kind"] for w in rep.warnings] == ["no_prices"]


def test_other_text_in_a_price_column_is_still_refused(real, tmp_path):
    from domains.finance.data import PriceDataError

    g = real["KO"]
    close = [f"{c:.4f}" for c in g["close"]]
    close[3] = "N/A pending"
    path = tmp_path / "bad.csv"
    pd.DataFrame({"date": g["date"].dt.strftime("%Y-%m-%d"), "ticker": "KO", "close": close}).to_csv(path, index=False)
    with pytest.raises(PriceDataError, match="not numbers"):
        read_price_file(path)
