"""Recommendation test helpers shared by the ``train --resume`` tests (the ``no_data`` fixture that uses
:class:`DataWasRead` is in ``tests/recommendation/conftest.py``).

    from tests.recommendation_support import DataWasRead, resume_cfg
"""

from __future__ import annotations


class DataWasRead(Exception):
    """Raised by the ``no_data`` fixture's stand-in for the data load: reaching it means a command got past its
    ``--resume`` checks."""


def resume_cfg(d, **kw):
    """A tiny ``train --resume`` config on ``d/a.csv`` with runs under ``d/runs`` (one step, no baselines, no text, no
    wide part, no tracking); ``kw`` sets the rest (``name``, ``validation_ratio``, ...) and overrides any of these."""
    from domains.recommendation.train import TrainConfig

    base = dict(runs_dir=str(d / "runs"), data=str(d / "a.csv"), track=False, epochs=1, max_steps=1, baselines=False,
                text="none", wide=False, resume=True)
    return TrainConfig(**{**base, **kw})
