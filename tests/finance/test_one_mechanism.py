"""One GARCH-informed model construction (issue 15.5/15.6): ``train`` (and ``transfer``) build the same
GARCH-informed TFT as the backtest through ``training.build_forecaster`` / ``fit_scaler``; the saved
model records it, ``forecast`` uses it on known and unseen tickers (GJR fitted on the series' own
history), and a model saved before GARCH-informed models existed still loads as the plain TFT."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from domains.finance.baselines import fold_gjr_params
from domains.finance.data import load_panel_data
from domains.finance.features import GJR_FIT_DAYS, base_features, series_by_ticker
from domains.finance.model import Forecaster, is_garch_informed
from domains.finance.predictor import forecast_frame
from domains.finance.training import build_forecaster, fit_scaler, model_spec
from tests.finance_support import panel_slice

TINY = dict(encoder_length=20, horizon=3, hidden_size=8, attention_heads=1, hidden_continuous_size=4, dropout=0.1, lr=3e-3)


@pytest.fixture(scope="module")
def panel():
    return panel_slice(["AAPL", "KO", "JPM"], "2018-01-01", "2021-06-30")


def test_train_and_backtest_share_the_gjr_fit_and_the_inputs(panel):
    feat = base_features(panel[panel["ticker"].isin(["AAPL", "KO"])])
    cut = pd.Timestamp("2020-12-31")
    spec = model_spec(SimpleNamespace(**TINY, garch_informed=True), feat)
    assert spec.observed_reals[-1] == "gjr_z" and "gjr_z" not in model_spec(SimpleNamespace(**TINY, garch_informed=False), feat).observed_reals
    sc = fit_scaler(feat, cut, spec)
    assert sc.gjr_horizon == 3 and sorted(sc.gjr) == ["AAPL", "KO"]
    g = series_by_ticker(feat)["AAPL"]
    train_end = int(np.searchsorted(g["date"], np.datetime64(cut), side="right")) - 1
    # the backtest's first fold (gjr_t baseline, no warm start) fits exactly these parameters
    np.testing.assert_allclose(sc.gjr["AAPL"], np.asarray(fold_gjr_params(g["log_ret"], train_end, GJR_FIT_DAYS, {})), rtol=1e-6)
    given = fit_scaler(feat, cut, spec, gjr={"AAPL": [0.02, 0.05, 0.1, 0.8, 6.0]})  # the backtest passes its own fits
    assert given.gjr["AAPL"] == [0.02, 0.05, 0.1, 0.8, 6.0] and given.gjr["KO"] == sc.gjr["KO"]
    plain = fit_scaler(feat, cut, model_spec(SimpleNamespace(**TINY, garch_informed=False), feat))
    assert plain.gjr == {} and plain.gjr_horizon == 0


@pytest.mark.slow  # ~35 s under load (GJR fits, training, the forecast command)
def test_train_command_saves_a_garch_informed_model_that_forecasts_known_and_unseen_tickers(panel, tmp_path, capsys):
    from domains.finance.forecast import main as forecast_main
    from domains.finance.train import main as train_main

    csv = tmp_path / "prices.csv"
    panel[panel["ticker"].isin(["AAPL", "KO"])][["date", "ticker", "close"]].to_csv(csv, index=False)
    args = ["--runs-dir", str(tmp_path), "--data", str(csv), "--encoder-length", "20", "--horizon", "3", "--hidden-size", "8", "--attention-heads", "1",
            "--hidden-continuous-size", "4", "--max-batches", "2", "--batch-size", "32", "--epochs", "1", "--no-track", "--no-covariates"]
    assert train_main([*args, "--name", "gi"]) == 0
    fc = Forecaster.load(tmp_path / "finance" / "gi" / "model")
    assert is_garch_informed(fc) and sorted(fc.scaler.gjr) == ["AAPL", "KO"] and "gjr_z" in fc.spec.observed_reals
    assert json.loads((tmp_path / "finance" / "gi" / "model" / "forecaster.json").read_text())["garch_informed"] is True
    assert json.loads((tmp_path / "finance" / "gi" / "metrics.json").read_text())["garch_informed"] is True
    # the GJR of the training run was fitted on rows up to its cutoff (the start of the held-out days) only
    ref = fit_scaler(base_features(load_panel_data(str(csv)).panel), fc.info["cutoff"], fc.spec)
    np.testing.assert_allclose(fc.scaler.gjr["KO"], ref.gjr["KO"], rtol=1e-6)
    # forecast: a known ticker, and JPM (never seen) zero-shot with a GJR fitted on its own history
    out = forecast_frame(fc, panel, None, ["AAPL", "JPM"], zero_shot=True)
    assert set(out["ticker"]) == {"AAPL", "JPM"} and out.loc[out["ticker"] == "JPM", "zero_shot"].all()
    assert np.isfinite(out.filter(like="q_").to_numpy()).all()
    assert forecast_main(["--runs-dir", str(tmp_path), "--model-run", "gi", "--data", str(csv), "--no-track"]) == 0
    last = sorted((tmp_path / "finance").glob("forecast-*"))[-1]
    assert json.loads((last / "metrics.json").read_text())["garch_informed"] is True
    # resuming with the other setting (e.g. a run started before GARCH-informed became the default) is one line with the fix
    capsys.readouterr()
    assert train_main([*args, "--name", "gi", "--resume", "--epochs", "2", "--no-garch-informed"]) != 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "does not fit" in err and "resume it with that flag" in err and "--garch-informed" in err


def test_a_model_saved_before_garch_informed_models_loads_as_the_plain_tft(panel, tmp_path):
    feat = base_features(panel[panel["ticker"].isin(["AAPL", "KO"])])
    fc = build_forecaster(SimpleNamespace(**TINY, garch_informed=False), feat, "2020-12-31")
    assert not is_garch_informed(fc) and fc.info["garch_informed"] is False
    fc.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "forecaster.json").read_text())
    for k in ("garch_informed",):  # what older forecaster.json files lack
        meta.pop(k)
    for k in ("gjr", "gjr_horizon"):
        meta["scaler"].pop(k)
    meta["info"].pop("garch_informed")
    (tmp_path / "model" / "forecaster.json").write_text(json.dumps(meta))
    old = Forecaster.load(tmp_path / "model")
    assert not is_garch_informed(old)
    out = forecast_frame(old, panel, None, ["AAPL"])
    assert len(out) == 2 * 3 and np.isfinite(out.filter(like="q_").to_numpy()).all()


def test_qlike_weight_adds_the_variance_term_to_training(panel):
    import torch

    from domains.finance.model import fit

    feat = base_features(panel[panel["ticker"].isin(["AAPL", "KO"])])
    losses = []
    for w in (0.0, 0.1):
        torch.manual_seed(0)
        fc = build_forecaster(SimpleNamespace(**TINY, garch_informed=True), feat, "2020-12-31")
        T = fc.tensors(fc.scaler.transform(feat))
        assert T.vol_scale is not None and float(T.vol_scale[0]) == pytest.approx(fc.scaler.lrv_scale[T.tickers[0]])
        losses.append(fit(fc.model, T, T.origins()[:256], epochs=1, batch_size=64, max_batches=1, seed=0, qlike_weight=w)[0])
    assert np.isfinite(losses).all() and losses[1] > losses[0]  # the same batch: pinball + 0.1 x QLIKE (> 0)
