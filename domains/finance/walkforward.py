"""Walk-forward (rolling-origin) evaluation of the TFT seed ensemble against classical risk models.

Scheme: the last ``folds * test_days`` trading days (minus the horizon) are split into ``folds``
consecutive test blocks. For fold k with cutoff c_k (the day before its block):

* tickers with at least ``min_history`` days up to c_k take part (later listings join later);
* normalisers are fitted on rows dated <= c_k (``FoldScaler.fit(feat, c_k)``);
* validation: the last ``val_days`` trading days up to c_k. Each ensemble member (``seeds`` of
  them, each its own TFT) trains on windows whose targets all lie on or before the start of the
  validation period — fold 0 from scratch for ``epochs`` epochs, later folds warm-started for
  ``refit_epochs`` — and keeps the epoch with the lowest validation pinball (for k > 0 "no refit"
  is a candidate too). The early-stopping epoch is chosen on validation data only, never on a
  test block;
* baselines fit their parameters on rows <= c_k and filter forward with them fixed
  (:mod:`domains.finance.baselines`);
* GARCH-informed TFT (``garch_informed``, the default): the ``gjr_t`` baseline's fit of fold k
  (one GJR-GARCH(1,1,1)-t per ticker on rows <= c_k, :func:`baselines.fold_gjr_params`) is done
  first and stored in the fold's ``FoldScaler``; filtered forward with fixed parameters (row t
  reads returns <= t), it gives the TFT an input (``gjr_z``, the log one-step GJR volatility) and
  the scale of its targets: return / σ_GJR(t, h) and log rvol5 − log of GJR's forecast of it, so
  the network's quantiles are a multiplicative correction of GJR's forecast (mapped back by
  ``PanelTensors.from_model_units``). At fold 0 the output biases start at the empirical
  quantiles of those standardised training targets;
* every model forecasts from each origin t in the block with information up to t only; the model
  called ``tft`` is the ensemble (quantiles averaged over members, Vincentisation), each member's
  own scores are kept to report mean ± sd over seeds;
* each forecast is labelled calm/stress ex ante (:mod:`domains.finance.regimes`).

Per forecast the library keeps its losses (:func:`forecast_losses`); every table — per ticker,
per fold, per regime, per ticker-fold VaR tests, pooled tests, Diebold–Mariano tests and the
issue-15 verdict — is computed from those (:func:`summarise`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.checkpoint import load_checkpoint, save_checkpoint
from core.errors import UserInputError
from core.io import atomic_write_json, atomic_write_parquet, atomic_write_text, json_default, read_parquet, remove_temp_files
from core.logging import get_logger
from core.progress import progress
from domains.finance import regimes
from domains.finance.baselines import BASELINES, baseline_forecasts, fold_gjr_params, forecast_rows, range_variance
from domains.finance.data import PriceDataError
from domains.finance.features import QUANTILES, TARGETS, series_by_ticker
from domains.finance.metrics import (AS_Z2_CRITICAL_5PCT, acerbi_szekely_z2, christoffersen_from_counts, cumulative_var,
                                     diebold_mariano, es_from_quantiles, kupiec_pof, mcneil_frey, pinball_rows, qlike_rows,
                                     second_moment_from_quantiles, transition_counts, var_backtest)
from domains.finance.model import Forecaster, create_model, evaluate_objective, fit, predict_quantiles
from domains.finance.training import fit_scaler, init_output_bias, input_report, loss_terms, model_spec
from domains.finance.variance import DEFAULT_ENSEMBLE_VARIANCE, DEFAULT_RULE, ensemble_variance, recalibrated_variance, rvol_quantile_columns

__all__ = ["WalkForwardResult", "fold_cutoffs", "fold_windows", "run_walkforward", "forecast_losses", "summarise", "verdict",
           "LOSS_COLUMNS", "CUM_DAYS", "rms_vol", "rescore",
           "FoldStore", "ResumeMismatchError", "backtest_fingerprint", "fingerprint_id"]

log = get_logger("finance.walkforward")
Q = np.array(QUANTILES)
I01, I05, I50, I95, I99 = (list(QUANTILES).index(x) for x in (0.01, 0.05, 0.5, 0.95, 0.99))
CUM_DAYS = (5, 10)
LOSS_COLUMNS = ["vol_pinball", "vol_qlike", "vol_qlike_mean", "vol_qlike_cal", "vol_se", "ret_pinball_h1", "ret_pinball", "ret_in90", "ret_in98", "vol_in90", "vol_in98"]
ES_ALPHA = 0.025


def rms_vol(rvol_q: np.ndarray) -> np.ndarray:
    """sqrt(E[rv²]) of each realised-vol quantile forecast (n, Q): the point forecast QLIKE is
    consistent for (:func:`metrics.second_moment_from_quantiles`), the same rule for every model.
    ``vol_qlike`` (kept, as first reported) scores the median instead; ``vol_qlike_mean`` scores this."""
    return np.sqrt(second_moment_from_quantiles(rvol_q, Q))


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


@dataclass
class WalkForwardResult:
    losses: pd.DataFrame  # one row per (model, ticker, origin): losses, VaR/ES forecasts, regime
    pinball_sums: pd.DataFrame  # model, ticker, target, quantile, sum, n
    folds: list[dict]
    predictions: pd.DataFrame | None  # every quantile forecast with its realised value (optional)
    forecaster: Forecaster | None  # member 0 of the last fold
    inputs: dict


@dataclass
class _Member:
    seed: int
    model: torch.nn.Module
    opt: torch.optim.Optimizer


def _cum_returns(log_ret: np.ndarray, days: int) -> np.ndarray:
    """c[t] = sum of log_ret[t+1..t+days] (NaN beyond the data)."""
    cs = np.concatenate([[0.0], np.cumsum(log_ret)])
    n = len(log_ret)
    out = np.full(n, np.nan)
    if n > days:
        t = np.arange(n - days)
        out[: n - days] = cs[t + 1 + days] - cs[t + 1]
    return out


def _series(feat: pd.DataFrame, panel: pd.DataFrame) -> dict:
    """Per ticker arrays by date: log_ret, rvol5, the HAR variance proxy and cumulative returns."""
    series = series_by_ticker(feat)
    ohlc = {"open", "high", "low"} <= set(panel.columns)
    for t, g in series.items():
        if ohlc:
            p = panel[panel["ticker"] == t].sort_values("date")
            p = p.set_index(pd.to_datetime(p["date"]))
            o, h, lo, c = (p[k].reindex(g["date"]).to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
            prev = np.concatenate([[np.nan], c[:-1]])
            g["rv_proxy"] = range_variance(o, h, lo, c, prev)
        for k in CUM_DAYS:
            g[f"cum{k}"] = _cum_returns(g["log_ret"], k)
    return series


def _val_pinball(model, T, origins: np.ndarray) -> float:
    """Mean pinball (normalised units, both targets) of ``model`` on windows ``origins``."""
    pred = predict_quantiles(model, T, origins)
    rows = torch.as_tensor(origins)[:, None] + torch.arange(1, T.H + 1)[None, :]
    y = T.targets[rows].numpy()  # (n, H, 2)
    tot = 0.0
    for k, name in enumerate(TARGETS):
        e = y[..., k][..., None] - pred[name]
        tot += float(np.mean(np.maximum(Q * e, (Q - 1) * e)))
    return tot / len(TARGETS)


def _val_score(model, T, origins: np.ndarray, cfg) -> float:
    """What the early-stopping choice minimises on the validation windows (``--select-on``)."""
    if getattr(cfg, "select_on", "pinball") == "loss":
        return evaluate_objective(model, T, origins, **loss_terms(cfg))
    return _val_pinball(model, T, origins)


def _train_member(m: _Member, T, train_o, val_o, epochs: int, cfg, fold: int, can_skip: bool) -> dict:
    """Train ``epochs`` epochs, keep the epoch with the best validation score (``--select-on``: pinball, the
    default, or the training objective; 0 = no refit, when ``can_skip``). Returns the chosen epoch and its
    validation score (key ``val_pinball`` whatever it measures; the run's config says which)."""
    have_val = len(val_o) > 0
    best_state, best_epoch, best_val = None, 0, float("inf")
    if can_skip and have_val:
        best_val, best_state = _val_score(m.model, T, val_o, cfg), copy.deepcopy(m.model.state_dict())
    for e in range(epochs):
        batches = (cfg.refit_batches or cfg.max_batches) if can_skip else cfg.max_batches
        fit(m.model, T, train_o, epochs=e + 1, start_epoch=e, of_epochs=epochs, batch_size=cfg.batch_size, max_batches=batches or None,
            lr=cfg.lr, seed=m.seed * 1000 + fold, optimizer=m.opt, desc=f"fold {fold} seed {m.seed}",
            **loss_terms(cfg))
        v = _val_score(m.model, T, val_o, cfg) if have_val else float(-e)  # no validation data: the last epoch
        if v < best_val:
            best_val, best_epoch, best_state = v, e + 1, copy.deepcopy(m.model.state_dict())
    if best_state is not None:
        m.model.load_state_dict(best_state)
    m.model.eval()
    return {"epoch": best_epoch, "val_pinball": best_val if have_val else float("nan")}


def _realised(series: dict, tickers, dates, H: int):
    """What happened after each origin: returns (n, H), rvol5 at t+H (n,), cumulative returns {days: (n,)}."""
    n = len(tickers)
    r, v = np.empty((n, H)), np.empty(n)
    cum = {k: np.empty(n) for k in CUM_DAYS}
    for t in np.unique(tickers):
        sel = tickers == t
        g = series[t]
        loc = np.searchsorted(g["date"], dates[sel])
        r[sel] = g["log_ret"][loc[:, None] + np.arange(1, H + 1)]
        v[sel] = g["rvol5"][loc + H]
        for k in CUM_DAYS:
            cum[k][sel] = g[f"cum{k}"][loc]
    return r, v, cum


def forecast_losses(model: str, fold: int, tickers, dates, ret_q, rvol_q, realised, regime, var_head=None) -> pd.DataFrame:
    """Per-forecast losses of one model on one fold (``ret_q`` (n,H,Q), ``rvol_q`` (n,Q) raw units,
    ``realised``: what :func:`_realised` returns for the same origins). ``var_head`` (n,): a TFT's
    variance-head forecast of rv² (``--variance-head``), kept as ``rvol_var_head`` (other rows: NaN)."""
    r, v, cum = realised
    H = r.shape[1]
    r1, q1 = r[:, 0], ret_q[:, 0, :]
    out = {
        "model": model, "ticker": tickers, "fold": fold, "origin": dates, "regime": regime,
        "vol_pinball": pinball_rows(v, rvol_q, Q), "vol_qlike": qlike_rows(v, rvol_q[:, I50]),
        "vol_qlike_mean": qlike_rows(v, rms_vol(rvol_q)), "vol_se": (v - rvol_q[:, I50]) ** 2,
        "ret_pinball_h1": pinball_rows(r1, q1, Q),
        "ret_pinball": np.mean([pinball_rows(r[:, h], ret_q[:, h, :], Q) for h in range(H)], axis=0),
        "ret_in90": (r1 >= q1[:, I05]) & (r1 <= q1[:, I95]), "ret_in98": (r1 >= q1[:, I01]) & (r1 <= q1[:, I99]),
        "vol_in90": (v >= rvol_q[:, I05]) & (v <= rvol_q[:, I95]), "vol_in98": (v >= rvol_q[:, I01]) & (v <= rvol_q[:, I99]),
        "ret1": r1, "var99": q1[:, I01], "var95": q1[:, I05], "es975": es_from_quantiles(q1[:, I01], q1[:, I05], ES_ALPHA),
        "rvol": v, "rvol_median": rvol_q[:, I50], "rvol_rms": rms_vol(rvol_q),
        **dict(zip(rvol_quantile_columns(QUANTILES), rvol_q.T)),  # the variance recalibration (domains.finance.variance) reads them
    }
    if var_head is not None:
        out["rvol_var_head"] = np.asarray(var_head, float)
    for k in CUM_DAYS:
        out[f"cum{k}"] = cum[k]
        out[f"cum{k}_var99"] = cumulative_var(ret_q[:, :, I01], 0.01, k)
    df = pd.DataFrame(out)
    df["breach99"] = df["ret1"] < df["var99"]
    df["breach95"] = df["ret1"] < df["var95"]
    floats = [c for c in df.columns if df[c].dtype == np.float64]
    df[floats] = df[floats].astype(np.float32)  # half the memory of a 500-ticker x 20-year backtest; ample precision for averages
    return df


def _pinball_sums(model, tickers, r1, ret_q, v, rvol_q) -> list[dict]:
    rows = []
    for t in np.unique(tickers):
        sel = tickers == t
        for target, y, qq in (("ret_h1", r1[sel], ret_q[sel, 0, :]), ("rvol", v[sel], rvol_q[sel])):
            e = y[:, None] - qq
            s = np.maximum(Q * e, (Q - 1) * e).sum(axis=0)
            rows += [{"model": model, "ticker": t, "target": target, "quantile": float(q), "sum": float(x), "n": int(sel.sum())} for q, x in zip(Q, s)]
    return rows


# ---------------------------------------------------------------------------------------------
# fold-level resume: each finished fold is committed to the run folder; a rerun reuses them
# ---------------------------------------------------------------------------------------------
RESUME_FORMAT = 1
# BacktestConfig fields that cannot change a fold's result (rescoring is separate: --variance-rule/--rescore)
NOT_IN_FINGERPRINT = frozenset({"name", "runs_dir", "track", "threads", "rescore", "variance_rule", "ensemble_variance", "quick", "resume", "device"})

# fields added after runs were made, at the value that reproduces the behaviour before them: left out of the
# fingerprint at that value, so an earlier run's folder still resumes (and keeps its default name)
ADDED_LATER = {"select_on": "pinball"}
_UNSET = object()


class ResumeMismatchError(UserInputError, ValueError):
    """A run folder's finished folds were computed with other settings or data than the rerun's."""


def _frame_sha256(df: pd.DataFrame) -> str:
    h = hashlib.sha256(json.dumps([list(map(str, df.columns)), [str(t) for t in df.dtypes]]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def backtest_fingerprint(panel: pd.DataFrame, feat: pd.DataFrame, cfg) -> dict:
    """Everything that decides a fold's result, one key per item (a mismatch names the key): every
    config field except run-level ones (:data:`NOT_IN_FINGERPRINT`), hashes of the price panel and of
    the model's features, the tickers and the fold cutoffs, and the store's format version."""
    conf = {k: v for k, v in asdict(cfg).items() if k not in NOT_IN_FINGERPRINT and ADDED_LATER.get(k, _UNSET) != v}
    dates = np.sort(feat.loc[~feat["is_future"], "date"].unique())
    cuts = fold_cutoffs(dates, cfg.folds, cfg.test_days, cfg.horizon)
    return json.loads(json.dumps({"format": RESUME_FORMAT, **conf, "tickers": sorted(map(str, feat["ticker"].unique())),
                                  "panel_sha256": _frame_sha256(panel), "features_sha256": _frame_sha256(feat),
                                  "fold_cutoffs": [[str(c.date()), str(e.date())] for c, e in cuts]}, default=json_default))


def fingerprint_id(fp: dict) -> str:
    """12 hex digits of a fingerprint (the default run name of a backtest: the identical command resumes)."""
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]


class FoldStore:
    """The committed folds of one backtest run, in ``<run>/folds/``::

        fingerprint.json            what decides every fold's result (backtest_fingerprint)
        fold-000/losses.parquet     the fold's per-forecast losses, pinball.parquet, predictions.parquet, info.json
        fold-000/done.json          commit marker, written last (atomically): a fold counts only with it
        fold-000/state/             the state after the fold, what the next fold starts from: members'
                                    weights, Adam state and RNGs (core.checkpoint, loaded weights-only), the baselines' warm
                                    starts (JSON), the fold's forecaster (model/); kept for the newest
                                    committed fold only (removed once the next fold's marker is written)

    Every file is written to a temporary name and renamed (``core.io``); nothing is unpickled. :meth:`open`
    refuses a folder whose fingerprint differs from the rerun's in one line naming the field."""

    def __init__(self, folder: str | Path, fingerprint: dict):
        self.dir, self.fingerprint = Path(folder), fingerprint

    def open(self) -> int:
        """Check or write the fingerprint; returns n: folds 0..n-1 are committed and their state is there."""
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_temp_files(self.dir)  # half-written files of a killed run: never read
        fp_file = self.dir / "fingerprint.json"
        if fp_file.is_file():
            old = json.loads(fp_file.read_text())
            diff = [k for k in sorted(set(old) | set(self.fingerprint)) if old.get(k) != self.fingerprint.get(k)]
            if diff:
                k = diff[0]
                was, now = (json.dumps(d.get(k), default=str) for d in (old, self.fingerprint))
                more = f" (and {len(diff) - 1} more: {', '.join(diff[1:4])})" if len(diff) > 1 else ""
                raise ResumeMismatchError(f"{self.dir.parent}: its finished folds were computed with {k} = {was[:80]}, this run has {now[:80]}{more}; "
                                          "refusing to mix them — rerun with the same settings and data, or choose another --name")
        else:
            atomic_write_json(fp_file, self.fingerprint)
        n = 0
        while (self._fold(n) / "done.json").is_file():
            n += 1
        while n and not (self._fold(n - 1) / "state" / "state.json").is_file():
            n -= 1  # cannot happen through save_fold (state before marker); a hand-edited folder: redo from a fold that has its state
        return n

    def _fold(self, k: int) -> Path:
        return self.dir / f"fold-{k:03d}"

    def save_fold(self, k: int, losses: list[pd.DataFrame], pin_rows: list[dict], preds: list[pd.DataFrame], info: dict,
                  members: list, warm: dict, forecaster: Forecaster) -> None:
        """Commit fold ``k``: its results, then the state after it (the next fold's start), then the marker."""
        d = self._fold(k)
        (d / "done.json").unlink(missing_ok=True)
        atomic_write_parquet(pd.concat(losses, ignore_index=True), d / "losses.parquet", index=False)
        atomic_write_parquet(pd.DataFrame(pin_rows), d / "pinball.parquet", index=False)
        if preds:
            atomic_write_parquet(pd.concat(preds, ignore_index=True), d / "predictions.parquet", index=False)
        atomic_write_text(d / "info.json", json.dumps(info, indent=2, default=json_default))  # key order kept: folds.json as uninterrupted
        self._save_state(d / "state", k, members, warm, forecaster)
        atomic_write_json(d / "done.json", {"fold": k, "models": int(sum(len(f) > 0 for f in losses)), "predictions": bool(preds)})
        if k > 0:
            shutil.rmtree(self._fold(k - 1) / "state", ignore_errors=True)  # fold k's state supersedes it

    def load_fold(self, k: int) -> tuple[pd.DataFrame, list[dict], pd.DataFrame | None, dict]:
        d = self._fold(k)
        preds = read_parquet(d / "predictions.parquet") if (d / "predictions.parquet").is_file() else None
        return (read_parquet(d / "losses.parquet"), read_parquet(d / "pinball.parquet").to_dict("records"), preds,
                json.loads((d / "info.json").read_text()))

    @staticmethod
    def _save_state(st: Path, k: int, members: list, warm: dict, forecaster: Forecaster) -> None:
        (st / "state.json").unlink(missing_ok=True)  # the state is valid only with its state.json (written last)
        for i, m in enumerate(members):  # core's training checkpoint: weights, Adam state and every RNG, loaded weights-only
            save_checkpoint(st / f"member-{i}.pt", model=m.model, optimizer=m.opt, step=k)
        if forecaster is not None:
            forecaster.save(st / "model")
        atomic_write_json(st / "state.json", {"fold": k, "members": len(members),
                                              "warm": {t: {m: np.asarray(v, float).tolist() for m, v in w.items()} for t, w in warm.items()}})

    def restore(self, n: int, members: list, warm: dict) -> Forecaster:
        """Load the state after fold ``n - 1`` into ``members``/``warm``; returns that fold's forecaster."""
        st = self._fold(n - 1) / "state"
        meta = json.loads((st / "state.json").read_text())
        for i, m in enumerate(members):
            load_checkpoint(st / f"member-{i}.pt", model=m.model, optimizer=m.opt, restore_rng=False)
            m.model.eval()
        warm.clear()
        warm.update({t: {m: np.asarray(v, float) for m, v in w.items()} for t, w in meta["warm"].items()})
        forecaster = Forecaster.load(st / "model")  # builds a model, which draws from the generators: before restoring them
        load_checkpoint(st / "member-0.pt", restore_rng=True)  # the RNG states as they were after fold n - 1
        return forecaster

    def clear(self) -> None:
        """Drop the store (the finished run's tables hold everything)."""
        shutil.rmtree(self.dir, ignore_errors=True)


def run_walkforward(panel: pd.DataFrame, feat: pd.DataFrame, cfg, data_name: str = "", on_fold=None, store: FoldStore | None = None) -> WalkForwardResult:
    """Every fold of the walk-forward backtest (settings: a ``BacktestConfig``-like ``cfg``); see
    the module docstring. ``on_fold(k, info)`` is called after each fold (reused ones included).
    ``store``: commit each fold to it and reuse the folds it already holds (:class:`FoldStore`);
    the result equals an uninterrupted run's."""
    unknown = sorted(set(cfg.baselines) - set(BASELINES))
    if unknown:  # before any training, not after the first fold's
        raise PriceDataError(f"unknown baseline(s) {unknown}; choose from {list(BASELINES)}")
    garch_informed = bool(getattr(cfg, "garch_informed", False))
    spec = model_spec(cfg, feat)
    H = spec.horizon
    tickers = sorted(feat["ticker"].unique())
    all_dates = np.sort(feat.loc[~feat["is_future"], "date"].unique())
    cuts = fold_cutoffs(all_dates, cfg.folds, cfg.test_days, H)
    series = _series(feat, panel)
    mret = regimes.market_returns(feat)
    tvol = regimes.trailing_vol(mret, cfg.regime_window)
    members = []
    for s in range(max(1, cfg.seeds)):
        with torch.random.fork_rng():  # distinct initialisations without re-seeding the run's global generator
            torch.manual_seed(cfg.seed * 1000 + s)
            model = create_model("tft", spec=spec, tickers=tickers, learning_rate=cfg.lr)
        members.append(_Member(cfg.seed + s, model, torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=1e-5)))
    counts = feat[~feat["is_future"]].groupby("ticker")["date"]
    used = input_report(feat, spec.observed_reals)
    loss_frames, pin_rows, pred_frames, folds_info = [], [], [], []
    warm: dict[str, dict] = {}  # per ticker: last fold's baseline parameters, the next fit's starting values
    forecaster = None
    reused = store.open() if store is not None else 0
    if store is not None:
        log.info(f"resume: reusing {reused} of {len(cuts)} finished folds from {store.dir}" if reused else f"resume: no finished folds in {store.dir}; computing all {len(cuts)}")
    if reused:
        forecaster = store.restore(reused, members, warm)
    for k, (cut, test_end) in enumerate(progress(cuts, desc="folds")):
        if k < reused:
            lf, pins, pf, info = store.load_fold(k)
            loss_frames.append(lf)
            pin_rows += pins
            if pf is not None and cfg.save_predictions:
                pred_frames.append(pf)
            folds_info.append(info)
            if on_fold is not None:
                on_fold(k, info)
            continue
        n_frames, n_pins, n_preds = len(loss_frames), len(pin_rows), len(pred_frames)
        n_hist = counts.apply(lambda s: int((s <= cut).sum()))
        elig = sorted(n_hist[n_hist >= cfg.fold_min_history].index)
        if not elig:
            raise PriceDataError(f"fold {k}: no ticker has {cfg.fold_min_history} days of history up to {cut:%Y-%m-%d}; lower --fold-min-history")
        fk = feat[feat["ticker"].isin(elig)]
        fitted: dict[str, object] = {}  # per ticker: this fold's GJR-GARCH-t parameters (the gjr_t baseline's own fit, shared)
        if garch_informed:
            for t in elig:
                g = series[t]
                train_end = int(np.searchsorted(g["date"], np.datetime64(cut), side="right")) - 1
                fitted[t] = fold_gjr_params(g["log_ret"], train_end, cfg.baseline_window or None, warm.setdefault(t, {}))
        scaler = fit_scaler(fk, cut, spec, gjr=fitted)  # the one construction train and transfer use (training.fit_scaler)
        z = scaler.transform(fk)
        forecaster = Forecaster(members[0].model, spec, scaler, tickers, {"fold": k, "cutoff": str(cut.date()), "data": data_name,
                                                                          "ensemble_member": 0, "ensemble_size": len(members),
                                                                          "garch_informed": garch_informed, **used})
        T = forecaster.tensors(z)
        ci = int(np.searchsorted(all_dates, np.datetime64(cut), side="right")) - 1
        vcut = pd.Timestamp(all_dates[max(ci - cfg.val_days, 0)])
        all_o = T.origins()
        train_o = all_o[T.targets_by(all_o, vcut)]
        val_o = all_o[T.targets_by(all_o, cut) & ~T.targets_by(all_o, vcut)]
        _, test_o = fold_windows(T, cut, test_end)
        if len(train_o) == 0:
            raise PriceDataError(f"fold {k}: no training window ends before {vcut:%Y-%m-%d}")
        tick, dates = T.tickers[test_o], T.dates[test_o]
        thr = regimes.stress_threshold(tvol, cut, cfg.stress_quantile)
        regime = regimes.label(tvol, dates, thr)
        fold_regime = str(regimes.label(tvol, [cut], thr)[0])
        epochs = cfg.epochs if k == 0 else cfg.refit_epochs
        chosen, member_q = [], []
        if k == 0 and garch_informed:
            for m in members:
                init_output_bias(m.model, T, train_o, m.seed)
        member_var = []  # the variance heads' E[rv²] of the scored horizon (--variance-head), one (n,) per member
        for m in members:
            chosen.append(_train_member(m, T, train_o, val_o, epochs, cfg, k, can_skip=k > 0))
            raw = forecaster.to_raw(tick, predict_quantiles(m.model, T, test_o, with_variance=True))
            member_q.append((raw["ret"], raw["rvol"][:, H - 1, :]))
            if "rvol_var" in raw:
                member_var.append(raw["rvol_var"][:, H - 1])
        models: dict[str, tuple[np.ndarray, np.ndarray]] = {
            "tft": (np.sort(np.mean([a for a, _ in member_q], axis=0), axis=-1), np.sort(np.mean([b for _, b in member_q], axis=0), axis=-1))}
        head_var: dict[str, np.ndarray] = {}
        if member_var:  # the ensemble's: the geometric mean of its members' (as --ensemble-variance members_geo)
            head_var["tft"] = np.exp(np.mean(np.log(np.maximum(member_var, 1e-12)), axis=0))
        if len(members) > 1:
            models.update({f"tft_seed{m.seed}": q for m, q in zip(members, member_q)})
            head_var.update({f"tft_seed{m.seed}": v for m, v in zip(members, member_var)})
        for name in cfg.baselines:
            models[name] = (np.empty_like(models["tft"][0]), np.empty_like(models["tft"][1]))
        for t in np.unique(tick):
            sel = np.flatnonzero(tick == t)
            g = series[t]
            loc = np.searchsorted(g["date"], dates[sel])
            train_end = int(np.searchsorted(g["date"], np.datetime64(cut), side="right")) - 1
            fc = baseline_forecasts(g["log_ret"], g["rvol5"], train_end, loc, H, QUANTILES, models=tuple(cfg.baselines), rv_proxy=g.get("rv_proxy"),
                                    fit_window=cfg.baseline_window or None, warm=warm.setdefault(t, {}),
                                    fitted={"gjr_t": fitted[t]} if t in fitted else None)
            for name, (rq, vq) in fc.items():
                models[name][0][sel], models[name][1][sel] = rq, vq
        real = _realised(series, tick, dates, H)
        for name, (rq, vq) in models.items():
            lf = forecast_losses(name, k, tick, dates, rq, vq, real, regime, var_head=head_var.get(name))
            loss_frames.append(lf)
            if not name.startswith("tft_seed"):
                pin_rows += _pinball_sums(name, tick, lf["ret1"].to_numpy(), rq, lf["rvol"].to_numpy(), vq)
                if cfg.save_predictions:
                    pf = forecast_rows(name, k, tick, dates, rq.astype(np.float32), vq.astype(np.float32), real[0], real[1], H)
                    pred_frames.append(pf)
        info = {"fold": k, "cutoff": str(cut.date()), "test_end": str(test_end.date()), "tickers": len(elig),
                "test_tickers": int(len(np.unique(tick))), "train_windows": int(len(train_o)), "val_windows": int(len(val_o)),
                "test_origins": int(len(test_o)), "regime": fold_regime, "stress_threshold": thr,
                "stress_share": float(np.mean(regime == regimes.STRESS)) if len(regime) else float("nan"),
                "chosen_epochs": [c["epoch"] for c in chosen], "val_pinball": [c["val_pinball"] for c in chosen],
                "without_test_days": sorted(set(elig) - set(np.unique(tick)))}
        if store is not None:
            info = json.loads(json.dumps(info, default=json_default))  # as a reused fold reads it back
        folds_info.append(info)
        if store is not None:
            store.save_fold(k, loss_frames[n_frames:], pin_rows[n_pins:], pred_frames[n_preds:], info, members, warm, forecaster)
        log.info(f"fold {k + 1}/{len(cuts)} cutoff {info['cutoff']} ({fold_regime}, {info['stress_share']:.0%} stress origins): "
                 f"{info['test_origins']} test origins, epochs chosen {info['chosen_epochs']}")
        if on_fold is not None:
            on_fold(k, info)
    losses = pd.concat(loss_frames, ignore_index=True)
    for c in ("model", "ticker", "regime"):
        losses[c] = losses[c].astype("category")
    preds = None
    if pred_frames:
        preds = pd.concat(pred_frames, ignore_index=True)
        for c in ("model", "ticker", "target"):
            preds[c] = preds[c].astype("category")
    inputs = {"tickers": tickers, **used, "model_reals": list(members[0].model.hparams.x_reals),
              "har_range_variance_tickers": sorted(t for t, g in series.items() if "rv_proxy" in g and np.isfinite(g["rv_proxy"]).any())}
    return WalkForwardResult(losses, pd.DataFrame(pin_rows), folds_info, preds, forecaster, inputs)


# ---------------------------------------------------------------------------------------------
# summaries
# ---------------------------------------------------------------------------------------------
def _var_tests(g: pd.DataFrame) -> dict:
    row = {}
    for level, col, p in (("var99", "breach99", 0.01), ("var95", "breach95", 0.05)):
        vb = var_backtest(g["ret1"].to_numpy(), g[level].to_numpy(), p)
        row.update({f"{level}_{k}": v for k, v in vb.items() if k != "n"})
    return row


def _means(g: pd.DataFrame) -> dict:
    return {"n_origins": len(g), **{c: float(g[c].mean()) for c in LOSS_COLUMNS}}


def _rename_cov(df: pd.DataFrame) -> pd.DataFrame:
    return df.rename(columns={"vol_se": "vol_mse", "ret_in90": "ret_cov90", "ret_in98": "ret_cov98", "vol_in90": "vol_cov90", "vol_in98": "vol_cov98"})


def _date_mean(losses: pd.DataFrame, model: str, col: str) -> pd.Series:
    g = losses[losses["model"] == model]
    return g.groupby("origin", observed=True)[col].mean()


def add_calibrated_qlike(res: WalkForwardResult, horizon: int, rule: str = DEFAULT_RULE, ensemble: str = DEFAULT_ENSEMBLE_VARIANCE) -> None:
    """Add ``rvol_var_cal`` (each model's variance forecast under ``rule``, recalibrated on its own
    earlier forecasts known at each cutoff: :func:`domains.finance.variance.recalibrated_variance`;
    ``ensemble`` ``members_geo``: the ``tft`` ensemble's is the geometric mean of its members')
    and ``vol_qlike_cal`` (QLIKE of it) to ``res.losses``; NaN for rows without quantiles."""
    L = res.losses
    var = recalibrated_variance(L, res.folds, horizon, QUANTILES, rule) if set(rvol_quantile_columns(QUANTILES)) <= set(L.columns) else np.full(len(L), np.nan)
    if ensemble == "members_geo":
        var = ensemble_variance(L, var)
    L["rvol_var_cal"] = var.astype(np.float32)
    L["vol_qlike_cal"] = qlike_rows(L["rvol"].to_numpy(float), np.sqrt(var)).astype(np.float32)
    res.inputs["variance_rule"] = rule
    res.inputs["ensemble_variance"] = ensemble


def summarise(res: WalkForwardResult, horizon: int, variance_rule: str = DEFAULT_RULE,
              ensemble_variance: str = DEFAULT_ENSEMBLE_VARIANCE) -> dict[str, pd.DataFrame | dict]:
    """Every table of a walk-forward result (see the module docstring); ``variance_rule``: the
    variance point forecast scored by ``vol_qlike_cal`` (:mod:`domains.finance.variance`);
    ``ensemble_variance``: how the ensemble's is formed."""
    add_calibrated_qlike(res, horizon, variance_rule, ensemble_variance)
    L = res.losses
    main = L[~L["model"].astype(str).str.startswith("tft_seed")]
    by_ticker = []
    for (m, t), g in main.groupby(["model", "ticker"], observed=True, sort=True):
        g = g.sort_values("origin")
        row = {"model": m, "ticker": t, **_means(g), "vol_rmse": float(np.sqrt(g["vol_se"].mean()))}
        row.update(_var_tests(g))
        by_ticker.append(row)
    by_ticker = _rename_cov(pd.DataFrame(by_ticker))
    num = [c for c in by_ticker.columns if c not in ("model", "ticker") and by_ticker[c].dtype != object]
    agg = by_ticker.groupby("model")[num].mean().reset_index()
    agg = agg.rename(columns={f"{lv}_{k}": f"{lv}_{k}_rate" for lv in ("var99", "var95") for k in ("kupiec_pass", "christoffersen_pass")})
    agg["n_tickers"] = by_ticker.groupby("model").size().to_numpy()
    # per ticker-fold VaR tests, pooled tests, ES backtests, cumulative VaR
    tf_rows, pooled = [], []
    for (m, t, k), g in L.groupby(["model", "ticker", "fold"], observed=True, sort=True):
        g = g.sort_values("origin")
        row = {"model": m, "ticker": t, "fold": k, "n": len(g)}
        row.update(_var_tests(g))
        row["var99_both_pass"] = bool(row["var99_kupiec_pass"] and row["var99_christoffersen_pass"])
        row["counts99"] = transition_counts(g["breach99"].to_numpy())
        row["es_z2"] = acerbi_szekely_z2(g["ret1"], _alpha_q(g), g["es975"], ES_ALPHA)
        tf_rows.append(row)
    tf = pd.DataFrame(tf_rows)
    for m, g in L.groupby("model", observed=True, sort=True):
        t = tf[tf["model"] == m]
        c = np.sum(np.stack(t["counts99"].to_numpy()), axis=0)
        br, n = int(g["breach99"].sum()), len(g)
        ch = christoffersen_from_counts(*c, 0.01, breaches=br, n=n)
        _, kp = kupiec_pof(np.arange(n) < br, 0.01)
        z2 = acerbi_szekely_z2(g["ret1"], _alpha_q(g), g["es975"], ES_ALPHA)
        mf = mcneil_frey(g["ret1"].to_numpy(), _alpha_q(g), g["es975"].to_numpy())
        row = {"model": str(m), "n": n, "var99_breach_rate": br / n, "var99_pooled_kupiec_p": kp, "var99_pooled_christoffersen_p_cc": ch["p_cc"],
               "var99_pooled_christoffersen_p_ind": ch["p_ind"], "var99_tickerfold_kupiec_pass_rate": float(t["var99_kupiec_pass"].mean()),
               "var99_tickerfold_christoffersen_pass_rate": float(t["var99_christoffersen_pass"].mean()),
               "var99_tickerfold_both_pass_rate": float(t["var99_both_pass"].mean()),
               "var95_breach_rate": float(g["breach95"].mean()), "var95_tickerfold_kupiec_pass_rate": float(t["var95_kupiec_pass"].mean()),
               "es975_z2": z2, "es975_z2_pass": bool(z2 > AS_Z2_CRITICAL_5PCT), "es975_tickerfold_z2_pass_rate": float((t["es_z2"] > AS_Z2_CRITICAL_5PCT).mean()),
               "es975_mcneil_frey_p": mf["p"], "es975_exceedances": mf["n_exceed"]}
        for kd in CUM_DAYS:  # non-overlapping origins: every kd-th forecast of each ticker-fold
            sub = g.sort_values(["ticker", "origin"])
            sub = sub[(sub.groupby(["ticker", "fold"], observed=True).cumcount() % kd == 0) & sub[f"cum{kd}"].notna()]
            b = (sub[f"cum{kd}"] < sub[f"cum{kd}_var99"]).to_numpy()
            row[f"cum{kd}_var99_n"] = len(b)
            row[f"cum{kd}_var99_breach_rate"] = float(b.mean()) if len(b) else float("nan")
            row[f"cum{kd}_var99_kupiec_p"] = kupiec_pof(b, 0.01)[1]
        pooled.append(row)
    pooled = pd.DataFrame(pooled)
    tf = tf.drop(columns=["counts99"])
    by_fold = L.groupby(["model", "fold"], observed=True).agg(**{c: (c, "mean") for c in LOSS_COLUMNS}, n_origins=("vol_pinball", "size"),
                                                                  stress_share=("regime", lambda s: float((s == regimes.STRESS).mean()))).reset_index()
    fold_meta = pd.DataFrame(res.folds)[["fold", "cutoff", "test_end", "regime"]]
    by_fold = _rename_cov(by_fold.merge(fold_meta, on="fold"))
    by_regime = _rename_cov(L.groupby(["model", "regime"], observed=True).agg(**{c: (c, "mean") for c in LOSS_COLUMNS}, n_origins=("vol_pinball", "size"),
                                                                                 var99_breach_rate=("breach99", "mean")).reset_index())
    dm = dm_table(main, horizon)
    seeds = seed_table(L)
    ps = res.pinball_sums.groupby(["model", "target", "quantile"])[["sum", "n"]].sum().reset_index()
    ps["pinball"] = ps["sum"] / ps["n"]
    vb = main[["model", "ticker", "origin", "ret1", "var99", "var95", "breach99", "breach95"]].rename(columns={"origin": "date", "ret1": "ret"})
    out = {"by_ticker": by_ticker, "aggregate": agg, "ticker_fold": tf, "pooled": pooled, "by_fold": by_fold, "by_regime": by_regime,
           "dm": dm, "seeds": seeds, "pinball_by_quantile": ps[["model", "target", "quantile", "pinball"]], "var_breaches": vb}
    out["verdict"] = verdict(out, L)
    return out


def _alpha_q(g: pd.DataFrame) -> np.ndarray:
    """The 2.5% return quantile, interpolated between the 1% and 5% ones (as in es_from_quantiles)."""
    return (g["var99"] + (g["var95"] - g["var99"]) * (ES_ALPHA - 0.01) / 0.04).to_numpy()


def dm_table(losses: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Diebold–Mariano tests of ``tft`` against every other model, on the per-date cross-sectional
    mean of vol pinball and of QLIKE (HAC lags >= horizon: the 5-day targets overlap), overall and
    per regime."""
    rows = []
    models = [m for m in losses["model"].astype(str).unique() if m != "tft"]
    if "tft" not in set(losses["model"].astype(str)):
        return pd.DataFrame()
    for regime in ("all", regimes.CALM, regimes.STRESS):
        sub = losses if regime == "all" else losses[losses["regime"] == regime]
        if sub.empty:
            continue
        for col, bcol in (("vol_pinball", "vol_pinball"), ("vol_qlike", "vol_qlike"), ("vol_qlike_mean", "vol_qlike_mean"), ("vol_qlike_cal", "vol_qlike_cal"),
                          ("vol_qlike_cal", "vol_qlike_mean"), ("ret_pinball_h1", "ret_pinball_h1")):
            if col not in sub.columns or bcol not in sub.columns or sub[col].isna().all():
                continue
            a = _date_mean(sub, "tft", col)
            for m in sorted(models):
                b = _date_mean(sub, m, bcol)
                a2, b2 = a.align(b, join="inner")
                n = len(a2)
                lags = max(horizon, int(np.floor(4 * (max(n, 1) / 100) ** (2 / 9))))
                r = diebold_mariano(a2.to_numpy(), b2.to_numpy(), lags=lags)
                rows.append({"regime": regime, "loss": col if bcol == col else f"{col}_vs_{bcol.removeprefix('vol_qlike_')}", "baseline": m, "tft_mean": float(a2.mean()) if n else float("nan"),
                             "baseline_mean": float(b2.mean()) if n else float("nan"),
                             "rel_diff": float(a2.mean() / b2.mean() - 1) if n else float("nan"), "dm_stat": r["dm"],
                             "p_two_sided": r["p_two_sided"], "p_tft_better": r["p_a_better"], "dates": n, "hac_lags": lags})
    return pd.DataFrame(rows)


def seed_table(losses: pd.DataFrame) -> pd.DataFrame:
    """Each ensemble member's vol pinball, QLIKE, 1-day return pinball and 99% VaR breach rate,
    plus the ensemble, with mean ± sd over the members."""
    mem = [m for m in losses["model"].astype(str).unique() if m.startswith("tft_seed")]
    rows = []
    for m in sorted(mem) + ["tft"]:
        g = losses[losses["model"] == m]
        if g.empty:
            continue
        rows.append({"model": m, "vol_pinball": float(g["vol_pinball"].mean()), "vol_qlike": float(g["vol_qlike"].mean()),
                     "vol_qlike_mean": float(g["vol_qlike_mean"].mean()) if "vol_qlike_mean" in g else float("nan"),
                     "vol_qlike_cal": float(g["vol_qlike_cal"].mean()) if "vol_qlike_cal" in g else float("nan"), "ret_pinball_h1": float(g["ret_pinball_h1"].mean()), "var99_breach_rate": float(g["breach99"].mean())})
    df = pd.DataFrame(rows)
    if len(mem) > 1:
        s = df[df["model"].isin(mem)]
        df = pd.concat([df, pd.DataFrame([{"model": "members_mean", **s.drop(columns="model").mean().to_dict()},
                                          {"model": "members_sd", **s.drop(columns="model").std(ddof=1).to_dict()}])], ignore_index=True)
    return df


def verdict(out: dict, losses: pd.DataFrame) -> dict:
    """Issue 15's targets over all folds: TFT beats the best classical baseline on vol pinball and on
    QLIKE with DM p < 0.05 (two-sided, TFT lower); on stress forecasts it is at most 5% above the best
    baseline (both losses); its 99% VaR passes Kupiec and Christoffersen on >= 80% of ticker-folds.
    Also the older keys (aggregate vol pinball, per-ticker Kupiec pass rate). QLIKE is judged twice:
    ``vol_qlike_*`` on each model's median (as first reported; ``all_targets_met`` uses it) and
    ``vol_qlike_mean_*`` on sqrt(E[rv²]) from its quantiles (``all_targets_met_qlike_mean``), the
    functional QLIKE is consistent for — a definition added after the median result was seen."""
    agg = out["aggregate"].set_index("model")
    dm = out["dm"]
    base_models = [m for m in agg.index if m != "tft"]
    v: dict = {}
    if "tft" not in agg.index or not base_models:
        return v
    base = agg.loc[base_models]
    best = str(base["vol_pinball"].idxmin())
    v.update({"best_baseline_vol": best, "best_baseline_vol_pinball": float(base["vol_pinball"].min()),
              "tft_vol_pinball": float(agg.loc["tft", "vol_pinball"]),
              "tft_beats_best_baseline_vol": bool(agg.loc["tft", "vol_pinball"] < base["vol_pinball"].min()),
              "tft_var99_kupiec_pass_rate": float(agg.loc["tft", "var99_kupiec_pass_rate"]),
              "tft_var99_target_met": bool(agg.loc["tft", "var99_kupiec_pass_rate"] >= 0.8)})
    for loss in ("vol_pinball", "vol_qlike", "vol_qlike_mean", "vol_qlike_cal", "vol_qlike_cal_vs_mean"):
        if not (dm["loss"] == loss).any():
            continue
        d = dm[(dm["regime"] == "all") & (dm["loss"] == loss)].set_index("baseline").loc[base_models]
        b = str(d["baseline_mean"].idxmin())
        r = d.loc[b]
        v[f"{loss}_best_baseline"] = b
        v[f"{loss}_tft_vs_best_rel"] = float(r["rel_diff"])
        v[f"{loss}_dm_p"] = float(r["p_two_sided"])
        v[f"{loss}_target_met"] = bool(r["rel_diff"] < 0 and r["p_two_sided"] < 0.05)
        ds = dm[(dm["regime"] == regimes.STRESS) & (dm["loss"] == loss)]
        if len(ds):
            ds = ds.set_index("baseline").loc[base_models]
            bs = str(ds["baseline_mean"].idxmin())
            v[f"stress_{loss}_best_baseline"] = bs
            v[f"stress_{loss}_tft_vs_best_rel"] = float(ds.loc[bs, "rel_diff"])
            v[f"stress_{loss}_target_met"] = bool(ds.loc[bs, "rel_diff"] <= 0.05)
    p = out["pooled"].set_index("model")
    v["tft_var99_tickerfold_both_pass_rate"] = float(p.loc["tft", "var99_tickerfold_both_pass_rate"])
    v["tft_var99_tickerfold_target_met"] = bool(v["tft_var99_tickerfold_both_pass_rate"] >= 0.8)
    v["all_targets_met"] = bool(v.get("vol_pinball_target_met") and v.get("vol_qlike_target_met") and v.get("stress_vol_pinball_target_met", True)
                                and v.get("stress_vol_qlike_target_met", True) and v["tft_var99_tickerfold_target_met"])
    if "vol_qlike_cal_target_met" in v and "vol_qlike_cal_vs_mean_target_met" in v:
        # QLIKE of the recalibrated variance forecasts (res.inputs["variance_rule"]): the TFT's beats the best baseline's, both
        # recalibrated the same way and as the baselines forecast it (raw E[rv²]) — the harder of the two
        v["all_targets_met_qlike_cal"] = bool(v.get("vol_pinball_target_met") and v["vol_qlike_cal_target_met"] and v["vol_qlike_cal_vs_mean_target_met"]
                                              and v.get("stress_vol_pinball_target_met", True) and v.get("stress_vol_qlike_cal_target_met", True)
                                              and v.get("stress_vol_qlike_cal_vs_mean_target_met", True) and v["tft_var99_tickerfold_target_met"])
    if "vol_qlike_mean_target_met" in v:  # the same targets with QLIKE on sqrt(E[rv²]) (added after the median result was seen)
        v["all_targets_met_qlike_mean"] = bool(v.get("vol_pinball_target_met") and v["vol_qlike_mean_target_met"]
                                               and v.get("stress_vol_pinball_target_met", True) and v.get("stress_vol_qlike_mean_target_met", True)
                                               and v["tft_var99_tickerfold_target_met"])
    return v




def rescore(run_dir) -> WalkForwardResult:
    """A saved backtest run's result with ``vol_qlike_mean`` (QLIKE on sqrt(E[rv²]), :func:`rms_vol`)
    and the realised-vol quantile columns (for ``vol_qlike_cal``, added by :func:`summarise`)
    recomputed from its ``predictions.parquet`` — no retraining. Every other loss is the run's own
    ``losses.parquet``; ensemble members (``tft_seed*``) are not in the predictions: their realised-vol quantiles are
    the ones the run wrote into its losses (NaN for runs older than those columns).
    The per-quantile pinball sums are rebuilt from the same predictions. Feed it to :func:`summarise`."""
    import json
    from pathlib import Path

    run_dir = Path(run_dir)
    need = [run_dir / n for n in ("losses.parquet", "predictions.parquet", "folds.json")]
    missing = [p.name for p in need if not p.is_file()]
    if missing:
        raise PriceDataError(f"{run_dir}: cannot rescore without {', '.join(missing)} (run the backtest with --save-predictions)")
    L = pd.read_parquet(need[0])
    qcols = [f"q_{q:g}" for q in QUANTILES]
    P = pd.read_parquet(need[1], columns=["model", "ticker", "origin", "horizon", "target", "y", *qcols])
    for c in ("model", "ticker", "target"):
        P[c] = P[c].astype(str)
    v = P[P["target"] == "rvol"]
    if v.duplicated(["model", "ticker", "origin"]).any():
        v = v[v["horizon"] == v["horizon"].max()]
    rvq = rvol_quantile_columns(QUANTILES)
    new = pd.DataFrame({"model": v["model"].to_numpy(), "ticker": v["ticker"].to_numpy(), "origin": v["origin"].to_numpy(),
                        "rvol_rms_new": rms_vol(v[qcols].to_numpy(float)).astype(np.float32),
                        **dict(zip(rvq, v[qcols].to_numpy(np.float32).T))})
    saved_rvq = {c: L[c].to_numpy() for c in rvq if c in L.columns}  # the members' own, written by the run (not in predictions)
    L = L.drop(columns=[c for c in ("vol_qlike_mean", "rvol_rms", "rvol_var_cal", "vol_qlike_cal", *rvq) if c in L.columns])
    cats = {c: L[c].dtype for c in ("model", "ticker")}
    key = L[["model", "ticker", "origin"]].astype({"model": str, "ticker": str})
    m = key.merge(new, on=["model", "ticker", "origin"], how="left", validate="many_to_one")
    L["rvol_rms"] = m["rvol_rms_new"].to_numpy()
    for c in rvq:  # the realised-vol quantiles, for the variance recalibration; ensemble members' from the run's losses
        col = m[c].to_numpy()
        L[c] = np.where(np.isnan(col), saved_rvq[c], col) if c in saved_rvq else col
    L["vol_qlike_mean"] = qlike_rows(L["rvol"].to_numpy(float), L["rvol_rms"].to_numpy(float)).astype(np.float32)
    main = ~L["model"].astype(str).str.startswith("tft_seed")
    if L.loc[main, "rvol_rms"].isna().any():
        raise PriceDataError(f"{run_dir}: predictions.parquet lacks the realised-vol quantiles of {int(L.loc[main, 'rvol_rms'].isna().sum())} forecasts")
    L = L.astype(cats)
    rows = []
    for target, sub in (("ret_h1", P[(P["target"] == "ret") & (P["horizon"] == 1)]), ("rvol", v)):
        e = sub["y"].to_numpy(float)[:, None] - sub[qcols].to_numpy(float)
        loss = np.maximum(Q * e, (Q - 1) * e)
        g = pd.DataFrame(loss, columns=list(Q)).groupby([sub["model"].to_numpy(), sub["ticker"].to_numpy()]).agg(["sum"])
        n = sub.groupby(["model", "ticker"]).size()
        for (mod, tic), r in g.iterrows():
            rows += [{"model": mod, "ticker": tic, "target": target, "quantile": float(q), "sum": float(r[(q, "sum")]), "n": int(n[(mod, tic)])} for q in Q]
    folds = json.loads(need[2].read_text())
    inputs = json.loads((run_dir / "inputs.json").read_text()) if (run_dir / "inputs.json").is_file() else {}
    return WalkForwardResult(L, pd.DataFrame(rows), folds, None, None, inputs)


# ---------------------------------------------------------------------------------------------
# files and plots of a backtest run
# ---------------------------------------------------------------------------------------------
def write_report(out: dict, res: WalkForwardResult, run_dir, focus: str | None = None) -> list:
    """Write every table (CSV/Parquet/JSON), ``summary.md`` and the plots into ``run_dir``."""
    import json
    from pathlib import Path

    from core.bench import markdown_table
    from core.io import atomic_write_parquet, atomic_write_text

    run_dir = Path(run_dir)
    atomic_write_parquet(res.losses, run_dir / "losses.parquet", index=False)  # every table below is computed from this
    for key, name in (("by_ticker", "metrics_by_ticker.csv"), ("aggregate", "metrics_aggregate.csv"), ("pinball_by_quantile", "pinball_by_quantile.csv"),
                      ("by_fold", "metrics_by_fold.csv"), ("by_regime", "metrics_by_regime.csv"), ("ticker_fold", "var_tests_by_ticker_fold.csv"),
                      ("pooled", "risk_tests_pooled.csv"), ("dm", "diebold_mariano.csv"), ("seeds", "metrics_by_seed.csv")):
        atomic_write_text(run_dir / name, out[key].to_csv(index=False))
    atomic_write_parquet(out["var_breaches"], run_dir / "var_breaches.parquet", index=False)
    if res.predictions is not None:
        atomic_write_parquet(res.predictions, run_dir / "predictions.parquet", index=False)
    atomic_write_text(run_dir / "folds.json", json.dumps(res.folds, indent=2, default=str))
    atomic_write_text(run_dir / "inputs.json", json.dumps(res.inputs, indent=2))

    def md(df, cols=None, digits=4):
        d = df[cols] if cols else df
        return markdown_table([{k: (f"{v:.{digits}g}" if isinstance(v, float) else v) for k, v in r.items()} for r in d.to_dict("records")])

    agg_cols = ["model", "vol_pinball", "vol_qlike", "vol_qlike_mean", "vol_qlike_cal", "ret_pinball_h1", "vol_rmse", "ret_cov90", "vol_cov90", "var99_breach_rate", "var99_kupiec_pass_rate",
                "var99_christoffersen_pass_rate"]
    pooled_cols = ["model", "var99_breach_rate", "var99_tickerfold_both_pass_rate", "var99_pooled_kupiec_p", "var99_pooled_christoffersen_p_cc",
                   "es975_z2", "es975_mcneil_frey_p", "cum5_var99_breach_rate", "cum10_var99_breach_rate", "cum10_var99_kupiec_p"]
    dm = out["dm"]
    text = [f"# Walk-forward backtest: {len(res.folds)} folds, {res.folds[0]['cutoff']} .. {res.folds[-1]['test_end']}", "",
            "## Aggregate (mean over tickers)", md(out["aggregate"], agg_cols), "",
            "## Risk tests (pooled over ticker-folds)", md(out["pooled"], pooled_cols), "",
            "## Diebold–Mariano: TFT vs each model (negative rel_diff: TFT lower loss)",
            md(dm[dm["loss"] != "ret_pinball_h1"], ["regime", "loss", "baseline", "tft_mean", "baseline_mean", "rel_diff", "dm_stat", "p_two_sided"]), "",
            "## By regime", md(out["by_regime"], ["model", "regime", "n_origins", "vol_pinball", "vol_qlike", "vol_qlike_mean", "vol_qlike_cal", "ret_pinball_h1", "var99_breach_rate"]), "",
            "## Seeds (ensemble members and the ensemble)", md(out["seeds"]), "",
            "## Verdict", *[f"- {k}: {v}" for k, v in out["verdict"].items()], ""]
    atomic_write_text(run_dir / "summary.md", "\n".join(text))
    return save_plots(out, res, run_dir, focus)


def file_part(name: str) -> str:
    """``name`` (a ticker from a user's file: it may hold ``/``, ``..``, spaces) as one safe piece of a
    file name inside the run folder: characters other than letters, digits, ``.``, ``-``, ``_`` become
    ``_``, leading dots are dropped, and it is cut to 100 characters (a file name has at most 255 bytes)."""
    return re.sub(r"[^\w.-]", "_", str(name), flags=re.ASCII).lstrip(".")[:100] or "_"


def save_plots(out: dict, res: WalkForwardResult, run_dir, focus: str | None = None) -> list:
    from domains.finance.plots import pyplot, save_png

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

    bf = out["by_fold"]
    fig, ax = plt.subplots(figsize=(12, 3.8))
    for m, g in bf.groupby("model"):
        g = g.sort_values("fold")
        ax.plot(pd.to_datetime(g["test_end"]), g["vol_pinball"], marker="o" if m == "tft" else None, lw=2 if m == "tft" else 0.8,
                color="C3" if m == "tft" else None, label=m)
    for _, r in bf[bf["model"] == "tft"].iterrows():
        if r["regime"] == regimes.STRESS:
            ax.axvspan(pd.Timestamp(r["cutoff"]), pd.Timestamp(r["test_end"]), color="0.85", zorder=0)
    ax.set_yscale("log")
    ax.set_title("vol pinball per fold (grey: folds that start in the stress regime)")
    ax.legend(fontsize=7, ncol=4)
    save(fig, "metrics_by_fold.png")

    vb = out["var_breaches"]
    tickers = sorted(vb["ticker"].astype(str).unique())
    focus = focus if focus in tickers else ("SP500" if "SP500" in tickers else tickers[0])
    fig, ax = plt.subplots(figsize=(11, 3.8))
    base = vb[(vb["ticker"] == focus) & (vb["model"] == "tft")].sort_values("date")
    ax.plot(base["date"], base["ret"], color="0.5", lw=0.8, label="realised return")
    for m, color in (("tft", "C3"), ("gjr_t", "C0"), ("historical", "C2")):
        g = vb[(vb["ticker"] == focus) & (vb["model"] == m)].sort_values("date")
        if len(g):
            ax.plot(g["date"], g["var99"], color=color, lw=1.0, label=f"{m} 99% VaR ({int(g['breach99'].sum())} breaches)")
            ax.scatter(g.loc[g["breach99"], "date"], g.loc[g["breach99"], "ret"], color=color, marker="x", zorder=3)
    ax.set_title(f"{focus}: 1-day 99% VaR and breaches (walk-forward test blocks)")
    ax.legend(fontsize=8)
    save(fig, f"var_breaches_{file_part(focus)}.png")

    L = res.losses
    fig, ax = plt.subplots(figsize=(11, 3.8))
    for m, color in (("tft", "C3"), ("gjr_t", "C0")):
        g = L[(L["ticker"] == focus) & (L["model"] == m)].sort_values("origin")
        if len(g):
            ax.plot(g["origin"], g["rvol_median"], color=color, lw=1, label=f"{m} median")
    g = L[(L["ticker"] == focus) & (L["model"] == "tft")].sort_values("origin")
    ax.plot(g["origin"], g["rvol"], color="k", lw=0.6, label="realised 5-day vol")
    ax.set_yscale("log")
    ax.set_title(f"{focus}: forecast of next-week realised volatility (by origin)")
    ax.legend(fontsize=8)
    save(fig, f"vol_forecast_{file_part(focus)}.png")
    return paths
