"""core.errors.one_line: the one way a library's exception text becomes part of a one-line message."""

from core.errors import one_line


def test_first_non_blank_line_of_an_exception_cut_at_the_limit():
    e = ValueError("\n  header too short: 3 bytes\nsee the docs for the file layout\n")
    assert one_line(e) == "header too short: 3 bytes"
    assert one_line(e, 6) == "header"
    assert one_line(RuntimeError("x" * 500)) == "x" * 200
    assert one_line("y" * 500, None) == "y" * 500


def test_sentence_drops_the_advice_torch_appends():
    text = "PytorchStreamReader failed reading zip archive. Please check that the file is not corrupt.\nMore advice"
    assert one_line(RuntimeError(text), sentence=True) == "PytorchStreamReader failed reading zip archive"
    assert one_line(RuntimeError(text), 11, sentence=True) == "PytorchStre"


def test_join_folds_a_list_of_lines_into_one():
    e = RuntimeError("no plugin could decode:\n  gdcm: missing\n  pylibjpeg: missing\n")
    assert one_line(e, join=True) == "no plugin could decode: gdcm: missing pylibjpeg: missing"
    assert "\n" not in one_line(e, join=True)


def test_empty_text_gives_an_empty_string():
    assert one_line(KeyError()) == ""
    assert one_line("   \n ") == ""
    assert one_line(ValueError(""), join=True, sentence=True) == ""
