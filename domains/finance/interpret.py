"""TFT interpretability: variable-selection weights (static, encoder, decoder) and attention
over encoder lags, averaged over recent forecast origins — saved as CSV and plots.

    python -m domains.finance.interpret --run-dir runs/finance/<backtest-or-train-run>
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.cli import run_cli
from core.config import DeviceConfig, ResumeConfig, RunConfig, SeedConfig, TrackingConfig
from core.io import atomic_write_text
from core.logging import get_logger
from domains.finance.plots import pyplot, save_png

__all__ = ["InterpretConfig", "interpret", "interpret_run", "main"]

log = get_logger("finance.interpret")


@dataclass
class InterpretConfig(TrackingConfig, SeedConfig, DeviceConfig, ResumeConfig, RunConfig):
    run_dir: str = field(default="", metadata={"help": "a finance train/backtest run; empty = the newest one that holds a model"})
    data: str = field(default="", metadata={"help": "price file; empty = the bundled panel"})


def interpret(forecaster, feat: pd.DataFrame, out_dir: str | Path, last_days: int = 63) -> dict[str, pd.DataFrame]:
    """Variable importances and attention for origins in the last ``last_days`` days of ``feat``."""
    from domains.finance.model import predict_quantiles

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = forecaster.model
    z = forecaster.scaler.transform(feat)
    T = forecaster.tensors(z)
    o = T.origins(need_targets=False)
    dates = T.dates[o]
    o = o[dates >= np.sort(np.unique(dates))[-min(last_days, len(np.unique(dates)))]]
    res = predict_quantiles(model, T, o, return_attention=True)
    rows = []
    for kind, names, w in (("static", model.static_variables, res["static_variables"]),
                           ("encoder", model.encoder_variables, res["encoder_variables"]),
                           ("decoder", model.decoder_variables, res["decoder_variables"])):
        w = np.asarray(w).reshape(len(o), -1)
        mean = w.mean(axis=0)
        rows += [{"kind": kind, "variable": n, "importance": float(v)} for n, v in zip(names, mean / max(mean.sum(), 1e-12))]
    imp = pd.DataFrame(rows).sort_values(["kind", "importance"], ascending=[True, False])
    att = res["attention"]  # (n, H, L)
    L = att.shape[-1]
    att_df = pd.DataFrame([{"horizon": h + 1, "lag": lag - L + 1, "attention": float(att[:, h, lag].mean())}
                           for h in range(att.shape[1]) for lag in range(L)])
    per_ticker = pd.DataFrame(att.mean(axis=1), columns=[f"lag_{lag - L + 1}" for lag in range(L)])
    per_ticker.insert(0, "ticker", T.tickers[o])
    per_ticker = per_ticker.groupby("ticker").mean().reset_index()
    atomic_write_text(out_dir / "variable_importance.csv", imp.to_csv(index=False))
    atomic_write_text(out_dir / "attention.csv", att_df.to_csv(index=False))
    atomic_write_text(out_dir / "attention_by_ticker.csv", per_ticker.to_csv(index=False))
    _plots(imp, att_df, out_dir)
    return {"variable_importance": imp, "attention": att_df, "attention_by_ticker": per_ticker}


def _plots(imp: pd.DataFrame, att: pd.DataFrame, out_dir: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, kind in zip(axes, ["static", "encoder", "decoder"]):
        g = imp[imp["kind"] == kind].sort_values("importance")
        ax.barh(g["variable"], g["importance"])
        ax.set_title(f"{kind} variable importance")
    save_png(fig, out_dir / "variable_importance.png")
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for h, g in att.groupby("horizon"):
        ax.plot(g["lag"], g["attention"], label=f"h={h}")
    ax.set_xlabel("encoder day relative to the forecast origin")
    ax.set_ylabel("mean attention")
    ax.set_title("TFT attention over the encoder window")
    ax.legend(fontsize=8)
    save_png(fig, out_dir / "attention.png")


def interpret_run(cfg: InterpretConfig) -> Path:
    """Interpret the forecaster of ``cfg.run_dir`` (or the newest run that holds one) into its
    ``interpretation/`` folder; returns the run directory."""
    from domains.finance.data import load_inputs
    from domains.finance.features import base_features
    from domains.finance.forecast import find_model_run
    from domains.finance.model import Forecaster

    run_dir = find_model_run(cfg.run_dir, cfg.runs_dir)  # newest run that holds a model, not a score run
    fc = Forecaster.load(run_dir / "model")
    panel, cov = load_inputs(cfg.data, list(fc.tickers))
    interpret(fc, base_features(panel, cov), run_dir / "interpretation")
    print(f"Run directory: {run_dir}")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(InterpretConfig, interpret_run, argv, doc=__doc__.split("\n\n")[0], prog="python -m domains.finance.interpret", user_errors=(ValueError,))


if __name__ == "__main__":
    sys.exit(main())
