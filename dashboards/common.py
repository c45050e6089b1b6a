"""What every dashboard page shares: where runs live, picking a run, the "no runs yet" and
"domain not installed" states, and turning errors into one readable message.

Each page imports its domain's contract, ``domains/<d>/api.py``, with a plain import (inside the function it
hands to :func:`open_domain_page`, which calls it once the page has runs to show) and reads runs only through it
(and through ``core.runs`` for listings); nothing here trains anything.
"""

from __future__ import annotations

import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `streamlit run dashboards/app.py` puts only dashboards/ on the path
    sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from core.errors import UserInputError  # noqa: E402
from core.logging import get_logger  # noqa: E402
from core.runs import iter_metrics, links_out, read_run, run_dirs  # noqa: E402
from core.tracking import flatten  # noqa: E402
from dashboards.text import md_code, md_text  # noqa: E402,F401 - the pages import them from here

log = get_logger("dashboards")

DOMAINS = ("medical", "finance", "recommendation")
RUNS_DIR_ENV = "SUITE_RUNS_DIR"


def runs_dir() -> Path:
    """The runs root: ``$SUITE_RUNS_DIR`` or ``runs`` (relative to where streamlit was started)."""
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs").expanduser().absolute()


# The one command that makes a run each page can show in full (finance: the backtest writes the
# forecaster plus the tables the page reads; `domains.finance.train` only the forecaster).
COMMANDS = {"medical": "train", "finance": "backtest", "recommendation": "train"}


def train_command(domain: str) -> str:
    """The one command that creates a run the page can show."""
    cmd = f".venv/bin/python -m domains.{domain}.{COMMANDS.get(domain, 'train')}"
    if os.environ.get(RUNS_DIR_ENV):
        cmd += f" --runs-dir {runs_dir()}"
    return cmd


def _runs_signature(root: Path, domain: str | None) -> tuple:
    """(run folder, run.json mtime) for every run: cheap stats that change whenever a run starts,
    finishes or fails, so the parsed run list is only rebuilt then."""
    sig = []
    for rd in run_dirs(root, domain):
        try:
            sig.append((str(rd), os.stat(rd / "run.json").st_mtime_ns))
        except OSError:
            continue
    return tuple(sorted(sig))


def read_run_safely(run_dir: str | Path) -> dict[str, Any]:
    """``core.runs.read_run`` for a folder someone else wrote (core already reads a damaged run.json, or run
    files linking out of the folder, as status ``damaged`` and gives the fields their types): any other failure
    is the run's ``error`` rather than an exception that would hide every run; the status is never missing."""
    run_dir = Path(run_dir)
    try:
        info = read_run(run_dir)
    except Exception as e:  # noqa: BLE001  (one damaged run must not hide the others)
        return {"path": str(run_dir), "name": run_dir.name, "domain": run_dir.parent.name, "config": {}, "metrics": {},
                "status": "damaged", "error": f"{type(e).__name__}: {e}"}
    if info.get("status") is None:
        info["status"] = "unknown"
    return info


@st.cache_data(show_spinner=False, max_entries=16)
def _cached_list_runs(root: str, domain: str | None, signature: tuple) -> list[dict[str, Any]]:
    runs = [read_run_safely(rd) for rd, _ in signature]
    runs.sort(key=lambda r: r.get("started") or "", reverse=True)
    return runs


def all_runs(domain: str | None = None) -> list[dict[str, Any]]:
    """Every run under the dashboards' runs root (newest first), re-read only when a run changed
    (every widget click reruns the page). Read with :func:`read_run_safely`: a damaged run shows as
    ``damaged``, and links (``latest``, or one planted to a folder elsewhere) are not followed."""
    root = runs_dir()
    runs = _cached_list_runs(str(root), domain, _runs_signature(root, domain))
    # a writer that died leaves run.json as it was: read "running" runs again, so core.runs can say
    # "interrupted" without the listing waiting for a file change
    return [read_run_safely(r["path"]) if r.get("status") == "running" else r for r in runs]


def completed_runs(domain: str) -> list[dict[str, Any]]:
    """Completed model runs of ``domain`` (not jobs such as score or forecast, which hold no model), newest first."""
    return [r for r in all_runs(domain) if r.get("status") == "completed" and r.get("kind", "model") == "model"]


def stop_without_runs(domain: str) -> None:
    """With no completed run of ``domain``, show the empty state and stop the page (before it
    imports the domain, which is the slow part)."""
    if not completed_runs(domain):
        empty_state(domain)
        st.stop()


def empty_state(domain: str, what: str = "trained run") -> None:
    st.info(
        f"No {what} of the **{domain}** domain under `{runs_dir() / domain}` yet. "
        f"Create one with this command (from the repository root), then reload this page:"
    )
    st.code(train_command(domain), language="bash")
    st.caption(f"`make demo` creates runs of every domain. Point the dashboards at another runs folder with `{RUNS_DIR_ENV}=...`.")


def run_label(run: dict[str, Any]) -> str:
    return f"{Path(run['path']).name}  ·  {run.get('started') or '?'}"  # the folder name: what is on disk


def pick_run(domain: str, key: str | None = None, prefer: Callable[[Path], bool] | None = None) -> Path | None:
    """A sidebar select box of the completed runs of ``domain`` (newest first; the newest run
    satisfying ``prefer`` preselected). ``None`` (and the empty state shown) when there is none."""
    runs = completed_runs(domain)
    if not runs:
        empty_state(domain)
        return None
    by_label = {run_label(r): Path(r["path"]) for r in runs}
    paths = list(by_label.values())
    index = next((i for i, p in enumerate(paths) if prefer(p)), 0) if prefer else 0
    label = st.sidebar.selectbox(f"{domain.capitalize()} run", list(by_label), index=index, key=key or f"{domain}_run",
                                 help=f"completed model runs under {runs_dir() / domain}, newest first")
    chosen = by_label[label]
    outside = _links_outside(run_key(chosen))
    if outside:
        st.error(f"Run {md_code(chosen.name)} holds links to files outside its folder ({md_text(', '.join(outside[:5]))}"
                 f"{' …' if len(outside) > 5 else ''}); the dashboards do not follow them. Choose another run in the sidebar.")
        return None
    return chosen


@st.cache_data(show_spinner=False, max_entries=64)
def _links_outside(key: str) -> list[str]:
    """The files and folders of a run (a :func:`run_key`) that are symbolic links leading out of it: a page
    reading the run's model or tables through them would read whatever they point at."""
    root = Path(run_path(key))
    found = []
    for dirpath, dirnames, filenames in os.walk(root):  # does not descend into linked folders
        for n in dirnames + filenames:
            if links_out(Path(dirpath) / n, root):
                found.append(str((Path(dirpath) / n).relative_to(root)))
    return sorted(found)


@contextmanager
def friendly_errors(what: str) -> Iterator[None]:
    """Show an exception as one clear message instead of a traceback (details in an expander)."""
    try:
        yield
    except Exception as e:  # noqa: BLE001  (Streamlit's stop/rerun are BaseException and pass through)
        log.warning(f"dashboard: {what} failed: {type(e).__name__}: {e}")
        st.error(f"{what} failed: {md_text(error_message(e))}")
        with st.expander("Details for a bug report"):
            st.text("".join(traceback.format_exception_only(type(e), e)).strip())


def error_message(e: BaseException) -> str:
    """One line saying what went wrong. A ``KeyError`` from reading a run's tables is a column or field the
    page needs and the run's file lacks (its bare message would be only the key) — unless it is a user's error
    (:class:`core.errors.UserInputError`, e.g. an item id the run does not know), whose own line is shown."""
    if isinstance(e, UserInputError):
        return str(e.args[0]) if isinstance(e, KeyError) and e.args else (str(e) or type(e).__name__)
    if isinstance(e, KeyError) and e.args:
        return f"the run's files lack the column or field {e.args[0]!r} (damaged, or written by another version)"
    return str(e) or type(e).__name__


def domain_unavailable(domain: str, error: ImportError) -> None:
    """The page's state when ``domains/<domain>/api.py`` cannot be imported (the domain, or one of
    its dependencies, is not installed in this checkout)."""
    st.warning(f"The {domain} domain is not available here: `domains/{domain}/api.py` cannot be imported ({error}). "
               f"Install the project's requirements (see README.md), then reload this page.")


def open_domain_page(domain: str, import_api: Callable[[], ModuleType], prefer: Callable[[ModuleType, Path], bool]) -> tuple[ModuleType, Path, str]:
    """How a domain page opens: with no completed run, the empty state (before the domain is imported, the slow
    part); ``import_api()`` (the page's plain ``from domains.<domain> import api``), and the "not installed" state
    when it raises ImportError; the sidebar's run picker with the newest run satisfying ``prefer(api, run_dir)``
    preselected. Returns (api, run_dir, :func:`run_key` of it); in every other case the page stops here."""
    stop_without_runs(domain)
    try:
        api = import_api()
    except ImportError as e:  # the domain (torch, MONAI, TorchRec, arch, ...) is not installed in this checkout
        domain_unavailable(domain, e)
        st.stop()
    run_dir = pick_run(domain, prefer=lambda p: prefer(api, p))  # with no run, the page only explains the command that makes one
    if run_dir is None:
        st.stop()
    return api, run_dir, run_key(run_dir)


def run_key(run_dir: Path) -> str:
    """A cache key that changes when the run is rewritten (path + mtime of run.json)."""
    p = Path(run_dir)
    try:
        stamp = (p / "run.json").stat().st_mtime_ns
    except OSError:
        stamp = 0
    return f"{p.resolve()}@{stamp}"


def run_path(key: str) -> str:
    """The run folder of a :func:`run_key` (the key without its ``@mtime`` stamp)."""
    return key.rsplit("@", 1)[0]


def scalar_metrics(run: dict[str, Any]) -> dict[str, float]:
    """The numeric final metrics of a run (``metrics.json``), nested keys flattened with dots. A ``null``
    (how the run records an undefined value, e.g. the HD95 of an absent class) is NaN: shown as a metric
    without a value, not dropped."""
    out: dict[str, float] = {}
    for k, v in flatten(run.get("metrics") or {}).items():
        if isinstance(v, bool):
            continue
        if v is None:
            out[k] = float("nan")
        elif isinstance(v, (int, float)):
            out[k] = float(v)
    return out


def metric_history(run_dir: str | Path) -> pd.DataFrame:
    """Per-step metrics (``metrics.jsonl``) as a frame indexed by step; re-read only when the file changed."""
    try:
        st_ = os.stat(Path(run_dir) / "metrics.jsonl")
        stamp = (st_.st_mtime_ns, st_.st_size)
    except OSError:
        stamp = None
    return _metric_history(str(run_dir), stamp)  # st.cache_data hands every caller its own copy


@st.cache_data(show_spinner=False, max_entries=64)
def _metric_history(run_dir: str, stamp: tuple | None) -> pd.DataFrame:
    try:
        rows = [r for r in iter_metrics(run_dir) if isinstance(r, dict)]  # a line that is not an object: damaged, skipped
    except (OSError, ValueError):  # unreadable, not UTF-8
        rows = []
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows).drop(columns=["time"], errors="ignore")
    df = df.apply(pd.to_numeric, errors="coerce")
    if "step" in df:
        df = df.dropna(subset=["step"])
        return df.groupby("step").last().sort_index()
    return df


def page_header(title: str, caption: str) -> None:
    st.title(title)
    st.caption(caption)


def curves(hist: pd.DataFrame, names: list[str], per_row: int = 2, runs: dict[str, pd.DataFrame] | None = None,
           marks: dict[str, float | None] | None = None) -> None:
    """One small line chart (with points) per metric: metrics differ in scale and in the steps at
    which they are logged. ``runs`` overlays the same metric of several runs (label -> history);
    ``marks`` draws labelled vertical rules (e.g. the chosen epoch). The x axis is named after the index."""
    import altair as alt

    frames = runs or {"": hist}
    x_title = str(hist.index.name or "step")
    rules = pd.DataFrame([{"x": float(v), "label": k} for k, v in (marks or {}).items() if v is not None])
    for start in range(0, len(names), per_row):
        cols = st.columns(per_row)
        for col, name in zip(cols, names[start:start + per_row]):
            parts = []
            for label, h in frames.items():
                if name in h:
                    s = h[name].dropna()
                    parts.append(pd.DataFrame({"step": s.index.astype(float), "value": s.to_numpy(dtype=float), "run": label or name}))
            data = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["step", "value", "run"])
            chart = alt.Chart(data, title=name, height=180).mark_line(point=True).encode(
                x=alt.X("step:Q", title=x_title), y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
                color=alt.Color("run:N", legend=alt.Legend(orient="bottom", title=None) if runs else None))
            if not rules.empty:
                rule = alt.Chart(rules).mark_rule(strokeDash=[4, 3], color="#d62728").encode(x="x:Q", tooltip=["label:N", "x:Q"])
                chart = chart + rule
            col.altair_chart(chart, width="stretch")
