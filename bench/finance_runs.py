"""Figures that combine several saved finance runs (no training): the multi-run numbers of domains/finance/README.md and HISTORY.md.

    python bench/finance_runs.py transfer fin-transfer-auto2-s0 fin-transfer-auto2-s1 fin-transfer-auto2-s2
    python bench/finance_runs.py validation fin-val8-V0 fin-val8-V0-s10          # TFT and GJR-t QLIKE / pinball, mean over the runs
    python bench/finance_runs.py ensemble fin-val8-V0 fin-val8-V0-s10            # one ensemble of every member of the runs
    python bench/finance_runs.py blend fin-val8-V0 --weights 0 0.25 0.5 0.75 1   # geometric blend of the TFT's head with GJR-t's E[rv^2]
    python bench/finance_runs.py baseline-diff fin-full-vh03 fin-full-v4x        # where a baseline's forecasts differ between two runs
    python bench/finance_runs.py deviation fin-val11-SL fin-val11-SL-s10         # what the TFT's variance adds to GJR-t's

Runs are names under ``--runs-dir``/finance or folders. QLIKE and pinball are means over tickers of per-ticker means, as the
backtest's ``metrics_aggregate.csv``; "mean ± sd" is over the runs named (sample sd).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from domains.finance.metrics import qlike_rows  # noqa: E402

KEY = ["ticker", "fold", "origin"]


def _dir(runs_dir: Path, run: str) -> Path:
    p = Path(run)
    return p if p.is_dir() else runs_dir / "finance" / run


def _spread(values: list[float], fmt: str = ".6f") -> str:
    sd = f" ± {statistics.stdev(values):{fmt}}" if len(values) > 1 else ""
    return f"{statistics.mean(values):{fmt}}{sd}"


def _by_ticker_mean(values: np.ndarray, index: pd.MultiIndex) -> float:
    return float(pd.Series(values, index=index).groupby(level="ticker").mean().mean())


def transfer(dirs: list[Path]) -> None:
    """Per variant: vol pinball, 1-day return pinball and 99 % VaR breaches, mean over the held-out tickers, then over the
    runs; plus the variant each run saved (``--save``)."""
    rows: dict[str, list[pd.Series]] = {}
    saved = []
    for d in dirs:
        m = pd.read_csv(d / "transfer_results.csv").groupby("model")[["vol_pinball", "ret_pinball_h1", "var99_breaches"]].mean()
        name = json.loads((d / "model" / "forecaster.json").read_text())["info"]["transfer"]
        saved.append(name)
        for k, r in [*m.iterrows(), ("saved", m.loc[name])]:
            rows.setdefault(str(k), []).append(r)
    print(f"saved per run: {', '.join(saved)}")
    print("| variant | vol pinball | per run | 1-day return pinball | 99 % VaR breaches per ticker |\n|---|---|---|---|---|")
    for k, rs in rows.items():
        v = [float(r.vol_pinball) for r in rs]
        print(f"| {k} | {_spread(v)} | {' / '.join(f'{x:.6f}' for x in v)} | {_spread([float(r.ret_pinball_h1) for r in rs])} | "
              f"{statistics.mean(float(r.var99_breaches) for r in rs):.2f} |")


def validation(dirs: list[Path]) -> None:
    """Per run and over the runs: the TFT's scored QLIKE (``vol_qlike_cal``) and vol pinball, GJR-t's raw and recalibrated QLIKE."""
    cols = {"tft": ["vol_qlike_cal", "vol_pinball"], "gjr_t": ["vol_qlike_mean", "vol_qlike_cal"]}
    got = []
    for d in dirs:
        a = pd.read_csv(d / "metrics_aggregate.csv").set_index("model")
        got.append([float(a.loc[m, c]) for m, cs in cols.items() for c in cs])
        print(f"{d.name}: TFT QLIKE {got[-1][0]:.4f}, vol pinball {got[-1][1]:.6f} | GJR-t QLIKE raw {got[-1][2]:.4f}, recalibrated {got[-1][3]:.4f}")
    if len(got) > 1:
        t = list(zip(*got))
        print(f"mean over {len(got)} runs: TFT QLIKE {_spread(list(t[0]), '.4f')}, vol pinball {_spread(list(t[1]))}")


def _members(d: Path) -> list[pd.DataFrame]:
    cols = ["model", *KEY, "rvol", "rvol_var_head"]
    loss = pd.read_parquet(d / "losses.parquet", columns=cols)
    return [g.set_index(KEY).sort_index() for m, g in loss.groupby("model") if m.startswith("tft_seed")]


def ensemble(dirs: list[Path]) -> None:
    """QLIKE of one ensemble made of every member of the runs (geometric mean of the members' variance-head forecasts, as
    the backtest's own ensemble), beside each member's."""
    members = [m for d in dirs for m in _members(d)]
    if not members:
        raise SystemExit("no ensemble members with a variance head (rvol_var_head) in these runs")
    idx = members[0].index
    logv = np.mean([np.log(m.loc[idx, "rvol_var_head"].to_numpy(float)) for m in members], axis=0)
    rv = members[0].loc[idx, "rvol"].to_numpy(float)
    own = [_by_ticker_mean(qlike_rows(rv, np.sqrt(m.loc[idx, "rvol_var_head"].to_numpy(float))), idx) for m in members]
    print(f"{len(members)} members: ensemble QLIKE {_by_ticker_mean(qlike_rows(rv, np.sqrt(np.exp(logv))), idx):.4f}; "
          f"members {', '.join(f'{q:.4f}' for q in own)}")


def _tft_and_gjr(d: Path, columns: list[str], first_fold: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ensemble TFT's and GJR-t's rows of a run's ``losses.parquet`` (folds ≥ ``first_fold``), keyed and sorted."""
    loss = pd.read_parquet(d / "losses.parquet", columns=["model", *KEY, *columns])
    loss = loss[loss.fold >= first_fold]
    return tuple(loss[loss.model == m].set_index(KEY).sort_index() for m in ("tft", "gjr_t"))


def blend(dirs: list[Path], weights: list[float]) -> None:
    """QLIKE of exp(w · log V_head + (1 − w) · log V_gjr): the TFT's variance head blended with GJR-t's raw E[rv²]."""
    for d in dirs:
        t, g = _tft_and_gjr(d, ["rvol", "rvol_rms", "rvol_var_head"])
        g = g.loc[t.index]
        for w in weights:
            lv = w * np.log(t.rvol_var_head.to_numpy(float)) + (1 - w) * 2 * np.log(g.rvol_rms.to_numpy(float))
            print(f"{d.name}: weight on the TFT {w:g}: QLIKE {_by_ticker_mean(qlike_rows(t.rvol.to_numpy(float), np.sqrt(np.exp(lv))), t.index):.4f}")


def deviation(dirs: list[Path], first_fold: int) -> None:
    """How the TFT's scored variance forecast V (``rvol_var_cal``) departs from GJR-t's raw E[rv²] G on the same rows
    (folds ≥ ``first_fold``), and whether the departure carries information: d = log(V/G), e = log(rv²/G) (GJR-t's
    log error). Reported: mean d (a level shift), sd of d within ticker, and the within-ticker least-squares slope and
    correlation of e on d — slope 1: the TFT moves away from GJR-t exactly as far as GJR-t is wrong; 0: the departures
    are noise QLIKE pays for."""
    print("| run | rows | mean log(V/G) | sd within ticker | slope of GJR-t's log error on it | correlation |\n|---|---|---|---|---|---|")
    for d in dirs:
        t, g = _tft_and_gjr(d, ["rvol", "rvol_rms", "rvol_var_cal"], first_fold)
        g = g.reindex(t.index)
        ok = g.rvol_rms.notna().to_numpy() & (t.rvol.to_numpy(float) > 0)
        t, g = t[ok], g[ok]
        lg = 2 * np.log(g.rvol_rms.to_numpy(float))
        frame = pd.DataFrame({"d": np.log(t.rvol_var_cal.to_numpy(float)) - lg, "e": 2 * np.log(t.rvol.to_numpy(float)) - lg}, index=t.index)
        within = frame - frame.groupby(level="ticker").transform("mean")
        slope = float((within.d * within.e).sum() / (within.d ** 2).sum())
        print(f"| {d.name} | {len(frame):,} | {frame.d.mean():+.3f} | {within.d.std():.3f} | {slope:.2f} | {within.d.corr(within.e):.3f} |")


def baseline_diff(a: Path, b: Path, model: str) -> None:
    """Rows where ``model``'s forecast (sqrt E[rv²]) differs between two runs of the same folds: count per ticker and largest gap."""
    cols = ["model", *KEY, "rvol_rms"]
    x, y = (f[f["model"] == model].set_index(KEY)["rvol_rms"] for f in (pd.read_parquet(d / "losses.parquet", columns=cols) for d in (a, b)))
    gap = (x - y).abs().dropna()
    diff = gap[gap > 1e-6]
    print(f"{model}: {len(diff)} of {len(gap)} shared rows differ by > 1e-6 in vol (largest {float(gap.max()):.4g})")
    if len(diff):
        print(diff.groupby(level="ticker").agg(["size", "max"]).sort_values("size", ascending=False).to_string())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("what", choices=["transfer", "validation", "ensemble", "blend", "deviation", "baseline-diff"])
    ap.add_argument("runs", nargs="+", help="run names (under --runs-dir/finance) or folders")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs"))
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0], help="blend: weights on the TFT's head")
    ap.add_argument("--first-fold", type=int, default=1, help="deviation: the first fold read (fold 0 has no calibration data)")
    ap.add_argument("--model", default="gjr_t", help="baseline-diff: which model's forecasts to compare")
    args = ap.parse_args(argv)
    dirs = [_dir(args.runs_dir, r) for r in args.runs]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        ap.error(f"no such run: {', '.join(missing)}")
    if args.what == "transfer":
        transfer(dirs)
    elif args.what == "validation":
        validation(dirs)
    elif args.what == "ensemble":
        ensemble(dirs)
    elif args.what == "blend":
        blend(dirs, args.weights)
    elif args.what == "deviation":
        deviation(dirs, args.first_fold)
    else:
        if len(dirs) != 2:
            ap.error("baseline-diff compares exactly two runs")
        baseline_diff(*dirs, args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
