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
from core.errors import UserInputError
from core.io import atomic_path, atomic_write

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "save_weights",
    "load_weights",
    "safe_torch_load",
    "CheckpointError",
    "load_state_into",
    "state_mismatch",
]

_STEP_RE = re.compile(r"step_(\d+)\.pt$")


class CheckpointError(UserInputError, RuntimeError):
    """A checkpoint file is missing, corrupt or does not fit the model."""


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
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
            "It is corrupt, truncated, or contains pickled objects that are not allowed (only tensors and plain containers are loaded)."
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
    ``keep_last`` ``step_*.pt`` files in the same folder are kept."""
    path = Path(path)
    payload: dict[str, Any] = {
        "format": "suite-checkpoint-v1",
        "model": _unwrap(model).state_dict(),
        "step": int(step),
        "epoch": int(epoch),
        "rng": _rng_state(),
        "extra": extra or {},
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        payload["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        payload["scaler"] = scaler.state_dict()
    with atomic_write(path, "wb") as fh:
        torch.save(payload, fh)
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
    """Restore what is given from a checkpoint; returns ``{"step", "epoch", "extra"}``."""
    ckpt = safe_torch_load(path, map_location=map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "suite-checkpoint-v1":
        raise CheckpointError(f"{path} is not a suite training checkpoint (missing format marker)")
    bad = [k for k, ok in (("model", isinstance(ckpt.get("model"), dict)), ("step", _is_int(ckpt.get("step"))), ("epoch", _is_int(ckpt.get("epoch"))),
                           ("extra", isinstance(ckpt.get("extra", {}), dict))) if not ok]
    if bad:
        raise CheckpointError(f"{path}: damaged suite training checkpoint ({', '.join(bad)} missing or of the wrong type)")
    if model is not None:
        load_state_into(model, ckpt["model"], source=f"checkpoint {path}", strict=strict)
    # an optimizer/scheduler/scaler of another kind or size (the config changed since the checkpoint)
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None and name in ckpt:
            try:
                obj.load_state_dict(ckpt[name])
            except Exception as e:  # noqa: BLE001 - torch raises ValueError, KeyError, TypeError...
                raise CheckpointError(f"checkpoint {path}: its {name} state does not fit the {type(obj).__name__} of this run "
                                      f"({type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}); "
                                      "was it saved with other settings?") from e
    if restore_rng and "rng" in ckpt:
        try:
            _set_rng_state(ckpt["rng"])
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"checkpoint {path}: damaged random-number state ({type(e).__name__})") from e
    return {"step": ckpt["step"], "epoch": ckpt["epoch"], "extra": ckpt.get("extra", {})}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def latest_checkpoint(directory: str | Path) -> Path | None:
    """Newest ``step_<N>.pt`` in ``directory`` (by N), or None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in directory.glob("step_*.pt") if (m := _STEP_RE.search(p.name)) and p.is_file()]
    return max(found)[1] if found else None


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
        raise CheckpointError(f"{source} holds a {type(state).__name__}, not a dict of named tensors (a state_dict)")
    problem = state_mismatch(model, state, strict=strict)
    if problem:
        raise CheckpointError(f"{source} does not fit {type(_unwrap(model)).__name__}: {problem}")
    try:
        _unwrap(model).load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise CheckpointError(f"{source} does not fit {type(_unwrap(model)).__name__}: {str(e).strip().splitlines()[0]}") from e
