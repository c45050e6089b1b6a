"""TFT interpretability, the library under ``interpret`` and ``backtest``: variable-selection
weights (static, encoder, decoder) and attention over encoder lags, averaged over recent forecast
origins — saved as CSV and plots. An input that is constant over the interpreted rows (e.g. a
volume column that never changes) carries no information: it is reported with importance 0 and
``constant=True`` and the other importances of its kind are renormalised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import UserInputError
from core.io import atomic_write_text
from core.logging import get_logger
from domains.finance.plots import pyplot, save_png

__all__ = ["interpret"]

log = get_logger("finance.interpretation")


def interpret(forecaster, feat: pd.DataFrame, out_dir: str | Path, last_days: int = 63) -> dict[str, pd.DataFrame]:
    """Variable importances and attention for origins in the last ``last_days`` days of ``feat``."""
    from domains.finance.model import predict_quantiles

    if last_days < 1:
        raise UserInputError(f"last_days={last_days}: expected 1 or more trading days")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = forecaster.model
    known = feat["ticker"].isin(list(forecaster.scaler.ret_scale))
    if not known.any():
        raise UserInputError(f"none of the data's tickers ({', '.join(sorted(set(feat['ticker']))[:5])}) has normalisers in this model "
                             f"(fitted on {', '.join(sorted(forecaster.scaler.ret_scale)[:5])}); interpret it on the data it was trained on")
    if not known.all():  # e.g. the backtest's last fold left out a ticker listed shortly before its cutoff (--fold-min-history)
        left = sorted(set(feat.loc[~known, "ticker"]))
        log.info(f"interpretation: {len(left)} ticker(s) without normalisers in the model left out: {', '.join(left[:5])}")
        feat = feat[known]
    z = forecaster.scaler.transform(feat)
    T = forecaster.tensors(z)
    o = T.origins(need_targets=False)
    dates = T.dates[o]
    o = o[dates >= np.sort(np.unique(dates))[-min(last_days, len(np.unique(dates)))]]
    res = predict_quantiles(model, T, o, return_attention=True)
    constant = _constant_inputs(T, o)
    rows = []
    for kind, names, w in (("static", model.static_variables, res["static_variables"]),
                           ("encoder", model.encoder_variables, res["encoder_variables"]),
                           ("decoder", model.decoder_variables, res["decoder_variables"])):
        w = np.asarray(w).reshape(len(o), -1)
        mean = w.mean(axis=0)
        is_const = np.array([n in constant for n in names])
        mean = np.where(is_const, 0.0, mean)  # a constant input cannot inform the forecast, whatever weight it got
        rows += [{"kind": kind, "variable": n, "importance": float(v), "constant": bool(c)}
                 for n, v, c in zip(names, mean / max(mean.sum(), 1e-12), is_const)]
    if constant:
        log.info(f"constant over the interpreted rows, reported with importance 0: {', '.join(sorted(constant))}")
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


def _constant_inputs(T, origins: np.ndarray) -> set[str]:
    """Inputs (real columns, and ``ticker`` when only one is interpreted) that do not vary over the
    encoder rows of ``origins``."""
    rows = np.unique((np.asarray(origins)[:, None] - (T.L - 1) + np.arange(T.L)[None, :]).ravel())
    v = T.values[rows].numpy()
    out = {name for name, lo, hi in zip(T.reals, v.min(axis=0), v.max(axis=0)) if hi - lo < 1e-9}
    if len(np.unique(T.tickers[origins])) == 1:
        out.add("ticker")
    return out


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
