"""Suite-wide test settings: offline, no progress bars, runs and MLflow under a temp folder."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # fail in 0.2 s instead of retrying the hub for ~45 s
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("SUITE_PROGRESS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files worth looking at (screenshots, plots): test-artifacts/."""
    d = REPO / "test-artifacts"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="session")
def session_runs_dir(tmp_path_factory) -> Path:
    """One runs/ root shared by a test session, so domains' small real runs feed later tests."""
    return tmp_path_factory.mktemp("runs")


if str(REPO) not in sys.path:  # `tests.scoring_support` etc. import as `tests.<module>` however pytest is started
    sys.path.insert(0, str(REPO))


@pytest.fixture
def price_files(tmp_path) -> list[Path]:
    """20 real S&P 500 daily price CSVs (skfolio), one per ticker."""
    from tests.scoring_support import write_price_files

    return write_price_files(tmp_path / "prices")


@pytest.fixture(scope="session")
def ray_address():
    """Address of a real 2-CPU Ray cluster on 127.0.0.1, started once per test session and
    stopped (its own process group only) at the end."""
    from tests.scoring_support import start_ray_cluster

    cluster = start_ray_cluster()
    try:
        yield cluster.address
    finally:
        cluster.stop()
