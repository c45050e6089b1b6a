"""Runs the dashboards are tested against, produced in this test session by the code that makes
them in real use: ``core.runs.Run`` for the overview, each domain's own ``train(cfg)`` with a tiny
config for the domain pages. Built once per session and shared by every dashboard test."""

from __future__ import annotations

import dataclasses
import importlib
import os
import time
from pathlib import Path
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "dashboards" / "app.py")

# Tiny settings per domain, applied only where the domain's config has the field: the point is a
# real run directory with a real (if barely trained) model, in seconds.
TINY: dict[str, dict[str, Any]] = {
    "medical": {"channels": (8, 16), "spacing": 4.0, "patch": 32, "num_samples": 1, "iters_per_epoch": 2, "max_epochs": 1, "val_every": 1,
                "sw_batch_size": 2, "evaluate_test": False, "track": True},
    "finance": {"max_epochs": 1, "epochs": 1, "max_steps": 3, "limit_train_batches": 3, "limit_val_batches": 2, "hidden_size": 8,
                "attention_head_size": 1, "batch_size": 32, "num_workers": 0, "max_tickers": 3, "tickers_limit": 3, "n_tickers": 3},
    "recommendation": {"epochs": 1, "max_steps": 8, "id_dim": 16, "feature_dim": 8, "hidden": [32], "out_dim": 16, "text": "none",
                       "baselines": True, "bpr_epochs": 2, "bpr_dim": 8},
}


@dataclasses.dataclass
class DomainRun:
    domain: str
    run_dir: Path | None
    skip_reason: str | None
    seconds: float = 0.0


def _train_config(domain: str, runs_dir: Path, name: str):
    """The domain's train config class filled with tiny settings (only the fields it has)."""
    train_mod = importlib.import_module(f"domains.{domain}.train")
    cfg_cls = None
    for attr in ("TrainConfig", f"{domain.capitalize()}TrainConfig", "Config"):
        cfg_cls = getattr(train_mod, attr, None)
        if cfg_cls is not None:
            break
    if cfg_cls is None:
        try:
            cfg_cls = importlib.import_module(f"domains.{domain}.config").TrainConfig
        except (ImportError, AttributeError) as e:
            raise LookupError(f"domains.{domain}.train exposes no TrainConfig: {e}") from e
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    kwargs = {k: v for k, v in TINY[domain].items() if k in fields and v is not None}
    kwargs.update(runs_dir=str(runs_dir), name=name, device="cpu")
    return train_mod, cfg_cls(**kwargs)


def make_domain_run(domain: str, runs_dir: Path) -> DomainRun:
    """Train a tiny run with the domain's own ``train(cfg)``; a skip reason when it is not there yet."""
    t0 = time.perf_counter()
    try:
        importlib.import_module(f"domains.{domain}.api")
    except ImportError as e:
        return DomainRun(domain, None, f"domains/{domain}/api.py not importable: {e}")
    try:
        train_mod, cfg = _train_config(domain, runs_dir, f"dash-{domain}")
    except (ImportError, LookupError) as e:
        return DomainRun(domain, None, f"domains.{domain}.train not available: {e}")
    train_fn: Callable | None = getattr(train_mod, "train", None)
    if train_fn is None:
        return DomainRun(domain, None, f"domains.{domain}.train has no train(cfg)")
    out = train_fn(cfg)
    run_dir = Path(out) if isinstance(out, (str, os.PathLike)) else Path(runs_dir) / domain / "latest"
    return DomainRun(domain, run_dir.resolve(), None, time.perf_counter() - t0)


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
