"""core.io.read_csv_text: a CSV whose encoding nobody stated — UTF-8 (with or without a byte-order mark),
UTF-16 with its byte-order mark (Excel's "Unicode text"), else cp1252 (a Windows/Excel export from western
Europe), the guess logged and kept in ``df.attrs["encoding"]``."""

from __future__ import annotations

import gzip

import pytest

from core.io import CSV_FALLBACK_ENCODING, read_csv_text

ROWS = "name;price\nCrème brûlée;5 €\n“Größe” Müsli;3,50 €\n"


def test_a_european_excel_export_is_read_as_cp1252_and_says_so(tmp_path, caplog):
    p = tmp_path / "export.csv"
    p.write_bytes(ROWS.encode("cp1252"))
    caplog.set_level("INFO", logger="suite")
    df = read_csv_text(p, sep=";")
    assert df["name"].tolist() == ["Crème brûlée", "“Größe” Müsli"] and df["price"].tolist() == ["5 €", "3,50 €"]
    assert df.attrs["encoding"] == CSV_FALLBACK_ENCODING
    assert str(p) in caplog.text and "not UTF-8 (byte 0xe8" in caplog.text and "cp1252" in caplog.text
    caplog.clear()
    again = read_csv_text(p, encoding=df.attrs["encoding"], sep=";")  # a second read of the same file: no second guess
    assert again.equals(df) and "not UTF-8" not in caplog.text


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_unicode_files_are_read_as_written_bom_and_all(tmp_path, encoding, caplog):
    p = tmp_path / "u.csv"
    p.write_text(ROWS, encoding=encoding)
    caplog.set_level("INFO", logger="suite")
    df = read_csv_text(p, sep=";")
    assert list(df.columns) == ["name", "price"]  # no '\ufeff' glued to the first column's name
    assert df["name"].tolist() == ["Crème brûlée", "“Größe” Müsli"] and "not UTF-8" not in caplog.text
    assert df.attrs["encoding"] == ("utf-16" if encoding == "utf-16" else "utf-8-sig")


def test_the_fallback_covers_a_gzip_file_and_a_bad_byte_far_into_the_file(tmp_path):
    """pandas decodes in chunks: a cp1252 byte after the first megabyte still sends the whole file to cp1252
    (no half-UTF-8 frame), and a .gz file's inflated text is what is decoded."""
    body = "name;price\n" + "plain;1\n" * 150_000 + "Crème;2\n"
    p = tmp_path / "late.csv.gz"
    with gzip.open(p, "wb") as f:
        f.write(body.encode("cp1252"))
    df = read_csv_text(p, sep=";")
    assert len(df) == 150_001 and df["name"].iloc[-1] == "Crème" and df.attrs["encoding"] == CSV_FALLBACK_ENCODING


def test_an_explicit_encoding_is_used_as_given(tmp_path):
    p = tmp_path / "l1.csv"
    p.write_bytes(ROWS.encode("cp1252"))
    with pytest.raises(UnicodeDecodeError):
        read_csv_text(p, encoding="utf-8", sep=";")
