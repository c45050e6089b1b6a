"""Walk-forward (rolling-origin) backtest of the global TFT against classical baselines.

    python -m domains.finance.backtest                 # 3 folds x 63 days on the bundled panel
    python -m domains.finance.backtest --folds 6 --epochs 8 --refit-epochs 3

Scheme: the last ``folds * test_days`` trading days (minus the horizon) are split into ``folds``
consecutive test blocks. For fold k with cutoff c_k (the day before its block):

* normalisers are fitted on rows dated <= c_k (``FoldScaler.fit(feat, c_k)``);
* the TFT trains on windows whose *targets* all lie on or before c_k (fold 0 from scratch with
  ``--epochs``, later folds warm-started from the previous fold with ``--refit-epochs``);
* baselines fit their parameters (GARCH, random-walk σ) on returns dated <= c_k;
* every model forecasts from each origin t in the block with information up to t only.

Outputs (run directory): ``predictions.parquet`` (every quantile forecast with its realised
value), ``metrics_by_ticker.csv``, ``metrics_aggregate.csv``, ``pinball_by_quantile.csv``,
``var_breaches.parquet``, plots ``*.png``, the last fold's forecaster (``model/``) and its
interpretation (``interpretation/``). ``metrics.json`` holds the aggregate and the issue's
quality-target verdict.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.cli import run_cli
from core.device import set_cpu_threads
from core.io import atomic_write_parquet, atomic_write_text
from core.logging import get_logger
from core.progress import progress
from core.runs import Run
from domains.finance.baselines import BASELINES, baseline_forecasts
from domains.finance.config import FinanceConfig, spec_from_config
from domains.finance.data import PANEL_DATASET, PriceDataError, load_inputs
from domains.finance.features import QUANTILES, FoldScaler, base_features, realised, series_by_ticker
from domains.finance.metrics import coverage, pinball, qlike, rmse, var_backtest
from domains.finance.model import Forecaster, build_tft, fit, predict_quantiles, quantile_columns, quantile_rows
from domains.finance.plots import pyplot, save_png

__all__ = ["BacktestConfig", "backtest", "fold_cutoffs", "fold_windows", "run_folds", "compute_metrics", "main"]

log = get_logger("finance.backtest")
QCOLS = quantile_columns(QUANTILES)


@dataclass
class BacktestConfig(FinanceConfig):
    folds: int = field(default=3, metadata={"help": "number of walk-forward folds"})
    test_days: int = field(default=63, metadata={"help": "trading days per test block"})
    refit_epochs: int = field(default=2, metadata={"help": "epochs of warm-started refit for folds after the first"})
    baselines: list[str] = field(default_factory=lambda: list(BASELINES), metadata={"help": f"baselines to run: {', '.join(BASELINES)}"})


def fold_cutoffs(dates: np.ndarray, folds: int, test_days: int, horizon: int) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """[(cutoff, test_end)] per fold: train on <= cutoff, test origins in (cutoff, test_end]."""
    dates = np.sort(np.unique(dates))
    last = len(dates) - 1 - horizon  # the last origin with a full horizon of realised values
    first_cut = last - folds * test_days
    if first_cut < 250:
        raise PriceDataError(f"{len(dates)} trading days are too few for {folds} folds of {test_days} days (need >= {folds * test_days + horizon + 250})")
    return [(pd.Timestamp(dates[first_cut + k * test_days]), pd.Timestamp(dates[first_cut + (k + 1) * test_days])) for k in range(folds)]


def fold_windows(T, cutoff, test_end) -> tuple[np.ndarray, np.ndarray]:
    """(training origins, test origins) of a fold: a training window's targets all lie on or before
    ``cutoff``; test origins are dated in (cutoff, test_end]."""
    all_o = T.origins()
    train_o = all_o[T.targets_by(all_o, cutoff)]
    d = T.dates[all_o]
    test_o = all_o[(d > np.datetime64(pd.Timestamp(cutoff))) & (d <= np.datetime64(pd.Timestamp(test_end)))]
    return train_o, test_o


def run_folds(feat: pd.DataFrame, cfg: BacktestConfig, run: Run | None = None):
    """Train/forecast every fold; returns (predictions DataFrame, last fold's Forecaster, fold info)."""
    unknown = sorted(set(cfg.baselines) - set(BASELINES))
    if unknown:  # before any training, not after the first fold's
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {list(BASELINES)}")
    spec = spec_from_config(cfg)
    H = spec.horizon
    tickers = sorted(feat["ticker"].unique())
    cuts = fold_cutoffs(feat["date"].to_numpy(), cfg.folds, cfg.test_days, H)
    model = build_tft(spec, tickers, cfg.lr)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=1e-5)
    series = series_by_ticker(feat)
    frames, folds_info = [], []
    forecaster = None
    for k, (cut, test_end) in enumerate(progress(cuts, desc="folds")):
        scaler = FoldScaler.fit(feat, cut)
        z = scaler.transform(feat)
        forecaster = Forecaster(model, spec, scaler, tickers, {"fold": k, "cutoff": str(cut.date()), "data": cfg.data or PANEL_DATASET})
        T = forecaster.tensors(z)
        train_o, test_o = fold_windows(T, cut, test_end)
        epochs = cfg.epochs if k == 0 else cfg.refit_epochs
        losses = fit(model, T, train_o, epochs=epochs, batch_size=cfg.batch_size, max_batches=cfg.max_batches or None,
                     lr=cfg.lr, seed=cfg.seed + k, optimizer=opt, desc=f"fold {k + 1}/{len(cuts)}")
        if run is not None:
            run.log_metrics({"train_pinball": losses[-1], "fold": k}, step=k)
        pred = predict_quantiles(model, T, test_o)
        raw = forecaster.to_raw(T.tickers[test_o], pred)
        info = {"fold": k, "cutoff": str(cut.date()), "test_end": str(test_end.date()), "train_windows": int(len(train_o)),
                "test_origins": int(len(test_o)), "train_pinball": losses[-1]}
        folds_info.append(info)
        frames.append(_tft_rows(series, T, test_o, raw, k, H))
        frames.append(_baseline_rows(series, cut, test_o, T, cfg.baselines, k, H))
    return pd.concat(frames, ignore_index=True), forecaster, folds_info


def _rows(model: str, fold: int, tickers, origins, ret_q, rvol_q, r_real, v_real, H) -> pd.DataFrame:
    """Prediction rows with their realised value ``y``: returns at horizons 1..H, volatility at H."""
    parts = [quantile_rows(ret_q[:, h, :], "ret", h + 1, ticker=tickers, origin=origins, y=r_real[:, h]) for h in range(H)]
    parts.append(quantile_rows(rvol_q, "rvol", H, ticker=tickers, origin=origins, y=v_real))
    out = pd.concat(parts, ignore_index=True)
    out["model"], out["fold"] = model, fold
    return out


def _tft_rows(series: dict, T, test_o, raw, fold, H) -> pd.DataFrame:
    tick, dates = T.tickers[test_o], T.dates[test_o]
    r_real, v_real = np.empty((len(tick), H)), np.empty(len(tick))
    for t in np.unique(tick):
        sel = tick == t
        r_real[sel], v_real[sel] = realised(series[t], np.searchsorted(series[t]["date"], dates[sel]), H)
    return _rows("tft", fold, tick, dates, raw["ret"], raw["rvol"][:, H - 1, :], r_real, v_real, H)


def _baseline_rows(series: dict, cut, test_o, T, models, fold, H) -> pd.DataFrame:
    """Baseline forecasts from the test origins ``test_o`` of ``T``; ``series``: :func:`series_by_ticker`."""
    out = []
    tick_all, dates_all = T.tickers[test_o], T.dates[test_o]
    for t in np.unique(tick_all):
        g = series[t]
        d = dates_all[tick_all == t]
        loc = np.searchsorted(g["date"], d)
        train_end = int(np.searchsorted(g["date"], np.datetime64(cut), side="right")) - 1
        fc = baseline_forecasts(g["log_ret"], g["rvol5"], train_end, loc, H, QUANTILES, models=tuple(models))
        r_real, v_real = realised(g, loc, H)
        for name, (rq, vq) in fc.items():
            out.append(_rows(name, fold, np.full(len(d), t), d, rq, vq, r_real, v_real, H))
    return pd.concat(out, ignore_index=True)


def compute_metrics(pred: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per (model, ticker) metrics, aggregate per model, pinball per quantile, VaR breach series."""
    q = np.array(QUANTILES)
    i01, i05, i95, i99, i50 = (list(QUANTILES).index(x) for x in (0.01, 0.05, 0.95, 0.99, 0.5))
    rows, pq_rows, breach_rows = [], [], []
    for (m, t), g in pred.groupby(["model", "ticker"], sort=True):
        r1 = g[(g["target"] == "ret") & (g["horizon"] == 1)].sort_values("origin")
        ra = g[g["target"] == "ret"]
        vv = g[g["target"] == "rvol"].sort_values("origin")
        Q1, Qv = r1[QCOLS].to_numpy(), vv[QCOLS].to_numpy()
        pb_r1, pb_v = pinball(r1["y"].to_numpy(), Q1, q), pinball(vv["y"].to_numpy(), Qv, q)
        pb_ra = pinball(ra["y"].to_numpy(), ra[QCOLS].to_numpy(), q)
        row = {"model": m, "ticker": t, "n_origins": len(r1),
               "ret_pinball_h1": float(pb_r1.mean()), "ret_pinball": float(pb_ra.mean()), "vol_pinball": float(pb_v.mean()),
               "ret_cov90": coverage(r1["y"], Q1[:, i05], Q1[:, i95]), "ret_cov98": coverage(r1["y"], Q1[:, i01], Q1[:, i99]),
               "vol_cov90": coverage(vv["y"], Qv[:, i05], Qv[:, i95]), "vol_cov98": coverage(vv["y"], Qv[:, i01], Qv[:, i99]),
               "vol_qlike": qlike(vv["y"].to_numpy(), Qv[:, i50]), "vol_rmse": rmse(vv["y"].to_numpy(), Qv[:, i50])}
        for level, idx, p in (("var99", i01, 0.01), ("var95", i05, 0.05)):
            vb = var_backtest(r1["y"].to_numpy(), Q1[:, idx], p)
            row.update({f"{level}_{k}": v for k, v in vb.items() if k != "n"})
        rows.append(row)
        for target, pb in (("ret_h1", pb_r1), ("rvol", pb_v)):
            pq_rows += [{"model": m, "ticker": t, "target": target, "quantile": float(qq), "pinball": float(v)} for qq, v in zip(q, pb)]
        breach_rows.append(pd.DataFrame({"model": m, "ticker": t, "date": r1["origin"].to_numpy(), "ret": r1["y"].to_numpy(),
                                         "var99": Q1[:, i01], "var95": Q1[:, i05], "breach99": r1["y"].to_numpy() < Q1[:, i01],
                                         "breach95": r1["y"].to_numpy() < Q1[:, i05]}))
    by_ticker = pd.DataFrame(rows)
    num = [c for c in by_ticker.columns if c not in ("model", "ticker") and by_ticker[c].dtype != object]
    agg = by_ticker.groupby("model")[num].mean().reset_index()
    agg = agg.rename(columns={"var99_kupiec_pass": "var99_kupiec_pass_rate", "var95_kupiec_pass": "var95_kupiec_pass_rate",
                              "var99_christoffersen_pass": "var99_christoffersen_pass_rate", "var95_christoffersen_pass": "var95_christoffersen_pass_rate"})
    agg["n_tickers"] = by_ticker.groupby("model").size().to_numpy()
    pq = pd.DataFrame(pq_rows)
    pq_agg = pq.groupby(["model", "target", "quantile"])["pinball"].mean().reset_index()
    return {"by_ticker": by_ticker, "aggregate": agg, "pinball_by_quantile": pq_agg, "pinball_by_quantile_ticker": pq,
            "var_breaches": pd.concat(breach_rows, ignore_index=True)}


def quality_verdict(agg: pd.DataFrame) -> dict:
    """The issue's target: TFT beats the best baseline on aggregate vol pinball, and its 99% VaR
    passes Kupiec on >= 80% of tickers."""
    a = agg.set_index("model")
    base = a.drop(index="tft", errors="ignore")
    best = str(base["vol_pinball"].idxmin()) if len(base) else None
    tft_vp = float(a.loc["tft", "vol_pinball"]) if "tft" in a.index else float("nan")
    kup = float(a.loc["tft", "var99_kupiec_pass_rate"]) if "tft" in a.index else float("nan")
    return {"best_baseline_vol": best, "best_baseline_vol_pinball": float(base["vol_pinball"].min()) if best else float("nan"),
            "tft_vol_pinball": tft_vp, "tft_beats_best_baseline_vol": bool(best is not None and tft_vp < base["vol_pinball"].min()),
            "tft_var99_kupiec_pass_rate": kup, "tft_var99_target_met": bool(kup >= 0.8)}


def save_plots(out: dict[str, pd.DataFrame], pred: pd.DataFrame, run_dir: Path, focus: str | None = None) -> list[Path]:
    plt = pyplot()
    paths = []
    agg = out["aggregate"].set_index("model")

    def save(fig, name):
        paths.append(save_png(fig, run_dir / name))

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, col, title in zip(axes, ["vol_pinball", "ret_pinball_h1", "vol_qlike", "var99_kupiec_pass_rate"],
                              ["vol pinball (lower better)", "1-day return pinball", "vol QLIKE", "99% VaR Kupiec pass rate"]):
        agg[col].plot.bar(ax=ax, color=["C3" if m == "tft" else "C0" for m in agg.index])
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", rotation=30)
        if col == "var99_kupiec_pass_rate":
            ax.axhline(0.8, color="k", ls="--", lw=1)
    save(fig, "metrics_by_model.png")

    pq = out["pinball_by_quantile"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, target in zip(axes, ["ret_h1", "rvol"]):
        for m, g in pq[pq["target"] == target].groupby("model"):
            ax.plot(g["quantile"], g["pinball"], marker="o", label=m, lw=2 if m == "tft" else 1)
        ax.set_title(f"pinball per quantile: {target}")
        ax.set_xlabel("quantile")
    axes[0].legend(fontsize=8)
    save(fig, "pinball_by_quantile.png")

    tickers = sorted(pred["ticker"].unique())
    focus = focus if focus in tickers else ("SP500" if "SP500" in tickers else tickers[0])
    vb = out["var_breaches"]
    fig, ax = plt.subplots(figsize=(11, 3.8))
    base = vb[(vb["ticker"] == focus) & (vb["model"] == "tft")].sort_values("date")
    ax.plot(base["date"], base["ret"], color="0.5", lw=0.8, label="realised return")
    for m, color in (("tft", "C3"), ("garch", "C0"), ("historical", "C2")):
        g = vb[(vb["ticker"] == focus) & (vb["model"] == m)].sort_values("date")
        if len(g):
            ax.plot(g["date"], g["var99"], color=color, lw=1.2, label=f"{m} 99% VaR ({int(g['breach99'].sum())} breaches)")
            ax.scatter(g.loc[g["breach99"], "date"], g.loc[g["breach99"], "ret"], color=color, marker="x", zorder=3)
    ax.set_title(f"{focus}: 1-day 99% VaR and breaches (walk-forward test blocks)")
    ax.legend(fontsize=8)
    save(fig, f"var_breaches_{focus}.png")

    fig, ax = plt.subplots(figsize=(11, 3.8))
    for m, color in (("tft", "C3"), ("garch", "C0")):
        g = pred[(pred["ticker"] == focus) & (pred["model"] == m) & (pred["target"] == "rvol")].sort_values("origin")
        if len(g):
            ax.plot(g["origin"], g["q_0.5"], color=color, label=f"{m} median")
            ax.fill_between(g["origin"], g["q_0.05"], g["q_0.95"], color=color, alpha=0.15, label=f"{m} 90% interval")
    g = pred[(pred["ticker"] == focus) & (pred["model"] == "tft") & (pred["target"] == "rvol")].sort_values("origin")
    ax.plot(g["origin"], g["y"], color="k", lw=0.8, label="realised 5-day vol")
    ax.set_title(f"{focus}: forecast of next-week realised volatility (by origin)")
    ax.legend(fontsize=8)
    save(fig, f"vol_forecast_{focus}.png")
    return paths


def backtest(cfg: BacktestConfig) -> Path:
    """Run the walk-forward backtest; returns the run directory."""
    set_cpu_threads(cfg.threads)
    panel, cov = load_inputs(cfg.data, cfg.tickers)
    feat = base_features(panel, cov)
    with Run.start("finance", cfg, new_name=f"backtest-{pd.Timestamp.now():%Y%m%d-%H%M%S}") as run:
        pred, forecaster, folds = run_folds(feat, cfg, run)
        out = compute_metrics(pred)
        atomic_write_parquet(pred, run.path("predictions.parquet"), index=False)
        atomic_write_text(run.path("metrics_by_ticker.csv"), out["by_ticker"].to_csv(index=False))
        atomic_write_text(run.path("metrics_aggregate.csv"), out["aggregate"].to_csv(index=False))
        atomic_write_text(run.path("pinball_by_quantile.csv"), out["pinball_by_quantile"].to_csv(index=False))
        atomic_write_parquet(out["var_breaches"], run.path("var_breaches.parquet"), index=False)
        atomic_write_text(run.path("folds.json"), pd.DataFrame(folds).to_json(orient="records", indent=2))
        save_plots(out, pred, run.dir)
        forecaster.save(run.path("model"))
        try:
            from domains.finance.interpret import interpret

            interpret(forecaster, feat, run.path("interpretation"))
        except Exception as e:  # noqa: BLE001 - interpretation is a by-product; the backtest stands without it
            log.warning(f"interpretation skipped: {type(e).__name__}: {e}")
        verdict = quality_verdict(out["aggregate"])
        table = out["aggregate"][["model", "vol_pinball", "ret_pinball_h1", "vol_qlike", "vol_rmse", "ret_cov90", "vol_cov90",
                                  "var99_breach_rate", "var99_kupiec_pass_rate", "var99_christoffersen_pass_rate"]]
        atomic_write_text(run.path("summary.md"), _markdown(table) + "\n\n" + "\n".join(f"- {k}: {v}" for k, v in verdict.items()) + "\n")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
        print(verdict)
        metrics = {f"{r['model']}/{k}": v for r in out["aggregate"].to_dict("records") for k, v in r.items() if k != "model"}
        run.finish({**verdict, **metrics, "folds": len(folds)})
        return run.dir


def _markdown(df: pd.DataFrame) -> str:
    from core.bench import markdown_table

    return markdown_table(df.to_dict("records"))


def main(argv: list[str] | None = None) -> int:
    return run_cli(BacktestConfig, backtest, argv, doc=__doc__.split("\n\n")[0], prog="python -m domains.finance.backtest", user_errors=(PriceDataError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
