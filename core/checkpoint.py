"""One checkpoint format for the whole suite.

A *training checkpoint* is a single ``.pt`` file holding only tensors and plain Python
containers (model, optimizer, scheduler, AMP scaler state, step, epoch, RNG states, extra),
written atomically and read back with ``torch.load(weights_only=True)`` — nothing is unpickled.
*Deployable weights* are safetensors (:func:`save_weights` / :func:`load_weights`).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.distributed import unwrap as _unwrap
from core.errors import UserInputError, one_line
from core.io import atomic_path, atomic_write

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "restore_checkpoint",
    "latest_checkpoint",
    "checkpoints_newest_first",
    "save_weights",
    "load_weights",
    "safe_torch_load",
    "CheckpointError",
    "CheckpointDamagedError",
    "CheckpointMismatchError",
    "optimizer_mismatch",
    "load_state_into",
    "state_mismatch",
]

_STEP_RE = re.compile(r"step_(\d+)\.pt$")


class CheckpointError(UserInputError, RuntimeError):
    """A checkpoint file is missing, corrupt or does not fit the model."""


class CheckpointDamagedError(CheckpointError):
    """The file is missing, unreadable (truncated, empty, not a zip) or not a whole suite checkpoint:
    an older checkpoint of the same run may still load (``Run.resume`` falls back to it).
    ``reason``: what is wrong, in a few words without the path (for a warning naming the file)."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint that does not fit this run's model, optimizer, scheduler or scaler
    (the settings changed since it was saved): an older checkpoint would not fit either."""


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[-2], tuple(int(x) for x in py[:-2]), py[-1]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def safe_torch_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` and a clear error for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointDamagedError(f"checkpoint {path} does not exist", reason="missing")
    if path.stat().st_size == 0:
        raise CheckpointDamagedError(f"cannot read checkpoint {path}: it is empty (0 bytes), e.g. cut off by a crash or a full disk", reason="empty, 0 bytes")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise CheckpointDamagedError(
            f"cannot read checkpoint {path}: {type(e).__name__}: {one_line(e, sentence=True)}. "
            "It is corrupt, truncated, or contains pickled objects that are not allowed (only tensors and plain containers are loaded).",
            reason=f"unreadable: {type(e).__name__}: {one_line(e, 120, sentence=True)}",
        ) from e


def save_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    step: int = 0,
    epoch: int = 0,
    extra: dict[str, Any] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write a full training checkpoint atomically. With ``keep_last`` only the newest
    ``keep_last`` ``step_*.pt`` files in the same folder are kept — older ones are removed only
    after the new one is whole on disk, so there is always at least one intact checkpoint."""
    path = Path(path)
    payload: dict[str, Any] = {
        "format": "suite-checkpoint-v1",
        "model": _unwrap(model).state_dict(),
        "step": int(step),
        "epoch": int(epoch),
        "rng": _rng_state(),
        "extra": extra or {},
    }
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None:
            payload[name] = obj.state_dict()
            payload[f"{name}_class"] = type(obj).__name__  # so a resume with another kind is named, not half-loaded
    # written to a temp file and renamed: a kill mid-write leaves the previous checkpoint as it was
    try:
        with atomic_write(path, "wb") as fh:
            torch.save(payload, fh)
    except RuntimeError as e:
        # torch's zip writer reports a write the disk refused (full, over quota) as its own RuntimeError ("unexpected
        # pos …") with the OSError as context: give the OSError, naming the file, so the CLI says "no space left" in one line
        cause = e.__context__
        if isinstance(cause, OSError) and cause.errno is not None:
            raise OSError(cause.errno, cause.strerror, str(path)) from e
        raise
    if keep_last:
        olds = sorted((p for p in path.parent.glob("step_*.pt") if _STEP_RE.search(p.name)), key=lambda p: int(_STEP_RE.search(p.name).group(1)))  # type: ignore[union-attr]
        for p in olds[:-keep_last]:
            p.unlink(missing_ok=True)
    return path


def load_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    map_location: str | torch.device = "cpu",
    restore_rng: bool = True,
    strict: bool = True,
) -> dict[str, Any]:
    """Restore what is given from a checkpoint; returns ``{"step", "epoch", "extra"}``.
    :class:`CheckpointDamagedError` when the file cannot be read as a whole suite checkpoint,
    :class:`CheckpointMismatchError` when it does not fit what is given."""
    ckpt = read_checkpoint(path, map_location=map_location)
    return restore_checkpoint(ckpt, path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, restore_rng=restore_rng, strict=strict)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's contents, checked to be a whole suite training checkpoint (else
    :class:`CheckpointDamagedError` naming the file); nothing is restored yet."""
    ckpt = safe_torch_load(path, map_location=map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "suite-checkpoint-v1":
        raise CheckpointDamagedError(f"{path} is not a suite training checkpoint (missing format marker)", reason="not a suite training checkpoint")
    bad = [k for k, ok in (("model", isinstance(ckpt.get("model"), dict)), ("step", _is_int(ckpt.get("step"))), ("epoch", _is_int(ckpt.get("epoch"))),
                           ("extra", isinstance(ckpt.get("extra", {}), dict))) if not ok]
    if bad:
        raise CheckpointDamagedError(f"{path}: damaged suite training checkpoint ({', '.join(bad)} missing or of the wrong type)",
                                     reason=f"{', '.join(bad)} missing or of the wrong type")
    return ckpt


def restore_checkpoint(ckpt: dict[str, Any], path: str | Path, *, model: torch.nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None,
                       scheduler: Any | None = None, scaler: Any | None = None, restore_rng: bool = True, strict: bool = True) -> dict[str, Any]:
    """Load a :func:`read_checkpoint` result into what is given; returns ``{"step", "epoch", "extra"}``.
    Everything given is checked to fit before anything is loaded."""
    if model is not None:
        problem = state_mismatch(model, ckpt["model"], strict=strict)
        if problem:
            raise CheckpointMismatchError(f"checkpoint {path} does not fit {type(_unwrap(model)).__name__}: {problem}")
    if optimizer is not None and "optimizer" in ckpt:
        problem = optimizer_mismatch(optimizer, ckpt["optimizer"], ckpt.get("optimizer_class"))
        if problem:
            raise CheckpointMismatchError(f"checkpoint {path}: its optimizer state does not fit the {type(optimizer).__name__} of this run: {problem}")
    for name, obj in (("scheduler", scheduler), ("scaler", scaler)):
        saved = ckpt.get(f"{name}_class")
        if obj is not None and name in ckpt and isinstance(saved, str) and saved != type(obj).__name__:
            raise CheckpointMismatchError(f"checkpoint {path}: its {name} state is a {saved}'s but this run uses a {type(obj).__name__}")
    if model is not None:
        load_state_into(model, ckpt["model"], source=f"checkpoint {path}", strict=strict)
    # an optimizer/scheduler/scaler of another kind or size that the checks above do not see
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None and name in ckpt:
            try:
                obj.load_state_dict(ckpt[name])
            except Exception as e:  # noqa: BLE001 - torch raises ValueError, KeyError, TypeError...
                raise CheckpointMismatchError(f"checkpoint {path}: its {name} state does not fit the {type(obj).__name__} of this run "
                                              f"({type(e).__name__}: {one_line(e)}); "
                                              "was it saved with other settings?") from e
    if restore_rng and "rng" in ckpt:
        try:
            _set_rng_state(ckpt["rng"])
        except Exception as e:  # noqa: BLE001
            raise CheckpointDamagedError(f"checkpoint {path}: damaged random-number state ({type(e).__name__})", reason="damaged random-number state") from e
    return {"step": ckpt["step"], "epoch": ckpt["epoch"], "extra": ckpt.get("extra", {})}


def optimizer_mismatch(optimizer: Any, saved: Any, saved_class: str | None = None) -> str | None:
    """Why an optimizer's saved ``state_dict`` does not fit ``optimizer``, in a few words naming both
    sides (``None`` when it fits as far as can be told). torch's ``load_state_dict`` only compares the
    number of parameters per group: an SGD state loads into Adam without a word and its first step
    then fails on a missing key (or runs with SGD's hyperparameters)."""
    mine = type(optimizer).__name__
    if isinstance(saved_class, str) and saved_class != mine:
        return f"it was saved by {saved_class}, this run uses {mine}"
    own_groups = getattr(optimizer, "param_groups", None)
    if not isinstance(own_groups, list) or not all(isinstance(g, dict) for g in own_groups):
        return None  # a wrapper of several optimizers (TorchRec's): its own load_state_dict decides
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list) or not all(isinstance(g, dict) for g in saved["param_groups"]):
        return f"the saved state is not an optimizer state (no list of parameter groups), this run uses {mine}"
    groups = saved["param_groups"]
    if saved_class is None:  # a checkpoint of an older version: the settings a group holds tell the optimizer type
        foreign = sorted({k for g in groups for k in g} - {k for g in own_groups for k in g} - {"params"})
        if foreign:
            return f"its parameter groups hold settings {', '.join(foreign[:4])} that {mine} does not have: it was saved by another optimizer type"
    if len(groups) != len(own_groups):
        return f"it has {len(groups)} parameter group(s), this run's {mine} has {len(own_groups)}"
    for i, (g, own) in enumerate(zip(groups, own_groups)):
        ids = g.get("params")
        if not isinstance(ids, list) or len(ids) != len(own["params"]):
            n = len(ids) if isinstance(ids, list) else "no"
            return f"parameter group {i} has {n} parameter(s) in the checkpoint, {len(own['params'])} in this run (other trainable parameters)"
        state = saved.get("state") if isinstance(saved.get("state"), dict) else {}
        for pid, param in zip(ids, own["params"]):
            for key, value in (state.get(pid) or {}).items() if isinstance(state.get(pid), dict) else ():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and tuple(value.shape) != tuple(param.shape):
                    return (f"its {key!r} of parameter {pid} has shape {_shape(tuple(value.shape))}, the parameter has {_shape(tuple(param.shape))} "
                            "(other trainable parameters, or another order)")
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def checkpoints_newest_first(directory: str | Path) -> list[Path]:
    """The ``step_<N>.pt`` files in ``directory``, highest N first (``[]`` when there is no such folder)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.glob("step_*.pt") if (m := _STEP_RE.search(p.name)) and p.is_file()]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(directory: str | Path) -> Path | None:
    """Newest ``step_<N>.pt`` in ``directory`` (by N), or None."""
    found = checkpoints_newest_first(directory)
    return found[0] if found else None


def save_weights(path: str | Path, model_or_state: torch.nn.Module | dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Model weights as safetensors (shared tensors are de-duplicated)."""
    from safetensors.torch import save_file

    state = model_or_state if isinstance(model_or_state, dict) else _unwrap(model_or_state).state_dict()
    state = _dedupe_shared({k: v.detach().cpu().contiguous() for k, v in state.items()})
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return Path(path)


def _dedupe_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    seen: dict[tuple[int, int], str] = {}
    out = {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else (id(v), 0)
        out[k] = v.clone() if key in seen else v
        seen.setdefault(key, k)
    return out


def load_weights(path: str | Path, model: torch.nn.Module | None = None, strict: bool = True, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Read safetensors (or a weights-only ``.pt``/``.pth``) and optionally load into ``model``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device=device)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"cannot read safetensors file {path}: {e}") from e
    else:
        state = safe_torch_load(path, map_location=device)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if isinstance(state, dict) and state.get("format") == "suite-checkpoint-v1":
            state = state["model"]
    if model is not None:
        load_state_into(model, state, source=f"weights {path}", strict=strict)
    return state


def state_mismatch(model: torch.nn.Module, state: dict[str, Any], strict: bool = True) -> str | None:
    """What keeps ``state`` from loading into ``model``, in one line naming the tensor and both
    shapes (``None`` when it fits): shape mismatches first, then missing and unexpected tensors."""
    own = _unwrap(model).state_dict()
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()  # in the model's order
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    if shapes:
        k, found, expected = shapes[0]
        more = f" (and {len(shapes) - 1} more tensor(s) of another shape)" if len(shapes) > 1 else ""
        return f"tensor {k!r} has shape {_shape(found)} in the file but the model expects {_shape(expected)}{more}"
    if not strict:
        return None
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing:
        return f"the model's tensor {missing[0]!r} is missing from the file ({len(missing)} missing" + (f", {len(unexpected)} unexpected such as {unexpected[0]!r})" if unexpected else ")")
    if unexpected:
        return f"the file holds tensor {unexpected[0]!r} that the model does not have ({len(unexpected)} unexpected)"
    return None


def _shape(shape: tuple[int, ...]) -> str:
    return str(tuple(int(d) for d in shape))


def load_state_into(model: torch.nn.Module, state: dict[str, Any], source: str, strict: bool = True) -> None:
    """``model.load_state_dict(state)`` with a :class:`CheckpointError` naming the source file, the
    tensor and the shapes found and expected, instead of torch's multi-line report."""
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"{source} holds a {type(state).__name__}, not a dict of named tensors (a state_dict)")
    problem = state_mismatch(model, state, strict=strict)
    if problem:
        raise CheckpointMismatchError(f"{source} does not fit {type(_unwrap(model)).__name__}: {problem}")
    try:
        _unwrap(model).load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise CheckpointMismatchError(f"{source} does not fit {type(_unwrap(model)).__name__}: {one_line(e, None)}") from e
