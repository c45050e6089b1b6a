"""Finance: price history and the probabilistic forecast (fan of quantiles) per ticker, the
walk-forward backtest against the baselines, VaR breaches over time and the TFT's variable
importance."""

from __future__ import annotations

import html
import re

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboards.common import friendly_errors, md_code, md_text, open_domain_page, page_header, run_path, train_command

page_header("Finance", "Quantile forecasts of daily returns and volatility (Temporal Fusion Transformer), backtested walk-forward against baselines.")


def import_api():
    from domains.finance import api
    return api


api, run_dir, key = open_domain_page("finance", import_api, prefer=lambda api, p: api.finance_run(p).has_backtest)  # the newest run with a backtest

# what each forecast target is, and the panel column holding its realised history
TARGETS = {"ret": ("daily log return", "log_ret"), "rvol": ("5-day realised volatility", "rvol5")}
LOWER_IS_BETTER = ("pinball", "qlike", "rmse", "mae", "crps")


@st.cache_data(show_spinner="Loading the price panel…")
def panel() -> pd.DataFrame:
    df = api.load_panel()
    df = df.reset_index() if "date" not in df.columns else df
    df["date"] = pd.to_datetime(df["date"])
    return df


@st.cache_resource(show_spinner="Loading the forecaster…", max_entries=2)
def forecaster(k: str) -> api.LoadedForecaster:
    return api.load_forecaster(run_path(k))


@st.cache_data(show_spinner="Forecasting…", max_entries=16)
def forecast(k: str, tickers: tuple[str, ...], zero_shot: bool = False) -> pd.DataFrame:
    return api.forecast(forecaster(k), list(tickers), zero_shot=zero_shot)


@st.cache_data(show_spinner=False, max_entries=16)
def calendars(k: str, tickers: tuple[str, ...]) -> api.ForecastCalendars:
    return api.forecast_calendars(forecaster(k), list(tickers))


@st.cache_data(show_spinner="Loading the backtest…")
def backtest(k: str) -> api.Backtest:
    return api.load_backtest(run_path(k))


@st.cache_data(show_spinner=False)
def data_quality(k: str) -> api.DataQuality:
    return api.data_quality(run_path(k))


@st.cache_data(show_spinner="Attributing the forecast…", max_entries=16)
def attribution(k: str, ticker: str):
    return api.forecast_attribution(forecaster(k), ticker)


@st.cache_data(show_spinner=False)
def importance(k: str) -> pd.DataFrame:
    return api.load_variable_importance(run_path(k))


def quantile_columns(df: pd.DataFrame) -> list[tuple[float, str]]:
    return sorted((float(m.group(1)), c) for c in df.columns if (m := re.fullmatch(r"q_?([0-9.]+)", str(c))))


def fan(fig: go.Figure, x, df: pd.DataFrame, colour=(31, 119, 180), name: str = "") -> None:
    """Nested quantile bands (widest first), the median as a line."""
    qs = quantile_columns(df)
    pairs = sorted(((lo, hi) for lo in qs for hi in qs if lo[0] < 0.5 < hi[0] and abs(lo[0] + hi[0] - 1) < 1e-6), key=lambda p: p[0][0])
    r, g, b = colour
    for i, ((qlo, clo), (qhi, chi)) in enumerate(pairs):
        shade = 0.12 + 0.22 * i / max(1, len(pairs) - 1)
        fig.add_trace(go.Scatter(x=x, y=df[chi], mode="lines", line=dict(width=0), showlegend=False, hoverinfo="skip", legendgroup=f"{name}{qlo}"))
        fig.add_trace(go.Scatter(x=x, y=df[clo], mode="lines", fill="tonexty", line=dict(width=0), fillcolor=f"rgba({r},{g},{b},{shade:.2f})",
                                 name=f"{name}{qhi - qlo:.0%} interval", legendgroup=f"{name}{qlo}"))
    med = [c for q, c in qs if abs(q - 0.5) < 1e-9]
    if med:
        fig.add_trace(go.Scatter(x=x, y=df[med[0]], mode="lines+markers", name=f"{name}median", line=dict(color=f"rgb({r},{g},{b})", width=2)))


def layout(fig: go.Figure, title: str, height: int = 340) -> go.Figure:
    # plotly renders a subset of HTML in titles (links, <br>): a ticker from a user's file is text, not markup
    fig.update_layout(title=html.escape(title, quote=False), height=height, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.18))
    return fig


# ---- tickers -----------------------------------------------------------------------------------
prices = None
with friendly_errors("Loading the price panel"):
    prices = panel()
bt: api.Backtest | None = None
try:
    bt = backtest(key)
except FileNotFoundError:  # a train run: a forecaster but no walk-forward tables
    st.info(f"Run {md_code(run_dir.name)} has a forecaster but no backtest tables (backtest, VaR breaches). Create them with:")
    st.code(train_command("finance"), language="bash")
    variant = api.saved_variant(run_dir)
    if variant is not None:
        days = f"{variant.val_days} " if variant.val_days else ""
        st.caption(f"A transfer run: its model is **{md_text(variant.name)}**" + (
            f" — chosen by `--save auto`, the lowest vol pinball on the last {days}days of the held-out tickers' short history ("
            + ", ".join(f"{md_text(k)} {v:.4g}" for k, v in variant.selection.items()) + "); its test figures are in `transfer_results.csv`."
            if variant.selection else "."))
except Exception:  # noqa: BLE001
    with friendly_errors("Loading the backtest"):
        raise
dq = None
with friendly_errors("Reading the run's data checks"):
    dq = data_quality(key)
if dq is not None and not dq.empty:
    n = sum(dq.counts.values()) if dq.counts else len(dq.warnings)
    kinds = ", ".join(f"{v} {md_text(k.replace('_', ' '))}" for k, v in dq.counts.items() if v)
    found = (f"raised {n} warning{'s' if n != 1 else ''}" + (f" ({kinds})" if kinds else "")) if n else "raised no warnings"
    st.warning(f"**Data quality:** the price checks of this run {found}"
               + (f"; {len(dq.dropped)} ticker(s) dropped or without test days" if len(dq.dropped) else "") + ". Details below the tabs.",
               icon=":material/warning:")

in_run = sorted(map(str, bt.predictions["ticker"].unique())) if bt is not None and "ticker" in bt.predictions else []
tickers_all = sorted(map(str, prices["ticker"].unique())) if prices is not None and "ticker" in prices else in_run
default = [t for t in ("SP500", "AAPL", "JPM") if t in (in_run or tickers_all)] or (in_run or tickers_all)[:2]
chosen: list[str] = st.multiselect("Tickers", tickers_all, default=default, key="fin_tickers",
                                   help="the run's model forecasts the tickers it was trained on" + (f": {', '.join(in_run)}" if in_run else ""))
tab_px, tab_fc, tab_bt, tab_reg, tab_var, tab_imp = st.tabs(["Price history", "Forecast", "Backtest", "Folds, regimes & tests", "VaR breaches",
                                                              "Variable importance"])

with tab_px, friendly_errors("Showing the price history"):
    if prices is None or not chosen:
        st.caption("Choose at least one ticker.")
    else:
        sub = prices[prices["ticker"].isin(chosen)]
        lo, hi = sub["date"].min().date(), sub["date"].max().date()
        start = st.slider("From", min_value=lo, max_value=hi, value=max(lo, (pd.Timestamp(hi) - pd.DateOffset(years=3)).date()), key="fin_from")
        sub = sub[sub["date"] >= pd.Timestamp(start)]
        rebased = st.toggle("Rebase to 100 at the start", value=len(chosen) > 1, key="fin_rebase")
        wide = sub.pivot_table(index="date", columns="ticker", values="close")
        if rebased:
            wide = 100 * wide / wide.bfill().iloc[0]
        st.line_chart(wide, y_label="price (rebased to 100)" if rebased else "close")

with tab_fc, friendly_errors("Showing the backtest forecasts"):
    if not chosen:
        st.caption("Choose at least one ticker.")
    else:
        target = st.radio("Target", list(TARGETS), horizontal=True, format_func=lambda t: TARGETS[t][0], key="fin_target")
        label, hist_col = TARGETS[target]
        next_box = st.container()  # filled last: loading the forecaster is the slow part, the rest shows first
        preds = bt.predictions if bt is not None else None
        if preds is not None and not preds.empty:
            st.markdown("**Walk-forward backtest: forecasts against what happened**")
            models = sorted(preds["model"].unique())
            c1, c2 = st.columns(2)
            model = c1.selectbox("Model", models, index=models.index("tft") if "tft" in models else 0, key="fin_fc_model")
            horizons = sorted(preds.loc[preds["target"] == target, "horizon"].unique())
            h = c2.selectbox("Horizon (days ahead)", horizons, key=f"fin_fc_h_{target}")
            for t in chosen:
                g = preds[(preds["ticker"] == t) & (preds["model"] == model) & (preds["target"] == target) & (preds["horizon"] == h)].sort_values("origin")
                if g.empty:
                    continue
                qs = dict(quantile_columns(g))
                inside = ((g["y"] >= g[qs[0.05]]) & (g["y"] <= g[qs[0.95]])).mean() if {0.05, 0.95} <= set(qs) else float("nan")
                fig = go.Figure()
                fan(fig, g["origin"], g)
                fig.add_trace(go.Scatter(x=g["origin"], y=g["y"], name="realised", mode="markers", marker=dict(color="#d62728", size=4)))
                st.plotly_chart(layout(fig, f"{t} · {model}: {label}, {h} day(s) ahead · {inside:.0%} of outcomes inside the 90% interval"),
                                width="stretch", key=f"bfan_{t}_{target}")

with tab_bt, friendly_errors("Showing the backtest"):
    agg = bt.aggregate if bt is not None else None
    if agg is None or agg.empty:
        st.caption("This run has no backtest results.")
    else:
        v = bt.verdict
        if v is not None:
            st.markdown(f"Volatility pinball: TFT **{v.tft_vol_pinball:.4g}** vs best baseline {md_code(v.best_baseline)} **{v.best_baseline_vol_pinball:.4g}** → "
                        + ("TFT **beats** the best baseline." if v.tft_beats_best_baseline else "TFT does **not** beat the best baseline."))
        metric_cols = [c for c in agg.columns if c != "model" and pd.api.types.is_numeric_dtype(agg[c])]
        if "model" not in agg or not metric_cols:
            raise ValueError("metrics_aggregate.csv needs a `model` column and at least one numeric metric column; "
                             f"it has {', '.join(map(str, agg.columns[:8]))}{' …' if len(agg.columns) > 8 else ''}")
        default_metric = next((c for c in ("vol_pinball", "ret_pinball_h1") if c in metric_cols), metric_cols[0])
        metric = st.selectbox("Metric", metric_cols, index=metric_cols.index(default_metric), key="fin_bt_metric")
        lower = any(w in metric for w in LOWER_IS_BETTER)
        a = agg.sort_values(metric, ascending=lower)
        fig = go.Figure(go.Bar(x=a["model"], y=a[metric], marker_color=["#d62728" if m == "tft" else "#1f77b4" for m in a["model"]]))
        st.plotly_chart(layout(fig, f"{metric} by model ({'lower' if lower else 'higher'} is better; TFT in red)", 300), width="stretch", key="bt_bar")
        st.markdown("**All models, averaged over tickers**")
        st.dataframe(agg, hide_index=True, width="stretch")
        by_t = bt.by_ticker
        if not by_t.empty:
            st.markdown("**Per ticker**")
            sel = by_t[by_t["ticker"].isin(chosen)] if chosen and by_t["ticker"].isin(chosen).any() else by_t
            st.dataframe(sel, hide_index=True, width="stretch")

with tab_reg, friendly_errors("Showing the folds, regimes and tests"):
    if bt is None or (bt.by_fold.empty and bt.by_regime.empty and bt.diebold_mariano.empty):
        st.caption("This run has no per-fold, per-regime or test tables (a backtest run writes them).")
    else:
        fold_metrics = [c for c in bt.by_fold.columns if c not in ("model", "fold", "n_origins", "stress_share") and pd.api.types.is_numeric_dtype(bt.by_fold[c])]
        rmetric = st.selectbox("Metric", fold_metrics or ["vol_pinball"], key="fin_reg_metric")
        lower = any(w in rmetric for w in LOWER_IS_BETTER)
        if not bt.by_fold.empty and rmetric in bt.by_fold:
            bf = bt.by_fold.copy()
            bf["cutoff"] = pd.to_datetime(bf["cutoff"])
            fig = go.Figure()
            for m_name, g in bf.sort_values("cutoff").groupby("model", sort=True):
                fig.add_trace(go.Scatter(x=g["cutoff"], y=g[rmetric], mode="lines+markers", name=str(m_name),
                                         line=dict(width=3 if m_name == "tft" else 1.2, color="#d62728" if m_name == "tft" else None)))
            folds_ = bf.drop_duplicates("fold")
            stress = folds_[folds_["regime"] == "stress"] if {"regime", "test_end"} <= set(folds_.columns) else folds_.iloc[0:0]
            for _, r in stress.iterrows():
                fig.add_vrect(x0=r["cutoff"], x1=pd.to_datetime(r["test_end"]), fillcolor="#d62728", opacity=0.08, line_width=0)
            st.plotly_chart(layout(fig, f"{rmetric} per walk-forward fold ({'lower' if lower else 'higher'} is better; stress folds shaded)", 320),
                            width="stretch", key="fin_by_fold")
        if not bt.by_regime.empty and rmetric in bt.by_regime:
            fig = go.Figure([go.Bar(name=str(rg), x=g["model"], y=g[rmetric]) for rg, g in bt.by_regime.groupby("regime", sort=True)])
            fig.update_layout(barmode="group")
            st.plotly_chart(layout(fig, f"{rmetric} by regime (calm / stress, defined ex ante)", 300), width="stretch", key="fin_by_regime")
        if not bt.diebold_mariano.empty:
            st.markdown("**Diebold–Mariano tests of the TFT against each baseline** (HAC variance; `p_tft_better` < 0.05: the TFT's loss is significantly lower)")
            st.dataframe(bt.diebold_mariano, hide_index=True, width="stretch",
                         column_config={c: st.column_config.NumberColumn(format="%.4f") for c in ("rel_diff", "dm_stat", "p_two_sided", "p_tft_better")})
        if not bt.risk_tests.empty:
            st.markdown("**VaR and expected-shortfall backtests, pooled and per ticker-fold** (Kupiec, Christoffersen, Acerbi–Székely Z2, McNeil–Frey; 5- and 10-day VaR)")
            st.dataframe(bt.risk_tests, hide_index=True, width="stretch")
        if not bt.by_seed.empty:
            st.markdown("**The TFT's seeds** (the model `tft` averages their quantiles)")
            num = [c for c in bt.by_seed.columns if c != "model" and pd.api.types.is_numeric_dtype(bt.by_seed[c])]
            spread = pd.DataFrame({"metric": num, "mean": [bt.by_seed[c].mean() for c in num], "sd": [bt.by_seed[c].std(ddof=1) for c in num],
                                   "seeds": len(bt.by_seed)})
            st.dataframe(bt.by_seed, hide_index=True, width="stretch")
            st.dataframe(spread, hide_index=True, width="stretch")

with tab_var, friendly_errors("Showing the VaR breaches"):
    vb = bt.var_breaches if bt is not None else None
    if vb is None or vb.empty:
        st.caption("This run recorded no VaR breaches.")
    else:
        vb = vb.copy()
        vb["date"] = pd.to_datetime(vb["date"])
        levels = sorted({c[3:] for c in vb.columns if str(c).startswith("var") and f"breach{c[3:]}" in vb.columns}, reverse=True)
        c1, c2 = st.columns(2)
        models = sorted(vb["model"].unique())
        model = c1.selectbox("Model", models, index=models.index("tft") if "tft" in models else 0, key="fin_var_model")
        level = c2.radio("VaR level", levels, horizontal=True, format_func=lambda lv: f"{lv}%", key="fin_var_level")
        var_col, breach_col, expected = f"var{level}", f"breach{level}", 1 - float(level) / 100
        sub = vb[(vb["model"] == model) & (vb["ticker"].isin(chosen) if chosen else True)]
        for t, g in sub.groupby("ticker"):
            g = g.sort_values("date")
            b = g[g[breach_col].astype(bool)]
            fig = go.Figure()
            fig.add_trace(go.Scatter(x=g["date"], y=g["ret"], name="realised return", line=dict(color="#888", width=1)))
            fig.add_trace(go.Scatter(x=g["date"], y=g[var_col], name=f"{level}% VaR", line=dict(color="#1f77b4")))
            fig.add_trace(go.Scatter(x=b["date"], y=b["ret"], mode="markers", name="breach", marker=dict(color="#d62728", size=9, symbol="x")))
            st.plotly_chart(layout(fig, f"{t} · {model}: {len(b)} breaches in {len(g)} days ({len(b) / max(1, len(g)):.1%}; expected {expected:.0%})", 300),
                            width="stretch", key=f"var_{t}")
        counts = vb.groupby(["model", "ticker"])[breach_col].agg(breaches="sum", days="count", rate="mean").reset_index()
        counts["expected rate"] = expected
        st.markdown("**Breaches by model and ticker** (a calibrated VaR breaches at the expected rate)")
        st.dataframe(counts[counts["ticker"].isin(chosen)] if chosen else counts, hide_index=True, width="stretch")

with tab_imp:
    with friendly_errors("Loading the variable importance"):
        try:
            imp = importance(key)
        except FileNotFoundError as e:  # a train or transfer run: not an error, the message says how to make it
            imp = None
            st.info(f"No variable importance for this run: {md_text(e)}")
        if imp is not None and len(imp) == 0:
            st.caption("This run recorded no variable importance.")
        elif imp is not None:
            st.caption("Variable-selection weights of the TFT, averaged over recent windows: how much each input feeds each part of the network.")
            kinds = list(imp["kind"].unique()) if "kind" in imp else [None]
            cols = st.columns(len(kinds))
            for col, kind in zip(cols, kinds):
                part = imp[imp["kind"] == kind] if kind is not None else imp
                part = part.sort_values("importance")
                fig = go.Figure(go.Bar(x=part["importance"], y=part["variable"], orientation="h", marker_color="#1f77b4"))
                col.plotly_chart(layout(fig, f"{kind or 'all'} variables", 60 + 26 * len(part)), width="stretch", key=f"imp_{kind}")
    st.markdown("**This forecast's 99 % VaR: which inputs and which past days drove it** (integrated gradients over the encoder window, issue 17.3)")
    with friendly_errors("Attributing the forecast"):
        known = [t for t in chosen if t in forecaster(key).tickers]
        if not known:
            st.caption("Choose a ticker the model was trained on.")
        else:
            t_attr = st.selectbox("Ticker", known, key="fin_attr_ticker")
            a = attribution(key, t_attr)
            st.caption(f"{md_text(a.ticker)}: 1-day 99 % VaR for {pd.Timestamp(a.date).date()} (issued after the close of {pd.Timestamp(a.origin).date()}) "
                       f"= {a.var:.4f} vs {a.baseline_var:.4f} with every input at its window mean; the attributions add up to the "
                       f"difference (path-integral error {a.delta:.1e}).")
            c1, c2 = st.columns(2)
            bi = a.by_input.sort_values("attribution")
            fig = go.Figure(go.Bar(x=bi["attribution"], y=bi["input"], orientation="h",
                                   marker_color=["#d62728" if v > 0 else "#1f77b4" for v in bi["attribution"]]))
            c1.plotly_chart(layout(fig, f"{a.ticker}: VaR attribution by input (red: raises the VaR)", 60 + 26 * len(bi)),
                            width="stretch", key="fin_attr_input")
            bd = a.by_day.sort_values("date")
            fig = go.Figure(go.Bar(x=pd.to_datetime(bd["date"]), y=bd["attribution"],
                                   marker_color=["#d62728" if v > 0 else "#1f77b4" for v in bd["attribution"]]))
            c2.plotly_chart(layout(fig, f"{a.ticker}: VaR attribution by past day", 300), width="stretch", key="fin_attr_day")


# ---- what the run's price checks found (issue 15.7) ----------------------------------------------
if dq is not None and not dq.empty:
    with st.expander("Data quality: warnings and dropped tickers", expanded=False):
        if dq.counts:
            st.dataframe(pd.DataFrame({"check": list(dq.counts), "warnings": list(dq.counts.values())}), hide_index=True, width="stretch")
        if not dq.warnings.empty:
            w = dq.warnings
            st.dataframe(w[w["ticker"].isin(chosen)] if chosen and "ticker" in w and w["ticker"].isin(chosen).any() else w,
                         hide_index=True, width="stretch")
        if not dq.dropped.empty:
            st.markdown("**Tickers dropped or without test days**")
            st.dataframe(dq.dropped, hide_index=True, width="stretch")

# ---- the latest forecast, last because the model load is the slow part ------------------------
if chosen:
    with next_box:
        st.markdown(f"**Next {'days' if target == 'ret' else 'week'}: the latest run's forecast**")
        with friendly_errors("Forecasting"):
            model = forecaster(key)
            unknown = [t for t in chosen if t not in model.tickers]
            zero_shot = bool(unknown) and st.toggle(f"Forecast {md_text(', '.join(unknown))} zero-shot", value=False, key="fin_zero_shot",
                                                    help="tickers this model was not trained on: forecast from their own history "
                                                         "with the model's unknown-ticker embedding")
            fc = forecast(key, tuple(chosen), zero_shot)
            fc = fc.copy()
            fc["date"] = pd.to_datetime(fc["date"])
            if "target" in fc and not pd.api.types.is_numeric_dtype(fc["target"]):  # one row per target name
                fc = fc[fc["target"] == target]
            for t in chosen:
                ft = fc[fc["ticker"] == t].sort_values("date")
                if ft.empty:
                    st.caption(f"No forecast for {md_text(t)}: the model was not trained on it" + (" (switch on zero-shot above)." if t in unknown else "."))
                    continue
                fig = go.Figure()
                if prices is not None and hist_col in prices:
                    h = prices[(prices["ticker"] == t) & (prices["date"] < ft["date"].min())].tail(30)
                    fig.add_trace(go.Scatter(x=h["date"], y=h[hist_col], name=f"realised {label}", mode="lines", line=dict(color="#555", width=1.2)))
                fan(fig, ft["date"], ft)
                shot = " (zero-shot)" if "zero_shot" in ft and ft["zero_shot"].astype(bool).any() else ""
                st.plotly_chart(layout(fig, f"{t}: {label}, forecast quantiles{shot}"), width="stretch", key=f"fan_{t}_{target}")
            cal = calendars(key, tuple(sorted(fc["ticker"].unique())))  # each forecast ticker's exchange, named as forecast names it
            if cal.by_ticker:
                st.caption(f"Forecast dates are sessions of the **{md_text(cal.named)}** exchange calendar (exchange_calendars, {md_text(cal.how)}).")
            for w in cal.mismatches.itertuples():
                st.warning(md_text(w.detail))
            with st.expander("Forecast table"):
                st.dataframe(fc, hide_index=True, width="stretch")
