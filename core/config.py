"""Configs are dataclasses; every field is a command-line flag; the resolved config is saved
with the run.

    @dataclass
    class TrainConfig(TrackingConfig, SeedConfig, DeviceConfig, ResumeConfig, RunConfig):
        lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})

    cfg = parse_config(TrainConfig, description=__doc__)

:class:`RunConfig` holds what every run has (``name``, ``runs_dir``); the mixins add what a
command actually uses — :class:`TrackingConfig` (``--track``), :class:`SeedConfig` (``--seed``,
``--deterministic``), :class:`DeviceConfig` (``--device``), :class:`ResumeConfig` (``--resume``),
:class:`ModelRunConfig` (``--model-run``) — so ``--help`` lists only flags that do something.

``--config run.json`` loads a saved config (e.g. ``runs/medical/<name>/config.json``); flags given
on the command line override it. A config file is checked like the flags: unknown keys, wrong
types and values outside the choices are one-line errors (exit 2) naming the key, the expected type
and the value; ``"false"``/``"true"`` read as booleans and a string for a list field is a
one-element list. A numeric field may declare its range in its metadata (``"min"``/``"max"`` inclusive,
``"above"``/``"below"`` exclusive, ``"why"``): values outside it, from flags or a file, are one line naming every
such flag (:func:`check_ranges`), and ``--help`` shows the range. Run names are plain names (no path), see
:func:`check_run_name`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

from core.errors import UserInputError

__all__ = [
    "RunConfig",
    "TrackingConfig",
    "SeedConfig",
    "DeviceConfig",
    "ResumeConfig",
    "RESUME_FIXED",
    "RESUME_SAME_DATA",
    "RESUME_HELP",
    "fixed_settings_changed",
    "ModelRunConfig",
    "ConfigError",
    "RunNameError",
    "check_run_name",
    "parse_config",
    "config_to_dict",
    "recorded_config",
    "PRIVATE_VALUE",
    "config_from_dict",
    "build_parser",
    "check_ranges",
    "range_words",
]

T = TypeVar("T")


class ConfigError(UserInputError, ValueError):
    """A config file or flag value that does not fit the config (unknown key, wrong type, bad choice)."""


class RunNameError(ConfigError):
    """A run name that is not a plain name (a path, ``..``, empty)."""


@dataclass
class RunConfig:
    """Fields every run has: where it lives. Combine with the mixins below for what a command uses."""

    name: str | None = field(default=None, metadata={"help": "run name, a plain name without '/' (default: a timestamp); the run lives in <runs-dir>/<domain>/<name>"})
    runs_dir: str = field(default="runs", metadata={"help": "root folder of all runs"})


@dataclass
class TrackingConfig:
    track: bool = field(default=True, metadata={"help": "log params/metrics/artifacts to MLflow (embedded SQLite store under runs/ unless MLFLOW_TRACKING_URI is set)"})


@dataclass
class SeedConfig:
    seed: int = field(default=0, metadata={"min": 0, "max": 2**32 - 1, "why": "NumPy's random generators take seeds 0..2^32-1",
                                           "help": "random seed (the run seeds Python, NumPy and torch once, at its start)"})
    deterministic: bool = field(default=False, metadata={"help": "ask torch for deterministic kernels (slower)"})


@dataclass
class DeviceConfig:
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present, else CPU), cpu, cuda or cuda:N"})


RESUME_FIXED = "fixed"  # field metadata {"resume": RESUME_FIXED, "resume_why": "..."}: a --resume must not change this setting
# field metadata {"resume": RESUME_SAME_DATA, "data_names": (...), "resume_why": "..."} on a path field: a --resume must read
# the same data — compared by content (core.runs), so the same file under another path or a copy continues, and another
# file written at the run's path is refused; a value in "data_names" (a bundled data set) or an empty one compares by name
RESUME_SAME_DATA = "same-data"
RESUME_HELP = "(fixed on --resume)"  # what --help adds to the flags a resume must keep (build_parser)


@dataclass
class ResumeConfig:
    """``--resume``. A setting a resumed run must not change (one that decides which rows are held out for validation
    or test: the checkpoint has trained on the run's training rows) says so in its field metadata,
    ``"resume": "fixed"`` (:data:`RESUME_FIXED`) with an optional ``"resume_why"``; a command whose rule is conditional
    overrides :meth:`fixed_on_resume` (recommendation: the seed draws the validation rows of a stratified split only).
    A path to the data (a file, a folder, or a bundled data set's name) says ``"resume": "same-data"``
    (:data:`RESUME_SAME_DATA`; ``"data_names"``: the values that name a bundled data set): the run records the data's
    identity as each attempt starts and a resume must read the same data, by content, under whatever path
    (:func:`core.runs.check_resumable`). :func:`core.runs.check_resumable` and ``Run.start`` refuse a change
    (:func:`fixed_settings_changed`); other settings continue with a warning. ``--help`` marks these flags
    :data:`RESUME_HELP` (:meth:`kept_on_resume`), or with the words of :meth:`resume_help_notes` where a command's rule
    is conditional."""

    resume: bool = field(default=False, metadata={"help": "resume the run named by --name (or the newest run of this command) from its last checkpoint"})

    @classmethod
    def fixed_on_resume(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """The settings a resume must not change, as the values to compare, read from recorded ``settings`` (a run's
        ``config.json``, or :func:`recorded_config` of a config): every field whose metadata says ``"resume": "fixed"``,
        as recorded. A key missing from ``settings`` reads as None."""
        return {f.name: settings.get(f.name) for f in dataclasses.fields(cls) if f.metadata.get("resume") == RESUME_FIXED}

    @classmethod
    def why_fixed_on_resume(cls, names: Sequence[str]) -> str:
        """Why the settings ``names`` must not change on a resume: their fields' ``"resume_why"`` (each reason once)."""
        meta = {f.name: f.metadata for f in dataclasses.fields(cls)}
        whys = dict.fromkeys(meta[n].get("resume_why") for n in names if n in meta)
        return "; ".join(w for w in whys if w) or "the run's checkpoint was trained with the run's value"

    @classmethod
    def same_data_on_resume(cls) -> dict[str, Any]:
        """The fields whose data a resume must read again (``"resume": "same-data"``), each with its metadata."""
        return {f.name: f.metadata for f in dataclasses.fields(cls) if f.metadata.get("resume") == RESUME_SAME_DATA}

    @classmethod
    def kept_on_resume(cls) -> list[str]:
        """The fields ``--help`` marks :data:`RESUME_HELP`: those :meth:`fixed_on_resume` names for the defaults (with a
        conditional rule, those fixed under the default settings) and those of :meth:`same_data_on_resume`."""
        defaults = {f.name: _field_default(f) for f in dataclasses.fields(cls)}
        fixed = cls.fixed_on_resume(json.loads(json.dumps(defaults, default=str)))
        return [f.name for f in dataclasses.fields(cls) if f.name in fixed or f.metadata.get("resume") == RESUME_SAME_DATA]

    @classmethod
    def resume_help_notes(cls) -> dict[str, str]:
        """What ``--help`` (:func:`build_parser`) adds to each flag a resume must keep, by field: :data:`RESUME_HELP`
        for those :meth:`kept_on_resume` names. A command whose :meth:`fixed_on_resume` is conditional overrides this
        to word the condition, e.g. ``{"split_seed": "(fixed on --resume with a stratified split)"}``: the defaults
        alone would mark a flag fixed that a resume under other settings accepts, or leave one unmarked that it refuses."""
        return dict.fromkeys(cls.kept_on_resume(), RESUME_HELP)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]


def fixed_settings_changed(cfg: Any, recorded: dict[str, Any]) -> list[str]:
    """The fields of ``cfg`` that a ``--resume`` must not change (:meth:`ResumeConfig.fixed_on_resume`) and whose
    values differ from ``recorded`` (the run's ``config.json``), in the order ``fixed_on_resume`` names them (the
    fields' order, unless a command's hook orders them otherwise). A key the record lacks (a run older than the flag)
    is not compared: its value then is unknown; a setting whose recorded value is the same is not named even when
    another change makes it count differently (that other one is named).
    A private field is recorded as :data:`PRIVATE_VALUE` and compares equal. Empty for a config without ``--resume``."""
    if not isinstance(cfg, ResumeConfig) or not isinstance(recorded, dict):
        return []
    now = json.loads(json.dumps(recorded_config(cfg), default=str))  # as config.json holds it (lists, not tuples)
    was_fixed, now_fixed = type(cfg).fixed_on_resume(recorded), type(cfg).fixed_on_resume(now)
    names = dict.fromkeys([*now_fixed, *was_fixed])
    return [k for k in names if k in recorded and was_fixed.get(k) != now_fixed.get(k) and recorded[k] != now.get(k)]


@dataclass
class ModelRunConfig:
    model_run: str | None = field(default=None, metadata={"help": "a run folder or run name of this domain (default: the newest completed model run)"})


def check_run_name(name: str | None, what: str = "--name") -> None:
    """A run name is one plain path component: not empty, no ``/`` or ``\\``, not ``.``/``..``,
    not absolute, no NUL or other control character (a newline would split every line that names the run),
    at most 255 bytes (a folder name's limit), not ``latest`` (the domain's pointer). Raises :class:`RunNameError`."""
    if name is None:
        return
    if not isinstance(name, str):
        raise RunNameError(f"{what} {name!r}: expected a plain run name (text)")
    bad = (
        "it is empty" if not name.strip() else
        "it contains a path separator" if "/" in name or "\\" in name or (os.altsep and os.altsep in name) else
        "it is '.' or '..'" if name in (".", "..") else
        "it contains a NUL byte" if "\0" in name else
        "it contains a control character (a newline, a tab, …)" if any(ord(c) < 32 or ord(c) == 127 for c in name) else
        f"it is {len(name.encode('utf-8', 'surrogateescape'))} bytes long (a folder name holds at most 255)" if len(name.encode("utf-8", "surrogateescape")) > 255 else
        "it starts with '.' (hidden)" if name.startswith(".") else
        "'latest' names the domain's pointer to its newest model run" if name == "latest" else
        None
    )
    if bad:
        raise RunNameError(f"{what} {name!r}: a run name must be a plain folder name inside the runs folder, but {bad}")


def _check_file_runs_dir(runs_dir: Any, source: str) -> None:
    """A config file may name a runs folder below the current one only: a shared or saved config
    must not send writes to ``/etc`` or ``../../x``. The command line (``--runs-dir``) may name any folder."""
    if not isinstance(runs_dir, str):
        return  # the type check reports it
    p = Path(runs_dir)
    if p.is_absolute() or ".." in p.parts:
        raise ConfigError(f"{source}: runs_dir {runs_dir!r} is absolute or leaves the current folder; a config file may only name a runs "
                          "folder below the current one — pass --runs-dir on the command line to write elsewhere")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _list_inner(tp: Any) -> Any:
    args = {a for a in typing.get_args(tp) if a is not Ellipsis}
    return next(iter(args)) if len(args) == 1 else str


def build_parser(cfg_cls: type, description: str | None = None, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        # the description is a module docstring with example command lines: keep its lines as written (the
        # defaults are already in each flag's help, below, so ArgumentDefaultsHelpFormatter adds nothing but reflowing)
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --ticker must not silently mean --tickers
    )
    parser.add_argument("--config", type=str, default=None, help="JSON config to start from (e.g. a saved run's config.json); flags override it")
    hints = typing.get_type_hints(cfg_cls)
    notes = cfg_cls.resume_help_notes() if isinstance(cfg_cls, type) and issubclass(cfg_cls, ResumeConfig) else {}
    for f in dataclasses.fields(cfg_cls):
        if not f.init:
            continue
        tp, optional = _unwrap_optional(hints[f.name])
        help_text = f.metadata.get("help", "")
        default = _field_default(f)
        bounds = range_words(f.metadata)
        help_text = f"{help_text} [{bounds}]" if bounds else help_text
        if "(default:" not in help_text:  # a help that states its own default (e.g. 'the newest completed model run') keeps it
            help_text = f"{help_text} (default: {default!r})"
        if notes.get(f.name):  # a --resume refuses another value (core.runs.check_resumable), or does under a condition
            help_text = f"{help_text} {notes[f.name]}"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        origin = typing.get_origin(tp)
        if tp is bool:
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kwargs)
        elif origin in (list, tuple, Sequence):
            parser.add_argument(_flag(f.name), nargs="*", type=_list_inner(tp), **kwargs)
        elif tp in (int, float, str):
            parser.add_argument(_flag(f.name), type=tp, **kwargs)
        else:
            raise TypeError(f"{cfg_cls.__name__}.{f.name}: unsupported config type {tp!r}")
    return parser


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


PRIVATE_VALUE = "<not recorded: private>"


def recorded_config(cfg: Any) -> dict[str, Any]:
    """What a run records of its config (``config.json``, MLflow params): :func:`config_to_dict` with the value of
    every field whose metadata says ``"private": True`` (e.g. a scan's path, which may carry a patient's name)
    replaced by :data:`PRIVATE_VALUE`."""
    out = config_to_dict(cfg)
    for f in dataclasses.fields(cfg):
        if f.metadata.get("private") and out.get(f.name) not in (None, "", [], ()):
            out[f.name] = PRIVATE_VALUE
    return out


_TYPE_WORDS = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _coerce_scalar(tp: type, value: Any) -> Any:
    """``value`` as ``tp`` the way the flag would read it, or raise ValueError."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError
    if isinstance(value, bool):  # True is an int in Python, never in a config
        raise ValueError
    if tp is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
        raise ValueError
    if tp is float:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
        raise ValueError
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)):
            return str(value)
        raise ValueError
    return value


def _coerce(key: str, tp_hint: Any, value: Any, choices: Sequence[Any] | None, source: str) -> Any:
    tp, optional = _unwrap_optional(tp_hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {key!r} expects {_describe(tp)}, got null")
    origin = typing.get_origin(tp)
    try:
        if origin in (list, tuple, Sequence):
            inner = _list_inner(tp)
            if isinstance(value, str):  # "tickers": "AAPL" means ["AAPL"], as --tickers AAPL does
                value = [value]
            if not isinstance(value, (list, tuple)):
                raise ValueError
            items = [_coerce_scalar(inner, v) for v in value]
            if choices is not None:
                for v in items:
                    _check_choice(key, v, choices, source)
            return tuple(items) if origin is tuple else list(items)
        out = _coerce_scalar(tp, value)
    except (ValueError, TypeError):
        raise ConfigError(f"{source}: {key!r} expects {_describe(tp)}, got {json.dumps(value, default=str)}") from None
    if choices is not None:
        _check_choice(key, out, choices, source)
    return out


def _check_choice(key: str, value: Any, choices: Sequence[Any], source: str) -> None:
    if value not in choices:
        raise ConfigError(f"{source}: {key!r} is {json.dumps(value, default=str)}, expected one of {list(choices)}")


_LIST_WORDS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) in (list, tuple, Sequence):
        return f"a list of {_LIST_WORDS.get(_list_inner(tp), 'values')}"
    return _TYPE_WORDS.get(tp, getattr(tp, "__name__", str(tp)))


def _checked_values(cfg_cls: type, data: dict[str, Any], source: str) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(cfg_cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown config key(s) {unknown} for {cfg_cls.__name__}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cfg_cls)
    return {k: _coerce(k, hints[k], v, fields[k].metadata.get("choices"), source) for k, v in data.items()}


_BOUNDS = ("min", "above", "max", "below")


def range_words(meta: Any) -> str | None:
    """What a field's range metadata allows, in words (``">= 1"``, ``"> 0"``, ``"in [0, 1)"``), or None."""
    lo = ("[", meta["min"]) if "min" in meta else ("(", meta["above"]) if "above" in meta else None
    hi = ("]", meta["max"]) if "max" in meta else (")", meta["below"]) if "below" in meta else None
    if lo and hi:
        return f"in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {lo[1]}"
    if hi:
        return f"{'<=' if hi[0] == ']' else '<'} {hi[1]}"
    return None


def _in_range(x: float, meta: Any) -> bool:
    finite_ok = math.isfinite(x) or (meta.get("infinite_ok", False) and not math.isnan(x))  # e.g. ε = inf: no noise
    return (finite_ok and ("min" not in meta or x >= meta["min"]) and ("above" not in meta or x > meta["above"])
            and ("max" not in meta or x <= meta["max"]) and ("below" not in meta or x < meta["below"]))


def check_ranges(cfg: Any) -> None:
    """One :class:`ConfigError` naming every numeric flag outside the range its field declares in its metadata:
    ``"min"``/``"max"`` (inclusive), ``"above"``/``"below"`` (exclusive), optionally ``"why"``. Non-finite values of a
    ranged field are refused too, except ±inf where the field says ``"infinite_ok": True`` (inside its bounds). :func:`config_from_dict` (so every parsed flag and config file) calls it; a config
    built in code can call it in ``__post_init__``. Declared ranges are shown in ``--help``."""
    bad = []
    for f in dataclasses.fields(cfg):
        if not any(k in f.metadata for k in _BOUNDS):
            continue
        value = getattr(cfg, f.name, None)
        for x in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(x, (int, float)) and not isinstance(x, bool) and not _in_range(x, f.metadata):
                why = f" ({f.metadata['why']})" if "why" in f.metadata else ""
                bad.append(f"{_flag(f.name)} {x}: expected {range_words(f.metadata)}{why}")
    if bad:
        raise ConfigError("; ".join(bad))


def config_from_dict(cfg_cls: type[T], data: dict[str, Any], source: str = "config") -> T:
    """Build ``cfg_cls`` from a dict (a config file), checking keys, types, choices and ranges like the flags do."""
    cfg = cfg_cls(**_checked_values(cfg_cls, data, source))
    check_ranges(cfg)
    return cfg


def parse_config(cfg_cls: type[T], argv: Sequence[str] | None = None, description: str | None = None, prog: str | None = None) -> T:
    """Parse ``argv`` into ``cfg_cls``: defaults < ``--config`` file < explicit flags.

    Errors in the config file or a bad run name end the process with one line and exit code 2."""
    parser = build_parser(cfg_cls, description=description, prog=prog)
    ns = vars(parser.parse_args(argv))
    cfg_path = ns.pop("config", None)

    def fail(msg: str) -> typing.NoReturn:
        parser.exit(2, f"error: {msg}\n")

    base: dict[str, Any] = {}
    if cfg_path:
        p = Path(cfg_path)
        if not p.is_file():
            fail(f"--config {cfg_path}: no such file")
        try:
            base = json.loads(p.read_text(encoding="utf-8-sig"))  # a byte-order mark from a Windows editor is fine
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            fail(f"--config {cfg_path}: not valid JSON ({e})")
        if not isinstance(base, dict):
            fail(f"--config {cfg_path}: expected a JSON object")
    try:
        if "runs_dir" in base and "runs_dir" not in ns and issubclass(cfg_cls, RunConfig):
            _check_file_runs_dir(base["runs_dir"], f"--config {cfg_path}")
        base = _checked_values(cfg_cls, base, f"--config {cfg_path}")  # the file's own errors, named as such
        cfg = config_from_dict(cfg_cls, {**base, **ns}, source="command line")
        if isinstance(cfg, RunConfig):
            check_run_name(cfg.name, "--name" if "name" in ns else f"--config {cfg_path}: name")
    except ConfigError as e:
        fail(str(e))
    except TypeError as e:  # a required field without a value
        fail(str(e))
    return cfg
