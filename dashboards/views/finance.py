"""Finance: price history and the probabilistic forecast (fan of quantiles) per ticker, the
backtest against the baselines, VaR breaches over time and the TFT's variable importance."""

from __future__ import annotations

import re

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboards.common import domain_api, friendly_errors, page_header, pick_run, require, run_key

page_header("Finance", "Quantile forecasts of daily market series (Temporal Fusion Transformer), backtested against baselines.")

run_dir = pick_run("finance")  # first: with no run, the page only explains the command that makes one
if run_dir is None:
    st.stop()
api = domain_api("finance")
if api is None or run_dir is None:
    st.stop()
key = run_key(run_dir)


@st.cache_data(show_spinner="Loading the price panel…")
def panel() -> pd.DataFrame:
    df = api.load_panel()
    df = df.reset_index() if "date" not in df.columns else df
    df["date"] = pd.to_datetime(df["date"])
    return df


@st.cache_resource(show_spinner="Loading the forecaster…", max_entries=2)
def forecaster(k: str):
    return api.load_forecaster(k.rsplit("@", 1)[0])


@st.cache_data(show_spinner="Forecasting…", max_entries=16)
def forecast(k: str, tickers: tuple[str, ...]) -> pd.DataFrame:
    return api.forecast(forecaster(k), list(tickers))


@st.cache_data(show_spinner=False)
def backtest(k: str) -> dict:
    return dict(api.load_backtest(k.rsplit("@", 1)[0]))


@st.cache_data(show_spinner=False)
def importance(k: str) -> pd.DataFrame:
    return api.load_variable_importance(k.rsplit("@", 1)[0])


def quantile_columns(df: pd.DataFrame) -> list[tuple[float, str]]:
    out = []
    for c in df.columns:
        m = re.fullmatch(r"q_?([0-9.]+)", str(c))
        if m:
            out.append((float(m.group(1)), c))
    return sorted(out)


def fan_chart(fc: pd.DataFrame, hist: pd.DataFrame | None, ticker: str, value_name: str) -> go.Figure:
    fig = go.Figure()
    if hist is not None and not hist.empty:
        fig.add_trace(go.Scatter(x=hist["date"], y=hist["value"], name="history", line=dict(color="#444", width=1.4)))
    qs = quantile_columns(fc)
    fc = fc.sort_values("date")
    pairs = [(lo, hi) for lo in qs for hi in qs if lo[0] < 0.5 < hi[0] and abs(lo[0] + hi[0] - 1) < 1e-6]
    pairs.sort(key=lambda p: p[0][0])  # widest band first, so narrower ones draw on top
    for i, ((qlo, clo), (qhi, chi)) in enumerate(pairs):
        shade = 0.15 + 0.2 * i / max(1, len(pairs) - 1)
        fig.add_trace(go.Scatter(x=fc["date"], y=fc[chi], line=dict(width=0), showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=fc["date"], y=fc[clo], fill="tonexty", line=dict(width=0), fillcolor=f"rgba(31,119,180,{shade:.2f})",
                                 name=f"{qlo:.0%}–{qhi:.0%}"))
    med = [c for q, c in qs if abs(q - 0.5) < 1e-9]
    if med:
        fig.add_trace(go.Scatter(x=fc["date"], y=fc[med[0]], name="median forecast", line=dict(color="#1f77b4", width=2)))
    if "target" in fc and fc["target"].notna().any():
        fig.add_trace(go.Scatter(x=fc["date"], y=fc["target"], name="realised", mode="markers+lines",
                                 line=dict(color="#d62728", width=1, dash="dot"), marker=dict(size=4)))
    fig.update_layout(title=f"{ticker}: forecast of {value_name}", height=360, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.15))
    return fig


# ---- tickers and price history -----------------------------------------------------------------
prices = None
if require(api, "load_panel"):
    with friendly_errors("Loading the price panel"):
        prices = panel()

tickers_all = sorted(prices["ticker"].unique()) if prices is not None and "ticker" in prices else []
chosen: list[str] = []
if tickers_all:
    chosen = st.multiselect("Tickers", tickers_all, default=tickers_all[: min(3, len(tickers_all))], key="fin_tickers")
tab_px, tab_fc, tab_bt, tab_var, tab_imp = st.tabs(["Price history", "Forecast", "Backtest", "VaR breaches", "Variable importance"])

with tab_px:
    if prices is None or not chosen:
        st.caption("Choose at least one ticker.")
    else:
        value_col = "close" if "close" in prices else [c for c in prices.columns if c not in ("date", "ticker")][0]
        sub = prices[prices["ticker"].isin(chosen)]
        lo, hi = sub["date"].min().date(), sub["date"].max().date()
        start = st.slider("From", min_value=lo, max_value=hi, value=max(lo, (pd.Timestamp(hi) - pd.DateOffset(years=3)).date()), key="fin_from")
        sub = sub[sub["date"] >= pd.Timestamp(start)]
        rebased = st.toggle("Rebase to 100 at the start", value=len(chosen) > 1, key="fin_rebase")
        wide = sub.pivot_table(index="date", columns="ticker", values=value_col)
        if rebased:
            wide = 100 * wide / wide.bfill().iloc[0]
        st.line_chart(wide)

with tab_fc:
    if not chosen:
        st.caption("Choose at least one ticker.")
    elif require(api, "load_forecaster", "forecast"):
        with friendly_errors("Forecasting"):
            fc = forecast(key, tuple(chosen))
            if fc is None or fc.empty:
                st.info("The forecaster returned no rows for these tickers.")
            else:
                fc = fc.copy()
                fc["date"] = pd.to_datetime(fc["date"])
                value_name = str(fc.attrs.get("target_name", "the target"))
                for t in chosen:
                    ft = fc[fc["ticker"] == t]
                    if ft.empty:
                        st.warning(f"No forecast for {t} (not among the series this model was trained on).")
                        continue
                    hist = None
                    if "history" in fc.attrs:  # optional: realised target before the forecast start
                        h = fc.attrs["history"]
                        hist = h[h["ticker"] == t].rename(columns={"target": "value"}) if isinstance(h, pd.DataFrame) else None
                    st.plotly_chart(fan_chart(ft, hist, t, value_name), width="stretch", key=f"fan_{t}")
                with st.expander("Forecast table"):
                    st.dataframe(fc, hide_index=True, width="stretch")

bt: dict = {}
if require(api, "load_backtest"):
    with friendly_errors("Loading the backtest"):
        bt = backtest(key)

with tab_bt:
    metric_frames = {k: v for k, v in bt.items() if isinstance(v, pd.DataFrame) and "breach" not in k.lower()}
    if not metric_frames:
        st.caption("This run has no backtest results.")
    for name, df in metric_frames.items():
        st.markdown(f"**{name.replace('_', ' ').capitalize()}**")
        if chosen and "ticker" in df.columns and df["ticker"].isin(chosen).any():
            df = df[df["ticker"].isin(chosen) | df["ticker"].isin(["all", "ALL", "mean", "overall"])]
        st.dataframe(df, hide_index=True, width="stretch")

with tab_var:
    breach_frames = {k: v for k, v in bt.items() if isinstance(v, pd.DataFrame) and "breach" in k.lower()}
    if not breach_frames:
        st.caption("This run recorded no VaR breaches table.")
    for name, df in breach_frames.items():
        df = df.copy()
        if "date" in df:
            df["date"] = pd.to_datetime(df["date"])
        if chosen and "ticker" in df.columns and df["ticker"].isin(chosen).any():
            df = df[df["ticker"].isin(chosen)]
        levels = sorted({str(c)[3:] for c in df.columns if str(c).startswith("var") and f"breach{str(c)[3:]}" in df.columns})
        ret_col = next((c for c in ("ret", "return", "realised", "realized", "y") if c in df.columns), None)
        if not ("date" in df and ret_col and levels):
            st.dataframe(df, hide_index=True, width="stretch")
            continue
        c1, c2 = st.columns(2)
        models = sorted(df["model"].unique()) if "model" in df else []
        model = c1.selectbox("Model", models, index=models.index("tft") if "tft" in models else 0, key=f"var_model_{name}") if models else None
        level = c2.radio("VaR level", levels, horizontal=True, format_func=lambda lv: f"{lv}%", key=f"var_level_{name}")
        sub = df[df["model"] == model] if model is not None else df
        var_col, breach_col = f"var{level}", f"breach{level}"
        expected = 1 - float(level) / 100
        counts = df.groupby(["model", "ticker"] if "model" in df else ["ticker"])[breach_col].agg(breaches="sum", days="count", rate="mean").reset_index()
        counts["expected rate"] = expected
        for t, g in (sub.groupby("ticker") if "ticker" in sub else [("", sub)]):
            g = g.sort_values("date")
            b = g[g[breach_col].astype(bool)]
            fig = go.Figure()
            fig.add_trace(go.Scatter(x=g["date"], y=g[ret_col], name="realised return", line=dict(color="#888", width=1)))
            fig.add_trace(go.Scatter(x=g["date"], y=g[var_col], name=f"{level}% VaR", line=dict(color="#1f77b4")))
            fig.add_trace(go.Scatter(x=b["date"], y=b[ret_col], mode="markers", name="breach", marker=dict(color="#d62728", size=8, symbol="x")))
            fig.update_layout(title=f"{t} · {model or ''}: {len(b)} breaches in {len(g)} days ({len(b) / max(1, len(g)):.1%}; expected {expected:.0%})",
                              height=300, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.2))
            st.plotly_chart(fig, width="stretch", key=f"var_{name}_{t}")
        st.markdown("**Breach counts by model** (a well-calibrated VaR breaches at the expected rate)")
        st.dataframe(counts, hide_index=True, width="stretch")

with tab_imp:
    if require(api, "load_variable_importance"):
        with friendly_errors("Loading the variable importance"):
            imp = importance(key)
            if imp is None or len(imp) == 0:
                st.caption("This run recorded no variable importance.")
            else:
                imp = imp.reset_index() if not {"variable", "importance"} <= set(imp.columns) and imp.index.name else imp
                vcol = next((c for c in imp.columns if str(c).lower() in ("variable", "feature", "name")), imp.columns[0])
                icol = next((c for c in imp.columns if "importance" in str(c).lower()), imp.columns[-1])
                groups = [c for c in imp.columns if c not in (vcol, icol)]
                if groups:
                    g = groups[0]
                    for gv, sub in imp.groupby(g):
                        st.markdown(f"**{g}: {gv}**")
                        st.bar_chart(sub.set_index(vcol)[icol].sort_values(ascending=False), horizontal=True)
                else:
                    st.bar_chart(imp.set_index(vcol)[icol].sort_values(ascending=False), horizontal=True)
