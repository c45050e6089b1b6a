"""Transfer to tickers held out of pre-training, with a short history: the library under the
``transfer`` command.

1. Pre-train the global TFT on every other ticker (dates up to the cutoff).
2. Each held-out ticker only has ``short_days`` trading days before the cutoff; its normaliser is
   fitted on those days only (its own history). Compared on the ``test_days`` after the cutoff:

   * ``zero_shot`` — the pre-trained model as is, the held-out tickers reading the "unknown ticker"
     embedding (the mean of the trained tickers' rows, as ``forecast --zero-shot`` does);
   * ``finetune_full`` — every weight fine-tuned on the held-out tickers' short histories;
   * ``finetune_lora`` — LoRA adapters (``core.finetune.apply_lora``) on every Linear layer plus the
     ticker embedding, the rest frozen (merged into the weights afterwards);
   * ``scratch`` — a fresh TFT trained on the short histories only, with the same number of steps;
   * ``garch`` — GARCH(1,1) fitted on the same short history, for reference.

:func:`run_transfer` returns the per-ticker results and the fine-tuned forecaster to save.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from core.logging import get_logger
from domains.finance.baselines import baseline_rows
from domains.finance.config import TransferConfig
from domains.finance.data import PANEL_DATASET, PriceDataError
from domains.finance.features import QUANTILES, realised, series_by_ticker
from domains.finance.metrics import kupiec_pof, pinball
from domains.finance.model import Forecaster, create_model, fit, is_garch_informed, predict_quantiles, quantile_columns
from domains.finance.training import build_forecaster, init_output_bias, loss_terms

__all__ = ["TransferResult", "short_history_panel", "check_transfer_windows", "run_transfer", "set_unknown_rows", "validation_split"]

log = get_logger("finance.finetuning")


@dataclass
class TransferResult:
    results: pd.DataFrame  # ticker, model, n_test, ret_pinball_h1, vol_pinball, var99_breaches, var99_kupiec_p, trainable_params
    forecaster: Forecaster  # the saved variant (cfg.save, or chosen on validation by --save auto), fine-tuned on every held-out ticker
    info: dict
    saved: str = ""  # which variant ``forecaster`` is
    selection: dict[str, float] = field(default_factory=dict)  # --save auto: candidate -> validation vol pinball (else empty)
    val_days: int = 0  # --save auto: the validation days that chose it


def short_history_panel(panel: pd.DataFrame, cfg: TransferConfig, horizon: int) -> tuple[pd.DataFrame, pd.Timestamp]:
    """(panel where each held-out ticker starts ``short_days`` before the cutoff, cutoff)."""
    missing = sorted(set(cfg.holdout) - set(panel["ticker"]))
    if missing:
        raise PriceDataError(f"--holdout {' '.join(missing)}: not in the data ({', '.join(sorted(panel['ticker'].unique()))})")
    if len(set(panel["ticker"]) - set(cfg.holdout)) == 0:
        raise PriceDataError("--holdout names every ticker of the data: nothing is left to pre-train on")
    dates = np.sort(panel["date"].unique())
    if len(dates) < cfg.test_days + horizon + cfg.short_days + 250:
        raise PriceDataError(f"{len(dates)} trading days are too few for short_days={cfg.short_days} + test_days={cfg.test_days}")
    cutoff = pd.Timestamp(dates[-1 - horizon - cfg.test_days])
    short_start = pd.Timestamp(dates[-1 - horizon - cfg.test_days - cfg.short_days])
    return panel[~panel["ticker"].isin(cfg.holdout) | (panel["date"] >= short_start)], cutoff


def check_transfer_windows(feat: pd.DataFrame, cfg: TransferConfig, cutoff: pd.Timestamp, prices: pd.DataFrame | None = None) -> None:
    """Refuse, in one line and before the run folder exists, data :func:`run_transfer` cannot use. ``feat``:
    features of :func:`short_history_panel`'s panel. It counts the windows run_transfer counts (an origin has
    ``encoder_length`` rows of its ticker up to it and ``horizon`` rows after it): the other tickers need windows
    whose targets end by the cutoff (pre-training); each held-out ticker needs such windows in its short history
    and origins after the cutoff (the test days) — a ticker whose prices end before the others' (no overlap)
    has neither; and ``--save auto`` needs validation days in the short history (:func:`validation_split`).
    ``prices``: the panel before :func:`short_history_panel`, to name a refused ticker's dates."""
    L, H = cfg.encoder_length, cfg.horizon
    f = feat.sort_values(["ticker", "date"], kind="stable").reset_index(drop=True)
    by_ticker = f.groupby("ticker", sort=False)
    pos, size = by_ticker.cumcount().to_numpy(), by_ticker["ticker"].transform("size").to_numpy()
    o = np.nonzero((pos >= L - 1) & (pos + H < size))[0]
    dates, tick = f["date"].to_numpy(), f["ticker"].to_numpy()[o]
    cut = np.datetime64(pd.Timestamp(cutoff))
    by_cutoff = dates[o + H] <= cut
    hold = np.isin(tick, list(cfg.holdout))
    if not (by_cutoff & ~hold).any():
        others = sorted(set(f["ticker"]) - set(cfg.holdout))
        raise PriceDataError(f"--holdout {' '.join(cfg.holdout)}: the other tickers ({', '.join(others[:10])}) have no {L} + {H} days of prices "
                             f"ending by the cutoff {cut.astype('datetime64[D]')} to pre-train on; their prices must cover the time before the held-out ones' test days")
    for t in cfg.holdout:
        mine = tick == t
        n_short, n_test = int((mine & by_cutoff).sum()), int((mine & (dates[o] > cut)).sum())
        if n_short == 0 or n_test == 0:
            src = prices if prices is not None else f
            span = pd.to_datetime(src.loc[src["ticker"] == t, "date"])
            have = f"its prices ({span.min():%Y-%m-%d} to {span.max():%Y-%m-%d})" if len(span) else "no prices"
            raise PriceDataError(f"--holdout {t}: {have} give {n_short} short-history window(s) up to the cutoff {cut.astype('datetime64[D]')} and "
                                 f"{n_test} test origin(s) after it (encoder_length {L}, horizon {H}); a held-out ticker needs prices over the "
                                 f"last --short-days {cfg.short_days} + --test-days {cfg.test_days} trading days of the data (to {dates.max().astype('datetime64[D]')}): "
                                 f"hold out a ticker whose prices overlap the others' to the end")
    if cfg.save == "auto":
        validation_days(len(np.unique(dates[o][hold & by_cutoff])), cfg.val_days, H)


def set_unknown_rows(model, tickers: list[str], unknown: list[str]) -> None:
    """Give the embedding rows of ``unknown`` tickers the "unknown ticker" vector: the mean of the
    rows of the other (trained) tickers."""
    import torch

    emb = model.input_embeddings.embeddings["ticker"]
    idx = model.ticker_index
    known = [idx[t] for t in tickers if t not in set(unknown)]
    with torch.no_grad():
        mean = emb.weight[known].mean(dim=0)
        for t in unknown:
            emb.weight[idx[t]] = mean


def _score(name: str, ticker: str, ret_q1, rvol_q, series, dates, H) -> dict:
    r, v = realised(series, np.searchsorted(series["date"], dates), H)
    r1 = r[:, 0]
    br = r1 < ret_q1[:, 0]
    return {"ticker": ticker, "model": name, "n_test": len(dates), "ret_pinball_h1": float(pinball(r1, ret_q1, QUANTILES).mean()),
            "vol_pinball": float(pinball(v, rvol_q, QUANTILES).mean()), "var99_breaches": int(br.sum()),
            "var99_kupiec_p": kupiec_pof(br, 0.01)[1]}


def _evaluate(name: str, fc: Forecaster, T, test_o, series: dict, holdout: list[str], H: int) -> list[dict]:
    raw = fc.to_raw(T.tickers[test_o], predict_quantiles(fc.model, T, test_o))
    out = []
    for t in holdout:
        sel = T.tickers[test_o] == t
        out.append(_score(name, t, raw["ret"][sel, 0, :], raw["rvol"][sel, H - 1, :], series[t], T.dates[test_o][sel], H))
    return out


def apply_lora_for_transfer(model, r: int):
    """``finetune_lora``'s parameter set: LoRA (rank ``r``, alpha 2r) on every Linear layer but the heads, the
    ticker embedding and the heads — the log-vol quantile output layer and, when present, the variance head,
    which the model declares (``model.suite_heads``, read by ``core.finetune.head_names``) — trained in full."""
    from core.finetune import apply_lora

    return apply_lora(model, r=r, alpha=2 * r, trainable=["input_embeddings"])


def run_transfer(cfg: TransferConfig, panel: pd.DataFrame, feat: pd.DataFrame, cutoff: pd.Timestamp) -> TransferResult:
    """Pre-train without the held-out tickers, then compare zero-shot, fine-tuned, scratch and GARCH
    on them (``feat``: features of :func:`short_history_panel`'s panel)."""
    from core.finetune import merge_lora, trainable_parameter_report

    holdout = list(cfg.holdout)
    tickers = sorted(feat["ticker"].unique())
    info = {"holdout": holdout, "cutoff": str(cutoff.date()), "data": cfg.data or PANEL_DATASET}
    # the same construction as train and the backtest; a held-out ticker's normalisers and (GARCH-informed) GJR-GARCH-t
    # are fitted on its own short history up to the cutoff
    fc = build_forecaster(cfg, feat, cutoff, tickers, info)
    base, spec, scaler = fc.model, fc.spec, fc.scaler
    info = dict(fc.info)
    H = spec.horizon
    T = fc.tensors(scaler.transform(feat))
    all_o = T.origins()
    before = T.targets_by(all_o, cutoff)
    is_hold = np.isin(T.tickers[all_o], holdout)
    pre_o, short_o = all_o[before & ~is_hold], all_o[before & is_hold]
    test_o = all_o[is_hold & (T.dates[all_o] > np.datetime64(cutoff))]
    log.info(f"pre-training on {len(pre_o)} windows of {len(tickers) - len(holdout)} tickers; {', '.join(holdout)}: "
             f"{len(short_o)} short-history windows, {len(test_o)} test origins")
    if is_garch_informed(fc):
        init_output_bias(base, T, pre_o, cfg.seed)
    fit(base, T, pre_o, epochs=cfg.epochs, batch_size=cfg.batch_size, max_batches=cfg.max_batches or None, lr=cfg.lr, seed=cfg.seed, desc="pre-train",
        **loss_terms(cfg))
    set_unknown_rows(base, tickers, holdout)
    series = series_by_ticker(feat[feat["ticker"].isin(holdout)])
    results = _evaluate("zero_shot", fc, T, test_o, series, holdout, H)
    pretrained = {k: v.clone() for k, v in base.state_dict().items()}
    steps = dict(epochs=cfg.finetune_epochs, batch_size=min(cfg.batch_size, 64), max_batches=None, seed=cfg.seed + 1, **loss_terms(cfg))
    models = {}

    def tuned(name: str, prepare, lr: float, origins: np.ndarray):
        m = create_model("tft", spec=spec, tickers=tickers, learning_rate=lr)
        prepare(m)
        report = trainable_parameter_report(m)
        fit(m, T, origins, lr=lr, desc=name, **steps)
        return m, int(report.get("trainable", sum(p.numel() for p in m.parameters() if p.requires_grad)))

    def variant(name: str, prepare, lr: float) -> None:
        m, n_trainable = tuned(name, prepare, lr, short_o)
        rows = _evaluate(name, Forecaster(m, spec, scaler, tickers, dict(info)), T, test_o, series, holdout, H)
        for r in rows:
            r["trainable_params"] = n_trainable
        results.extend(rows)
        models[name] = m

    def full(m):
        m.load_state_dict(pretrained)

    def lora(m):
        m.load_state_dict(pretrained)
        apply_lora_for_transfer(m, cfg.lora_r)

    chosen, selection, val_n = cfg.save, {}, 0
    if cfg.save == "auto":  # before any test origin is scored: the choice sees the short history only
        fit_o, val_o = validation_split(T, short_o, cfg.val_days, H)
        val_n = len(np.unique(T.dates[val_o]))

        def val_pinball(name: str, model) -> float:
            rows = _evaluate(name, Forecaster(model, spec, scaler, tickers, dict(info)), T, val_o, series, holdout, H)
            return float(np.mean([r["vol_pinball"] for r in rows]))

        selection = {"zero_shot": val_pinball("zero_shot", base)}
        with torch.random.fork_rng():  # the reported variants draw exactly what they draw without the choice
            for name, prepare, lr in (("finetune_full", full, cfg.finetune_lr), ("finetune_lora", lora, cfg.lora_lr)):
                selection[name] = val_pinball(name, tuned(f"{name} (choice)", prepare, lr, fit_o)[0])
        chosen = min(selection, key=selection.get)
        log.info(f"--save auto: {chosen} saved — vol pinball on the last {val_n} days of the short history "
                 f"({len(val_o)} origins; fine-tuned on {len(fit_o)} windows before them): "
                 + ", ".join(f"{k} {v:.6g}" for k, v in selection.items()))
    variant("finetune_full", full, cfg.finetune_lr)
    variant("finetune_lora", lora, cfg.lora_lr)
    variant("scratch", lambda m: None, cfg.lr)
    g = baseline_rows(series, cutoff, test_o, T, ["garch"], 0, H)
    cols = quantile_columns(QUANTILES)
    for t in holdout:
        gt = g[g["ticker"] == t]
        gr = gt[(gt["target"] == "ret") & (gt["horizon"] == 1)].sort_values("origin")
        gv = gt[gt["target"] == "rvol"].sort_values("origin")
        results.append(_score("garch", t, gr[cols].to_numpy(), gv[cols].to_numpy(), series[t], gr["origin"].to_numpy(), H))
    saved = base if chosen == "zero_shot" else models[chosen]
    if chosen == "finetune_lora":
        merge_lora(saved)
    for p in saved.parameters():
        p.requires_grad_(True)
    out = Forecaster(saved, spec, scaler, tickers, {**info, "transfer": chosen, **({"transfer_selection": selection, "transfer_val_days": val_n} if selection else {})})
    order = {m: i for i, m in enumerate(["zero_shot", "finetune_full", "finetune_lora", "scratch", "garch"])}
    df = pd.DataFrame(results)
    df = df.sort_values(["ticker", "model"], key=lambda s: s.map(order) if s.name == "model" else s, kind="stable").reset_index(drop=True)
    return TransferResult(df, out, {**info, "pretrain_windows": int(len(pre_o)), "short_windows": int(len(short_o)), "test_origins": int(len(test_o))},
                          saved=chosen, selection=selection, val_days=val_n)


def validation_split(T, short_o: np.ndarray, val_days: int, H: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) origins of the held-out tickers' short history for ``--save auto``: validation =
    the origins of the last ``val_days`` dates (their targets end by the cutoff), fit = the windows whose
    targets end by the first validation date, so no fitted window sees a validation day. A short history
    with too few dates for that validates on its last third instead (logged); under 10 dates, an error."""
    days = np.unique(T.dates[short_o])
    usable = validation_days(len(days), val_days, H)
    if usable < val_days:
        log.warning(f"--save auto: the short history has {len(days)} origin dates; validating on the last {usable} instead of --val-days {val_days}")
    vcut = days[-usable - 1]
    return short_o[T.targets_by(short_o, vcut)], short_o[T.dates[short_o] > vcut]


def validation_days(n_days: int, val_days: int, H: int) -> int:
    """How many of the short history's ``n_days`` origin dates ``--save auto`` validates on: ``val_days``, or the last
    third of a shorter history; under 10, a :class:`PriceDataError` (also raised by :func:`check_transfer_windows`
    before the run starts)."""
    if val_days < 10:
        raise PriceDataError(f"--save auto with --val-days {val_days}: the saved variant is chosen on at least 10 validation days "
                             f"(give --val-days 10 or more, or name the saved variant with --save)")
    usable = min(val_days, (n_days - H) // 3)
    if usable < 10:
        raise PriceDataError(f"--save auto: the short history has {n_days} origin dates, too few to hold out 10 validation days "
                             f"(raise --short-days, or name the saved variant with --save)")
    return usable
