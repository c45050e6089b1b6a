"""Runs the dashboards are tested against, produced in this test session by the code that makes
them in real use: ``core.runs.Run`` for the overview, each domain's own entry point (``train`` /
``backtest``) with a tiny config for the domain pages. Built once per session and shared by every dashboard test."""

from __future__ import annotations

import dataclasses
import importlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pytest

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest


@dataclasses.dataclass
class DomainRun:
    domain: str
    run_dir: Path | None
    skip_reason: str | None
    seconds: float = 0.0


OPTIONAL = ("device", "seeds")  # settings a command's config may not have


def tiny(cls, **settings):
    """``cls(**settings)``, leaving out the :data:`OPTIONAL` settings this command's config does not
    have: commands keep only the fields they use (issue 12.5), e.g. a backtest without ``device``.
    Any other unknown setting still fails loudly."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in settings.items() if k in names or k not in OPTIONAL})


# Each domain's own entry point with a tiny config: a real run directory holding a real (if barely
# trained) model and the real output tables, in tens of seconds on 2 cores.
def _medical(runs_dir: Path) -> Path:
    from domains.medical.train import TrainConfig, train

    return train(tiny(TrainConfig, name="dash-medical", runs_dir=str(runs_dir), device="cpu", channels=(8, 16), spacing=4.0, patch=32,
                             num_samples=1, iters_per_epoch=2, max_epochs=1, val_every=1, sw_batch_size=2, evaluate_test=False))


def _finance(runs_dir: Path) -> Path:
    # the backtest, not train: it writes the forecaster *and* the backtest/VaR/importance tables the page shows
    from domains.finance.backtest import BacktestConfig, backtest

    return backtest(tiny(BacktestConfig, name="dash-finance", runs_dir=str(runs_dir), device="cpu", folds=2, test_days=15, epochs=1,
                         max_batches=3, refit_epochs=1, hidden_size=8, encoder_length=21, tickers=["SP500", "AAPL", "JPM"], seeds=1))


def _recommendation(runs_dir: Path) -> Path:
    from domains.recommendation.train import TrainConfig, train

    return train(tiny(TrainConfig, name="dash-recommendation", runs_dir=str(runs_dir), device="cpu", epochs=1, max_steps=8, id_dim=16,
                             feature_dim=8, hidden=[32], out_dim=16, text="none", baselines=True, bpr_epochs=2, bpr_dim=8))


BUILDERS: dict[str, Callable[[Path], Path]] = {"medical": _medical, "finance": _finance, "recommendation": _recommendation}


def make_domain_run(domain: str, runs_dir: Path) -> DomainRun:
    """A tiny run made by the domain's own code; a skip reason when that code is not there yet."""
    t0 = time.perf_counter()
    try:
        importlib.import_module(f"domains.{domain}.api")
    except ImportError as e:
        return DomainRun(domain, None, f"domains/{domain}/api.py not importable: {e}")
    from core.data import SourceMissingError

    fetch = os.environ.get("SUITE_DEBIAN_FETCH")
    os.environ["SUITE_DEBIAN_FETCH"] = "0"  # tests never download: a data set that is not here is a skip, not a fetch
    try:
        run_dir = BUILDERS[domain](runs_dir)
    except ImportError as e:
        return DomainRun(domain, None, f"the {domain} domain's training entry point is not importable: {e}")
    except SourceMissingError as e:  # e.g. the medical data set on a machine without its Debian package
        return DomainRun(domain, None, f"its data set is not prepared and cannot be here: {e}")
    finally:
        if fetch is None:
            os.environ.pop("SUITE_DEBIAN_FETCH", None)
        else:
            os.environ["SUITE_DEBIAN_FETCH"] = fetch
    return DomainRun(domain, Path(run_dir).resolve(), None, time.perf_counter() - t0)


@pytest.fixture
def medical_upload_page() -> Callable[..., AppTest]:
    """``medical_upload_page(run_dir, timeout)``: the app's medical page on that run with "Upload a scan" chosen — what every
    upload test of the page starts from (the environment, e.g. ``SUITE_RUNS_DIR``, is the test's to set)."""
    from streamlit.testing.v1 import AppTest

    def open_page(run_dir: Path, timeout: int = 120) -> AppTest:
        at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py"), default_timeout=timeout)
        at.run()
        at.switch_page("views/medical.py").run()
        box = at.selectbox(key="medical_run")
        box.set_value(next(o for o in box.options if o.startswith(f"{Path(run_dir).name}  ·"))).run()
        at.radio(key="med_source").set_value("Upload a scan").run()
        return at

    return open_page


@pytest.fixture(scope="module")
def medical_run(tmp_path_factory):
    """A tiny real medical model run of the test module's own (only this domain's: a medical page test needs no other)."""
    r = make_domain_run("medical", tmp_path_factory.mktemp("runs"))
    if r.run_dir is None:
        pytest.skip(f"medical: {r.skip_reason}")
    return r.run_dir


@pytest.fixture(scope="session")
def dashboard_runs(session_runs_dir) -> dict[str, DomainRun]:
    """Tiny real runs of every domain whose train() exists, in the session's runs root."""
    return {d: make_domain_run(d, session_runs_dir) for d in ("medical", "finance", "recommendation")}


@pytest.fixture
def app_env(monkeypatch, session_runs_dir):
    """Point the app (AppTest runs in-process) at the session's runs root."""
    monkeypatch.setenv("SUITE_RUNS_DIR", str(session_runs_dir))
    return session_runs_dir


@pytest.fixture
def domain_run(dashboard_runs, app_env) -> Callable[[str], DomainRun]:
    """``domain_run("finance")``: that domain's tiny run, or a skip saying why there is none."""

    def get(domain: str) -> DomainRun:
        r = dashboard_runs[domain]
        if r.run_dir is None:
            pytest.skip(f"{domain}: {r.skip_reason}")
        return r

    return get
