"""Price files as users bring them (hostile-input pass): three-decimal prices next to a text cell,
UTC offsets that change with daylight saving, mixed date formats, number-only dates, header-only,
empty and binary files, a folder, Windows encodings, future dates, and tickers with ``/`` and ``..``
that must not name files outside the run folder. Synthetic series, no training."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from domains.finance.data import PriceDataError, read_price_file, validate_prices


def _series(n=160, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2021-01-04", periods=n)
    close = np.round(120 * np.exp(np.cumsum(rng.normal(0, 0.01, n))), 3)
    return pd.DataFrame({"Date": dates.strftime("%Y-%m-%d"), "Close": close})


def test_three_decimal_prices_with_one_text_cell_are_not_read_as_decimal_commas(tmp_path):
    s = _series()
    s["Close"] = [f"{v:.3f}" for v in s["Close"]]  # 127.504 reads as 127504 with a decimal comma
    s.loc[40, "Close"] = "-"  # one missing-value marker makes the column text
    s.to_csv(tmp_path / "X.csv", index=False)
    d, rep = read_price_file(tmp_path / "X.csv", ticker_from_name=True)
    expect = _series()["Close"].drop(index=40).to_numpy()
    np.testing.assert_allclose(d["close"].to_numpy(), expect[1:], rtol=1e-12)  # first row has no return
    assert rep.nan_rows_dropped == 1 and rep.warnings == []
    eu = _series()
    eu["Close"] = [f"{v:.2f}".replace(".", ",") for v in eu["Close"]]
    eu.loc[3, "Close"] = "1.234,50"  # a decimal-comma file stays one
    eu.to_csv(tmp_path / "eu.csv", index=False, sep=";")
    d, rep = read_price_file(tmp_path / "eu.csv", "EU")
    np.testing.assert_allclose(d["close"].to_numpy(), np.array([float(f"{v:.2f}") for v in _series()["Close"].drop(index=3)])[1:], rtol=1e-12)
    assert [(w["kind"], w["value"]) for w in rep.warnings] == [("price_spike", 1234.5)]  # 1.234,50 read as 1234.5 (then a fat finger)


def test_utc_offsets_across_daylight_saving_and_mixed_date_formats_give_local_dates(tmp_path):
    s = _series()
    local = pd.to_datetime(s["Date"])
    tz = s.assign(Date=local.dt.tz_localize("America/New_York").astype(str))  # -05:00 in winter, -04:00 from March
    assert tz["Date"].str.endswith("-04:00").any() and tz["Date"].str.endswith("-05:00").any()
    tz.to_csv(tmp_path / "tz.csv", index=False)
    mixed = s.copy()
    mixed.loc[::2, "Date"] = local[::2].dt.strftime("%m/%d/%Y")  # 01/05/2021 next to 2021-01-06
    mixed.to_csv(tmp_path / "mixed.csv", index=False)
    for name in ("tz.csv", "mixed.csv"):
        d = read_price_file(tmp_path / name, "X")[0]
        assert (d["date"].to_numpy() == local.to_numpy()[1:]).all(), name
    long = pd.DataFrame({"date": tz["Date"].astype("string"), "ticker": "X", "close": s["Close"]})  # the library entry point
    assert (validate_prices(long)[0]["date"].to_numpy() == local.to_numpy()).all()


@pytest.mark.parametrize("kind, expect", [("header", "no data rows"), ("empty", "the file is empty"), ("folder", "is a folder"),
                                          ("serial", "holds numbers"), ("epoch", "holds numbers"), ("xlsx", "Excel workbook"),
                                          ("future", "dated after today")])
def test_unusable_files_are_one_line_errors(tmp_path, kind, expect):
    s = _series()
    path = tmp_path / "P.csv"
    if kind == "header":
        s.iloc[:0].to_csv(path, index=False)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    elif kind == "serial":
        s.assign(Date=(pd.to_datetime(s["Date"]) - pd.Timestamp("1899-12-30")).dt.days).to_csv(path, index=False)  # Excel day numbers
    elif kind == "epoch":
        s.assign(Date=pd.to_datetime(s["Date"]).astype("datetime64[s]").astype("int64")).to_csv(path, index=False)
    elif kind == "xlsx":
        path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)  # a workbook renamed to .csv
    elif kind == "future":
        s.assign(Date=pd.bdate_range(pd.Timestamp.now().normalize() - pd.Timedelta(days=150), periods=len(s)).strftime("%Y-%m-%d")).to_csv(path, index=False)
    with pytest.raises(PriceDataError) as e:
        read_price_file(path, "X")
    assert expect in str(e.value) and "\n" not in str(e.value) and str(path) in str(e.value)


def test_parquet_named_csv_and_windows_encoded_files_are_read(tmp_path):
    s = _series()
    s.to_parquet(tmp_path / "P.csv")
    np.testing.assert_allclose(read_price_file(tmp_path / "P.csv", "X")[0]["close"], s["Close"].to_numpy()[1:])
    s.assign(Name="Société Générale", Close=[f"€{v:.2f}" for v in s["Close"]]).to_csv(tmp_path / "W.csv", index=False, encoding="cp1252")
    d = read_price_file(tmp_path / "W.csv")[0]
    assert set(d["ticker"]) == {"Société Générale"}
    np.testing.assert_allclose(d["close"], [float(f"{v:.2f}") for v in s["Close"].to_numpy()[1:]])


def test_an_excel_unicode_text_export_utf16_with_tabs_is_read(tmp_path):
    """Excel's "Unicode text" export: UTF-16 with a byte-order mark, tab-separated (was refused: the header sniff read NULs)."""
    s = _series()
    s.to_csv(tmp_path / "U.txt", index=False, sep="\t", encoding="utf-16")
    assert (tmp_path / "U.txt").read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff")
    d = read_price_file(tmp_path / "U.txt", "X")[0]
    np.testing.assert_allclose(d["close"], s["Close"].to_numpy()[1:])


@pytest.mark.parametrize("ticker", ["../../../../escaped", "/abs/a b" + "x" * 300])
def test_backtest_plots_named_after_a_hostile_ticker_stay_in_the_run_folder(tmp_path, ticker):
    from domains.finance.walkforward import save_plots

    run = tmp_path / "runs" / "finance" / "bt"
    run.mkdir(parents=True)
    d = pd.bdate_range("2022-01-03", periods=5)
    models = ["tft", "gjr_t"]
    out = {"aggregate": pd.DataFrame({"model": models, "vol_pinball": 1.0, "ret_pinball_h1": 1.0, "vol_qlike": 1.0, "var99_kupiec_pass_rate": 1.0}),
           "pinball_by_quantile": pd.DataFrame({"target": "rvol", "model": models, "quantile": 0.5, "pinball": 1.0}),
           "by_fold": pd.DataFrame({"model": models, "fold": 0, "cutoff": d[0], "test_end": d[-1], "vol_pinball": 1.0, "regime": "calm"}),
           "var_breaches": pd.DataFrame({"ticker": ticker, "model": "tft", "date": d, "ret": 0.0, "var99": -0.03, "breach99": False})}
    res = SimpleNamespace(losses=pd.DataFrame({"ticker": ticker, "model": "tft", "origin": d, "rvol_median": 0.01, "rvol": 0.01}))
    paths = save_plots(out, res, run, focus=ticker)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert len(written) == len(paths) == 5 and all(p.parent == run for p in paths)
    assert all(str(p).startswith("runs/finance/bt/") and p.parent.name == "bt" for p in written), written


@pytest.mark.parametrize("limits", [{"min_history": 1}, {"min_history": 0}, {"max_gap_days": -1}])
def test_limits_that_cannot_give_a_return_are_refused(tmp_path, limits):
    _series(n=1).to_csv(tmp_path / "one.csv", index=False)  # min_history=1 used to return an empty panel without a word
    with pytest.raises(PriceDataError, match="at least 2 prices"):
        read_price_file(tmp_path / "one.csv", "X", **limits)


def test_a_damaged_saved_forecaster_is_a_one_line_error(tmp_path):
    import json

    from core.errors import UserInputError
    from domains.finance.features import FoldScaler, base_features
    from domains.finance.model import Forecaster, TFTSpec, build_tft

    _series(n=120).to_csv(tmp_path / "S.csv", index=False)
    feat = base_features(read_price_file(tmp_path / "S.csv", "S")[0])
    spec = TFTSpec(encoder_length=10, horizon=2, hidden_size=4, attention_heads=1, hidden_continuous_size=2)
    Forecaster(build_tft(spec, ["S"]), spec, FoldScaler.fit(feat), ["S"]).save(tmp_path / "model")
    meta = tmp_path / "model" / "forecaster.json"
    good = meta.read_text()
    assert Forecaster.load(tmp_path / "model").tickers == ["S"]
    whole = json.loads(good)
    for bad in (good[: len(good) // 2], json.dumps({k: v for k, v in whole.items() if k != "scaler"}), json.dumps({**whole, "ticker_index": [1]})):
        meta.write_text(bad)  # cut short by a copy; an entry missing; an entry of the wrong type
        with pytest.raises(UserInputError) as e:
            Forecaster.load(tmp_path / "model")
        assert str(meta) in str(e.value) and "\n" not in str(e.value)


def test_padded_ticker_names_are_trimmed_and_rows_without_a_ticker_refused(tmp_path):
    s = _series().rename(columns={"Date": "date"})
    s.assign(ticker="AAPL ").to_csv(tmp_path / "pad.csv", index=False)  # a padded spreadsheet export
    assert set(read_price_file(tmp_path / "pad.csv", "AAPL")[0]["ticker"]) == {"AAPL"}
    pd.concat([s.assign(ticker="AAPL"), s.iloc[:2].assign(ticker=None)]).to_csv(tmp_path / "gaps.csv", index=False)
    with pytest.raises(PriceDataError, match="2 row.s. with an empty ticker"):  # used to vanish without a word
        read_price_file(tmp_path / "gaps.csv")


def test_the_transfer_run_is_named_after_hostile_holdout_tickers_safely():
    from core.config import check_run_name
    from domains.finance.transfer import default_run_name

    name = default_run_name(["BRK/B", "../../x", "ÄPFEL"])  # was 'transfer-BRK/B-...': refused as a --name the user never gave
    check_run_name(name, "run name")
    assert name.startswith("transfer-BRK_B-_.._x-")


def test_a_ticker_named_NA_is_a_ticker_not_a_missing_value(tmp_path):
    s = _series().rename(columns={"Date": "date"})
    s["Close"] = s["Close"].astype(object)
    s.loc[7, "Close"] = "NA"  # in a price column it still means missing
    pd.concat([s.assign(ticker="NA"), _series(seed=1).rename(columns={"Date": "date"}).assign(ticker="KO")]).to_csv(tmp_path / "L.csv", index=False)
    d, rep = read_price_file(tmp_path / "L.csv")
    assert sorted(d["ticker"].unique()) == ["KO", "NA"] and rep.nan_rows_dropped == 1
    from domains.finance import api

    rep.warn("NA", "stale_prices", value=0.1, detail="x")  # what a run records, read back by the dashboard
    rep.write(tmp_path)
    assert api.data_quality(tmp_path).warnings["ticker"].tolist() == ["NA"]


@pytest.mark.parametrize("labels", [("Price", "Ticker"), ("", "")])
def test_a_multi_ticker_yfinance_download_is_read_as_long_rows(tmp_path, labels):
    a, m = _series(seed=0), _series(seed=1)
    m.loc[:9, "Close"] = np.nan  # MSFT starts later: empty cells
    with open(tmp_path / "yf.csv", "w") as fh:  # yf.download(["AAPL", "MSFT"]).to_csv(): a (field, ticker) column header
        fh.write(f"{labels[0]},Close,Close,Volume,Volume\n{labels[1]},AAPL,MSFT,AAPL,MSFT\nDate,,,,\n")
        for d, ca, cm in zip(a["Date"], a["Close"], m["Close"]):
            fh.write(f"{d},{ca},{'' if np.isnan(cm) else cm},100,200\n")
    d, rep = read_price_file(tmp_path / "yf.csv")  # was: "cannot be read as .csv (ValueError: Duplicate names are not allowed.)"
    np.testing.assert_allclose(d.loc[d["ticker"] == "AAPL", "close"], a["Close"].to_numpy()[1:])
    np.testing.assert_allclose(d.loc[d["ticker"] == "MSFT", "close"], m["Close"].to_numpy()[11:])
    assert rep.nan_rows_dropped == 10 and set(d.loc[d["ticker"] == "MSFT", "volume"]) == {200}


def test_weekly_prices_are_not_taken_for_daily_ones(tmp_path):
    s = _series(n=160)
    s["Date"] = pd.date_range("2019-01-04", periods=len(s), freq="W-FRI").strftime("%Y-%m-%d")  # interval=1wk: gaps of 4 days pass --max-gap-days
    s.to_csv(tmp_path / "W.csv", index=False)
    with pytest.raises(PriceDataError, match="weekly or monthly data"):
        read_price_file(tmp_path / "W.csv", "W")


def test_yfinance_frames_saved_as_parquet_are_read(tmp_path):
    s = _series()
    y = pd.DataFrame({"Close": s["Close"].to_numpy(), "Volume": 100.0}, index=pd.DatetimeIndex(pd.to_datetime(s["Date"]), name="Date"))
    y.to_parquet(tmp_path / "AAPL.parquet")  # yf.download("AAPL").to_parquet(): the dates are the index
    d = read_price_file(tmp_path / "AAPL.parquet", ticker_from_name=True)[0]  # was: "no date column"
    np.testing.assert_allclose(d["close"], s["Close"].to_numpy()[1:])
    two = pd.concat({"AAPL": y, "MSFT": y * 2}, axis=1).swaplevel(axis=1).sort_index(axis=1)  # yf.download([...]): (field, ticker)
    for name, frame in (("by_field", two), ("by_ticker", two.swaplevel(axis=1))):
        frame.to_parquet(tmp_path / f"{name}.parquet")
        d = read_price_file(tmp_path / f"{name}.parquet")[0]
        np.testing.assert_allclose(d.loc[d["ticker"] == "MSFT", "close"], 2 * s["Close"].to_numpy()[1:], err_msg=name)


def test_a_hidden_file_name_still_names_its_series(tmp_path):
    _series().to_csv(tmp_path / ".aapl.csv", index=False)  # was ticker '' and then "rows with an empty ticker"
    assert set(read_price_file(tmp_path / ".aapl.csv", ticker_from_name=True)[0]["ticker"]) == {"AAPL"}


@pytest.mark.parametrize("end", ["2022-13-45", "yesterday", "2022", "31.12.2022"])
def test_a_backtest_end_that_is_not_a_day_is_a_one_line_error(end):
    from domains.finance.backtest import end_date

    with pytest.raises(PriceDataError, match="YYYY-MM-DD"):  # was a DateParseError traceback, and '2022' meant 2022-01-01
        end_date(end)
    assert end_date("2002-12-11") == pd.Timestamp("2002-12-11") and end_date("") is None


def test_flags_that_cannot_work_are_refused_before_anything_runs():
    from core.config import ConfigError
    from domains.finance.config import InterpretConfig, ScoreConfig

    from domains.finance.config import TransferConfig

    assert ScoreConfig(tickers=["AAPL", "KO", "AAPL"]).tickers == ["AAPL", "KO"]  # was: 'work item ids must be unique' from a failed run
    assert TransferConfig(holdout=["KO", "KO"]).holdout == ["KO"]
    with pytest.raises(ConfigError, match="--last-days"):  # 0 or -3 interpreted (nearly) every origin of the history
        InterpretConfig(last_days=0)
    with pytest.raises(ConfigError, match="--min-history"):
        ScoreConfig(min_history=1)


@pytest.mark.parametrize("flag, value", [("horizon", 0), ("batch_size", 0), ("hidden_size", 0), ("lr", -1.0), ("dropout", 1.5), ("seeds", 0)])
def test_model_and_training_flags_outside_what_can_work_are_one_line_errors(flag, value):
    from core.config import ConfigError
    from domains.finance.config import BacktestConfig, TrainConfig

    for cls in (TrainConfig, BacktestConfig):  # each failed deep inside torch / pytorch-forecasting with a traceback
        if hasattr(cls(), flag):
            with pytest.raises(ConfigError, match=f"--{flag.replace('_', '-')}"):
                cls(**{flag: value})


@pytest.mark.parametrize("space", ["\u00a0", "\u202f"])
def test_no_break_space_thousands_separators_are_removed(tmp_path, space):
    s = _series()
    fr = pd.DataFrame({"Date": pd.to_datetime(s["Date"]).dt.strftime("%d/%m/%Y"),
                       "Close": [f"{20 * v:,.2f}".replace(",", space).replace(".", ",") for v in s["Close"]]})  # 2 550,08 (French Excel)
    fr.to_csv(tmp_path / "fr.csv", sep=";", index=False)
    d = read_price_file(tmp_path / "fr.csv", "FR")[0]  # was: "column 'close' has 160 value(s) that are not numbers"
    np.testing.assert_allclose(d["close"], [float(f"{20 * v:.2f}") for v in s["Close"].to_numpy()[1:]])


def test_a_constant_price_series_is_dropped_and_listed_not_forecast_with_zero_var(tmp_path):
    """A delisted or placeholder series (every close the same) gave a volatility forecast and VaR of 0.0000,
    with only a 'stale prices' warning; it is now dropped like a too-short history, and listed."""
    from domains.finance.data import load_panel_data

    s = _series().rename(columns={"Date": "date", "Close": "close"})
    pd.concat([s.assign(ticker="LIVE"), s.assign(ticker="DEAD", close=42.0)]).to_csv(tmp_path / "two.csv", index=False)
    panel, rep = read_price_file(tmp_path / "two.csv")
    assert set(panel["ticker"]) == {"LIVE"} and rep.tickers_dropped_constant == ["DEAD"]
    assert rep.warning_counts().get("constant_prices") == 1 and rep.metrics()["data/tickers_dropped"] == 1
    with pytest.raises(PriceDataError, match=r"DEAD dropped: constant prices"):
        load_panel_data(str(tmp_path / "two.csv"), ["DEAD"])
    s.assign(close=42.0).to_csv(tmp_path / "flat.csv", index=False)
    with pytest.raises(PriceDataError, match="constant price"):
        read_price_file(tmp_path / "flat.csv", "FLAT")


@pytest.mark.parametrize("ticker", ['=HYPERLINK("http://x.test","AAPL")', "+A1", "@SUM(A1)", "-2+A3"])
def test_a_ticker_that_a_spreadsheet_would_run_as_a_formula_is_refused(tmp_path, ticker):
    s = _series().rename(columns={"Date": "date", "Close": "close"})
    s.assign(ticker=ticker).to_csv(tmp_path / "f.csv", index=False)  # it would be written into forecasts.csv / data_warnings.csv
    with pytest.raises(PriceDataError, match="formula"):
        read_price_file(tmp_path / "f.csv")


def test_data_quality_of_a_run_with_a_damaged_folds_json_lists_what_it_can(tmp_path):
    import json

    from domains.finance import api

    (tmp_path / "folds.json").write_text(json.dumps([3, "x", {"fold": 1, "without_test_days": ["KO"]}]))  # was: 'int' object has no attribute 'get'
    assert api.data_quality(tmp_path).dropped.to_dict("records") == [{"ticker": "KO", "reason": "no test days in fold(s) 1"}]


@pytest.mark.parametrize("flat, warned", [(12, True), (5, True), (4, False), (0, False)])
def test_a_series_whose_last_closes_repeat_one_price_is_warned_about(tmp_path, flat, warned):
    """A halted or delisted ticker forward-filled to today: its last closes all repeat one price. The share of zero
    returns over its whole history stayed under the stale_prices bar, so nothing was said, and a forecast from its
    last date read a flat encoder window (a VaR well below the ticker's own)."""
    s = _series(300)
    if flat:
        s.loc[s.index[-flat:], "Close"] = s["Close"].iloc[-flat - 1]
    s.to_csv(tmp_path / "halted.csv", index=False)
    d, rep = read_price_file(tmp_path / "halted.csv", "HALT")
    tail = [w for w in rep.warnings if w["kind"] == "stale_tail"]
    assert len(d) == 299 and bool(tail) == warned
    if warned:
        assert tail[0]["value"] == flat and tail[0]["date"] == s["Date"].iloc[-flat - 1] and f"the last {flat} closes" in tail[0]["detail"]
