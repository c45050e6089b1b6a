"""Transfer to a held-out ticker: pre-train without it, then zero-shot / full / LoRA / scratch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.data import prepare
from domains.finance.data import DATASETS


def test_transfer_runs_and_lora_trains_fewer_parameters(tmp_path):
    from domains.finance.transfer import TransferConfig, transfer

    prepare(DATASETS[0])
    cfg = TransferConfig(runs_dir=str(tmp_path), track=False, tickers=["AAPL", "JPM", "KO", "SP500"], holdout="KO", short_days=120, test_days=30,
                         encoder_length=20, horizon=3, hidden_size=8, attention_heads=1, hidden_continuous_size=4, epochs=1, max_batches=3,
                         batch_size=64, finetune_epochs=1)
    run = transfer(cfg)
    df = pd.read_csv(run / "transfer_results.csv").set_index("model")
    assert list(df.index) == ["zero_shot", "finetune_full", "finetune_lora", "scratch", "garch"]
    assert (df["n_test"] == 30).all() and (df["vol_pinball"] > 0).all()
    assert df.loc["finetune_lora", "trainable_params"] < df.loc["finetune_full", "trainable_params"]
    assert (run / "transfer.png").stat().st_size > 5000
    # the fine-tuned model is saved as a model run that forecast (and score, the dashboard) can use
    from domains.finance.forecast import main as forecast_main
    from domains.finance.model import Forecaster

    saved = Forecaster.load(run / "model")
    # --save auto (default): the variant with the lowest vol pinball on the short history's last --val-days is saved
    sel = saved.info["transfer_selection"]
    assert set(sel) == {"zero_shot", "finetune_full", "finetune_lora"} and all(v > 0 for v in sel.values())
    assert saved.info["transfer"] == min(sel, key=sel.get) and "KO" in saved.tickers and not any("lora" in k for k in saved.model.state_dict())
    import json
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["saved_model"] == saved.info["transfer"] and metrics["select/zero_shot/val_vol_pinball"] == pytest.approx(sel["zero_shot"])
    assert 10 <= metrics["select/val_days"] <= 50  # --val-days 50, or the last third of a shorter history
    from domains.finance import api

    assert api.saved_variant(run) == (saved.info["transfer"], pytest.approx(sel), saved.info["transfer_val_days"]) and api.saved_variant(tmp_path) is None  # the dashboard's caption
    assert forecast_main(["--runs-dir", str(tmp_path), "--model-run", run.name, "--tickers", "KO", "--no-track"]) == 0
    out = sorted((tmp_path / "finance").glob("forecast-*"))[-1]
    assert set(pd.read_parquet(out / "forecasts.parquet")["ticker"]) == {"KO"}


def test_validation_split_keeps_the_fitted_windows_before_the_validation_days():
    from types import SimpleNamespace

    from domains.finance.data import PriceDataError
    from domains.finance.features import base_features
    from domains.finance.finetuning import validation_split
    from domains.finance.training import build_forecaster
    from tests.finance_support import panel_slice

    feat = base_features(panel_slice(["AAPL", "KO"], "2020-01-01", "2021-06-30"))
    cfg = SimpleNamespace(encoder_length=20, horizon=3, hidden_size=8, attention_heads=1, hidden_continuous_size=4, dropout=0.1, lr=3e-3,
                          garch_informed=False)
    fc = build_forecaster(cfg, feat, "2021-06-30")
    T = fc.tensors(fc.scaler.transform(feat))
    o = T.origins()
    short = o[(T.tickers[o] == "KO") & T.targets_by(o, np.datetime64("2021-06-30")) & (T.dates[o] > np.datetime64("2020-10-01"))]
    fit_o, val_o = validation_split(T, short, 30, 3)
    assert len(np.unique(T.dates[val_o])) == 30 and set(fit_o).isdisjoint(val_o) and set(fit_o) | set(val_o) <= set(short)
    first_val = T.dates[val_o].min()
    assert T.dates[fit_o + 3].max() < first_val  # a fitted window's last target (row o + H) is dated before every validation origin
    assert len(fit_o) >= len(short) - 30 - 3  # and only the windows overlapping the validation days are left out
    n = len(np.unique(T.dates[short]))
    fit_o, val_o = validation_split(T, short, n, 3)  # more than the history holds: its last third validates
    assert len(np.unique(T.dates[val_o])) == (n - 3) // 3 and T.dates[fit_o + 3].max() < T.dates[val_o].min()
    with pytest.raises(PriceDataError, match="too few to hold out 10 validation days"):
        validation_split(T, short[T.dates[short] > np.unique(T.dates[short])[-30]], 50, 3)
