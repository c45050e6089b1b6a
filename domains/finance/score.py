"""Batch forecasts for many tickers to partitioned Parquet, on the suite's scoring engine.

    python -m domains.finance.score                                   # every ticker, newest model
    python -m domains.finance.score --data prices.parquet --workers 2 --zero-shot
    python -m domains.finance.score --engine ray --workers 2           # a private local Ray
    python -m domains.finance.score --engine ray --address HEAD:6379   # an existing cluster

One work item per ticker; a worker loads the forecaster and the price data once, then each item
yields the ticker's quantile rows (same columns as ``forecast``, ``calendar`` included; the run's
``metrics.json`` names the calendars used and ``--calendar`` as ``calendar`` and ``calendar_setting``, and a history
that trades on days its calendar is closed gets forecast's ``calendar_mismatch`` warning). A ticker the model does not
know (without ``--zero-shot``), or with too short a history, is quarantined with the reason; the
job goes on. Without ``--name``/``--out`` the job's run name is derived from its inputs (model run,
price data, tickers and options) — no timestamp — so rerunning the identical command after a crash
continues the unfinished job (committed chunks are skipped, ``core.scoring``).
"""

from __future__ import annotations

import pandas as pd

from core.cli import run_cli
from core.runs import Run
from core.scoring import WorkItem, check_scoring_items, check_scoring_job, check_scoring_out, digest_items, job_name, read_quarantine, run_job_from_config
from domains.finance.calendars import calendars_for
from domains.finance.config import ScoreConfig
from domains.finance.data import load_panel_data
from domains.finance.model import is_garch_informed
from domains.finance.predictor import forecaster_run_meta, warn_calendar_mismatch
from domains.finance.scoring import TFTScorer, data_digest

__all__ = ["score", "main"]


def score(cfg: ScoreConfig):
    check_scoring_out(cfg)  # a bad --out is refused before anything is loaded or created
    # the model's description only: the workers build the model (each scorer's load), so the driver does not pay the
    # pytorch-forecasting import before they start (with --workers N or Ray it ran before theirs, serially)
    model_dir, meta = forecaster_run_meta(cfg.model_run, cfg.runs_dir)
    # the prices, validated once here for the work list, the calendar check and the report (each worker loads them
    # again); a --ticker missing from the bundled panel is quarantined by the job, not refused here
    data = load_panel_data(cfg.data, cfg.tickers if cfg.data else (), **cfg.data_options())
    have = set(data.panel["ticker"].unique())
    tickers = list(cfg.tickers) or sorted(have)  # the work list
    items = [WorkItem(id=t, meta={"kind": "ticker"}) for t in tickers]
    check_scoring_items(items, f"--data {cfg.data}" if cfg.data else "the bundled price panel", "at least one ticker")  # before the run folder
    scorer = TFTScorer(str(model_dir), cfg.data, cfg.zero_shot, cfg.calendar, cfg.data_options(), data_digest(cfg.data))
    # the model run's weights and config files stamped once: a run retrained in place (same name) is another job — a new
    # default name, an --out holding its old rows refused — and the --out check, the name and the job share the stamp
    digest = digest_items(items, model_run=model_dir)
    job = check_scoring_job(cfg, items, scorer, digest)  # an --out holding another job: refused before the run folder, --out untouched
    # each forecastable ticker's calendar (a mistyped --calendar: one line, before the run folder) and forecast's
    # calendar_mismatch warning, once per job here rather than in every worker
    known = set(meta.get("tickers") or ())
    calendars = calendars_for([t for t in tickers if t in have and (cfg.zero_shot or t in known)], cfg.calendar)
    warn_calendar_mismatch(data, calendars)
    # no timestamp in the default name: the identical command after a crash finishes this job
    name = job_name("score", items, scorer, cfg.items_per_chunk, model_dir, digest=digest) if cfg.out is None else f"score-{pd.Timestamp.now():%Y%m%d-%H%M%S}"
    with Run.start("finance", cfg, new_name=name, stable_name=cfg.out is None, command="score", kind="job") as run:
        summary = run_job_from_config(items, scorer, cfg, default_out=run.path("scores"), digest=digest, job=job)
        data.report.write(run.dir)
        quarantined = set(read_quarantine(summary.out_dir)["item_id"])
        used = sorted({c for t, c in calendars.items() if t not in quarantined})  # the calendars of the rows written, as forecast records them
        run.finish({"model_run": str(model_dir), "garch_informed": is_garch_informed(meta),
                    "calendar": ", ".join(used), "calendar_setting": cfg.calendar, "items": len(items),
                    **{k: v for k, v in vars(summary).items() if isinstance(v, (int, float, str))}, **data.report.metrics()})
        return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(ScoreConfig, score, argv, doc=__doc__.split("\n\n")[0], prog="python -m domains.finance.score")


if __name__ == "__main__":
    raise SystemExit(main())
