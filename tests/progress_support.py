"""Test helper: record the progress bars code opens.

    from tests.progress_support import record_bars
    bars = record_bars(monkeypatch, predict, metrics)  # after the code ran: each bar, closed, with its count
"""

from __future__ import annotations

from core.progress import progress as core_progress


def record_bars(monkeypatch, *modules) -> list:
    """Replace ``progress`` in each of ``modules`` (modules that did ``from core.progress import progress``) by one
    that opens the real bar and keeps it; returns the list the bars are appended to (kept after they close)."""
    made = []

    def recording(*args, **kwargs):
        bar = core_progress(*args, **kwargs)
        made.append(bar)
        return bar

    for module in modules:
        monkeypatch.setattr(module, "progress", recording)
    return made
