"""The one entry-point wrapper every ``python -m domains.<d>.<verb>`` uses.

    def main(argv=None) -> int:
        return run_cli(TrainConfig, train, argv, doc=__doc__, prog="python -m domains.medical.train")

Errors a user can cause subclass :class:`core.errors.UserInputError` (bad file, unknown id, NaNs,
a missing prepared data set or run, a busy run folder) — and a folder the machine refuses (read-only,
not a folder, disk full) — become one clear line on stderr and exit code 2 — not a traceback from deep inside a library. Anything else (a bare ``ValueError``
included) is a bug and keeps its traceback. ``SUITE_DEBUG=1`` shows the traceback for user errors too.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any, Callable, Sequence, TypeVar

from core.config import parse_config
from core.errors import UserInputError

__all__ = ["run_cli", "USER_ERRORS"]

T = TypeVar("T")

# FileNotFoundError: a missing input file or prepared data set named by the user (core.data raises it).
USER_ERRORS: tuple[type[BaseException], ...] = (UserInputError, FileNotFoundError)
# the machine refusing a folder the user chose (--runs-dir, --out, an input): read-only, a file where a folder
# should be, a full disk — one line naming the path, not a traceback from deep inside Run.start or the scoring engine
PLACE_ERRORS: tuple[type[BaseException], ...] = (PermissionError, NotADirectoryError, IsADirectoryError)
PLACE_ERRNOS = (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG)


def run_cli(cfg_cls: type[T], fn: Callable[[T], Any], argv: Sequence[str] | None = None, *, doc: str | None = None,
            prog: str | None = None, user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Parse the config, call ``fn(cfg)``; user errors -> one line and exit 2, Ctrl-C -> exit 130 (SIGTERM during a run: 143).
    ``user_errors``: extra exception types to treat as user errors (prefer subclassing UserInputError)."""
    cfg = parse_config(cfg_cls, argv, description=doc, prog=prog)
    try:
        fn(cfg)
    except (*USER_ERRORS, *user_errors) as e:
        if os.environ.get("SUITE_DEBUG") == "1":
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        if not (isinstance(e, PLACE_ERRORS) or e.errno in PLACE_ERRNOS) or os.environ.get("SUITE_DEBUG") == "1":
            raise
        print(f"error: {_one_line(e)} (check that folder, or choose another --runs-dir / --out)", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        how = "rerun with --resume to continue" if hasattr(cfg, "resume") else "rerun the same command to continue where it can (backtest folds, scoring shards)"
        print(f"interrupted; finished work is kept — {how}", file=sys.stderr)
        return getattr(e, "exit_code", 130)  # core.runs.RunTerminated: 143
    return 0


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split("\n")) if "\n" in text else text
