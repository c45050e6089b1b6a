"""The one base class of errors a user can cause, and plain values for messages.

Every error that a bad flag, file, name or input can trigger subclasses :class:`UserInputError`;
:func:`core.cli.run_cli` turns it into one line ``error: ...`` on stderr and exit code 2. Anything
else is a bug and keeps its traceback. Domain errors may also subclass a builtin
(``ValueError``, ``FileNotFoundError``) for callers that catch those.

    class PriceDataError(UserInputError, ValueError):
        pass

    raise PriceDataError(f"{path}: column 'close' holds {plain(bad)} non-numeric values")
"""

from __future__ import annotations

from typing import Any

__all__ = ["UserInputError", "one_line", "plain"]


class UserInputError(Exception):
    """A problem the user can fix (bad file, wrong flag, unknown run, busy run folder...).
    The message is one line naming the input, what was found and what was expected."""


def plain(value: Any, digits: int = 6) -> str:
    """``value`` as a reader expects it in a message: ``150`` or ``0.123457``, never
    ``np.float64(150.0)`` or ``tensor(3.)``. Containers are formatted element by element."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # numpy scalar, 0-d array or tensor
        value = value.item()
    elif hasattr(value, "tolist") and hasattr(value, "ndim"):  # arrays and tensors
        value = value.tolist()
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(plain(v, digits) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{plain(k, digits)}: {plain(v, digits)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def one_line(source: BaseException | str, limit: int | None = 200, *, sentence: bool = False, join: bool = False) -> str:
    """A library's exception text fit for a one-line message: its first non-blank line, at most ``limit``
    characters (``None``: no cut). ``sentence`` keeps only up to the first ``". "`` (torch's zip reader
    appends a paragraph of advice); ``join`` folds all lines into one instead of keeping the first
    (pydicom lists its plugins one per line). An empty text gives ``""``."""
    text = str(source).strip()
    if join:
        text = " ".join(text.split())
    elif text:
        text = text.splitlines()[0].strip()
    if sentence:
        text = text.split(". ")[0]
    return text if limit is None else text[:limit]
