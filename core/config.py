"""Configs are dataclasses; every field is a command-line flag; the resolved config is saved
with the run.

    @dataclass
    class TrainConfig(RunConfig):
        lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})

    cfg = parse_config(TrainConfig, description=__doc__)

``--config run.json`` loads a saved config (e.g. ``runs/medical/<name>/config.json``); flags given
on the command line override it. Unknown keys in a config file are an error, not ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

__all__ = ["RunConfig", "parse_config", "config_to_dict", "config_from_dict", "build_parser"]

T = TypeVar("T")


@dataclass
class RunConfig:
    """Fields every domain CLI shares."""

    name: str | None = field(default=None, metadata={"help": "run name (default: a timestamp); the run lives in <runs-dir>/<domain>/<name>"})
    runs_dir: str = field(default="runs", metadata={"help": "root folder of all runs"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present, else CPU), cpu, cuda or cuda:N"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    deterministic: bool = field(default=False, metadata={"help": "ask torch for deterministic kernels (slower)"})
    resume: bool = field(default=False, metadata={"help": "resume the run named by --name (or the latest run) from its last checkpoint"})
    track: bool = field(default=True, metadata={"help": "log params/metrics/artifacts to MLflow (embedded SQLite store under runs/ unless MLFLOW_TRACKING_URI is set)"})


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(cfg_cls: type, description: str | None = None, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", type=str, default=None, help="JSON config to start from (e.g. a saved run's config.json); flags override it")
    hints = typing.get_type_hints(cfg_cls)
    for f in dataclasses.fields(cfg_cls):
        if not f.init:
            continue
        tp, optional = _unwrap_optional(hints[f.name])
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        )
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": f"{help_text} (default: {default!r})"}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        origin = typing.get_origin(tp)
        if tp is bool:
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kwargs)
        elif origin in (list, tuple, Sequence):
            (inner,) = {a for a in typing.get_args(tp) if a is not Ellipsis} or {str}
            parser.add_argument(_flag(f.name), nargs="*", type=inner, **kwargs)
        elif tp in (int, float, str):
            parser.add_argument(_flag(f.name), type=tp, **kwargs)
        else:
            raise TypeError(f"{cfg_cls.__name__}.{f.name}: unsupported config type {tp!r}")
    return parser


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_from_dict(cfg_cls: type[T], data: dict[str, Any], source: str = "config") -> T:
    names = {f.name for f in dataclasses.fields(cfg_cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{source}: unknown config key(s) {unknown} for {cfg_cls.__name__}; known: {sorted(names)}")
    hints = typing.get_type_hints(cfg_cls)
    kwargs = {}
    for k, v in data.items():
        tp, _ = _unwrap_optional(hints[k])
        if typing.get_origin(tp) is tuple and isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    return cfg_cls(**kwargs)


def parse_config(cfg_cls: type[T], argv: Sequence[str] | None = None, description: str | None = None, prog: str | None = None) -> T:
    """Parse ``argv`` into ``cfg_cls``: defaults < ``--config`` file < explicit flags."""
    parser = build_parser(cfg_cls, description=description, prog=prog)
    ns = vars(parser.parse_args(argv))
    base: dict[str, Any] = {}
    cfg_path = ns.pop("config", None)
    if cfg_path:
        p = Path(cfg_path)
        if not p.is_file():
            parser.error(f"--config {cfg_path}: no such file")
        try:
            base = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            parser.error(f"--config {cfg_path}: not valid JSON ({e})")
        if not isinstance(base, dict):
            parser.error(f"--config {cfg_path}: expected a JSON object")
    base.update(ns)
    try:  # config_from_dict also turns lists into tuples for tuple fields
        return config_from_dict(cfg_cls, base, source=cfg_path or "command line")
    except (TypeError, ValueError) as e:
        parser.error(str(e))
        raise  # unreachable
