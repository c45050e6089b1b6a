"""Batch scoring of the TFT on the suite's engine (``core.scoring``): one work item per ticker; a
worker loads the forecaster and the price data once (features of the whole panel), then forecasts the
tickers of each chunk it gets in one batched forward (:meth:`TFTScorer.prepare_chunk`), so an item
only hands out its rows (or the reason it is quarantined). A worker computes only its own chunks and
a resumed job only the chunks still missing; a chunk is one batch in every run, so its rows are
bit-identical whichever worker, engine or run computes them. Used by ``python -m domains.finance.score``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from core.io import sha256_file
from core.scoring import Scorer, WorkItem
from domains.finance.data import PriceDataError, input_files
from domains.finance.features import DEFAULT_CALENDAR

__all__ = ["TFTScorer", "data_digest"]


class TFTScorer(Scorer):
    """Quantile forecasts of one ticker per work item (``item.id`` = ticker)."""

    # 3: rows come from one batched forward per chunk (prepare_chunk), not one forward per item (1-2) nor one over
    # the whole panel at load (2, unbumped): the float32 rounding of a row depends on its batch, so rows of another
    # version never share an output folder (the job fingerprint holds the version: a rerun into a folder of version 2
    # is refused, a default-named job gets a new name). 4: each row names its ticker's calendar (column `calendar`, as
    # forecast writes it); parts of 3 lack that column, so the two never share a folder either
    version = "4"
    # --workers N: the workers are forked from one process that imported these, not each importing pytorch-forecasting
    # (~15 s of CPU per worker on this machine; core.scoring's fork server), nor exchange_calendars (~1.5 s each)
    preload = ("domains.finance.scoring", "domains.finance.model", "pytorch_forecasting", "exchange_calendars")

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
        from domains.finance.predictor import forecast_features

        fc = Forecaster.load(Path(self.model_run) / "model")
        data = load_panel_data(self.data, **self.data_options)
        self._have = set(data.panel["ticker"].unique())
        self._known = set(fc.tickers)
        self._min_days = fc.spec.encoder_length
        self._fc, self._rows, self._chunk = fc, {}, set()
        self._load_info = {"tickers_forecast": 0, "batched_forwards": 0}  # this worker's share, in the job's _SUCCESS.json
        want = sorted(self._have) if self.zero_shot else sorted(self._have & self._known)
        self._feat = forecast_features(fc, data.panel, data.covariates, want, source=data.source, model_run=self.model_run) if want else None
        # positions of each ticker's rows: a chunk's features are gathered, not filtered from the whole panel
        self._feat_rows = self._feat.groupby("ticker", sort=False).indices if want else {}

    def prepare_chunk(self, items) -> None:
        """Every forecastable ticker of the chunk in one batched forward (a forward per item was ~0.2 s of op
        overhead on an idle core, >1 s on a busy 2-core machine); unknown tickers (``zero_shot``) get their
        normalisers, and GJR fit, here too, so a worker fits only its own."""
        from domains.finance.predictor import latest_tensors, rows_from_origins, with_calendars

        self._rows, self._chunk = {}, {it.id for it in items}  # the previous chunk's rows go
        want = [t for t in dict.fromkeys(it.id for it in items) if t in self._feat_rows]
        if not want:
            return
        feat = self._feat.iloc[np.sort(np.concatenate([self._feat_rows[t] for t in want]))].reset_index(drop=True)
        fc = self._fc.zero_shot(feat) if self.zero_shot else self._fc
        tensors, o = latest_tensors(fc, feat, self.calendar)
        if len(o):
            rows = with_calendars(rows_from_origins(fc, tensors, o), self.calendar)
            self._load_info["tickers_forecast"] += len(o)
            self._load_info["batched_forwards"] += 1
            self._rows = {t: g.reset_index(drop=True) for t, g in rows.groupby("ticker", sort=False)}

    def score(self, item: WorkItem) -> pd.DataFrame:
        t = item.id
        if t not in self._have:
            raise PriceDataError(f"ticker {t!r} has no prices in {self.data or 'the bundled panel'}")
        if t not in self._known and not self.zero_shot:
            raise PriceDataError(f"ticker {t!r} is unknown to the model in {self.model_run}; forecast it with --zero-shot or fine-tune it with domains.finance.transfer")
        if t not in self._chunk:  # the engine prepares every chunk; a batch of one would round differently
            raise RuntimeError(f"ticker {t!r} is not in the chunk prepared last; call prepare_chunk(items) with it first")
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
