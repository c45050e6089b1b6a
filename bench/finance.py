"""Finance TFT: prediction throughput, training time per epoch and peak memory, each against
pytorch-forecasting's default TimeSeriesDataSet pipeline measured in the same run.

* prediction: one trained TFT (real bundled panel, 26 tickers), every forecast window of the last
  252 trading days. Reference: ``model.predict(TimeSeriesDataSet)`` (the library's default path:
  dataset → DataLoader → Lightning predict loop, ``mode="quantiles"``). Ours: ``PanelTensors``
  (pre-built matrix, gather per batch) + direct batched forward (``predict_quantiles``).
  Outputs are checked equal before timing.
* training: the same number of batches of the same size, from a fresh model each: reference =
  ``TimeSeriesDataSet.to_dataloader(train=True)`` + ``lightning.pytorch.Trainer.fit``;
  ours = ``domains.finance.model.fit`` on ``PanelTensors``. Reported per epoch of 30 batches.
* memory: peak RSS increase while building the training data structure for a SYNTHETIC panel of
  300 tickers × 3,000 days (random-walk prices; content does not matter for memory), each in a
  fresh subprocess: ``TimeSeriesDataSet(...)`` vs ``FoldScaler`` + ``PanelTensors``.

Writes the "finance" section of BENCHMARKS.md:  .venv/bin/python bench/finance.py

``--scale`` (issue 15): the walk-forward backtest (``domains.finance.walkforward``: TFT + the six
arch baselines + every statistic) on SYNTHETIC GARCH(1,1) panels of 20 years (5,040 trading days)
and a growing number of tickers, each size in a fresh process: wall time and peak resident memory
against tickers. Writes the "finance-scale" section:  .venv/bin/python bench/finance.py --scale
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from core.bench import PeakRSS, machine_line, markdown_table, time_it, write_benchmark_section  # noqa: E402

SYN_TICKERS, SYN_DAYS = 300, 3000


def setup_panel(threads: int):
    from domains.finance.data import load_covariates, load_panel
    from domains.finance.features import TARGETS, FoldScaler, base_features
    from domains.finance.model import TFTSpec

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    feat = base_features(load_panel(), load_covariates())
    z = FoldScaler.fit(feat).transform(feat)
    z["time_idx"] = z.groupby("ticker").cumcount()
    spec = TFTSpec()
    # a covariate missing for a period (the bundled VIX does not reach the panel's last year) is fed as 0, its
    # mean in z units, by PanelTensors; TimeSeriesDataSet refuses NaN, so both pipelines get the filled values
    inputs = [c for c in spec.observed_reals if c in z and c not in TARGETS]
    z[inputs] = z[inputs].fillna(0.0)
    return z, spec


def bench_predict(threads: int) -> dict:
    from domains.finance.features import PanelTensors
    from domains.finance.model import build_tft, build_timeseries_dataset, fit, predict_quantiles

    z, spec = setup_panel(threads)
    tickers = sorted(z["ticker"].unique())
    model = build_tft(spec, tickers)
    T = PanelTensors(z, list(model.hparams.x_reals), model.ticker_index, spec.encoder_length, spec.horizon)
    fit(model, T, T.origins(), epochs=1, max_batches=20)  # "the same trained model" for both paths
    start = np.sort(z["date"].unique())[-252 - spec.horizon]
    sub = z[z["date"] >= start - pd.Timedelta(days=140)]  # the reference dataset needs the encoder history too
    keep_from = sub.groupby("ticker")["time_idx"].transform(lambda s: s[sub.loc[s.index, "date"] >= start].min())
    tsd_eval = build_timeseries_dataset(sub[sub["time_idx"] >= keep_from - spec.encoder_length], spec, tickers)
    kw = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}

    def reference():
        return model.predict(tsd_eval, mode="quantiles", return_index=True, trainer_kwargs=kw)

    ref = reference()
    idx = ref.index
    pos = {t: np.flatnonzero(T.tickers == t) for t in tickers}
    origins = np.array([pos[t][int(ti) - 1] for t, ti in zip(idx["ticker"], idx["time_idx"])])
    ours = predict_quantiles(model, T, origins)
    max_diff = float(np.abs(ours["ret_z"] - torch.sort(ref.output[0], dim=-1).values.numpy()).max())
    n = len(origins)
    t_ref = time_it(reference, repeats=3, warmup=0)
    t_ours = time_it(lambda: predict_quantiles(model, T, origins), repeats=5, warmup=1)
    t_build = time_it(lambda: PanelTensors(z, list(model.hparams.x_reals), model.ticker_index, spec.encoder_length, spec.horizon), repeats=3, warmup=0)
    return {"windows": n, "ref_s": t_ref, "ours_s": t_ours, "ours_with_build_s": t_ours + t_build, "max_abs_diff": max_diff}


def bench_train(threads: int, batches: int = 30, batch_size: int = 128) -> dict:
    import lightning.pytorch as pl

    from domains.finance.features import PanelTensors
    from domains.finance.model import build_tft, build_timeseries_dataset, fit

    z, spec = setup_panel(threads)
    tickers = sorted(z["ticker"].unique())

    def reference():
        torch.manual_seed(0)
        t0 = time.perf_counter()
        tsd = build_timeseries_dataset(z, spec, tickers)
        dl = tsd.to_dataloader(train=True, batch_size=batch_size, num_workers=0)
        model = build_tft(spec, tickers)
        trainer = pl.Trainer(max_epochs=1, limit_train_batches=batches, limit_val_batches=0, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", gradient_clip_val=0.5)
        t_setup = time.perf_counter() - t0
        trainer.fit(model, train_dataloaders=dl)
        return t_setup, time.perf_counter() - t0 - t_setup

    def ours():
        torch.manual_seed(0)
        t0 = time.perf_counter()
        model = build_tft(spec, tickers)
        T = PanelTensors(z, list(model.hparams.x_reals), model.ticker_index, spec.encoder_length, spec.horizon)
        o = T.origins()
        t_setup = time.perf_counter() - t0
        fit(model, T, o, epochs=1, max_batches=batches, batch_size=batch_size)
        return t_setup, time.perf_counter() - t0 - t_setup

    ours()  # warm-up (imports, allocator)
    r, o = [], []
    for _ in range(2):  # interleaved, so a change in machine load hits both pipelines alike
        r.append(reference())
        o.append(ours())
    return {"batches": batches, "batch_size": batch_size, "ref_setup_s": min(x[0] for x in r), "ref_epoch_s": min(x[1] for x in r),
            "ours_setup_s": min(x[0] for x in o), "ours_epoch_s": min(x[1] for x in o)}


def synthetic_panel(n_tickers: int = SYN_TICKERS, n_days: int = SYN_DAYS, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2008-01-01", periods=n_days)
    r = rng.normal(0, 0.015, (n_days, n_tickers)).astype(np.float64)
    close = 100 * np.exp(np.cumsum(r, axis=0))
    df = pd.DataFrame({"date": np.repeat(dates.values, n_tickers), "ticker": np.tile([f"T{i:04d}" for i in range(n_tickers)], n_days),
                       "close": close.ravel()})
    return df


def memory_worker(kind: str) -> dict:
    """Runs in a fresh process: peak RSS increase for building one kind of training data."""
    from domains.finance.data import derive_returns
    from domains.finance.features import FoldScaler, PanelTensors, base_features
    from domains.finance.model import TFTSpec, build_tft, build_timeseries_dataset

    torch.set_num_threads(1)
    spec = TFTSpec()
    panel = derive_returns(synthetic_panel())
    feat = base_features(panel, None)
    tickers = sorted(feat["ticker"].unique())
    model = build_tft(spec, tickers) if kind == "ours" else None
    import gc

    gc.collect()
    t0 = time.perf_counter()
    with PeakRSS(interval=0.01) as m:
        z = FoldScaler.fit(feat).transform(feat)
        if kind == "ours":
            T = PanelTensors(z, list(model.hparams.x_reals), model.ticker_index, spec.encoder_length, spec.horizon)
            n = len(T.origins())
        else:
            z["time_idx"] = z.groupby("ticker").cumcount()
            tsd = build_timeseries_dataset(z, spec, tickers)
            n = len(tsd)
    return {"kind": kind, "rows": len(feat), "windows": int(n), "peak_delta_mb": m.delta_mb, "seconds": time.perf_counter() - t0}


def bench_memory() -> list[dict]:
    out = []
    for kind in ("ours", "tsd"):
        res = subprocess.run([sys.executable, __file__, "--memory-worker", kind], capture_output=True, text=True, timeout=1800,
                             env={**os.environ, "SUITE_PROGRESS": "0"})
        if res.returncode != 0:
            raise RuntimeError(f"memory worker {kind} failed: {res.stderr[-2000:]}")
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


SCALE_DAYS = 5040  # 20 years of trading days


def garch_panel(n_tickers: int, n_days: int = SCALE_DAYS, seed: int = 0) -> pd.DataFrame:
    """Synthetic prices whose returns follow a GARCH(1,1) per ticker (vol clustering, so the
    baselines and the TFT have something to forecast); long format ``date, ticker, close``."""
    rng = np.random.default_rng(seed)
    w, a, b = 2e-6, 0.08, 0.9
    eps = rng.standard_normal((n_days, n_tickers))
    r = np.empty((n_days, n_tickers))
    s2 = np.full(n_tickers, w / (1 - a - b))
    for t in range(n_days):
        r[t] = np.sqrt(s2) * eps[t]
        s2 = w + a * r[t] ** 2 + b * s2
    dates = pd.bdate_range("2003-01-01", periods=n_days)
    close = 100 * np.exp(np.cumsum(r, axis=0))
    return pd.DataFrame({"date": np.repeat(dates.values, n_tickers), "ticker": np.tile([f"S{i:04d}" for i in range(n_tickers)], n_days),
                         "close": close.ravel()})


def scale_worker(n_tickers: int, folds: int) -> dict:
    """Runs in a fresh process: one walk-forward backtest of a synthetic panel; time and peak RSS."""
    import dataclasses

    from domains.finance.config import BacktestConfig
    from domains.finance.data import derive_returns
    from domains.finance.features import base_features
    from domains.finance.walkforward import run_walkforward, summarise

    torch.set_num_threads(1)
    cfg = dataclasses.replace(BacktestConfig(), folds=folds, seeds=1, epochs=1, max_batches=5, refit_batches=2, save_predictions=False, track=False)
    t0 = time.perf_counter()
    with PeakRSS(interval=0.05) as m:
        panel = derive_returns(garch_panel(n_tickers))
        feat = base_features(panel, None)
        res = run_walkforward(panel, feat, cfg)
        out = summarise(res, cfg.horizon)
    return {"tickers": n_tickers, "days": SCALE_DAYS, "folds": folds, "test_days": cfg.test_days, "panel_rows": len(panel),
            "forecasts": int(len(res.losses)), "seconds": time.perf_counter() - t0, "peak_rss_mb": m.peak_mb,
            "losses_mb": float(res.losses.memory_usage(deep=True).sum() / 2 ** 20), "models": int(out["aggregate"].shape[0])}


def bench_scale(sizes: list[int], folds: int) -> list[dict]:
    out = []
    for n in sizes:
        load0 = os.getloadavg()[0]
        res = subprocess.run([sys.executable, __file__, "--scale-worker", str(n), "--scale-folds", str(folds)], capture_output=True, text=True,
                             timeout=6 * 3600, env={**os.environ, "SUITE_PROGRESS": "0"})
        if res.returncode != 0:
            raise RuntimeError(f"scale worker {n} failed: {res.stderr[-2000:]}")
        out.append({**json.loads(res.stdout.strip().splitlines()[-1]), "load_average": [round(load0, 1), round(os.getloadavg()[0], 1)]})
        print("scale", out[-1], flush=True)
    return out


def write_scale(rows: list[dict], note: str) -> str:
    table = [{"tickers": r["tickers"], "days": r["days"], "folds × test days": f"{r['folds']} × {r['test_days']}",
              "forecasts (model × ticker × origin)": r["forecasts"], "wall time (s)": r["seconds"], "s per fold": r["seconds"] / r["folds"],
              "peak RSS (MB)": r["peak_rss_mb"], "loss table (MB)": r["losses_mb"],
              "1-min load average (start / end)": " / ".join(f"{x:.1f}" for x in r["load_average"]) if "load_average" in r else "not recorded"} for r in rows]
    big = max(rows, key=lambda r: (r["tickers"], r["folds"]))
    per_fold_s = big["seconds"] / big["folds"]  # includes the one-off setup, so an over-estimate per fold
    per_fold_mb = big["losses_mb"] / big["folds"]
    proj_s = per_fold_s * 40
    proj_mb = big["peak_rss_mb"] + 2 * per_fold_mb * (40 - big["folds"])  # the loss table grows per fold; x2 for the copies summarise makes
    projection = (f"Extrapolated (not measured) to {big['tickers']} tickers × 40 folds from the largest row: about "
                  f"{proj_s / 3600:.1f} h of wall time under the same load and about {proj_mb / 1024:.1f} GB peak "
                  f"(measured peak + 2 × {per_fold_mb:.0f} MB of loss table per further fold), well inside 24 GB.")
    md = f"""### finance-scale — walk-forward backtest time and memory against tickers (synthetic, 20 years)

`.venv/bin/python bench/finance.py --scale` — {machine_line()}; torch threads: 1; {note}
Synthetic GARCH(1,1) returns, {SCALE_DAYS} trading days (20 years) per ticker; each size runs in a fresh
process: the whole `domains.finance.walkforward` pipeline (features, fold normalisers, a TFT with
1 seed and a few batches per fold, all six arch baselines fitted per fold and ticker, every
statistic). In a cProfile of 10 tickers × 2 folds, 61 % of the walk-forward time was the per-ticker
arch baseline fits; memory beyond the panel grows with the per-forecast loss table (float32).

{markdown_table(table)}

{projection} Wall times depend on the machine's load (its own column: the 1-min load average when each size started and ended);
memory does not.
"""
    write_benchmark_section("finance-scale", md, per_cpu=True)
    return md


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads for both pipelines")
    p.add_argument("--memory-worker", choices=["ours", "tsd"], help=argparse.SUPPRESS)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--scale", action="store_true", help="only the walk-forward scale table (time and memory against tickers)")
    p.add_argument("--scale-sizes", type=int, nargs="+", default=[50, 100, 250, 500], help="tickers per synthetic panel")
    p.add_argument("--scale-folds", type=int, default=40, help="walk-forward folds of 126 days")
    p.add_argument("--scale-note", default="measured while other jobs loaded the machine", help="how loaded the machine was")
    p.add_argument("--scale-worker", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.scale_worker:
        print(json.dumps(scale_worker(args.scale_worker, args.scale_folds)))
        return 0
    if args.scale:
        print(write_scale(bench_scale(args.scale_sizes, args.scale_folds), args.scale_note))
        return 0
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker)))
        return 0
    pred = bench_predict(args.threads)
    print("predict", pred, flush=True)
    train = bench_train(args.threads)
    print("train", train, flush=True)
    mem = [] if args.skip_memory else bench_memory()
    print("memory", mem, flush=True)
    rows = [
        {"measure": "prediction throughput (windows/s); ratio = ours / default, higher is better", "pytorch-forecasting default": pred["windows"] / pred["ref_s"],
         "ours": pred["windows"] / pred["ours_s"], "ratio": pred["ref_s"] / pred["ours_s"]},
        {"measure": "prediction incl. building the tensors (windows/s); ratio as above", "pytorch-forecasting default": pred["windows"] / pred["ref_s"],
         "ours": pred["windows"] / pred["ours_with_build_s"], "ratio": pred["ref_s"] / pred["ours_with_build_s"]},
        {"measure": f"training time per epoch of {train['batches']}×{train['batch_size']} windows (s); ratio = ours / default, lower is better", "pytorch-forecasting default": train["ref_epoch_s"],
         "ours": train["ours_epoch_s"], "ratio": train["ours_epoch_s"] / train["ref_epoch_s"]},
        {"measure": "data setup before training (s)", "pytorch-forecasting default": train["ref_setup_s"], "ours": train["ours_setup_s"],
         "ratio": train["ours_setup_s"] / train["ref_setup_s"]},
    ]
    if mem:
        m = {r["kind"]: r for r in mem}
        rows.append({"measure": f"peak memory building training data, synthetic {SYN_TICKERS} tickers × {SYN_DAYS} days (MB above start)",
                     "pytorch-forecasting default": m["tsd"]["peak_delta_mb"], "ours": m["ours"]["peak_delta_mb"],
                     "ratio": m["ours"]["peak_delta_mb"] / max(m["tsd"]["peak_delta_mb"], 1e-9)})
        rows.append({"measure": "  ... time to build it (s)", "pytorch-forecasting default": m["tsd"]["seconds"], "ours": m["ours"]["seconds"],
                     "ratio": m["ours"]["seconds"] / m["tsd"]["seconds"]})
    md = f"""### finance — TFT prediction, training and memory vs pytorch-forecasting's TimeSeriesDataSet pipeline

`.venv/bin/python bench/finance.py` — {machine_line()}; torch threads: {args.threads}.
Same TFT (hidden 16, encoder 63 days, horizon 5, two targets × 9 quantiles) on both sides.
Prediction: {pred['windows']} forecast windows (26 real tickers × last 252 days); outputs of the two
paths agree to {pred['max_abs_diff']:.1e} (max abs difference, normalised units) before timing.
Memory: synthetic random-walk panel ({SYN_TICKERS} tickers × {SYN_DAYS} days, {mem[0]['rows'] if mem else 'n/a'} rows), each
pipeline in a fresh process; "ours" = fold normalisers + `PanelTensors`, default = `TimeSeriesDataSet`.
Every ratio is ours / default of the quantity in its row.

{markdown_table(rows)}
"""
    write_benchmark_section("finance", md, per_cpu=True)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
