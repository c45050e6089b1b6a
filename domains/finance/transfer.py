"""Transfer to a ticker held out of pre-training, with a short history.

    python -m domains.finance.transfer                       # held-out AAPL, 1 year of history
    python -m domains.finance.transfer --holdout XOM --short-days 120

1. Pre-train the global TFT on every other ticker (dates up to the cutoff).
2. The held-out ticker only has ``--short-days`` trading days before the cutoff; its normaliser is
   fitted on those days only. Compare on the ``--test-days`` after the cutoff:
   * ``zero_shot`` — the pre-trained model as is (its embedding row for the new ticker is untrained);
   * ``finetune_full`` — every weight fine-tuned on the short history;
   * ``finetune_lora`` — LoRA adapters (``core.finetune.apply_lora``) on every Linear layer plus the
     ticker embedding, the rest frozen;
   * ``scratch`` — a fresh TFT trained on the short history only, with the same number of steps;
   * ``garch`` — GARCH(1,1) fitted on the same short history, for reference.
Outputs ``transfer_results.csv`` (pinball for returns and volatility, 99% VaR breaches and
Kupiec p, trainable parameters) and ``transfer.png`` in the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.cli import run_cli
from core.device import set_cpu_threads
from core.io import atomic_write_text
from core.logging import get_logger
from core.runs import Run
from domains.finance.backtest import _baseline_rows
from domains.finance.config import FinanceConfig, spec_from_config
from domains.finance.data import PriceDataError, load_inputs
from domains.finance.features import QUANTILES, FoldScaler, base_features, realised, series_by_ticker
from domains.finance.metrics import kupiec_pof, pinball
from domains.finance.model import Forecaster, build_tft, fit, predict_quantiles, quantile_columns
from domains.finance.plots import pyplot, save_png

__all__ = ["TransferConfig", "transfer", "main"]

log = get_logger("finance.transfer")


@dataclass
class TransferConfig(FinanceConfig):
    holdout: str = field(default="AAPL", metadata={"help": "ticker left out of pre-training"})
    short_days: int = field(default=250, metadata={"help": "trading days of the held-out ticker's history before the cutoff"})
    test_days: int = field(default=126, metadata={"help": "trading days after the cutoff to evaluate on"})
    finetune_epochs: int = field(default=10, metadata={"help": "epochs on the short history (fine-tuning and from scratch)"})
    finetune_lr: float = field(default=1e-3, metadata={"help": "learning rate for full fine-tuning"})
    lora_lr: float = field(default=5e-3, metadata={"help": "learning rate for LoRA"})
    lora_r: int = field(default=4, metadata={"help": "LoRA rank"})


def _evaluate(name: str, fc: Forecaster, series: dict, test_o, T) -> dict:
    H = fc.spec.horizon
    pred = predict_quantiles(fc.model, T, test_o)
    raw = fc.to_raw(T.tickers[test_o], pred)
    return _score(name, raw["ret"][:, 0, :], raw["rvol"][:, H - 1, :], series, T, test_o, H)


def _score(name, ret_q1, rvol_q, series, T, test_o, H) -> dict:
    """Scores of the held-out ticker's forecasts; ``series``: its value of :func:`series_by_ticker`."""
    r, v = realised(series, np.searchsorted(series["date"], T.dates[test_o]), H)
    r1 = r[:, 0]
    br = r1 < ret_q1[:, 0]
    return {"model": name, "n_test": len(test_o), "ret_pinball_h1": float(pinball(r1, ret_q1, QUANTILES).mean()),
            "vol_pinball": float(pinball(v, rvol_q, QUANTILES).mean()), "var99_breaches": int(br.sum()),
            "var99_kupiec_p": kupiec_pof(br, 0.01)[1]}


def transfer(cfg: TransferConfig) -> Path:
    from core.finetune import apply_lora, trainable_parameter_report

    set_cpu_threads(cfg.threads)  # seeding is Run.start's job (below, before any model is built)
    panel, cov = load_inputs(cfg.data, cfg.tickers)
    if cfg.holdout not in set(panel["ticker"]):
        raise PriceDataError(f"--holdout {cfg.holdout!r} is not in the data ({sorted(panel['ticker'].unique())})")
    spec = spec_from_config(cfg)
    H = spec.horizon
    dates = np.sort(panel["date"].unique())
    if len(dates) < cfg.test_days + H + cfg.short_days + 250:
        raise PriceDataError(f"{len(dates)} trading days are too few for short_days={cfg.short_days} + test_days={cfg.test_days}")
    cutoff = pd.Timestamp(dates[-1 - H - cfg.test_days])
    short_start = pd.Timestamp(dates[-1 - H - cfg.test_days - cfg.short_days])
    if cfg.short_days < spec.encoder_length + H + 20:
        raise PriceDataError(f"--short-days {cfg.short_days}: need at least encoder_length + horizon + 20 = {spec.encoder_length + H + 20}")
    # the held-out ticker exists only from short_start: a short history
    panel = panel[(panel["ticker"] != cfg.holdout) | (panel["date"] >= short_start)]
    feat = base_features(panel, cov)
    tickers = sorted(feat["ticker"].unique())
    scaler = FoldScaler.fit(feat, cutoff)
    z = scaler.transform(feat)
    results, reports = [], {}
    with Run.start("finance", cfg, new_name=f"transfer-{cfg.holdout}-{pd.Timestamp.now():%Y%m%d-%H%M%S}") as run:
        base = build_tft(spec, tickers, cfg.lr)
        fc = Forecaster(base, spec, scaler, tickers, {"holdout": cfg.holdout, "cutoff": str(cutoff.date())})
        T = fc.tensors(z)
        all_o = T.origins()
        before = T.targets_by(all_o, cutoff)
        is_hold = T.tickers[all_o] == cfg.holdout
        pre_o = all_o[before & ~is_hold]
        short_o = all_o[before & is_hold]
        test_o = all_o[is_hold & (T.dates[all_o] > np.datetime64(cutoff))]
        log.info(f"pre-training on {len(pre_o)} windows of {len(tickers) - 1} tickers; {cfg.holdout}: {len(short_o)} short-history windows, {len(test_o)} test origins")
        fit(base, T, pre_o, epochs=cfg.epochs, batch_size=cfg.batch_size, max_batches=cfg.max_batches or None, lr=cfg.lr, seed=cfg.seed, desc="pre-train")
        hold = series_by_ticker(feat[feat["ticker"] == cfg.holdout])
        results.append(_evaluate("zero_shot", fc, hold[cfg.holdout], test_o, T))
        pretrained = {k: v.clone() for k, v in base.state_dict().items()}
        steps = dict(epochs=cfg.finetune_epochs, batch_size=min(cfg.batch_size, 64), max_batches=None, seed=cfg.seed + 1)

        def variant(name: str, prepare, lr: float) -> None:
            m = build_tft(spec, tickers, lr)
            prepare(m)
            v = Forecaster(m, spec, scaler, tickers)
            reports[name] = trainable_parameter_report(m)
            fit(m, T, short_o, lr=lr, desc=name, **steps)
            res = _evaluate(name, v, hold[cfg.holdout], test_o, T)
            res["trainable_params"] = int(reports[name].get("trainable", sum(p.numel() for p in m.parameters() if p.requires_grad)))
            results.append(res)

        variant("finetune_full", lambda m: m.load_state_dict(pretrained), cfg.finetune_lr)

        def lora(m):
            m.load_state_dict(pretrained)
            apply_lora(m, r=cfg.lora_r, alpha=2 * cfg.lora_r, trainable=["input_embeddings"])

        variant("finetune_lora", lora, cfg.lora_lr)
        variant("scratch", lambda m: None, cfg.lr)
        g = _baseline_rows(hold, cutoff, test_o, T, ["garch"], 0, H)
        cols = quantile_columns(QUANTILES)
        gr = g[(g["target"] == "ret") & (g["horizon"] == 1)].sort_values("origin")
        gv = g[g["target"] == "rvol"].sort_values("origin")
        results.append(_score("garch", gr[cols].to_numpy(), gv[cols].to_numpy(), hold[cfg.holdout], T, test_o, H))
        df = pd.DataFrame(results)
        atomic_write_text(run.path("transfer_results.csv"), df.to_csv(index=False))
        _plot(df, run.dir / "transfer.png", cfg.holdout, cfg.short_days)
        print(df.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
        m = {f"{r['model']}/{k}": v for r in results for k, v in r.items() if k != "model"}
        run.finish({**m, "holdout": cfg.holdout, "short_days": cfg.short_days, "pretrain_windows": int(len(pre_o)), "short_windows": int(len(short_o))})
        return run.dir


def _plot(df: pd.DataFrame, path: Path, holdout: str, short_days: int) -> None:
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 3.6))
    for ax, col in zip(axes, ["vol_pinball", "ret_pinball_h1"]):
        ax.bar(df["model"], df[col], color=["C3" if m.startswith("finetune") else "C0" for m in df["model"]])
        ax.set_title(f"{holdout} ({short_days} days of history): {col}", fontsize=10)
        ax.tick_params(axis="x", rotation=30)
    save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    return run_cli(TransferConfig, transfer, argv, doc=__doc__.split("\n\n")[0], prog="python -m domains.finance.transfer", user_errors=(PriceDataError, ValueError))


if __name__ == "__main__":
    raise SystemExit(main())
