"""Fixtures shared by the recommendation tests."""

from __future__ import annotations

import pytest

from tests.recommendation_support import DataWasRead


@pytest.fixture
def no_data(monkeypatch):
    """``train``'s data load (``prepare_inputs``) raises :class:`DataWasRead`: a test that reaches it knows the
    command got past the checks made before the data is read."""
    import domains.recommendation.train as train_cmd

    def sentinel(cfg):
        raise DataWasRead(cfg.data)

    monkeypatch.setattr(train_cmd, "prepare_inputs", sentinel)
