"""bench/finance_runs.py: the README's multi-run figures are computed from the runs' own files, as documented."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from domains.finance.metrics import qlike_rows

_spec = importlib.util.spec_from_file_location("finance_runs", Path(__file__).resolve().parents[2] / "bench" / "finance_runs.py")
finance_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(finance_runs)


def _transfer_run(root: Path, name: str, saved: str, pinball: dict[str, float]) -> None:
    d = root / "finance" / name
    (d / "model").mkdir(parents=True)
    rows = [{"ticker": t, "model": m, "vol_pinball": v + (0.0001 if t == "B" else 0.0), "ret_pinball_h1": 0.003, "var99_breaches": 1}
            for t in ("A", "B") for m, v in pinball.items()]
    pd.DataFrame(rows).to_csv(d / "transfer_results.csv", index=False)
    (d / "model" / "forecaster.json").write_text(json.dumps({"info": {"transfer": saved}}))


def test_transfer_table_is_the_mean_over_tickers_then_over_runs_and_follows_each_saved_variant(tmp_path, capsys):
    _transfer_run(tmp_path, "s0", "zero_shot", {"zero_shot": 0.0010, "finetune_lora": 0.0020})
    _transfer_run(tmp_path, "s1", "finetune_lora", {"zero_shot": 0.0012, "finetune_lora": 0.0016})
    finance_runs.main(["transfer", "s0", "s1", "--runs-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "saved per run: zero_shot, finetune_lora" in out
    assert "| zero_shot | 0.001150 ± 0.000141 | 0.001050 / 0.001250 |" in out  # ticker means 0.00105, 0.00125
    assert "| saved | 0.001350 ± 0.000424 | 0.001050 / 0.001650 |" in out  # run 0's zero-shot, run 1's LoRA


def _backtest_run(root: Path, name: str, gjr_shift: float, heads: list[float]) -> Path:
    d = root / "finance" / name
    d.mkdir(parents=True)
    key = pd.DataFrame({"ticker": ["A"] * 3 + ["B"] * 3, "fold": 0, "origin": pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-06"] * 2)})
    rv = np.array([0.01, 0.02, 0.015, 0.03, 0.01, 0.02])
    frames = [key.assign(model="gjr_t", rvol=rv, rvol_rms=0.015 + gjr_shift * (key["ticker"] == "B"), rvol_var_head=np.nan)]
    frames += [key.assign(model=f"tft_seed{i}", rvol=rv, rvol_rms=np.nan, rvol_var_head=h) for i, h in enumerate(heads)]
    pd.concat(frames).to_parquet(d / "losses.parquet", index=False)
    return d


def test_ensemble_pools_every_members_head_geometrically_and_diff_names_the_ticker(tmp_path, capsys):
    a = _backtest_run(tmp_path, "r0", 0.0, [0.0001])
    _backtest_run(tmp_path, "r1", 0.001, [0.0004])
    finance_runs.main(["ensemble", "r0", "r1", "--runs-dir", str(tmp_path)])
    out = capsys.readouterr().out
    rv = pd.read_parquet(a / "losses.parquet").query("model == 'gjr_t'")["rvol"].to_numpy()
    q = qlike_rows(rv, np.full(6, np.sqrt(0.0002)))  # geometric mean of 1e-4 and 4e-4
    assert f"2 members: ensemble QLIKE {np.mean([q[:3].mean(), q[3:].mean()]):.4f}" in out
    finance_runs.main(["baseline-diff", "r0", "r1", "--runs-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "gjr_t: 3 of 6 shared rows differ" in out and "B " in out
    with pytest.raises(SystemExit):
        finance_runs.main(["baseline-diff", "r0", "--runs-dir", str(tmp_path)])


def _deviation_run(root: Path, name: str, tft_var) -> Path:
    """Two tickers, fold 1; GJR-t forecasts a constant vol, the realised vol varies; ``tft_var(rv, g)`` is the TFT's variance."""
    d = root / "finance" / name
    d.mkdir(parents=True)
    n = 40
    rng = np.random.default_rng(0)
    key = pd.DataFrame({"ticker": ["A"] * n + ["B"] * n, "fold": 1, "origin": list(pd.bdate_range("2020-01-01", periods=n)) * 2})
    g = np.where(key["ticker"] == "A", 0.01, 0.02)
    rv = g * np.exp(rng.normal(0, 0.3, 2 * n))
    frames = [key.assign(model="gjr_t", rvol=rv, rvol_rms=g, rvol_var_cal=np.nan),
              key.assign(model="tft", rvol=rv, rvol_rms=np.nan, rvol_var_cal=tft_var(rv, g))]
    pd.concat(frames).to_parquet(d / "losses.parquet", index=False)
    return d


def test_deviation_slope_is_one_for_a_tft_that_departs_as_far_as_gjr_is_wrong_and_near_zero_for_noise(tmp_path, capsys):
    _deviation_run(tmp_path, "informed", lambda rv, g: 1.05 * rv ** 2)  # log(V/G) = log(rv²/G) + log 1.05
    _deviation_run(tmp_path, "noise", lambda rv, g: g ** 2 * np.exp(np.random.default_rng(1).normal(0, 0.2, len(g))))
    finance_runs.main(["deviation", "informed", "noise", "--runs-dir", str(tmp_path)])
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["informed"][0] == "80" and rows["informed"][3] == "1.00" and rows["informed"][4] == "1.000"
    assert abs(float(rows["noise"][3])) < 0.3 and abs(float(rows["noise"][4])) < 0.3
