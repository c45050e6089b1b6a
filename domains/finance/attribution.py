"""Per-forecast attribution of one date's VaR: which inputs and which past days drove it (issue 17.3).

    from domains.finance.attribution import var_attribution
    a = var_attribution(fc, feat, "AAPL")            # the latest forecast; origin="2024-05-31" for another
    a.by_input   # input, attribution, abs_share        (summed over the encoder days)
    a.by_day     # lag, date, attribution, abs_share    (summed over the inputs)
    a.cells      # lag, date, input, value, attribution (one row per encoder day x input)

What is explained: the TFT's 1 % quantile of the next-day log return (``quantile``/``horizon``
selectable), as VaR = -q (a positive loss, in log-return units). Method: integrated gradients
(Captum, through :func:`core.explain.integrated_gradients`) of that VaR with respect to the
encoder window's continuous inputs (the scaled ``encoder_cont`` of the forecast, every day x input),
against a baseline equal to each input's own mean over the window. So an attribution answers "how
much did this input on this day, by deviating from its window average, move the VaR", the
attributions sum to ``var - baseline_var`` (up to ``delta``, reported), and an input that is constant
over the window gets exactly 0. The ticker embedding and the calendar of the forecast days (the
decoder) are held fixed. Next to the TFT's own variable-selection weights (``interpretation``), which
are averaged over many origins, this is one forecast's explanation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core.errors import UserInputError
from core.explain import integrated_gradients
from domains.finance.features import DEFAULT_CALENDAR, TARGETS
from domains.finance.model import Forecaster
from domains.finance.predictor import latest_tensors

__all__ = ["VarAttribution", "var_attribution", "var_function"]


@dataclass
class VarAttribution:
    ticker: str
    origin: pd.Timestamp       # the last encoder day (the forecast is issued after its close)
    date: pd.Timestamp         # the forecast day whose VaR is explained
    horizon: int
    quantile: float
    var: float                 # -q_quantile of the log return (positive = a loss)
    baseline_var: float        # the VaR with every input at its window mean
    delta: float               # |sum(attributions) - (var - baseline_var)|: convergence of the path integral
    cells: pd.DataFrame        # lag, date, input, value, attribution
    by_input: pd.DataFrame     # input, attribution, abs_share
    by_day: pd.DataFrame       # lag, date, attribution, abs_share


def var_function(fc: Forecaster, T, origin: int, horizon: int = 1, quantile: float = 0.01):
    """(f, x): ``f`` maps a batch of encoder inputs (B, L, n_reals), scaled like ``x``, to the VaR
    (B,) of the forecast issued at row ``origin`` of ``T``; ``x`` is that forecast's own encoder input."""
    model = fc.model
    q = list(fc.spec.quantiles)
    if quantile not in q:
        raise UserInputError(f"quantile {quantile} is not one the model forecasts ({', '.join(map(str, q))})")
    if not 1 <= horizon <= fc.spec.horizon:
        raise UserInputError(f"horizon {horizon} outside 1..{fc.spec.horizon}")
    qi, k = q.index(quantile), TARGETS.index("ret_z")
    x0, _ = T.batch([origin])
    scale = float(fc.scaler.ret_to_raw(np.array([T.tickers[origin]]), np.ones(1))[0])

    def f(enc: torch.Tensor) -> torch.Tensor:
        B = enc.shape[0]
        xb = {n: ([t.expand(B, *t.shape[1:]) for t in v] if isinstance(v, list) else v.expand(B, *v.shape[1:])) for n, v in x0.items()}
        xb["encoder_cont"] = enc
        pred = model(xb)["prediction"][k]  # (B, H, Q) normalised
        return -torch.sort(pred, dim=-1).values[:, horizon - 1, qi] * scale

    return f, x0["encoder_cont"].clone()


def var_attribution(fc: Forecaster, feat: pd.DataFrame, ticker: str, origin=None, horizon: int = 1, quantile: float = 0.01,
                    n_steps: int = 32, calendar: str = DEFAULT_CALENDAR) -> VarAttribution:
    """Attribution of the VaR forecast for ``ticker`` issued at ``origin`` (a date; default the latest)."""
    was = fc.model.training
    fc.model.eval()
    T, latest = latest_tensors(fc, feat[feat["ticker"] == ticker], calendar=calendar)
    if origin is None:
        if not len(latest):
            raise UserInputError(f"{ticker}: fewer than encoder_length={fc.spec.encoder_length} days of history")
        o = int(latest[0])
    else:
        cand = T.origins(tickers=[ticker], need_targets=False)
        hit = cand[T.dates[cand] == np.datetime64(pd.Timestamp(origin))]
        if not len(hit):
            raise UserInputError(f"{ticker}: no forecast origin on {pd.Timestamp(origin).date()} (a trading day with {fc.spec.encoder_length} days of history before it)")
        o = int(hit[0])
    f, x = var_function(fc, T, o, horizon, quantile)
    baseline = x.mean(dim=1, keepdim=True).expand_as(x).contiguous()
    # the model's forward has dropout layers: eval mode above keeps f deterministic
    attr, delta = integrated_gradients(f, x, baseline, n_steps=n_steps)
    with torch.no_grad():
        var, base_var = float(f(x)[0]), float(f(baseline)[0])
    fc.model.train(was)
    L = T.L
    days = T.dates[o - L + 1:o + 1]
    a = attr[0].numpy()
    cells = pd.DataFrame({"lag": np.repeat(np.arange(-L + 1, 1), len(T.reals)), "date": np.repeat(days, len(T.reals)),
                          "input": np.tile(T.reals, L), "value": x[0].numpy().ravel(), "attribution": a.ravel()})
    tot = max(float(np.abs(a).sum()), 1e-12)
    by_input = pd.DataFrame({"input": T.reals, "attribution": a.sum(0), "abs_share": np.abs(a).sum(0) / tot})
    by_day = pd.DataFrame({"lag": np.arange(-L + 1, 1), "date": days, "attribution": a.sum(1), "abs_share": np.abs(a).sum(1) / tot})
    return VarAttribution(ticker=ticker, origin=pd.Timestamp(T.dates[o]), date=pd.Timestamp(T.dates[o + horizon]), horizon=horizon,
                          quantile=quantile, var=var, baseline_var=base_var, delta=delta, cells=cells,
                          by_input=by_input.sort_values("abs_share", ascending=False, kind="stable").reset_index(drop=True),
                          by_day=by_day)
