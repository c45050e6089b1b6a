"""Experiment tracking with MLflow.

Embedded by default: a SQLite store at ``<runs_dir>/mlflow.db`` with artifacts under
``<runs_dir>/mlartifacts`` — nothing to start, nothing leaves the machine. Set
``MLFLOW_TRACKING_URI`` to log to a server instead. Browse with
``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db`` (binds 127.0.0.1).

Tracking is a side channel: if the store cannot be written the run goes on and says so once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator

from core.locking import FolderLock
from core.logging import get_logger

__all__ = ["Tracker", "default_tracking_uri", "flatten"]

log = get_logger("tracking")

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


def default_tracking_uri(runs_dir: str | Path) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


_MLFLOW_BAD_CHARS = re.compile(r"[^0-9A-Za-z_\-. /:]")


def mlflow_key(name: str) -> str:
    """MLflow accepts only alphanumerics, ``_ - . space / :`` in metric/param names:
    ``precision@10`` becomes ``precision_at_10``."""
    return _MLFLOW_BAD_CHARS.sub("_", name.replace("@", "_at_"))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Tracker:
    """One MLflow run per suite run. ``enabled=False`` makes every call a no-op."""

    def __init__(self, experiment: str, run_name: str, runs_dir: str | Path, enabled: bool = True, tags: dict[str, str] | None = None):
        self.enabled = enabled
        self.run_id: str | None = None
        self.uri = default_tracking_uri(runs_dir)
        self._client = None
        self._failed = False
        if not enabled:
            return
        if not os.environ.get("MLFLOW_TRACKING_URI") and any(c in str(Path(runs_dir).resolve()) for c in "%?"):
            # SQLAlchemy decodes %XX in a sqlite URL's path and cuts it at '?', and MLflow does not: a runs folder 'a%20b'
            # made every run start retry for 90 s, then lose its tracking; 'a?b' put the store in a file 'a' beside it
            self._disable(ValueError("the runs folder's path contains '%' or '?', which an MLflow SQLite tracking URI cannot hold; "
                                     "use a --runs-dir without them, or set MLFLOW_TRACKING_URI"))
            return
        try:
            import mlflow
            from mlflow.tracking import MlflowClient

            if os.environ.get("SUITE_DEBUG") != "1":  # MLflow logs a store error as ERROR + the SQL + a traceback, then raises
                logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)  # it: _disable says it in one line

            with _store_setup_lock(self.uri):
                self._client = MlflowClient(tracking_uri=self.uri)
                exp = self._client.get_experiment_by_name(experiment)  # creates and migrates a new SQLite store's tables
                if exp is None:
                    kwargs = {}
                    if self.uri.startswith("sqlite:"):
                        kwargs["artifact_location"] = (Path(runs_dir).resolve() / "mlartifacts" / experiment).as_uri()
                    try:
                        exp_id = self._client.create_experiment(experiment, **kwargs)
                    except Exception:  # created concurrently by another process (a server store)
                        exp_id = self._client.get_experiment_by_name(experiment).experiment_id
                else:
                    exp_id = exp.experiment_id
            run = self._client.create_run(exp_id, run_name=run_name, tags=tags or {})
            self.run_id = run.info.run_id
            del mlflow
        except Exception as e:  # noqa: BLE001
            self._disable(e)

    def _disable(self, err: Exception) -> None:
        if not self._failed:
            # one line: a database error's text goes on with the SQL statement and its parameters over many lines
            kept = [ln.strip() for ln in str(err).splitlines() if ln.strip() and not ln.lstrip().startswith(("[SQL:", "[parameters:", "(Background on"))]
            first = " ".join(kept)
            first = first if len(first) <= 400 else first[:397] + "..."
            log.warning(f"MLflow tracking disabled for this run ({self.uri}): {type(err).__name__}: {first} "
                        "(the run itself goes on; its metrics are in its folder)")
        self._failed = True
        self.enabled = False

    def _call(self, fn, *args, **kwargs):
        if not self.enabled or self._client is None or self.run_id is None:
            return
        try:
            fn(self.run_id, *args, **kwargs)
        except Exception as e:  # noqa: BLE001
            self._disable(e)

    def log_params(self, params: dict[str, Any]) -> None:
        if not self.enabled:  # importing mlflow costs seconds: not for --no-track runs or follower ranks
            return
        from mlflow.entities import Param

        items = [Param(mlflow_key(k), str(v)[:6000]) for k, v in flatten(params).items()]
        self._call(lambda rid: self._client.log_batch(rid, params=items))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self.enabled:
            return
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(mlflow_key(k), float(v), ts, int(step or 0)) for k, v in flatten(metrics).items() if _is_number(v)]
        if items:
            self._call(lambda rid: self._client.log_batch(rid, metrics=items))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._call(lambda rid: self._client.log_artifact(rid, str(path), artifact_path))

    def end(self, status: str = "FINISHED") -> None:
        self._call(lambda rid: self._client.set_terminated(rid, status=status))


@contextlib.contextmanager
def _store_setup_lock(uri: str) -> Iterator[None]:
    """Held while a run opens a local SQLite store and finds or creates its experiment. MLflow creates a new
    store's tables on first open, unguarded: runs started at once on a fresh ``mlflow.db`` raced there
    ("duplicate column name: step") and all but one lost their tracking. Logging itself needs no lock."""
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        yield
        return
    db = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    db.parent.mkdir(parents=True, exist_ok=True)
    with FolderLock.wait(db.parent / f".{db.name}.lock",
                         on_wait=lambda pid: log.info(f"waiting for another run (PID {pid}) to finish setting up the MLflow store {db}")):
        yield


def _is_number(v: Any) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f == f  # NaN is not logged
