"""Structured logging: human-readable lines on the console, JSON lines in the run directory."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

__all__ = ["get_logger", "attach_run_log", "detach_run_log"]

_ROOT = "suite"


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _configure_root() -> logging.Logger:
    root = logging.getLogger(_ROOT)
    if not getattr(root, "_suite_configured", False):
        root.setLevel(logging.INFO)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.propagate = False
        root._suite_configured = True  # type: ignore[attr-defined]
    return root


def get_logger(name: str) -> logging.Logger:
    """A logger under the suite's root (``suite.<name>``). Pass structured fields with
    ``log.info("msg", extra={"fields": {...}})``."""
    _configure_root()
    return logging.getLogger(f"{_ROOT}.{name}")


def attach_run_log(run_dir: Path) -> logging.Handler:
    """Also write every suite log record as JSON to ``<run_dir>/log.jsonl``."""
    root = _configure_root()
    handler = logging.FileHandler(Path(run_dir) / "log.jsonl", encoding="utf-8")
    handler.setFormatter(JsonLinesFormatter())
    root.addHandler(handler)
    return handler


def detach_run_log(handler: logging.Handler) -> None:
    """Stop and close a handler returned by :func:`attach_run_log`."""
    logging.getLogger(_ROOT).removeHandler(handler)
    handler.close()
