"""A run's metrics files are strict JSON (RFC 8259): NaN and ±inf — an HD95 of a class absent from both
masks, a loss that diverged — are written as ``null``, which jq, JavaScript and MLflow UIs read; Python's
default ``NaN``/``Infinity`` tokens make them refuse the whole file. The readers take ``null`` as "no value"."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from core.config import RunConfig, TrackingConfig
from core.runs import Run, iter_metrics, read_run


@dataclass
class TinyConfig(TrackingConfig, RunConfig):
    pass


def _refuse(token: str):
    raise ValueError(f"not strict JSON: {token}")


def strict_loads(text: str):
    """``json.loads`` that refuses NaN, Infinity and -Infinity, as jq and JavaScript's JSON.parse do."""
    return json.loads(text, parse_constant=_refuse)


def test_metrics_jsonl_and_metrics_json_write_non_finite_values_as_null(tmp_path):
    with Run.start("unit", TinyConfig(runs_dir=str(tmp_path), track=False), command="train") as run:
        run.log_metrics({"loss": 0.5, "val_hd95": float("inf"), "val_dice": float("nan")}, step=1)
        run.log_metrics({"loss": torch.tensor(float("nan")), "val_hd95": np.float32("-inf"), "val_dice": np.float64(0.75)}, step=2)
        run.finish({"test_hd95/cerebellum": float("inf"), "test_dice/cerebellum": float("nan"), "steps": 2,
                    "per_class": {"a": np.float64("nan"), "b": 1.5}, "name": "x"})
    rows = [strict_loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"], r["val_hd95"], r["val_dice"]) for r in rows] == [(1, 0.5, None, None), (2, None, None, 0.75)]
    final = strict_loads((run.dir / "metrics.json").read_text())
    assert final == {"test_hd95/cerebellum": None, "test_dice/cerebellum": None, "steps": 2, "per_class": {"a": None, "b": 1.5}, "name": "x"}
    # core's own readers hand the nulls on as None
    assert [r["val_dice"] for r in iter_metrics(run.dir)] == [None, 0.75]
    assert read_run(run.dir)["metrics"]["test_hd95/cerebellum"] is None and read_run(run.dir)["status"] == "completed"


def test_mlflow_gets_the_finite_values_and_skips_the_nulls(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    with Run.start("unit", TinyConfig(runs_dir=str(tmp_path), track=True), command="train") as run:
        run.log_metrics({"loss": 0.5, "val_hd95": float("inf")}, step=1)
        run.finish({"best": 0.9, "test_hd95": float("inf"), "test_dice": float("nan")})
    if not run.tracker.run_id:
        pytest.skip("MLflow store not writable here")
    logged = MlflowClient(tracking_uri=run.tracker.uri).get_run(run.tracker.run_id).data.metrics
    assert logged["loss"] == 0.5 and logged["best"] == 0.9
    assert not {"val_hd95", "test_hd95", "test_dice"} & set(logged)  # inf used to reach MLflow as inf
