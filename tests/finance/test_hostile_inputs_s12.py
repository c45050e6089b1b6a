"""Price files as a risk desk brings them (session-12 pass; earlier passes are in test_hostile_inputs.py and
test_prices.py): tickers with dots in the file name, a browser's duplicate-download name, daily timestamps written
in another time zone (an exchange's midnight stored in UTC lands on the day before), two CSVs joined with ``cat``,
an investing.com footer, stooq intraday, typed Parquet, gzip. Synthetic series, no training."""

from __future__ import annotations

import decimal
import gzip

import numpy as np
import pandas as pd
import pytest

from domains.finance.data import PriceDataError, read_price_file


def _frame(n=160, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2021-01-04", periods=n)
    close = np.round(120 * np.exp(np.cumsum(rng.normal(0, 0.01, n))), 2)
    return pd.DataFrame({"Date": dates, "Open": close, "High": close * 1.01, "Low": close * 0.99, "Close": close,
                         "Adj Close": close, "Volume": rng.integers(100_000, 900_000, n)})


@pytest.mark.parametrize("file_name, ticker", [("BRK.B.csv", "BRK.B"), ("aapl.us.txt", "AAPL.US"), ("7203.T.csv", "7203.T"),
                                               ("^GSPC.csv.gz", "^GSPC"), ("EURUSD=X.csv", "EURUSD=X"), ("GOOG (1).csv", "GOOG")])
def test_a_single_series_is_named_after_the_whole_file_name(tmp_path, file_name, ticker):
    s = _frame().assign(Date=lambda f: f["Date"].dt.strftime("%Y-%m-%d"))
    path = tmp_path / file_name
    if file_name.endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            s.to_csv(fh, index=False)
    else:
        s.to_csv(path, index=False)
    d = read_price_file(path, ticker_from_name=True)[0]
    assert set(d["ticker"]) == {ticker}  # BRK.B.csv was ticker BRK, aapl.us.txt AAPL, GOOG (1).csv 'GOOG (1)'
    np.testing.assert_allclose(d["close"].to_numpy(), s["Close"].to_numpy()[1:])


@pytest.mark.parametrize("file_name", ["N225.tsv", "N225.tsv.gz"])
def test_a_tab_separated_file_loads_gzipped_or_not(tmp_path, file_name):
    s = _frame().assign(Date=lambda f: f["Date"].dt.strftime("%Y-%m-%d"))
    path = tmp_path / file_name
    with (gzip.open(path, "wt") if file_name.endswith(".gz") else open(path, "w")) as fh:
        s.to_csv(fh, index=False, sep="\t")
    d = read_price_file(path, ticker_from_name=True)[0]  # .tsv.gz was refused as "unsupported file type '.gz'"
    assert set(d["ticker"]) == {"N225"}  # while the message named .tsv (each optionally .gz)
    np.testing.assert_allclose(d["close"].to_numpy(), s["Close"].to_numpy()[1:])


def test_an_exchange_midnight_written_in_utc_is_refused_and_local_or_midnight_stamps_load(tmp_path):
    s = _frame()
    local = s["Date"]
    tokyo = s.set_index(pd.DatetimeIndex(local).tz_localize("Asia/Tokyo").rename("Date")).drop(columns="Date")
    tokyo.tz_convert("UTC").to_parquet(tmp_path / "7203.T.parquet")  # Monday 00:00 Tokyo = Sunday 15:00 UTC
    frankfurt = s.assign(Date=pd.DatetimeIndex(local).tz_localize("Europe/Berlin").tz_convert("UTC").astype(str))
    frankfurt.to_csv(tmp_path / "SAP.DE.csv", index=False)  # '2021-01-03 23:00:00+00:00' for Monday 4 January
    for name, when in (("7203.T.parquet", "2021-01-03 15:00 (Sunday)"), ("SAP.DE.csv", "2021-01-03 23:00 (Sunday)")):
        with pytest.raises(PriceDataError) as e:  # was read with every date one day early (Sunday..Thursday)
            read_price_file(tmp_path / name, ticker_from_name=True)
        msg = str(e.value)
        assert str(tmp_path / name) in msg and when in msg and "\n" not in msg and "local dates" in msg
    tokyo.to_parquet(tmp_path / "local.parquet")  # the same prices in the exchange's own time zone
    d = read_price_file(tmp_path / "local.parquet", "7203.T")[0]
    assert (d["date"].to_numpy() == local.to_numpy()[1:]).all() and set(d["date"].dt.dayofweek) == set(range(5))
    rng = np.random.default_rng(3)  # crypto: every day of the week, candles at 00:00 UTC
    days = pd.date_range("2021-01-01", periods=200, freq="D", tz="UTC")
    btc = pd.DataFrame({"Date": days.astype(str), "Close": np.round(30_000 * np.exp(np.cumsum(rng.normal(0, 0.03, 200))), 2)})
    btc.to_csv(tmp_path / "BTC-USD.csv", index=False)
    d = read_price_file(tmp_path / "BTC-USD.csv", ticker_from_name=True)[0]
    assert len(d) == 199 and (d["date"].to_numpy() == days.tz_localize(None).to_numpy()[1:]).all()
    np.testing.assert_allclose(d["close"].to_numpy(), btc["Close"].to_numpy()[1:])


@pytest.mark.parametrize("index_column", [False, True])
def test_two_downloads_joined_with_cat_load_as_one_series(tmp_path, index_column):
    s = _frame().assign(Date=lambda f: f["Date"].dt.strftime("%Y-%m-%d"))
    if index_column:  # yf.download(...).to_csv(): the dates are an index column
        a, b = (part.set_index("Date") for part in (s.iloc[:90], s.iloc[80:]))
        text = a.to_csv() + b.to_csv()
    else:
        text = s.iloc[:90].to_csv(index=False) + s.iloc[80:].to_csv(index=False)  # overlapping days 80..89 are identical
    (tmp_path / "MSFT.csv").write_text(text)
    d, rep = read_price_file(tmp_path / "MSFT.csv", ticker_from_name=True)  # was: column 'close' ... not numbers, e.g. 'Close'
    np.testing.assert_allclose(d["close"].to_numpy(), s["Close"].to_numpy()[1:])
    np.testing.assert_allclose(d["volume"].to_numpy(), s["Volume"].to_numpy()[1:])
    assert rep.duplicate_rows_dropped == 10


def test_forecast_horizon_up_to_the_models_and_beyond_it_refused_in_one_line(tmp_path, capsys):
    import json

    import torch

    from domains.finance.features import base_features, observed_inputs
    from domains.finance.forecast import main as forecast_main
    from domains.finance.model import Forecaster, TFTSpec, build_tft
    from domains.finance.features import FoldScaler

    s = _frame(n=200)
    s.assign(Date=s["Date"].dt.strftime("%Y-%m-%d")).to_csv(tmp_path / "QQQ.csv", index=False)
    panel = read_price_file(tmp_path / "QQQ.csv", ticker_from_name=True)[0]
    feat = base_features(panel)
    torch.manual_seed(0)
    spec = TFTSpec(encoder_length=20, horizon=5, hidden_size=8, attention_heads=1, hidden_continuous_size=4, observed_reals=tuple(observed_inputs(feat)))
    model_run = tmp_path / "runs" / "finance" / "m"
    Forecaster(build_tft(spec, ["QQQ"]), spec, FoldScaler.fit(feat), ["QQQ"]).save(model_run / "model")
    (model_run / "run.json").write_text(json.dumps({"domain": "finance", "kind": "model", "status": "completed", "command": "train"}))
    args = ["--runs-dir", str(tmp_path / "runs"), "--model-run", "m", "--data", str(tmp_path / "QQQ.csv"), "--no-track"]
    capsys.readouterr()
    assert forecast_main([*args, "--horizon", "6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--horizon 6: model run m forecasts 5 trading days ahead" in err[0]  # was argparse's 'unrecognized arguments'
    assert not list((tmp_path / "runs" / "finance").glob("forecast-*"))  # refused before a job run exists
    assert forecast_main([*args, "--horizon", "2"]) == 0
    out_text = capsys.readouterr().out
    assert "var99 / var95: next session's value-at-risk, the loss (as a log return" in out_text and "days 1-2" in out_text  # units said
    out = pd.read_parquet(next((tmp_path / "runs" / "finance").glob("forecast-*")) / "forecasts.parquet")
    assert sorted(out["horizon"].unique()) == [1, 2] and len(out) == 2 * 2  # ret and rvol, days 1-2
    assert list(out.loc[out["target"] == "ret", "date"].dt.strftime("%Y-%m-%d")) == ["2021-10-11", "2021-10-12"]


def test_train_refuses_a_ticker_listed_after_the_validation_cutoff_before_a_run_exists(tmp_path, capsys):
    from domains.finance.train import main as train_main

    rng = np.random.default_rng(5)
    days = pd.bdate_range("2018-01-01", periods=600)
    old = pd.DataFrame({"date": days, "ticker": "OLD", "close": 50 * np.exp(np.cumsum(rng.normal(0, 0.01, 600)))})
    new = pd.DataFrame({"date": days[-120:], "ticker": "NEW", "close": 20 * np.exp(np.cumsum(rng.normal(0, 0.02, 120)))})  # listed 480 days later
    pd.concat([old, new]).assign(date=lambda f: f["date"].dt.strftime("%Y-%m-%d")).to_csv(tmp_path / "panel.csv", index=False)
    runs = tmp_path / "runs"
    capsys.readouterr()
    assert train_main(["--data", str(tmp_path / "panel.csv"), "--val-days", "150", "--runs-dir", str(runs), "--no-track", "--epochs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1:]
    assert err[0].startswith("error: --val-days 150") and "--tickers" in err[0]  # its first return is the day after its first price
    assert f"--val-days 150: training ends on {days[-151]:%Y-%m-%d}, but 1 ticker(s) start later (NEW on {days[-119]:%Y-%m-%d})" in err[0]
    assert not (runs / "finance").exists() or not any((runs / "finance").iterdir())  # was a failed train-… run, after the data load


@pytest.mark.parametrize("kind", ["stooq", "eu_semicolon", "gzip", "descending", "typed_parquet", "empty_volume", "tz_history_csv"])
def test_more_downloads_load_with_their_values(tmp_path, kind):
    """Formats that already loaded; their values are asserted here so a change to the reader cannot break them unseen."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    s = _frame()
    close, day = s["Close"].to_numpy(), s["Date"]
    path = tmp_path / "X.csv"
    if kind == "stooq":
        pd.DataFrame({"<TICKER>": "X", "<PER>": "D", "<DATE>": day.dt.strftime("%Y%m%d"), "<TIME>": "000000", "<OPEN>": s["Open"],
                      "<HIGH>": s["High"], "<LOW>": s["Low"], "<CLOSE>": close, "<VOL>": s["Volume"], "<OPENINT>": 0}).to_csv(path, index=False)
    elif kind == "eu_semicolon":
        comma = [f"{v:.2f}".replace(".", ",") for v in close]
        pd.DataFrame({"Datum": day.dt.strftime("%d.%m.%Y"), "Schluss": comma, "Volumen": s["Volume"]}).to_csv(path, sep=";", index=False)
    elif kind == "gzip":
        path = tmp_path / "X.csv.gz"
        with gzip.open(path, "wt") as fh:
            s.to_csv(fh, index=False)
    elif kind == "descending":  # investing.com writes the newest day first
        s.iloc[::-1].to_csv(path, index=False)
    elif kind == "typed_parquet":  # date32, decimal128 prices, a dictionary-encoded ticker
        path = tmp_path / "X.parquet"
        pq.write_table(pa.table({"date": pa.array([d.date() for d in day], pa.date32()), "ticker": pa.array(["X"] * len(s)).dictionary_encode(),
                                 "close": pa.array([decimal.Decimal(f"{v:.2f}") for v in close], pa.decimal128(12, 2))}), path)
    elif kind == "empty_volume":
        s.assign(Volume="").to_csv(path, index=False)
    elif kind == "tz_history_csv":  # yf.Ticker(...).history().to_csv(): New York midnight, Dividends and Stock Splits columns
        s.drop(columns="Adj Close").assign(Dividends=0.0, **{"Stock Splits": 0.0}).set_index(
            pd.DatetimeIndex(day).tz_localize("America/New_York").rename("Date")).drop(columns="Date").to_csv(path)
    d = read_price_file(path, "X")[0]
    assert set(d["ticker"]) == {"X"} and (d["date"].to_numpy() == day.to_numpy()[1:]).all()
    np.testing.assert_allclose(d["close"].to_numpy(), close[1:], rtol=1e-12)
    if kind == "empty_volume":
        assert d["volume"].isna().all()
    elif kind in ("stooq", "eu_semicolon", "gzip", "tz_history_csv"):
        np.testing.assert_allclose(d["volume"].to_numpy(), s["Volume"].to_numpy()[1:])


def test_a_zipped_download_is_refused_naming_the_compressed_form_that_is_read(tmp_path):
    import zipfile

    path = tmp_path / "AAPL.csv.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("AAPL.csv", _frame().to_csv(index=False))
    with pytest.raises(PriceDataError) as e:
        read_price_file(path, ticker_from_name=True)
    assert str(path) in str(e.value) and "'.zip'" in str(e.value) and ".gz" in str(e.value)  # .csv.gz is read; the message did not say so


def test_forecasting_a_ticker_the_data_lacks_lists_the_tickers_it_has():
    from types import SimpleNamespace

    from domains.finance.predictor import prepare_forecaster

    panel = pd.DataFrame({"ticker": ["AAPL", "KO", "BRK.B"], "date": pd.Timestamp("2021-01-04"), "close": 1.0})
    with pytest.raises(PriceDataError) as e:
        prepare_forecaster(SimpleNamespace(tickers=["AAPL"]), panel, None, ["aapl"], source="prices.csv")
    msg = str(e.value)  # was "ticker(s) ['aapl'] have no prices in prices.csv" and nothing else
    assert "['aapl'] have no prices in prices.csv (it has 3: AAPL, BRK.B, KO)" in msg and "case-sensitive" in msg and "\n" not in msg


@pytest.mark.parametrize("fields", [{"Date": "Date", "Open": "PX_OPEN", "High": "PX_HIGH", "Low": "PX_LOW", "Close": "PX_LAST", "Volume": "PX_VOLUME"},
                                    {"Date": "Date", "Open": "OPEN_PRC", "High": "HIGH_1", "Low": "LOW_1", "Close": "TRDPRC_1", "Volume": "ACVOL_UNS"}])
def test_bloomberg_and_refinitiv_field_codes_are_read(tmp_path, fields):
    s = _frame().assign(Date=lambda f: f["Date"].dt.strftime("%m/%d/%Y"))
    s[list(fields)].rename(columns=fields).to_csv(tmp_path / "IBM.csv", index=False)
    d = read_price_file(tmp_path / "IBM.csv", ticker_from_name=True)[0]  # was: no close price column ... a wide file ... is not read
    for ours, theirs in (("close", "Close"), ("open", "Open"), ("high", "High"), ("low", "Low"), ("volume", "Volume")):
        np.testing.assert_allclose(d[ours].to_numpy(), s[theirs].to_numpy()[1:], err_msg=fields[theirs])


@pytest.mark.parametrize("title, sep", [("AAPL US Equity,,", ","), ("Historical prices: Apple Inc.", ";")])
def test_a_title_line_above_the_header_is_skipped(tmp_path, title, sep):
    s = _frame().assign(Date=lambda f: f["Date"].dt.strftime("%m/%d/%Y"))[["Date", "Close", "Volume"]]
    s = s.rename(columns={"Close": "PX_LAST", "Volume": "PX_VOLUME"}) if "Equity" in title else s
    (tmp_path / "AAPL.csv").write_text(title + "\n" + s.to_csv(index=False, sep=sep))
    d = read_price_file(tmp_path / "AAPL.csv", ticker_from_name=True)[0]  # was: no close price column; found ['AAPL US Equity', 'Unnamed: 1', ...]
    assert set(d["ticker"]) == {"AAPL"}
    np.testing.assert_allclose(d["close"].to_numpy(), s.iloc[:, 1].to_numpy()[1:])
    np.testing.assert_allclose(d["volume"].to_numpy(), s.iloc[:, 2].to_numpy()[1:])


def test_a_one_column_file_is_not_taken_for_a_title(tmp_path):
    (tmp_path / "X.csv").write_text("Close\n" + "\n".join(f"{100 + i}" for i in range(150)) + "\n")
    with pytest.raises(PriceDataError, match="no date column"):
        read_price_file(tmp_path / "X.csv", ticker_from_name=True)
