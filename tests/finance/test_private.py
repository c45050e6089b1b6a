"""DP-SGD for the finance TFT: (ε, δ) from Opacus's accountant are logged with the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from core.data import prepare as prepare_dataset
from domains.finance.data import DATASETS
from domains.finance.model import Forecaster
from domains.finance.private import PRIVACY_UNIT

TINY = ["--tickers", "AAPL", "KO", "SP500", "--steps", "3", "--batch-size", "4", "--hidden-size", "8", "--hidden-continuous-size", "4",
        "--attention-heads", "1", "--encoder-length", "20", "--horizon", "3"]


@pytest.mark.slow
def test_train_private_logs_epsilon_and_delta_with_the_run(tmp_path):
    prepare_dataset(DATASETS[0])
    res = subprocess.run([sys.executable, "-m", "domains.finance.train_private", "--runs-dir", str(tmp_path), *TINY, "--epsilon", "3"],
                         capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = next((tmp_path / "finance").glob("private-*"))
    m = json.loads((run_dir / "metrics.json").read_text())
    cfg = json.loads((run_dir / "config.json").read_text())
    assert 2.9 < m["epsilon"] <= 3.05 and m["delta"] == 1e-5 and m["noise_multiplier"] > 0
    assert cfg["epsilon"] == 3 and cfg["delta"] == 1e-5
    assert m["privacy_unit"] == PRIVACY_UNIT and m["accountant"] == "prv"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["command"] == "train_private" and info["kind"] == "model"
    assert Forecaster.load(run_dir / "model").info["privacy"]["epsilon"] == m["epsilon"]
