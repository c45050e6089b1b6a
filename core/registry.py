"""One name → builder registry for every domain's models (timm's ``register_model`` /
``create_model`` pattern): a run stores ``{"name": ..., "kwargs": {...}}`` and training, inference,
export and the dashboards rebuild the model through the domain's registry.

    MODELS = Registry("medical model", error=UnknownModelError)
    MODELS.register("unet", entry)          # refuses a second, different entry under the same name
    MODELS.lookup("unet")                   # the entry, or one line naming what is registered

A name may also be *lazy*: ``Registry(..., lazy={"sasrec": "domains.recommendation.sequential"})``
imports that module (which registers the name) on first lookup, so heavy models cost nothing until used.
"""

from __future__ import annotations

import importlib
from typing import Any, Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(dict, Generic[T]):
    """A ``dict`` of registered entries with a clear error for unknown names."""

    def __init__(self, kind: str, *, error: type[Exception] = KeyError, lazy: dict[str, str] | None = None):
        super().__init__()
        self.kind = kind
        self.error = error
        self.lazy = dict(lazy or {})

    def register(self, name: str, entry: T) -> T:
        if name in self and self[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self[name] = entry
        return entry

    def names(self) -> list[str]:
        return sorted(set(self) | set(self.lazy))

    def lookup(self, name: Any) -> T:
        if name not in self and name in self.lazy:
            importlib.import_module(self.lazy[name])
        if name not in self:
            raise self.error(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")
        return self[name]
