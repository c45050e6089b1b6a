"""Batch scoring of the TFT on the suite's engine (``core.scoring``): one work item per ticker; a
worker loads the forecaster and the price data once and forecasts every ticker in one batched
forward, so an item only hands out its rows (or the reason it is quarantined). Used by
``python -m domains.finance.score``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from core.io import sha256_file
from core.scoring import Scorer, WorkItem
from domains.finance.data import PriceDataError, input_files
from domains.finance.features import DEFAULT_CALENDAR

__all__ = ["TFTScorer", "data_digest"]


class TFTScorer(Scorer):
    """Quantile forecasts of one ticker per work item (``item.id`` = ticker)."""

    version = "2"

    def __init__(self, model_run: str, data: str = "", zero_shot: bool = False, calendar: str = DEFAULT_CALENDAR,
                 data_options: dict | None = None, data_sha256: str = ""):
        self.model_run = str(model_run)
        self.data = data
        self.zero_shot = zero_shot
        self.calendar = calendar
        self.data_options = dict(data_options or {})
        self.data_sha256 = data_sha256  # the prices' content, so the job fingerprint changes with it

    def load(self) -> None:
        from domains.finance.data import load_panel_data
        from domains.finance.model import Forecaster
        from domains.finance.predictor import latest_tensors, prepare_forecaster, rows_from_origins

        fc = Forecaster.load(Path(self.model_run) / "model")
        data = load_panel_data(self.data, **self.data_options)
        self._have = set(data.panel["ticker"].unique())
        self._known = set(fc.tickers)
        self._rows: dict[str, pd.DataFrame] = {}
        if self._have & self._known or (self.zero_shot and self._have):
            # the prepared model, its tensors and the panel are needed only here: a worker keeps just the rows
            ready, feat = prepare_forecaster(fc, data.panel, data.covariates, zero_shot=self.zero_shot, source=data.source,
                                             model_run=self.model_run)
            tensors, o = latest_tensors(ready, feat, self.calendar)
            # every ticker's forecast in one batched forward, here, once: one TFT forward per item was ~0.2 s of
            # per-op overhead on an idle core and >1 s on a busy 2-core machine (its two threads fighting for it)
            rows = rows_from_origins(ready, tensors, o)
            self._rows = {t: g.reset_index(drop=True) for t, g in rows.groupby("ticker", sort=False)}
        self._min_days = fc.spec.encoder_length

    def score(self, item: WorkItem) -> pd.DataFrame:
        t = item.id
        if t not in self._have:
            raise PriceDataError(f"ticker {t!r} has no prices in {self.data or 'the bundled panel'}")
        if t not in self._known and not self.zero_shot:
            raise PriceDataError(f"ticker {t!r} is unknown to the model in {self.model_run}; forecast it with --zero-shot or fine-tune it with domains.finance.transfer")
        if t not in self._rows:
            raise PriceDataError(f"ticker {t!r} has fewer than {self._min_days} days of history")
        return self._rows[t].copy()  # the engine adds a lineage column to what it gets


def data_digest(data: str = "") -> str:
    """sha256 over the price files ``data`` names (the bundled panel's Parquet files when empty):
    part of the scorer's config, so changed prices at the same path make another job."""
    h = hashlib.sha256()
    for p in input_files(data):
        h.update(f"{p.name}:{sha256_file(p)}\n".encode())
    return h.hexdigest()
