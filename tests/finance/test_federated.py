"""Federated training of the finance TFT: the command's result is a normal model run; the process
mode runs Flower's gRPC server on 127.0.0.1 with one OS process per site."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from core.data import prepare as prepare_dataset
from domains.finance.data import DATASETS
from domains.finance.federated import FederateConfig, site_tickers
from domains.finance.model import Forecaster

TINY = ["--tickers", "AAPL", "KO", "JPM", "SP500", "XOM", "MSFT", "--rounds", "1", "--max-batches", "2", "--batch-size", "16",
        "--hidden-size", "8", "--hidden-continuous-size", "4", "--attention-heads", "1", "--encoder-length", "20", "--horizon", "3"]


def test_sites_hold_disjoint_ticker_groups():
    groups = site_tickers(["D", "A", "C", "B", "E"], 3)
    assert groups == [["A", "D"], ["B", "E"], ["C"]]
    flat = [t for g in groups for t in g]
    assert sorted(flat) == ["A", "B", "C", "D", "E"] and len(set(flat)) == len(flat)
    with pytest.raises(ValueError):
        site_tickers(["A", "B"], 3)


def _run(args, runs_dir, timeout):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "domains.finance.federate", "--runs-dir", str(runs_dir), *TINY, *args],
                         capture_output=True, text=True, timeout=timeout, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = next((runs_dir / "finance").glob("federate-*"))
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.timeout(1500)  # the command itself may take up to 900 s on a loaded 2-core machine
@pytest.mark.parametrize("strategy", ["fedavg", "fedprox"])
def test_federate_simulation_is_a_model_run_with_bytes_and_central_comparison(tmp_path, strategy):
    prepare_dataset(DATASETS[0])
    run_dir, m = _run(["--strategy", strategy, "--compare-central"], tmp_path, 900)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["command"] == "federate" and info["kind"] == "model" and info["status"] == "completed"
    assert m["sites"] == 3 and m["rounds"] == 1 and m["mode"] == "simulation"
    assert m["bytes_per_round"] == 2 * 3 * m["parameter_bytes"] > 0
    assert np.isfinite(m["val_pinball_vol"]) and np.isfinite(m["central_val_pinball_vol"])
    assert len(m["update_agreement"]) == m["rounds"] and all(0 <= a <= 1 + 1e-6 for a in m["update_agreement"])  # client-drift measure per round
    fc = Forecaster.load(run_dir / "model")  # forecast/score/dashboards load it like a trained model
    assert fc.info["federated"]["strategy"] == strategy and len(fc.tickers) == 6


@pytest.mark.slow
@pytest.mark.timeout(1500)  # four processes (server + 3 sites) importing torch and flwr; up to 1200 s under load
def test_process_mode_runs_flower_server_on_localhost_with_three_site_processes(tmp_path):
    prepare_dataset(DATASETS[0])
    run_dir, m = _run(["--mode", "processes"], tmp_path, 1200)
    assert m["mode"] == "processes" and m["rounds"] == 1 and m["sites"] == 3
    log = (run_dir / "log.txt").read_text() if (run_dir / "log.txt").exists() else ""
    assert np.isfinite(m["val_pinball_vol"]), log[-2000:]
    assert len(m["update_agreement"]) == 1  # Flower's gRPC server aggregated the three processes' results once


def test_federate_config_defaults_match_the_documented_budget():
    cfg = FederateConfig()
    assert (cfg.sites, cfg.rounds, cfg.local_epochs, cfg.strategy, cfg.mode) == (3, 4, 1, "fedavg", "simulation")
    assert torch.__version__  # torch importable alongside flwr


def test_validation_split_chooses_settings_without_reading_the_heldout_period():
    from domains.finance.data import PriceDataError
    from domains.finance.federated import validation_split
    from domains.finance.trust import heldout_metrics, new_model, prepare

    prepare_dataset(DATASETS[0])
    cfg = FederateConfig(tickers=["AAPL", "KO", "JPM"], hidden_size=8, hidden_continuous_size=4, attention_heads=1, encoder_length=20,
                         horizon=3, val_days=20, threads=1)
    p = prepare(cfg)
    v = validation_split(p, 20)
    T = p.T
    assert v.cutoff < p.cutoff and v.info["heldout_cutoff"] == str(p.cutoff.date())
    assert len(v.val_o) and len(v.train_o)
    assert T.targets_by(v.val_o, p.cutoff).all()  # every validation target lies before the held-out period
    assert not np.isin(v.val_o, p.val_o).any() and np.isin(v.val_o, p.train_o).all()
    assert T.targets_by(v.train_o, v.cutoff).all() and (T.dates[v.val_o] > np.datetime64(v.cutoff)).all()
    assert not np.isin(v.train_o, v.val_o).any()
    assert np.isfinite(heldout_metrics(new_model(v), v)["val_pinball_vol"])  # the same yardstick on the validation period
    with pytest.raises(PriceDataError):
        validation_split(p, 0)
    from domains.finance.federated import site_origins
    for split in ("tickers", "windows"):  # both partition the training windows into disjoint site shares
        c = FederateConfig(tickers=cfg.tickers, split=split, seed=3)
        shares = [site_origins(c, v, i) for i in range(3)]
        allo = np.concatenate(shares)
        assert len(allo) == len(set(allo)) == len(v.train_o) and set(allo) == set(v.train_o)
        n_tickers = [len(set(T.tickers[o])) for o in shares]
        assert n_tickers == ([1, 1, 1] if split == "tickers" else [3, 3, 3])


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~95 s on a loaded 2-core machine
def test_early_stopping_keeps_the_best_validation_round_for_federated_and_central_alike():
    """The same rule for both: score the validation period every round (central: every sites x
    max_batches steps), keep the lowest, score the held-out period once with that checkpoint."""
    from domains.finance.federated import central_baseline, federate_model, validation_split
    from domains.finance.trust import heldout_metrics, new_model, prepare

    prepare_dataset(DATASETS[0])
    cfg = FederateConfig(tickers=["AAPL", "KO", "JPM"], hidden_size=8, hidden_continuous_size=4, attention_heads=1, encoder_length=20,
                         horizon=3, val_days=20, threads=1, rounds=3, max_batches=1, batch_size=16, lr=0.05, early_stopping=True)
    p = prepare(cfg)
    v = validation_split(p, 20)
    torch.manual_seed(0)
    initial = new_model(p, cfg.lr)
    for name, (model, m) in {"federated": federate_model(cfg, v, initial, heldout=p)[:2],
                             "central": central_baseline(cfg, v, initial, heldout=p)}.items():
        curve = m["validation_curve"]
        assert len(curve) == cfg.rounds + 1, name  # round 0 (the initial weights) and every round
        assert m["best_round"] == int(np.argmin(curve)) and m["validation_pinball_vol"] == pytest.approx(min(curve), abs=1e-5), name
        assert m["val_pinball_vol"] == pytest.approx(heldout_metrics(model, p)["val_pinball_vol"], rel=1e-6), name  # held-out of the kept checkpoint
        assert m["validation_pinball_vol"] == pytest.approx(heldout_metrics(model, v)["val_pinball_vol"], abs=1e-5), name
        assert m["cutoff"] == str(p.cutoff.date())


def test_central_early_stopping_scores_the_heldout_period_once_with_the_best_checkpoint(monkeypatch):
    """The rule without training cost: a scripted validation curve; the kept weights are those of its
    minimum, and the held-out period is scored exactly once, after training, with them."""
    import types

    import domains.finance.federated as fed

    val_curve = iter([0.5, 0.4, 0.3, 0.35, 0.45])  # round 0 .. 4: the best is round 2
    calls = []
    model = torch.nn.Linear(1, 1, bias=False)

    def fake_metrics(m, p):
        calls.append(p.name)
        if p.name == "heldout":
            return {"val_pinball_vol": float(m.weight.item())}
        return {"val_pinball_vol": next(val_curve)}

    def fake_fit(m, T, origins, *, epochs, on_epoch_end=None, **kw):
        for e in range(epochs):
            with torch.no_grad():
                m.weight.fill_(e + 1.0)  # after epoch e the weight is e + 1
            on_epoch_end(e, 0.0, None)

    monkeypatch.setattr(fed, "heldout_metrics", fake_metrics)
    monkeypatch.setattr(fed, "fit", fake_fit)
    val = types.SimpleNamespace(name="validation", T=None, train_o=np.arange(3))
    held = types.SimpleNamespace(name="heldout", cutoff=pd.Timestamp("2022-09-28"))
    out, m = fed.central_baseline(FederateConfig(rounds=4, max_batches=1), val, model, heldout=held)
    assert m["best_round"] == 2 and m["validation_pinball_vol"] == 0.3 and m["validation_curve"] == [0.5, 0.4, 0.3, 0.35, 0.45]
    assert m["val_pinball_vol"] == 2.0 and out.weight.item() == 2.0  # the round-2 weights, not the last (4.0)
    assert calls == ["validation"] * 5 + ["heldout"]  # held-out read once, at the end


def test_trust_bench_verdict_says_met_only_for_the_deciding_row():
    from bench.trust import verdict_cell

    assert verdict_cell([0.99, 1.03, 1.03]) == "met"
    assert verdict_cell([1.06, 1.04, 1.05]) == "missed (+5.0 %)"
    extra = verdict_cell([0.994, 1.029, 1.035], deciding=False)
    assert "met" not in extra and "does not decide" in extra and extra.startswith("<= 1.02")
    assert verdict_cell([1.06, 1.04], deciding=False).startswith("> 1.02")


def test_trust_bench_pooled_row_pairs_seeds_and_never_decides():
    from bench.trust import pooled_row

    def r(seed, method, held, val, best=10):
        return {(seed, method): {"seed": seed, "method": method, "val_pinball_vol": held, "validation_pinball_vol": val, "best_round": best}}
    new = {**r(3, "central", 1.0, 1.0), **r(3, "fedavg", 1.01, 1.02)}
    old = {**r(0, "central", 2.0, 1.0), **r(0, "fedavg", 2.2, 1.1), **r(1, "central", 1.0, 1.0),
           **r(3, "central", 9.0, 9.0), **r(3, "fedavg", 0.0, 0.0)}  # seed 1 has no fedavg; seed 3 is this table's
    row = pooled_row(new, old, "fedavg", "old.jsonl")
    assert row["seeds"] == "0, 3"
    assert row["per-seed ratios"] == "1.100, 1.010"
    assert row["within 2 %"].startswith("> 1.02") and "met" not in row["within 2 %"] and "does not decide" in row["training"]
