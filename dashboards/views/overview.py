"""Overview: every run of every domain, its metrics and curves, two runs side by side, and the
MLflow store the runs were tracked in."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.tracking import default_tracking_uri, flatten
from dashboards.common import DOMAINS, all_runs, curves, friendly_errors, md_code, md_text, metric_history, page_header, run_label, runs_dir, scalar_metrics, train_command

page_header("Overview", "Runs of every domain, their final metrics and curves, and a side-by-side comparison of two runs.")

root = runs_dir()
runs = all_runs()

if not runs:
    st.info(f"No runs under `{root}` yet. `make demo` trains every domain; or create one domain's run with:")
    st.code("\n".join(train_command(d) for d in DOMAINS), language="bash")
    st.caption("Point the dashboards at another runs folder with `SUITE_RUNS_DIR=...`.")
    st.stop()

# ---- all runs ---------------------------------------------------------------------------------
st.subheader("Runs")
c1, c2 = st.columns(2)
present = sorted({r.get("domain", "?") for r in runs})
domains = c1.multiselect("Domains", present, default=present)
statuses = sorted({r.get("status", "?") for r in runs})
status_pick = c2.multiselect("Status", statuses, default=statuses)
shown = [r for r in runs if r.get("domain") in domains and r.get("status") in status_pick]

for d in domains:  # one table per domain: each has its own metrics
    rows = []
    for r in (r for r in shown if r.get("domain") == d):
        row = {"run": r.get("name"), "status": r.get("status"), "started": r.get("started"), "updated": r.get("updated"),
               "device": r.get("device"), "commit": r.get("git_commit")}
        row.update(scalar_metrics(r))
        rows.append(row)
    if rows:
        st.markdown(f"**{md_text(d)}** · {len(rows)} run{'s' if len(rows) > 1 else ''}")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
st.caption(f"{len(shown)} of {len(runs)} runs · newest first · from `{root}/<domain>/<run>/run.json` and `metrics.json`")
interrupted = [r for r in runs if r.get("status") == "interrupted"]
if interrupted:
    names = ", ".join(md_code(f"{r.get('domain')}/{r.get('name')}") for r in interrupted[:5]) + (" …" if len(interrupted) > 5 else "")
    st.warning(f"{len(interrupted)} run{'s' if len(interrupted) > 1 else ''} interrupted (the process writing {'them' if len(interrupted) > 1 else 'it'} "
               f"died before finishing): {names}. Rerun the same command with `--resume` to continue from the last checkpoint.",
               icon=":material/warning:")

labels = {f"{r.get('domain')}/{run_label(r)}": r for r in runs}

# ---- one run in detail -------------------------------------------------------------------------
st.subheader("Run detail")
pick = st.selectbox("Run", list(labels), key="detail_run")
run = labels[pick]
with friendly_errors("Reading the run"):
    left, right = st.columns([1, 2])
    with left:
        metrics = scalar_metrics(run)
        if metrics:
            st.dataframe(pd.Series(metrics, name="value").to_frame(), width="stretch")
        else:
            st.caption("This run recorded no final metrics.")
        if run.get("status") == "interrupted":  # not an error of the run's code: its process was killed or crashed
            st.warning("Interrupted: the process writing this run died before finishing; its metrics stop where it stopped."
                       + (f" ({md_text(run['error'])})" if run.get("error") else ""))
        elif run.get("status") == "damaged":  # read_run_safely: run.json half-written, not JSON, or linking elsewhere
            st.warning(f"Damaged run folder: {md_text(run.get('error'))}. The pages offer only completed runs; "
                       "delete or rerun this one.")
        elif run.get("error"):
            st.error(f"Run error: {md_text(run['error'])}")
    with right:
        hist = metric_history(run["path"])
        cols = [c for c in hist.columns if hist[c].notna().any()]
        if cols:
            chosen = st.multiselect("Curves", cols, default=cols[: min(3, len(cols))], key="detail_curves")
            if chosen:
                curves(hist, chosen)
        else:
            st.caption("No per-step metrics (metrics.jsonl) in this run.")
    with st.expander("Configuration and run record"):
        st.json({"config": run.get("config", {}), "run": {k: v for k, v in run.items() if k not in ("config", "metrics")}})

# ---- two runs side by side ---------------------------------------------------------------------
st.subheader("Compare two runs")
if len(labels) < 2:
    st.caption("Only one run so far; a second run makes a comparison possible.")
else:
    keys = list(labels)
    ca, cb = st.columns(2)
    a_label = ca.selectbox("Run A", keys, index=0, key="cmp_a")
    same_domain = [i for i, k in enumerate(keys) if k != a_label and labels[k].get("domain") == labels[a_label].get("domain")]
    b_label = cb.selectbox("Run B", keys, index=same_domain[0] if same_domain else (1 if keys[0] == a_label else 0), key="cmp_b",
                           help="defaults to the next run of the same domain as run A")
    a, b = labels[a_label], labels[b_label]
    if a.get("domain") != b.get("domain"):
        st.caption("The two runs belong to different domains: few metrics are comparable.")
    both_only = st.toggle("Only metrics both runs report", value=True, key="cmp_both")
    with friendly_errors("Comparing the runs"):
        ma, mb = scalar_metrics(a), scalar_metrics(b)
        names = sorted(set(ma) & set(mb)) if both_only else sorted(set(ma) | set(mb))
        if names:
            cmp = pd.DataFrame({"metric": names, "A": [ma.get(n) for n in names], "B": [mb.get(n) for n in names]})
            cmp["B − A"] = cmp["B"] - cmp["A"]
            st.dataframe(cmp, hide_index=True, width="stretch")
        else:
            st.caption("No metric in common." if both_only else "Neither run recorded final metrics.")
        fa, fb = flatten(a.get("config") or {}), flatten(b.get("config") or {})
        diff = [{"setting": k, "A": str(fa.get(k, "—")), "B": str(fb.get(k, "—"))} for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
        st.markdown("**Configuration differences**")
        if diff:
            st.dataframe(pd.DataFrame(diff), hide_index=True, width="stretch")
        else:
            st.caption("Same configuration.")
        ha, hb = metric_history(a["path"]), metric_history(b["path"])
        common = [c for c in ha.columns if c in hb.columns and ha[c].notna().any() and hb[c].notna().any()]
        if common:
            chosen = st.multiselect("Curves of both runs", common, default=common[:2], key="cmp_curves")
            curves(ha, chosen, runs={f"A: {a.get('name')}": ha, f"B: {b.get('name')}": hb})


# ---- MLflow store ------------------------------------------------------------------------------
@st.cache_data(ttl=20, show_spinner="Reading the MLflow store…")
def mlflow_runs(uri: str, stamp: float) -> pd.DataFrame:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    rows = []
    for exp in client.search_experiments():
        for r in client.search_runs([exp.experiment_id], max_results=500):
            row = {"experiment": exp.name, "run name": r.info.run_name, "status": r.info.status,
                   "start": pd.to_datetime(r.info.start_time, unit="ms") if r.info.start_time else None, "run id": r.info.run_id}
            row.update({f"metric.{k}": v for k, v in r.data.metrics.items()})
            rows.append(row)
    return pd.DataFrame(rows)


st.subheader("MLflow store")
uri = default_tracking_uri(root)
st.markdown(f"Tracking URI: `{uri}`")
db = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
if db is not None and not db.is_file():
    st.caption("No MLflow store yet (runs made with `--no-track` are only in their run directories).")
else:
    with friendly_errors("Reading the MLflow store"):
        df = mlflow_runs(uri, db.stat().st_mtime if db else 0.0)
        if df.empty:
            st.caption("The store has no runs.")
        else:
            st.dataframe(df, hide_index=True, width="stretch")
            st.caption(f"{len(df)} MLflow runs. Browse them with `.venv/bin/mlflow ui --backend-store-uri {uri}` (binds 127.0.0.1).")
