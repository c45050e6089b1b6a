"""The fast tensor path is the library's TFT: same predictions as pytorch-forecasting's own
TimeSeriesDataSet + ``model.predict``; safe save/load; bit-exact resume of training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from domains.finance.data import load_covariates
from domains.finance.features import FoldScaler, base_features
from domains.finance.model import Forecaster, TFTSpec, build_tft, build_timeseries_dataset, fit, predict_quantiles
from tests.finance_support import panel_slice

TICKERS = ["AAPL", "KO", "SP500"]
SPEC = TFTSpec(encoder_length=20, horizon=3, hidden_size=8, attention_heads=1, hidden_continuous_size=4)


@pytest.fixture(scope="module")
def feat():
    return base_features(panel_slice(TICKERS, "2017-01-01"), load_covariates())


def test_fast_path_equals_pytorch_forecasting_predict(feat):
    torch.manual_seed(0)
    model = build_tft(SPEC, TICKERS)
    fc = Forecaster(model, SPEC, FoldScaler.fit(feat), TICKERS)
    z = fc.scaler.transform(feat)
    z["time_idx"] = z.groupby("ticker").cumcount()
    # a few steps of training so the weights are not at their symmetric initialisation
    T = fc.tensors(z)
    fit(model, T, T.origins(), epochs=1, max_batches=3, batch_size=32)
    tsd = build_timeseries_dataset(z, SPEC, TICKERS)
    dl = tsd.to_dataloader(train=False, batch_size=256, num_workers=0)
    ref = model.predict(dl, mode="quantiles", return_index=True, trainer_kwargs={"logger": False, "enable_progress_bar": False, "enable_model_summary": False})
    idx = ref.index  # ticker, time_idx of the first predicted step
    origins = np.array([np.flatnonzero((T.tickers == t))[int(ti) - 1] for t, ti in zip(idx["ticker"], idx["time_idx"])])
    ours = predict_quantiles(model, T, origins)
    full = predict_quantiles(model, T, origins, return_attention=True)  # the library's own forward on our tensors
    assert len(origins) > 500
    assert full["attention"].shape == (len(origins), SPEC.horizon, SPEC.encoder_length)
    np.testing.assert_allclose(ours["lrv_z"], full["lrv_z"], rtol=1e-4, atol=1e-5)
    for k, name in enumerate(["ret_z", "lrv_z"]):
        theirs = torch.sort(ref.output[k], dim=-1).values.numpy()
        np.testing.assert_allclose(ours[name], theirs, rtol=1e-4, atol=1e-5)


def test_save_load_roundtrip_is_exact_and_pickle_free(feat, tmp_path):
    torch.manual_seed(1)
    model = build_tft(SPEC, TICKERS)
    fc = Forecaster(model, SPEC, FoldScaler.fit(feat), TICKERS, {"note": "t"})
    fc.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"model.safetensors", "forecaster.json"}
    fc2 = Forecaster.load(tmp_path)
    z = fc.scaler.transform(feat)
    T = fc.tensors(z)
    o = T.origins()[:64]
    a, b = predict_quantiles(fc.model, T, o), predict_quantiles(fc2.model, fc2.tensors(fc2.scaler.transform(feat)), o)
    np.testing.assert_array_equal(a["ret_z"], b["ret_z"])
    assert fc2.scaler.to_dict() == fc.scaler.to_dict() and fc2.info == {"note": "t"}
    with pytest.raises(FileNotFoundError, match="holds no trained finance forecaster"):
        Forecaster.load(tmp_path / "nope")


def test_train_resume_is_bit_exact(tmp_path):
    from domains.finance.train import TrainConfig, train

    common = dict(runs_dir=str(tmp_path), track=False, tickers=["AAPL", "KO"], encoder_length=20, horizon=3, hidden_size=8,
                  attention_heads=1, hidden_continuous_size=4, max_batches=3, batch_size=32, val_days=30)
    full = train(TrainConfig(name="full", epochs=2, **common))
    train(TrainConfig(name="cut", epochs=1, **common))
    resumed = train(TrainConfig(name="cut", epochs=2, resume=True, **common))
    assert resumed.name == "cut"
    from safetensors.torch import load_file

    wa, wb = load_file(str(full / "model" / "model.safetensors")), load_file(str(resumed / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == ["step_00000001.pt", "step_00000002.pt"]


def test_ddp_under_torchrun_two_processes(tmp_path):
    """``torchrun -m domains.finance.train``: two ranks train one TFT (DDP over Gloo, each on its half
    of the windows), rank 0 alone writes one run and a forecaster that loads back."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from core.distributed import free_port
    from domains.finance.model import Forecaster

    env = {**os.environ, "SUITE_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
           "-m", "domains.finance.train", "--tickers", "AAPL", "KO", "--encoder-length", "20", "--horizon", "3", "--hidden-size", "8",
           "--attention-heads", "1", "--hidden-continuous-size", "4", "--max-batches", "3", "--batch-size", "32", "--val-days", "30",
           "--epochs", "2", "--runs-dir", str(tmp_path), "--name", "ddp", "--no-track", "--threads", "1"]
    p = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    runs = [d.name for d in (tmp_path / "finance").iterdir() if d.is_dir() and not d.is_symlink()]
    assert runs == ["ddp"]
    m = json.loads((tmp_path / "finance" / "ddp" / "metrics.json").read_text())
    assert m["world_size"] == 2 and np.isfinite(m["val_pinball_ret_h1"])
    assert sorted(p.name for p in (tmp_path / "finance" / "ddp" / "checkpoints").iterdir()) == ["step_00000001.pt", "step_00000002.pt"]
    Forecaster.load(tmp_path / "finance" / "ddp" / "model")
