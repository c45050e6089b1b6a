"""Interaction files whose timestamps or encoding are written the way other tools write them: days as
YYYYMMDD numbers, slash, dot or dash dates (day- or month-first), a Windows/Excel CSV from Europe (cp1252). Each is read
as meant, or refused in one line naming rows of the file — never silently 1970 or two date orders in one file."""

from __future__ import annotations

import gzip
import warnings

import pandas as pd
import pytest

from domains.recommendation.checks import ArgumentError
from domains.recommendation.data import InteractionDataError, load_interactions, validate_interactions


def _csv(path, stamps: list[str], **extra) -> str:
    rows = ["user_id,item_id,timestamp"] + [f"{1 + i % 2},{10 + i},{s}" for i, s in enumerate(stamps)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(path)


def _dates(inter: pd.DataFrame) -> list[str]:
    return [f"{t:%Y-%m-%d %H:%M}" for t in pd.to_datetime(inter["timestamp"], unit="s")]


def test_yyyymmdd_numbers_are_read_as_days_not_seconds_of_1970(tmp_path, caplog):
    caplog.set_level("INFO", logger="suite")
    stamps = ["20240131", "20240201", "20231224", "20240229"]
    inter = load_interactions(_csv(tmp_path / "ymd.csv", stamps)).interactions
    assert _dates(inter) == ["2024-01-31 00:00", "2024-02-01 00:00", "2023-12-24 00:00", "2024-02-29 00:00"]  # was 1970-08-23 ...
    assert "YYYYMMDD (20231224 … 20240229)" in caplog.text and "not as seconds since 1970 (1970-08-23)" in caplog.text
    # a Parquet (integer) column the same
    pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [10, 11, 12, 13], "timestamp": [int(s) for s in stamps]}).to_parquet(tmp_path / "ymd.parquet")
    assert _dates(load_interactions(tmp_path / "ymd.parquet").interactions) == _dates(inter)


@pytest.mark.parametrize("stamps", [
    ["20241345", "20240201"],  # 8 digits, but month 13: not dates
    ["20240131", "1706745600"],  # one value is seconds: the column is not all days
    ["20240131.5", "20240201"],  # a fraction: not a day
])
def test_numbers_that_are_not_all_yyyymmdd_days_stay_as_they_were(tmp_path, stamps):
    inter = load_interactions(_csv(tmp_path / "n.csv", stamps)).interactions
    assert "2024-01-31" not in _dates(inter)


def test_day_first_slash_dates_are_read_day_first_in_every_row(tmp_path, caplog):
    """The first rows were ambiguous (02/01/2024): pandas took month-first from row 1 and dateutil's day-first
    for the rows it could not read that way — one file, two date orders."""
    caplog.set_level("INFO", logger="suite")
    stamps = ["02/01/2024", "05/01/2024 08:30", "14/01/2024", "11/02/2024", "03/03/24"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas' "Parsing dates in %d/%m/%Y format when dayfirst=False" is gone too
        inter = load_interactions(_csv(tmp_path / "d.csv", stamps)).interactions
    assert _dates(inter) == ["2024-01-02 00:00", "2024-01-05 08:30", "2024-01-14 00:00", "2024-02-11 00:00", "2024-03-03 00:00"]
    assert "day/month/year (file row 4 '14/01/2024' cannot be month-first)" in caplog.text


def test_month_first_slash_dates_are_read_month_first_in_every_row(tmp_path):
    stamps = ["01/02/2024", "01/13/2024", "12/11/2023"]
    inter = load_interactions(_csv(tmp_path / "m.csv", stamps)).interactions
    assert _dates(inter) == ["2024-01-02 00:00", "2024-01-13 00:00", "2023-12-11 00:00"]


def test_a_file_with_both_date_orders_is_refused_naming_a_row_of_each(tmp_path):
    stamps = ["01/02/2024", "25/01/2024", "02/02/2024", "01/31/2024"]
    with pytest.raises(InteractionDataError) as e:
        load_interactions(_csv(tmp_path / "both.csv", stamps))
    msg = str(e.value)
    assert "\n" not in msg and "both.csv" in msg and "mixes day-first and month-first" in msg
    assert "row 3 '25/01/2024' is day/month/year" in msg and "row 5 '01/31/2024' month/day/year" in msg


def test_ambiguous_slash_dates_are_month_first_with_one_line_saying_how_to_choose(tmp_path, caplog):
    p = _csv(tmp_path / "a.csv", ["01/02/2024", "03/04/2024 10:00", "05/06/2024"])
    caplog.set_level("INFO", logger="suite")
    assert _dates(load_interactions(p).interactions) == ["2024-01-02 00:00", "2024-03-04 10:00", "2024-05-06 00:00"]
    said = [r.getMessage() for r in caplog.records if "could be day- or month-first" in r.getMessage()]
    assert len(said) == 1 and "read month-first (01/02/2024 = 2 January 2024)" in said[0] and "--date-order day-first" in said[0]
    assert _dates(load_interactions(p, date_order="day-first").interactions) == ["2024-02-01 00:00", "2024-04-03 10:00", "2024-06-05 00:00"]
    with pytest.raises(InteractionDataError, match=r"date order month-first \(--date-order\), but file row 3 '13/04/2024' cannot be month-first"):
        load_interactions(_csv(tmp_path / "c.csv", ["01/02/2024", "13/04/2024"]), date_order="month-first")
    with pytest.raises(ArgumentError, match=r"date_order 'dmy': expected one of \['auto', 'month-first', 'day-first'\]"):
        validate_interactions(pd.DataFrame({"user_id": [1], "item_id": [1], "timestamp": ["01/02/2024"]}), date_order="dmy")


@pytest.mark.parametrize("sep", [".", "-"])
def test_dot_and_dash_dates_take_one_order_from_the_whole_column(tmp_path, sep, caplog):
    """Was: pandas took month-first from an ambiguous first row (01.02.2024 = 2 January) and day-first for the
    rows it could not read so (31.01.2024) — one file, two orders; a row of each order was not refused."""
    caplog.set_level("INFO", logger="suite")
    stamps = [s.replace("/", sep) for s in ["01/02/2024", "31/01/2024 08:30", "05/03/24"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas' "Parsing dates in %d.%m.%Y format when dayfirst=False" is gone too
        inter = load_interactions(_csv(tmp_path / "d.csv", stamps)).interactions
    assert _dates(inter) == ["2024-02-01 00:00", "2024-01-31 08:30", "2024-03-05 00:00"]
    assert f"day/month/year (file row 3 '31{sep}01{sep}2024 08:30' cannot be month-first)" in caplog.text
    month_first = [s.replace("/", sep) for s in ["01/02/2024", "01/31/2024"]]
    assert _dates(load_interactions(_csv(tmp_path / "m.csv", month_first)).interactions) == ["2024-01-02 00:00", "2024-01-31 00:00"]
    with pytest.raises(InteractionDataError, match=f"mixes day-first and month-first dates: file row 2 '13{sep}01{sep}2024' is day/month/year, "
                                                   f"row 3 '01{sep}14{sep}2024' month/day/year"):
        load_interactions(_csv(tmp_path / "both.csv", [f"13{sep}01{sep}2024", f"01{sep}14{sep}2024"]))
    ambiguous = _csv(tmp_path / "a.csv", [f"01{sep}02{sep}2024", f"03{sep}04{sep}2024"])
    assert _dates(load_interactions(ambiguous, date_order="day-first").interactions) == ["2024-02-01 00:00", "2024-04-03 00:00"]


def test_iso_dates_stay_year_month_day(tmp_path):
    """2024-01-31 starts with the year: not a day/month date, read as written (with ambiguous ISO days too)."""
    stamps = ["2024-02-01", "2024-01-31", "2024-03-04 10:00", "2024-12-05T08:00:00"]
    inter = load_interactions(_csv(tmp_path / "iso.csv", stamps)).interactions
    assert _dates(inter) == ["2024-02-01 00:00", "2024-01-31 00:00", "2024-03-04 10:00", "2024-12-05 08:00"]
    assert _dates(load_interactions(_csv(tmp_path / "iso2.csv", stamps), date_order="day-first").interactions) == _dates(inter)


def test_train_takes_date_order_as_a_flag():
    from core.config import parse_config
    from domains.recommendation.config import TrainConfig

    assert parse_config(TrainConfig, ["--date-order", "day-first"]).date_order == "day-first"
    assert parse_config(TrainConfig, []).date_order == "auto"


def test_a_european_excel_export_cp1252_is_read_with_its_accents(tmp_path, caplog):
    """Was: 'cannot be read as .csv (UnicodeDecodeError: 'utf-8' codec can't decode byte 0xe8 ...)'."""
    text = "user_id;item_id;rating;timestamp\nMüller;Crème brûlée;4;2024-01-02\nMüller;Café € menu;5;2024-01-03\nZoë;Crème brûlée;3;2024-01-04\n"
    p = tmp_path / "export.csv"
    p.write_bytes(text.encode("cp1252"))
    caplog.set_level("INFO", logger="suite")
    inter = load_interactions(p).interactions
    assert inter[["user_id", "item_id"]].values.tolist() == [["Müller", "Crème brûlée"], ["Müller", "Café € menu"], ["Zoë", "Crème brûlée"]]
    assert f"{p}: not UTF-8" in caplog.text and "read as cp1252" in caplog.text
    # a compressed export and a cp1252 item catalogue the same
    gz = tmp_path / "export.csv.gz"
    with gzip.open(gz, "wb") as f:
        f.write(text.encode("cp1252"))
    cat = tmp_path / "items.csv"
    cat.write_bytes("item_id;title\nCrème brûlée;Crème brûlée à l'orange\nCafé € menu;Café\n".encode("cp1252"))
    data = load_interactions(gz, items=cat)
    assert data.interactions["item_id"].tolist() == inter["item_id"].tolist()
    assert data.items.set_index("item_id").loc["Crème brûlée", "title"] == "Crème brûlée à l'orange"


def test_train_sequential_takes_date_order_and_the_leave_last_out_split_follows_it(tmp_path):
    """The ambiguous-date warning says to pass --date-order: train_sequential has it too, and its split honours it."""
    from domains.recommendation.sequential import load_leave_last_out
    from domains.recommendation.train_sequential import TrainSequentialConfig

    assert TrainSequentialConfig(date_order="day-first").date_order == "day-first"
    # every date is ambiguous (both fields <= 12): which item is each user's last depends on the order asked for
    rows = ["user_id,item_id,timestamp"] + [f"{u},{i},{d}" for u in (1, 2, 3) for i, d in ((10 + u * 10, "05/01/2024"), (11 + u * 10, "01/03/2024"),
                                                                                          (12 + u * 10, "02/02/2024"), (13 + u * 10, "03/04/2024"))]
    (tmp_path / "amb.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    day = load_leave_last_out(str(tmp_path / "amb.csv"), with_text=False, date_order="day-first")
    month = load_leave_last_out(str(tmp_path / "amb.csv"), with_text=False, date_order="month-first")
    # day-first: 5 Jan, 1 Mar, 2 Feb, 3 Apr -> last is the 4th item; month-first: 1 May, 3 Jan, 2 Feb, 4 Mar -> last is the 1st
    assert list(day.split.test) != list(month.split.test)
