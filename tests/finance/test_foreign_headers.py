"""Price files with German, French, Spanish, Italian headers (onvista, Yahoo DE, boursorama, investing.com ES/DE,
an Italian export) and nasdaq.com's ``Close/Last``: read through an explicit alias table — the close is the close,
never 'Hoch' (the high) — and what the table does not cover is refused in one line naming the columns found and
the names expected. The files are written from the bundled real panel (KO, 2016-2018)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from domains.finance.data import PriceDataError, read_price_file
from tests.finance_support import panel_slice


@pytest.fixture(scope="module")
def ko() -> pd.DataFrame:
    c = panel_slice(["KO"], "2016-01-01", "2018-12-31").set_index("date")["close"]
    return pd.DataFrame({"open": c * 1.004, "high": c * 1.02, "low": c * 0.98, "close": c, "adj": c * 0.9})


def _num(v: float, comma: bool) -> str:
    return f"{v:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".") if comma else f"{v:,.2f}"


# name: (separator, date format, decimal comma, encoding, header -> field)
EXPORTS = {
    "onvista_de": (";", "%d.%m.%Y", True, "utf-8", {"Datum": "date", "Eröffnung": "open", "Hoch": "high", "Tief": "low", "Schluss": "close", "Volumen": "vol"}),
    "yahoo_de": (",", "%d.%m.%Y", True, "utf-8", {"Datum": "date", "Eröffnung": "open", "Hoch": "high", "Tief": "low", "Schluss*": "close",
                                                  "Adj. Schluss**": "adj", "Volumen": "vol"}),
    "boursorama_fr": (";", "%d/%m/%Y", True, "cp1252", {"Date": "date", "Ouverture": "open", "Plus haut": "high", "Plus bas": "low",
                                                       "Clôture": "close", "Volume": "vol"}),
    "investing_es": (",", "%d.%m.%Y", True, "utf-8", {"Fecha": "date", "Último": "close", "Apertura": "open", "Máximo": "high", "Mínimo": "low",
                                                      "Vol.": "vol", "% var.": "pct"}),
    "investing_de": (",", "%d.%m.%Y", True, "utf-8", {"Datum": "date", "Zuletzt": "close", "Eröffn.": "open", "Hoch": "high", "Tief": "low",
                                                      "Vol.": "vol", "+/- %": "pct"}),
    "borsa_it": (";", "%d/%m/%Y", True, "utf-8", {"Data": "date", "Apertura": "open", "Massimo": "high", "Minimo": "low", "Chiusura": "close"}),
    "nasdaq_us": (",", "%m/%d/%Y", False, "utf-8", {"Date": "date", "Close/Last": "close", "Volume": "vol", "Open": "open", "High": "high", "Low": "low"}),
}


def _write(path, ko: pd.DataFrame, sep: str, fmt: str, comma: bool, encoding: str, header: dict) -> None:
    rows = []
    for d, r in ko.iloc[::-1].iterrows():  # newest first, as these sites export
        cells = {"date": d.strftime(fmt), "vol": "1,5M" if comma else "1.5M", "pct": "0,12%" if comma else "0.12%",
                 **{k: _num(r[k], comma) for k in ("open", "high", "low", "close", "adj")}}
        if "Close/Last" in header:
            cells["close"] = "$" + cells["close"]
        rows.append([cells[f] for f in header.values()])
    pd.DataFrame(rows, columns=list(header)).to_csv(path, sep=sep, index=False, encoding=encoding)


@pytest.mark.parametrize("name", list(EXPORTS))
def test_exports_with_non_english_headers_read_each_column_as_what_it_is(tmp_path, ko, name):
    sep, fmt, comma, encoding, header = EXPORTS[name]
    _write(tmp_path / f"{name}.csv", ko, sep, fmt, comma, encoding, header)
    d, rep = read_price_file(tmp_path / f"{name}.csv", "KO")  # refused before: no close price column
    d = d.set_index("date")
    real = ko.loc[d.index]
    assert len(d) == len(ko) - 1 and d.index.is_monotonic_increasing and d.index[0] == ko.index[1]  # the first day has no return
    price = "adj" if "adj" in header.values() else "close"  # Yahoo's adjusted close is preferred, as in English files
    np.testing.assert_allclose(d["close"], real[price], atol=0.0051, rtol=0)
    for col in ("open", "high", "low"):  # 'Hoch' is the high, 'Tief' the low: not a close, not dropped
        np.testing.assert_allclose(d[col], real[col], atol=0.0051, rtol=0, err_msg=col)
    assert ((d["volume"] == 1.5e6).all() if "vol" in header.values() else "volume" not in d) and rep.price_column == {"KO": "adj_close" if price == "adj" else "close"}


def test_a_file_without_a_close_under_any_known_name_is_refused_naming_what_it_found(tmp_path, ko):
    _write(tmp_path / "no_close.csv", ko, ";", "%d.%m.%Y", True, "utf-8", {"Datum": "date", "Eröffnung": "open", "Hoch": "high", "Tief": "low"})
    with pytest.raises(PriceDataError) as e:
        read_price_file(tmp_path / "no_close.csv", "KO")
    msg = str(e.value)
    assert "no close price column" in msg and "['Datum', 'Eröffnung', 'Hoch', 'Tief']" in msg and "'Schluss'" in msg and "'Clôture'" in msg
    assert "name its closing price 'Close'" in msg and "wide file" not in msg and "\n" not in msg


def test_two_foreign_columns_for_the_close_are_refused_not_one_chosen(tmp_path, ko):
    header = {"Date": "date", "Dernier": "close", "Clôture": "adj", "Volume": "vol"}
    _write(tmp_path / "both.csv", ko, ";", "%d/%m/%Y", True, "utf-8", header)
    with pytest.raises(PriceDataError, match=r"columns \['Dernier', 'Clôture'\] would both be read as the close"):
        read_price_file(tmp_path / "both.csv", "KO")


def test_an_english_column_wins_over_a_foreign_name_of_the_same_meaning(tmp_path, ko):
    # a file with both 'Close' and a German 'Schluss' (here other numbers): the English one is the close
    _write(tmp_path / "mixed.csv", ko, ",", "%Y-%m-%d", False, "utf-8", {"Date": "date", "Schluss": "adj", "Close": "close", "Data": "high"})
    d = read_price_file(tmp_path / "mixed.csv", "KO")[0].set_index("date")
    np.testing.assert_allclose(d["close"], ko.loc[d.index, "close"], atol=0.0051, rtol=0)
