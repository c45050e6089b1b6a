"""Transfer to a held-out ticker: pre-train without it, then zero-shot / full / LoRA / scratch."""

from __future__ import annotations

import pandas as pd

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
    assert saved.info["transfer"] == "finetune_lora" and "KO" in saved.tickers and not any("lora" in k for k in saved.model.state_dict())
    assert forecast_main(["--runs-dir", str(tmp_path), "--model-run", run.name, "--tickers", "KO", "--no-track"]) == 0
    out = sorted((tmp_path / "finance").glob("forecast-*"))[-1]
    assert set(pd.read_parquet(out / "forecasts.parquet")["ticker"]) == {"KO"}
