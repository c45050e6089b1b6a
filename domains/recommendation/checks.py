"""Checks of what a notebook user passes to the recommendation Python API (``api.py``, ``data.py``,
``inference.py``, ``because.py``): a wrong type or value is one :class:`ArgumentError` line naming the
argument, what was found and what was expected — not an ``AttributeError``, ``KeyError`` or numpy
message from deep inside pandas.

    frame_arg(df, "inter", ["user_id", "item_id"])   # a non-empty DataFrame with these columns
    whole_number(seed, "seed", low=0, high=2**32 - 1)
    fraction(ratio, "ratio")                         # a number strictly between 0 and 1
    id_arg(user_id, "user_id")                       # a usable id: not None/NaN, not a list
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import UserInputError, plain

__all__ = ["ArgumentError", "found", "path_arg", "whole_number", "fraction", "frame_arg", "id_arg", "text_list"]


class ArgumentError(UserInputError, TypeError, ValueError):
    """An API argument of the wrong type or out of range (catchable as TypeError or ValueError too)."""


def found(value: Any) -> str:
    """``value`` as a message shows it: short scalars and text as they are, anything else by its type
    (and length), never a whole DataFrame."""
    if value is None or isinstance(value, (bool, int, float, np.integer, np.floating)):
        return plain(value)
    if isinstance(value, str):
        return plain(value) if len(value) <= 60 else f"a text of {len(value)} characters"
    if isinstance(value, pd.DataFrame):
        return f"a DataFrame of {len(value)} row(s)"
    if isinstance(value, (list, tuple, set, dict, pd.Series, np.ndarray)):
        return f"a {type(value).__name__} of {len(value)} element(s)"
    return f"a {type(value).__name__}"


def path_arg(value: Any, name: str, what: str = "a path") -> Path:
    """``value`` as a Path: text or a path-like object, not blank."""
    if isinstance(value, (str, os.PathLike)) and str(os.fspath(value)).strip():
        return Path(value)
    raise ArgumentError(f"{name} {found(value)}: expected {what} (text or pathlib.Path)")


def whole_number(value: Any, name: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int when it is a whole number within [low, high] (a bool is not a number)."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if ok and (low is None or value >= low) and (high is None or value <= high):
        return int(value)
    bounds = " and ".join(s for s in (f">= {low}" if low is not None else "", f"<= {high}" if high is not None else "") if s)
    raise ArgumentError(f"{name} {found(value)}: expected a whole number{' ' + bounds if bounds else ''}")


def fraction(value: Any, name: str, allow_zero: bool = False) -> float:
    """``value`` as a float strictly between 0 and 1 (or 0 itself with ``allow_zero``)."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        v = float(value)
        if math.isfinite(v) and (0 <= v if allow_zero else 0 < v) and v < 1:
            return v
    raise ArgumentError(f"{name} {found(value)}: expected a number {'from 0' if allow_zero else 'above 0'} and below 1")


def frame_arg(value: Any, name: str, columns: Sequence[str], what: str = "interactions", ids: Sequence[str] = ()) -> pd.DataFrame:
    """``value`` when it is a DataFrame with ``columns``, at least one row, and no missing value in the
    ``ids`` columns (a NaN id would be a user or item of its own, or break the grouping)."""
    if not isinstance(value, pd.DataFrame):
        raise ArgumentError(f"{name} {found(value)}: expected a pandas DataFrame of {what} with columns {list(columns)}")
    missing = [c for c in columns if c not in value.columns]
    if missing:
        raise ArgumentError(f"{name}: missing column(s) {missing}; expected {what} with columns {list(columns)}, found {[str(c) for c in value.columns]}")
    if len(value) == 0:
        raise ArgumentError(f"{name}: 0 rows; expected at least one row of {what}")
    for c in ids:
        bad = value[c].isna().to_numpy()
        if bad.any():
            raise ArgumentError(f"{name}: column {c!r} has {int(bad.sum())} missing value(s) (first at rows {np.flatnonzero(bad)[:5].tolist()}); "
                                "expected an id in every row")
    return value


def id_arg(value: Any, name: str) -> Hashable:
    """``value`` when it can be an id (text or a number): not None, NaN, a list or another container."""
    if isinstance(value, (str, int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return value
    if isinstance(value, (float, np.floating)) and math.isfinite(float(value)):
        return value
    raise ArgumentError(f"{name} {found(value)}: expected one id (text or an integer)")


def text_list(value: Any, name: str, what: str = "names") -> list[str]:
    """``value`` as a list of text: a list/tuple/array of strings (a bare string is refused: it would
    be read letter by letter)."""
    if isinstance(value, str):
        raise ArgumentError(f"{name} {found(value)} is one text: expected a list of {what}, e.g. [{value!r}]")
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ArgumentError(f"{name} {found(value)}: expected a list of {what} (text)")
