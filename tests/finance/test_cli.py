"""End to end on the real panel with a tiny model: backtest → forecast → score, the dashboard
API on those runs, and one-line errors for user mistakes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest


from core.data import prepare
from domains.finance.baselines import BASELINES
from domains.finance.data import DATASETS

TINY = ["--tickers", "AAPL", "JPM", "SP500", "--encoder-length", "20", "--horizon", "3", "--hidden-size", "8", "--attention-heads", "1",
        "--hidden-continuous-size", "4", "--max-batches", "3", "--batch-size", "64", "--no-track"]


@pytest.fixture(scope="module")
def backtest_run(session_runs_dir):
    from domains.finance.backtest import BacktestConfig, backtest
    from core.config import parse_config

    prepare(DATASETS[0])
    cfg = parse_config(BacktestConfig, ["--runs-dir", str(session_runs_dir), "--folds", "2", "--test-days", "20", "--epochs", "1", "--refit-epochs", "1", *TINY])
    return backtest(cfg)


def test_backtest_outputs(backtest_run):
    from domains.finance import api

    bt = api.load_backtest(backtest_run)
    agg = bt["aggregate"]
    assert set(agg["model"]) == {"tft", *BASELINES}  # issue 15.2 added gjr_t and har to the original four
    assert (agg["n_tickers"] == 3).all() and (agg["vol_pinball"] > 0).all()
    by_t = bt["by_ticker"]
    assert len(by_t) == 3 * (1 + len(BASELINES)) and by_t["n_origins"].eq(40).all()  # 2 folds x 20 days per ticker
    assert {"var99_kupiec_p", "var99_christoffersen_p_cc", "vol_qlike", "vol_rmse", "ret_cov90"} <= set(by_t.columns)
    pred = bt["predictions"]
    assert pred.groupby("model").size().nunique() == 1  # every model forecast the same origins
    q = pred[[c for c in pred.columns if c.startswith("q_")]].to_numpy()
    assert np.all(np.diff(q, axis=1) >= -1e-12)  # no quantile crossing
    vb = bt["var_breaches"]
    assert vb["breach99"].dtype == bool and set(vb["model"]) == set(agg["model"])
    for png in ("metrics_by_model.png", "pinball_by_quantile.png", "var_breaches_SP500.png", "vol_forecast_SP500.png",
                "interpretation/variable_importance.png", "interpretation/attention.png"):
        assert (backtest_run / png).stat().st_size > 5000, png
    imp = api.load_variable_importance(backtest_run)
    assert set(imp["kind"]) == {"static", "encoder", "decoder"}
    np.testing.assert_allclose(imp.groupby("kind")["importance"].sum(), 1.0, rtol=1e-5)
    import json

    m = json.loads((backtest_run / "metrics.json").read_text())
    assert {"tft_beats_best_baseline_vol", "tft_var99_kupiec_pass_rate", "best_baseline_vol"} <= set(m)


def test_forecast_and_api(backtest_run, session_runs_dir):
    from domains.finance import api
    from domains.finance.forecast import main

    assert main(["--runs-dir", str(session_runs_dir), "--model-run", str(backtest_run), "--no-track"]) == 0
    out = sorted((session_runs_dir / "finance").glob("forecast-*"))[-1]
    df = pd.read_parquet(out / "forecasts.parquet")
    assert set(df["ticker"]) == {"AAPL", "JPM", "SP500"} and set(df["target"]) == {"ret", "rvol"}
    assert (df["date"] > df["origin"]).all() and df["origin"].nunique() == 1
    fc = api.load_forecaster(backtest_run)
    f2 = api.forecast(fc, ["AAPL", "NOT_A_TICKER"])
    assert set(f2["ticker"]) == {"AAPL"} and {"q_0.01", "q_0.99", "horizon", "date", "target"} <= set(f2.columns)
    assert (f2.loc[f2["target"] == "rvol", "q_0.5"] > 0).all()
    panel = api.load_panel()
    assert {"date", "ticker", "close"} <= set(panel.columns)


def test_interpret_cli_is_its_own_job_and_leaves_the_model_run_alone(backtest_run, session_runs_dir, capsys):
    from domains.finance import api
    from domains.finance.interpret import main

    imp = backtest_run / "interpretation" / "variable_importance.csv"
    before = imp.stat().st_mtime_ns
    assert main(["--model-run", str(backtest_run), "--runs-dir", str(session_runs_dir), "--no-track"]) == 0
    job = sorted((session_runs_dir / "finance").glob("interpret-*"))[-1]
    assert imp.stat().st_mtime_ns == before and f"Run directory: {job}" in capsys.readouterr().out  # nothing written into the model run
    assert json.loads((job / "run.json").read_text())["kind"] == "job"
    mine = api.load_variable_importance(job)
    assert set(mine["kind"]) == {"static", "encoder", "decoder"} and mine["constant"].dtype == bool
    assert main(["--model-run", str(session_runs_dir / "nope"), "--no-track"]) == 2  # one line, no traceback
    assert "no trained finance model" in capsys.readouterr().err


def test_score_quarantines_unknown_ticker(backtest_run, session_runs_dir, tmp_path):
    from domains.finance.score import main
    from core.scoring import read_output, read_quarantine

    out = tmp_path / "scores"
    rc = main(["--runs-dir", str(session_runs_dir), "--model-run", str(backtest_run), "--no-track", "--out", str(out),
               "--tickers", "AAPL", "SP500", "KO", "--no-progress"])
    assert rc == 0
    rows = read_output(out)
    assert set(rows["ticker"]) == {"AAPL", "SP500"} and len(rows) == 2 * 2 * 3
    bad = read_quarantine(out)
    assert list(bad["item_id"]) == ["KO"] and "unknown to the model" in bad["reason"].iloc[0]


def test_user_errors_are_one_line(tmp_path, capsys):
    from domains.finance.forecast import main as forecast_main
    from domains.finance.train import main as train_main

    bad = tmp_path / "bad.csv"
    pd.DataFrame({"date": ["2020-01-01", "2020-01-02"], "ticker": ["A", "A"], "close": [1.0, -2.0]}).to_csv(bad, index=False)
    assert train_main(["--data", str(bad), "--runs-dir", str(tmp_path), "--no-track"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-positive" in err[0] and "bad.csv" in err[0]
    assert forecast_main(["--runs-dir", str(tmp_path / "empty"), "--no-track"]) == 2
    assert "no trained finance model" in capsys.readouterr().err


def test_score_local_and_ray_engines_write_identical_outputs(backtest_run, session_runs_dir, tmp_path, ray_address):
    from core.scoring import WorkItem
    from tests.scoring_support import assert_engines_agree
    from core.runs import resolve_model_run
    from domains.finance.scoring import TFTScorer

    model_dir = resolve_model_run("finance", str(backtest_run), session_runs_dir)
    items = [WorkItem(id=t, meta={"kind": "ticker"}) for t in ("AAPL", "JPM", "SP500", "KO")]
    rows = assert_engines_agree(items, TFTScorer(str(model_dir.resolve())), tmp_path, ray_address)
    assert set(rows["ticker"]) == {"AAPL", "JPM", "SP500"}  # KO is unknown to the model: quarantined by both


def test_rerunning_an_interrupted_score_command_finishes_the_same_job(backtest_run, tmp_path):
    """Issue 13.5: without --name/--out the job's name is derived from its inputs, not a timestamp."""
    from domains.finance.score import main

    runs = tmp_path / "runs"
    args = ["--runs-dir", str(runs), "--model-run", str(backtest_run), "--no-track", "--tickers", "AAPL", "SP500", "--items-per-chunk", "1",
            "--no-progress"]
    assert main(args) == 0
    (first,) = [d for d in (runs / "finance").iterdir() if d.name.startswith("score-")]
    m = json.loads((first / "metrics.json").read_text())
    assert m["chunks_done"] == 2 and m["chunks_skipped"] == 0
    info = json.loads((first / "run.json").read_text())
    (first / "run.json").write_text(json.dumps({**info, "status": "failed"}))  # as if it had crashed after its chunks
    assert main(args) == 0
    again = [d for d in (runs / "finance").iterdir() if d.name.startswith("score-")]
    assert again == [first] and json.loads((first / "run.json").read_text())["status"] == "completed"
    m = json.loads((first / "metrics.json").read_text())
    assert m["chunks_done"] == 0 and m["chunks_skipped"] == 2  # the committed chunks were not scored again
    other = ["--runs-dir", str(runs), "--model-run", str(backtest_run), "--no-track", "--tickers", "SP500", "--items-per-chunk", "1", "--no-progress"]
    assert main(other) == 0  # other inputs: another job
    assert len([d for d in (runs / "finance").iterdir() if d.name.startswith("score-")]) == 2
