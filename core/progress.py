"""Progress bars for long loops (tqdm). ``SUITE_PROGRESS=0`` turns them off."""

from __future__ import annotations

import os
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

__all__ = ["progress"]


def progress(iterable: Iterable[T] | None = None, desc: str | None = None, total: int | None = None, **kwargs) -> "tqdm[T]":
    disable = bool(kwargs.pop("disable", False)) or os.environ.get("SUITE_PROGRESS", "1") == "0"
    return tqdm(iterable, desc=desc, total=total, disable=disable, dynamic_ncols=True, mininterval=0.5, **kwargs)
