"""Batch forecasts for many tickers to partitioned Parquet, on the suite's scoring engine.

    python -m domains.finance.score                                   # every ticker, newest model
    python -m domains.finance.score --data prices.parquet --workers 2 --zero-shot
    python -m domains.finance.score --engine ray --workers 2           # a private local Ray
    python -m domains.finance.score --engine ray --address HEAD:6379   # an existing cluster

One work item per ticker; a worker loads the forecaster and the price data once, then each item
yields the ticker's quantile rows (same columns as ``forecast``). A ticker the model does not
know (without ``--zero-shot``), or with too short a history, is quarantined with the reason; the
job goes on. Without ``--name``/``--out`` the job's run name is derived from its inputs (model run,
price data, tickers and options) — no timestamp — so rerunning the identical command after a crash
continues the unfinished job (committed chunks are skipped, ``core.scoring``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from core.cli import run_cli
from core.io import sha256_file
from core.runs import Run
from core.scoring import Scorer, WorkItem, job_name, run_job_from_config
from domains.finance.config import ScoreConfig
from domains.finance.data import PriceDataError, data_tickers, input_files, load_panel_data
from domains.finance.features import DEFAULT_CALENDAR
from domains.finance.predictor import load_forecaster_run

__all__ = ["ScoreConfig", "TFTScorer", "score", "data_digest", "main"]


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
        from domains.finance.predictor import latest_tensors, prepare_forecaster

        fc = Forecaster.load(Path(self.model_run) / "model")
        data = load_panel_data(self.data, **self.data_options)
        self._have = set(data.panel["ticker"])
        self._known = set(fc.tickers)
        self._tensors = None
        if self._have & self._known or (self.zero_shot and self._have):
            self._fc, feat = prepare_forecaster(fc, data.panel, data.covariates, zero_shot=self.zero_shot, source=data.source,
                                                model_run=self.model_run)
            self._tensors, o = latest_tensors(self._fc, feat, self.calendar)
            self._origin = dict(zip(self._tensors.tickers[o], o))
        self._min_days = fc.spec.encoder_length

    def score(self, item: WorkItem) -> pd.DataFrame:
        from domains.finance.predictor import rows_from_origins

        t = item.id
        if t not in self._have:
            raise PriceDataError(f"ticker {t!r} has no prices in {self.data or 'the bundled panel'}")
        if t not in self._known and not self.zero_shot:
            raise PriceDataError(f"ticker {t!r} is unknown to the model in {self.model_run}; forecast it with --zero-shot or fine-tune it with domains.finance.transfer")
        if self._tensors is None or t not in self._origin:
            raise PriceDataError(f"ticker {t!r} has fewer than {self._min_days} days of history")
        return rows_from_origins(self._fc, self._tensors, [self._origin[t]])


def data_digest(data: str = "") -> str:
    """sha256 over the price files ``data`` names (the bundled panel's Parquet files when empty):
    part of the scorer's config, so changed prices at the same path make another job."""
    h = hashlib.sha256()
    for p in input_files(data):
        h.update(f"{p.name}:{sha256_file(p)}\n".encode())
    return h.hexdigest()


def score(cfg: ScoreConfig):
    model_dir, _ = load_forecaster_run(cfg.model_run, cfg.runs_dir)
    data = load_panel_data(cfg.data, cfg.tickers, **cfg.data_options()) if cfg.data else None  # validated once here for its report
    tickers = list(cfg.tickers) or (sorted(data.panel["ticker"].unique()) if data else data_tickers())  # the work list; workers load the prices
    items = [WorkItem(id=t, meta={"kind": "ticker"}) for t in tickers]
    scorer = TFTScorer(str(model_dir), cfg.data, cfg.zero_shot, cfg.calendar, cfg.data_options(), data_digest(cfg.data))
    # no timestamp in the default name: the identical command after a crash finishes this job
    name = job_name("score", items, scorer, cfg.items_per_chunk, model_dir) if cfg.out is None else f"score-{pd.Timestamp.now():%Y%m%d-%H%M%S}"
    with Run.start("finance", cfg, new_name=name, stable_name=cfg.out is None, command="score", kind="job") as run:
        summary = run_job_from_config(items, scorer, cfg, default_out=run.path("scores"))
        if data is not None:
            data.report.write(run.dir)
        run.finish({"model_run": str(model_dir), "calendar": cfg.calendar, "items": len(items),
                    **{k: v for k, v in vars(summary).items() if isinstance(v, (int, float, str))}, **(data.report.metrics() if data else {})})
        return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(ScoreConfig, score, argv, doc=__doc__.split("\n\n")[0], prog="python -m domains.finance.score")


if __name__ == "__main__":
    raise SystemExit(main())
