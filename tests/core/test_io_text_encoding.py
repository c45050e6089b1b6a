"""core.io.text_encoding_of: the one public byte-order-mark test (readers with a legacy encoding of their own, such as
GroupLens' latin-1 MovieLens files, used to copy the private check)."""

import gzip

import pytest

from core.io import text_encoding_of


@pytest.mark.parametrize("data, unmarked, expected", [
    (b"\xef\xbb\xbf1\t2\n", "latin-1", "utf-8-sig"),
    ("1\t2\n".encode("utf-16"), "latin-1", "utf-16"),  # the platform's order, with its mark
    (b"\xfe\xff" + "1\t2\n".encode("utf-16-be"), "latin-1", "utf-16"),
    (b"1\t2\n", "latin-1", "latin-1"),  # no mark: the caller's encoding
    (b"1\t2\n", None, "utf-8-sig"),  # the default (read_csv_text's first choice)
    (b"", "latin-1", "latin-1"),
])
def test_text_encoding_of_names_the_mark_or_the_callers_encoding(tmp_path, data, unmarked, expected):
    p = tmp_path / "f.txt"
    p.write_bytes(data)
    assert (text_encoding_of(p) if unmarked is None else text_encoding_of(p, unmarked=unmarked)) == expected
    gz = tmp_path / "f.txt.gz"
    gz.write_bytes(gzip.compress(data))  # a compressed file: its text's mark
    assert (text_encoding_of(gz) if unmarked is None else text_encoding_of(gz, unmarked=unmarked)) == expected
    text = p.read_text(encoding=expected) if data else ""
    assert text.lstrip("\ufeff") == text  # the encoding named reads the text without the mark in it


def test_text_encoding_of_a_missing_file_is_the_callers_encoding(tmp_path):
    assert text_encoding_of(tmp_path / "missing.dat", unmarked="latin-1") == "latin-1"  # the reader's own error names it
