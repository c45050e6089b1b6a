"""Transfer to tickers held out of pre-training, with a short history — and save the fine-tuned model.

    python -m domains.finance.transfer                        # held-out AAPL, 1 year of history
    python -m domains.finance.transfer --holdout XOM KO JPM --short-days 120
    python -m domains.finance.forecast --model-run <this run> --tickers XOM   # use the saved model

Pre-trains the global TFT without the ``--holdout`` tickers, then compares on the ``--test-days``
after the cutoff, per held-out ticker: ``zero_shot`` (the "unknown ticker" embedding and the
ticker's own-history normalisers), ``finetune_full``, ``finetune_lora``, ``scratch`` and ``garch``
(see ``domains/finance/finetuning.py``). Writes ``transfer_results.csv`` and ``transfer.png``, and
saves one variant as this run's ``model/``: the run is a model run that ``forecast``, ``score`` and the
dashboard can use. ``--save auto`` (default) saves whichever of zero-shot, full fine-tuning and LoRA has
the lowest vol pinball on the last ``--val-days`` of the short history (the fine-tuned candidates trained,
for that choice only, on the days before them); the test days never choose. ``--save NAME`` names it.

Refused before a run folder is created (one line): a --data file that cannot be read, --holdout tickers not in
the data or whose prices do not overlap the others' up to the end (no short-history windows or no test days),
other tickers with nothing to pre-train on, and a short history too short for --save auto's validation days.
The model is written last, so a run that fails later (marked failed, skipped by forecast/score/the dashboard)
holds no ``model/``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.cli import run_cli
from core.device import set_cpu_threads
from core.io import atomic_write_text
from core.runs import Run
from domains.finance.config import TransferConfig
from domains.finance.data import PriceDataError, load_panel_data
from domains.finance.features import base_features
from domains.finance.finetuning import check_transfer_windows, run_transfer, short_history_panel
from domains.finance.plots import pyplot, save_png
from domains.finance.walkforward import file_part

__all__ = ["TransferConfig", "transfer", "default_run_name", "main"]


def transfer(cfg: TransferConfig) -> Path:
    set_cpu_threads(cfg.threads)
    data = load_panel_data(cfg.data, cfg.tickers, **cfg.data_options())
    panel, cutoff = short_history_panel(data.panel, cfg, cfg.horizon)
    if cfg.short_days < cfg.encoder_length + cfg.horizon + 20:
        raise PriceDataError(f"--short-days {cfg.short_days}: need at least encoder_length + horizon + 20 = {cfg.encoder_length + cfg.horizon + 20}")
    feat = base_features(panel, data.covariates)
    check_transfer_windows(feat, cfg, cutoff, data.panel)  # data it cannot use is refused here, before a run folder exists
    with Run.start("finance", cfg, new_name=default_run_name(cfg.holdout), command="transfer") as run:
        res = run_transfer(cfg, panel, feat, cutoff)
        df = res.results
        atomic_write_text(run.path("transfer_results.csv"), df.to_csv(index=False))
        _plot(df, run.dir / "transfer.png", cfg.short_days)
        data.report.write(run.dir)
        print(df.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
        mean = df.groupby("model", sort=False)[["ret_pinball_h1", "vol_pinball", "var99_breaches"]].mean()
        m = {f"{name}/{k}": float(v) for name, row in mean.iterrows() for k, v in row.items()}
        choice = {"saved_model": res.saved}
        if res.selection:
            print(f"saved model: {res.saved} (--save {cfg.save}: lowest vol pinball on the last {res.val_days} days of the short history: "
                  + ", ".join(f"{k} {v:.5g}" for k, v in res.selection.items()) + ")")
            choice.update({f"select/{k}/val_vol_pinball": v for k, v in res.selection.items()}, **{"select/val_days": res.val_days})
        summary = {**m, **{k: (",".join(v) if isinstance(v, list) else v) for k, v in res.info.items()}, **choice, "short_days": cfg.short_days,
                   **data.report.metrics()}
        # the model last, just before the run completes: a run that fails before holds no model/ to be taken for one
        res.forecaster.save(run.path("model"))
        run.finish(summary)
        return run.dir


def default_run_name(holdout: list[str]) -> str:
    """``transfer-<held-out tickers>-<timestamp>``; the tickers come from a user's file (``BRK/B``,
    ``../x``), so each is made one safe file-name piece: the run name must be a plain folder name."""
    return f"transfer-{'-'.join(map(file_part, holdout))[:40]}-{pd.Timestamp.now():%Y%m%d-%H%M%S}"


def _plot(df: pd.DataFrame, path: Path, short_days: int) -> None:
    mean = df.groupby("model", sort=False)[["vol_pinball", "ret_pinball_h1"]].mean()
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 3.6))
    for ax, col in zip(axes, ["vol_pinball", "ret_pinball_h1"]):
        ax.bar(mean.index, mean[col], color=["C3" if m.startswith("finetune") else "C0" for m in mean.index])
        ax.set_title(f"held-out {', '.join(sorted(df['ticker'].unique()))[:40]} ({short_days} days of history): {col}", fontsize=9)
        ax.tick_params(axis="x", rotation=30)
    save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    return run_cli(TransferConfig, transfer, argv, doc=__doc__.split("\n\n")[0], prog="python -m domains.finance.transfer")


if __name__ == "__main__":
    raise SystemExit(main())
