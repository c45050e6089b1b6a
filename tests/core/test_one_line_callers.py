"""Callers that put a library's exception text in a one-line message go through core.errors.one_line: a text that
starts with a blank line, or is empty, gave an empty reason or an IndexError (a traceback) with the hand-cut
``str(e).splitlines()[0]``."""
from __future__ import annotations

import pytest
import torch
from torch import nn


def _raises(text):
    def fail(*args, **kwargs):
        raise ValueError(text)
    return fail


def test_calendar_refusal_keeps_the_reason_when_the_library_text_starts_with_a_blank_line(monkeypatch):
    import exchange_calendars as xcals

    from domains.finance import calendars
    from domains.finance.calendars import CalendarError, future_sessions

    monkeypatch.setattr(xcals, "get_calendar", _raises("\n  XSHG holidays are recorded from 1991\ndetails"))
    monkeypatch.setattr(calendars, "_CALENDARS", {})
    with pytest.raises(CalendarError) as e:
        future_sessions("1980-06-02", 3, "XSHG")
    assert "does not cover 1980 ('XSHG holidays are recorded from 1991');" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setattr(xcals, "get_calendar", _raises(""))  # was IndexError: list index out of range
    with pytest.raises(CalendarError, match="does not cover 1980"):
        future_sessions("1980-06-02", 3, "XSHG")


def test_onnx_export_failure_names_the_first_non_blank_line(monkeypatch, tmp_path):
    from core.compress import ExportError, export_onnx

    def fail(*args, **kwargs):
        raise RuntimeError("\n\nUnsupported operator aten::foo\ntraceback follows")
    monkeypatch.setattr(torch.onnx, "export", fail)
    with pytest.raises(ExportError) as e:
        export_onnx(nn.Linear(2, 1), torch.zeros(1, 2), tmp_path / "m.onnx", check=False)
    assert str(e.value) == "ONNX export of Linear failed: RuntimeError: Unsupported operator aten::foo"
    assert not (tmp_path / "m.onnx").exists()
