"""The one entry-point wrapper every ``python -m domains.<d>.<verb>`` uses.

    def main(argv=None) -> int:
        return run_cli(TrainConfig, train, argv, doc=__doc__, prog="python -m domains.medical.train",
                       user_errors=(MedicalInputError,))

Errors a user can cause (bad file, unknown id, NaNs, a missing prepared data set or run) become one
clear line on stderr and exit code 2 — not a traceback from deep inside a library. Anything else is a
bug and keeps its traceback. ``SUITE_DEBUG=1`` shows the traceback for user errors too.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence, TypeVar

from core.checkpoint import CheckpointError
from core.config import parse_config

__all__ = ["run_cli", "USER_ERRORS"]

T = TypeVar("T")

# Raised by core itself for conditions the user controls.
USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, CheckpointError)


def run_cli(cfg_cls: type[T], fn: Callable[[T], Any], argv: Sequence[str] | None = None, *, doc: str | None = None,
            prog: str | None = None, user_errors: tuple[type[BaseException], ...] = ()) -> int:
    cfg = parse_config(cfg_cls, argv, description=doc, prog=prog)
    try:
        fn(cfg)
    except (*USER_ERRORS, *user_errors) as e:
        if os.environ.get("SUITE_DEBUG") == "1":
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept — rerun with --resume to continue", file=sys.stderr)
        return 130
    return 0
