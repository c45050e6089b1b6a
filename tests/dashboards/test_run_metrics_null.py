"""The readers of a run's metrics files cope with the ``null`` a run writes for an undefined value (NaN/inf,
e.g. the HD95 of an absent class): the dashboards' metrics table and curves, the recommendation training
report, the finance backtest verdict. The files are written by ``core.runs.Run``, as in real use."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from core.config import RunConfig, TrackingConfig
from core.runs import Run, read_run


@dataclass
class TinyConfig(TrackingConfig, RunConfig):
    pass


def test_dashboard_metrics_table_and_curves_show_a_null_metric_as_no_value(tmp_path):
    from dashboards.common import metric_history, scalar_metrics

    with Run.start("medical", TinyConfig(runs_dir=str(tmp_path), track=False), command="train") as run:
        run.log_metrics({"val_mean_dice": 0.5, "val_hd95/cerebellum": float("inf")}, step=1)
        run.log_metrics({"val_mean_dice": 0.7, "val_hd95/cerebellum": 4.0}, step=2)
        run.finish({"test_mean_dice": 0.8, "test_hd95": {"cerebellum": float("inf"), "pons": 3.0}})
    metrics = scalar_metrics(read_run(run.dir))
    assert metrics["test_mean_dice"] == 0.8 and metrics["test_hd95.pons"] == 3.0
    assert math.isnan(metrics["test_hd95.cerebellum"])  # listed without a value, not dropped, not a crash
    hist = metric_history(run.dir)
    assert hist["val_mean_dice"].tolist() == [0.5, 0.7]
    assert math.isnan(hist.loc[1, "val_hd95/cerebellum"]) and hist.loc[2, "val_hd95/cerebellum"] == 4.0
    assert pd.api.types.is_float_dtype(hist["val_hd95/cerebellum"])  # the chart's column stays numeric


def test_recommendation_training_report_reads_null_validation_rows(tmp_path):
    from domains.recommendation.api import training_report

    with Run.start("recommendation", TinyConfig(runs_dir=str(tmp_path), track=False), command="train") as run:
        run.log_metrics({"epoch": 1, "loss": 0.9, "valid_ndcg@10": float("nan")}, step=10)
        run.log_metrics({"epoch": 2, "loss": 0.8, "valid_ndcg@10": 0.3}, step=20)
        run.finish({"best_epoch": 2, "test_ndcg@10": float("nan")})
    report = training_report(run.dir)
    assert report.chosen_epoch == 2 and report.selection_metric == "valid_ndcg@10"
    assert math.isnan(report.curves.loc[1, "valid_ndcg@10"]) and report.curves.loc[2, "valid_ndcg@10"] == 0.3


def test_finance_backtest_verdict_reads_a_null_pinball_as_nan(tmp_path):
    from domains.finance.api import load_backtest

    with Run.start("finance", TinyConfig(runs_dir=str(tmp_path), track=False), command="backtest", kind="job") as run:
        pd.DataFrame({"model": ["tft", "garch"], "vol_pinball": [float("nan"), 0.41]}).to_csv(run.path("metrics_aggregate.csv"), index=False)
        run.finish({"tft_vol_pinball": float("nan"), "best_baseline_vol": "garch", "best_baseline_vol_pinball": 0.41,
                    "tft_beats_best_baseline_vol": False})
    verdict = load_backtest(run.dir).verdict  # float(None) raised TypeError here once metrics.json held null
    assert verdict is not None and math.isnan(verdict.tft_vol_pinball)
    assert (verdict.best_baseline, verdict.best_baseline_vol_pinball, verdict.tft_beats_best_baseline) == ("garch", 0.41, False)
