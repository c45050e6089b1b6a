"""The api path (the dashboard) names the calendar of its forecast dates as ``forecast`` does. ``LoadedForecaster.calendar``
was read from the model's ``info["calendar"]``, which no command records (the calendar is a forecast-time choice), so it
was always 'auto' and the page, with no rows to read calendars from, showed "sessions of the **auto** exchange
calendar"; the histories that trade on days their calendar is closed were warned about by ``forecast`` and ``score``
only. Now: ``load_forecaster(run, calendar)`` takes the setting (checked as ``--calendar``), ``forecast_calendars``
resolves it per ticker with ``calendars_for`` (the mechanism of the rows' ``calendar`` column), names it in forecast's
words and returns forecast's ``calendar_mismatch`` warnings."""

from __future__ import annotations

import exchange_calendars as xcals
import pandas as pd
import pytest

from domains.finance.data import load_panel

TOKYO_END = "2021-04-28"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A run folder with a tiny untrained forecaster of real PFE / KO closes: PFE's on Tokyo's sessions under the name
    '4502' (investing.com's name for Takeda: no suffix), KO's under 'VOD.L' (weekdays: NYSE's dates)."""
    import torch

    from domains.finance.data import read_price_file
    from domains.finance.features import CORE_REALS, FoldScaler, base_features
    from domains.finance.model import Forecaster, TFTSpec, build_tft

    tmp = tmp_path_factory.mktemp("api_calendars")
    p = load_panel(columns=["date", "ticker", "close"])
    tokyo = xcals.get_calendar("XTKS", start="2020-06-01", end=TOKYO_END).sessions
    pfe = p.loc[p["ticker"] == "PFE", "close"].to_numpy()[-len(tokyo):]
    ko = p[(p["ticker"] == "KO") & (p["date"] <= TOKYO_END)].tail(150)
    prices = pd.concat([pd.DataFrame({"date": tokyo.strftime("%Y-%m-%d"), "ticker": "4502", "close": pfe}),
                        pd.DataFrame({"date": ko["date"].dt.strftime("%Y-%m-%d"), "ticker": "VOD.L", "close": ko["close"].to_numpy()})])
    path = tmp / "prices.csv"
    prices.to_csv(path, index=False)
    feat = base_features(read_price_file(path)[0])
    torch.manual_seed(0)
    spec = TFTSpec(encoder_length=20, horizon=3, hidden_size=8, attention_heads=1, hidden_continuous_size=4, observed_reals=tuple(CORE_REALS))
    tickers = ["4502", "VOD.L"]
    run = tmp / "run"
    Forecaster(build_tft(spec, tickers), spec, FoldScaler.fit(feat), tickers, {"data": str(path)}).save(run / "model")
    return run


def test_the_api_names_each_tickers_calendar_and_warns_as_forecast_does(saved):
    from domains.finance import api

    model = api.load_forecaster(saved)
    assert model.calendar == "auto"
    rows = api.forecast(model, ["4502", "VOD.L"])
    cal = api.forecast_calendars(model, ["4502", "VOD.L", "NOT_IN_DATA"])
    assert cal.by_ticker == rows.groupby("ticker")["calendar"].first().to_dict() == {"4502": "XNYS", "VOD.L": "XLON"}
    assert cal.named == "XLON (VOD.L); XNYS (4502)" and cal.setting == "auto" and "'auto'" in cal.how
    # forecast's calendar_mismatch: Takeda's history trades on NYSE's Christmas, MLK Day, Presidents' Day and Good Friday
    assert list(cal.mismatches["ticker"]) == ["4502"] and list(cal.mismatches["kind"]) == ["calendar_mismatch"]
    assert "XNYS is closed" in cal.mismatches["detail"].iloc[0] and int(cal.mismatches["value"].iloc[0]) >= 3

    tokyo = api.load_forecaster(saved, "xtks")  # the setting, as forecast's --calendar XTKS
    cal = api.forecast_calendars(tokyo, ["4502"])
    assert tokyo.calendar == "XTKS" and cal.by_ticker == {"4502": "XTKS"} and cal.named == "XTKS" and cal.how == "--calendar XTKS"
    assert cal.mismatches.empty
    assert set(api.forecast(tokyo, ["4502"])["calendar"]) == {"XTKS"}


def test_an_unknown_calendar_setting_is_one_line(saved):
    from domains.finance import api
    from domains.finance.calendars import CalendarError

    with pytest.raises(CalendarError) as e:
        api.load_forecaster(saved, "TOKYO")
    assert "unknown exchange calendar 'TOKYO'" in str(e.value) and "\n" not in str(e.value)
