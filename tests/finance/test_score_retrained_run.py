"""finance score of a model run retrained in place (same name, same path). Before, the job identified the model run by
its path only (in TFTScorer's config and job_name): a rerun into the same ``--out`` skipped every chunk and served the
old model's quantiles. Now the command takes the stamp of the run's weights and config files with the job's digest
(core.scoring.model_run_stamp): that ``--out`` is refused in one line and ``--overwrite`` forecasts with the new model.
Tiny untrained models on a slice of the bundled real panel (slow-marked: the command imports pytorch-forecasting)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from core.scoring import read_output
from domains.finance.data import load_panel_data
from domains.finance.features import CORE_REALS, FoldScaler, base_features
from domains.finance.model import Forecaster, TFTSpec, build_tft
from tests.finance_support import panel_slice

SPEC = TFTSpec(encoder_length=20, horizon=3, hidden_size=8, attention_heads=1, hidden_continuous_size=4, observed_reals=tuple(CORE_REALS) + ("gjr_z",))
TICKERS = ["AAPL", "SP500"]


def _train(run, prices, seed: int) -> None:
    """What training (again, under the same name) leaves in the run folder: a model of TICKERS with seed ``seed``'s weights."""
    d = load_panel_data(str(prices), min_history=10)
    gjr = {t: [0.05, 0.02, 0.05, 0.1, 0.85, 8.0] for t in TICKERS}  # fixed GJR-GARCH-t parameters: no fits
    torch.manual_seed(seed)
    Forecaster(build_tft(SPEC, TICKERS), SPEC, FoldScaler.fit(base_features(d.panel)).with_gjr(gjr, SPEC.horizon), TICKERS).save(run / "model")
    (run / "run.json").write_text(json.dumps({"domain": "finance", "kind": "model", "command": "train", "status": "completed"}))


@pytest.mark.slow  # ~20 s under load: the pytorch-forecasting import and three score commands
def test_a_model_run_retrained_in_place_is_refused_into_its_old_out_then_rescored(tmp_path, capsys):
    from domains.finance.score import main

    prices = tmp_path / "prices.csv"
    panel_slice(TICKERS, "2019-06-01", "2020-06-30")[["date", "ticker", "close"]].to_csv(prices, index=False)
    run, out = tmp_path / "m", tmp_path / "out"
    _train(run, prices, 0)
    args = ["--model-run", str(run), "--runs-dir", str(tmp_path / "runs"), "--data", str(prices), "--min-history", "10", "--no-track",
            "--no-progress", "--out", str(out)]
    assert main(args) == 0
    old = read_output(out)
    _train(run, prices, 1)
    capsys.readouterr()
    assert main(args) == 2  # was 0: every chunk skipped, the old model's quantiles served as the new one's
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "the model run changed since this output was written" in err[0] and "--overwrite re-scores" in err[0], err
    pd.testing.assert_frame_equal(read_output(out), old)  # refused: the output untouched
    assert main(args + ["--overwrite"]) == 0
    new = read_output(out)
    floats = list(old.select_dtypes("float").columns)
    assert floats and len(new) == len(old) and not new[floats].equals(old[floats])  # the new model's forecasts
