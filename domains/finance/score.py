"""Batch forecasts for many tickers to partitioned Parquet, on the suite's scoring engine.

    python -m domains.finance.score                                   # every ticker, latest model
    python -m domains.finance.score --data prices.parquet --workers 2 --out scores/
    python -m domains.finance.score --engine ray --workers 2           # a private local Ray
    python -m domains.finance.score --engine ray --address HEAD:6379   # an existing cluster

One work item per ticker; a worker loads the forecaster and the price data once, then each item
yields the ticker's quantile rows (same columns as ``forecast``). A ticker the model does not
know, or with too short a history, is quarantined with the reason; the job goes on. Reruns into
the same ``--out`` skip committed chunks (``core.scoring``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.cli import run_cli
from core.runs import Run
from core.scoring import Scorer, ScoringConfig, ScoringError, WorkItem, run_job_from_config
from domains.finance.data import PriceDataError, data_tickers, load_inputs
from domains.finance.forecast import ForecastConfig, find_model_run

__all__ = ["ScoreConfig", "TFTScorer", "score", "main"]


@dataclass
class ScoreConfig(ScoringConfig, ForecastConfig):
    """Forecast settings plus the scoring engine's flags."""


class TFTScorer(Scorer):
    """Quantile forecasts of one ticker per work item (``item.id`` = ticker)."""

    version = "1"

    def __init__(self, model_run: str, data: str = ""):
        self.model_run = str(model_run)
        self.data = data

    def load(self) -> None:
        from domains.finance.forecast import latest_tensors
        from domains.finance.model import Forecaster

        self._fc = Forecaster.load(Path(self.model_run) / "model")
        panel, cov = load_inputs(self.data)
        self._have = set(panel["ticker"])
        panel = panel[panel["ticker"].isin(self._fc.tickers)]
        self._tensors = None
        if len(panel):
            self._tensors, o = latest_tensors(self._fc, panel, cov)
            self._origin = dict(zip(self._tensors.tickers[o], o))

    def score(self, item: WorkItem) -> pd.DataFrame:
        from domains.finance.forecast import rows_from_origins

        t = item.id
        if t not in self._have:
            raise PriceDataError(f"ticker {t!r} has no prices in {self.data or 'the bundled panel'}")
        if t not in self._fc.tickers:
            raise PriceDataError(f"ticker {t!r} is unknown to the model in {self.model_run}; fine-tune it with domains.finance.transfer")
        if self._tensors is None or t not in self._origin:
            raise PriceDataError(f"ticker {t!r} has fewer than {self._fc.spec.encoder_length} days of history")
        return rows_from_origins(self._fc, self._tensors, [self._origin[t]])


def score(cfg: ScoreConfig):
    model_dir = find_model_run(cfg.model_run, cfg.runs_dir)
    tickers = list(cfg.tickers) or data_tickers(cfg.data)  # the workers load the prices; here only the work list
    items = [WorkItem(id=t, meta={"kind": "ticker"}) for t in tickers]
    with Run.start("finance", cfg, new_name=f"score-{pd.Timestamp.now():%Y%m%d-%H%M%S}", kind="job") as run:
        summary = run_job_from_config(items, TFTScorer(str(model_dir.resolve()), cfg.data), cfg, default_out=run.path("scores"))
        run.finish({"model_run": str(model_dir), "items": len(items), **{k: v for k, v in vars(summary).items() if isinstance(v, (int, float, str))}})
        return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(ScoreConfig, score, argv, doc=__doc__.split("\n\n")[0], prog="python -m domains.finance.score", user_errors=(PriceDataError, ScoringError, ValueError))


if __name__ == "__main__":
    raise SystemExit(main())
