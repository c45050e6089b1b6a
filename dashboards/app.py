"""Analyst dashboards: ``streamlit run dashboards/app.py --server.address 127.0.0.1``.

One multipage app; each page reads the run directories under ``$SUITE_RUNS_DIR`` (default
``runs``) and calls the domains' ``api.py`` inference functions. See dashboards/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root, for `core`, `domains`, `dashboards`

import streamlit as st  # noqa: E402

st.set_page_config(page_title="DL suite dashboards", page_icon=":material/monitoring:", layout="wide")

VIEWS = Path("views")  # relative to this script, as st.Page expects
PAGES = [
    st.Page(VIEWS / "overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page(VIEWS / "medical.py", title="Medical", icon=":material/neurology:"),
    st.Page(VIEWS / "finance.py", title="Finance", icon=":material/candlestick_chart:"),
    st.Page(VIEWS / "recommendation.py", title="Recommendation", icon=":material/movie:"),
]

page = st.navigation(PAGES)
from dashboards.common import runs_dir  # noqa: E402
from dashboards.uploads import reap_closed_sessions, sweep_stale  # noqa: E402


@st.cache_resource(ttl=3600, show_spinner=False)
def sweep_uploads() -> int:
    """At app start (and hourly): remove upload folders a killed server left behind."""
    return len(sweep_stale())


sweep_uploads()
reap_closed_sessions()  # folders of sessions the server has closed since the last rerun

st.sidebar.caption(f"Runs root: `{runs_dir()}`")
if str(st.get_option("server.address") or "") not in ("127.0.0.1", "localhost", "::1"):
    # plain `streamlit run` listens on every interface; these pages show scans and models
    st.sidebar.warning("This server is not bound to 127.0.0.1. Start it with `make dashboards` "
                       "(or `--server.address 127.0.0.1`) to keep it local.")
page.run()
