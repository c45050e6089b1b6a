"""Parameter-efficient fine-tuning with HF ``peft``: LoRA on Linear / Conv1d / Conv2d / Conv3d of any
backbone in the suite (timm CNNs and ViTs, MONAI UNets, the TFT, MLP towers, the MiniLM text tower),
BitFit (bias-only), merging for deployment, and adapters saved / loaded as small safetensors files.

LoRA layers are injected *into* the model (``peft.inject_adapter_in_model``), so the model keeps its type
and API (timm's ``forward_features``, ``reset_classifier``...). The classification head stays trainable
and travels in the adapter file, which holds exactly the trainable parameters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from core.errors import UserInputError

from core.finetune.transfer import name_matches, freeze, head_names, lock_frozen_batchnorm

__all__ = [
    "apply_lora",
    "lora_target_modules",
    "merge_lora",
    "apply_bitfit",
    "trainable_parameter_report",
    "save_adapter",
    "load_adapter",
    "AdapterError",
]

_LORA_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_FORMAT = "suite-adapter-v1"


class AdapterError(UserInputError, ValueError):
    """An adapter file that is missing, malformed, or does not fit the model."""


def lora_target_modules(model: nn.Module, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> list[str]:
    """Full names of the layers LoRA can adapt: Linear and Conv1d/2d/3d (exact types; transposed convs and
    depthwise/grouped convs are skipped because they cannot be merged), minus the head. ``include`` /
    ``exclude`` are name patterns (globs or prefixes)."""
    heads = head_names(model)
    inc = list(include) if include is not None else None
    exc = list(exclude or [])
    out = []
    for name, m in model.named_modules():
        if type(m) not in _LORA_TYPES or not name:
            continue
        if getattr(m, "groups", 1) != 1:
            continue
        if name_matches(name, heads) or (exc and name_matches(name, exc)):
            continue
        if inc is not None and not name_matches(name, inc):
            continue
        out.append(name)
    return out


def apply_lora(
    model: nn.Module,
    target_modules: str | Iterable[str] | None = None,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    trainable: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
) -> nn.Module:
    """Inject LoRA (rank ``r``, scaling ``alpha / r``) and freeze everything else except the head (and any
    ``trainable`` name patterns). ``target_modules``: ``None`` = every adaptable layer
    (:func:`lora_target_modules`), a list of name patterns / suffixes (``["query", "value"]``), or a regex
    string (peft semantics). Returns the same model object, modified in place."""
    from peft import LoraConfig, inject_adapter_in_model

    if any(_is_lora_layer(m) for m in model.modules()):
        raise ValueError("model already has LoRA layers; merge_lora() or load into a fresh model")
    if target_modules is None:
        targets: str | list[str] = lora_target_modules(model, exclude=exclude)
    elif isinstance(target_modules, str):
        targets = target_modules
    else:
        pats = list(target_modules)
        targets = [n for n in lora_target_modules(model, exclude=exclude)
                   if any(n == p or n.endswith("." + p) or name_matches(n, [p]) for p in pats)]
    if not targets:
        raise ValueError(f"no Linear/Conv layer of {type(model).__name__} matches target_modules={target_modules!r}")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    freeze(model)
    inject_adapter_in_model(config, model)
    keep = head_names(model) + list(trainable or [])
    for n, p in model.named_parameters():
        if "lora_" in n or name_matches(n, keep):
            p.requires_grad_(True)
    lock_frozen_batchnorm(model)
    model._suite_lora = {"r": r, "alpha": alpha, "dropout": dropout,
                         "target_modules": targets if isinstance(targets, str) else sorted(targets)}
    return model


def _is_lora_layer(m: nn.Module) -> bool:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover
        return False
    return isinstance(m, LoraLayer)


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base weight and remove the LoRA wrappers: the result has the plain
    architecture (same state_dict keys as the base model) and the same outputs. In place; returns model."""
    replaced = 0
    for name, m in list(model.named_modules()):
        if not _is_lora_layer(m):
            continue
        m.merge(safe_merge=True)
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, m.get_base_layer())
        replaced += 1
    if not replaced:
        raise ValueError("merge_lora: the model has no LoRA layers")
    if hasattr(model, "_suite_lora"):
        del model._suite_lora
    return model


def apply_bitfit(model: nn.Module, trainable: Iterable[str] | None = None) -> nn.Module:
    """BitFit: train only bias terms (plus the head and any ``trainable`` patterns). BatchNorm running
    statistics stay frozen (their scale is frozen)."""
    freeze(model)
    keep = head_names(model) + list(trainable or [])
    n_bias = 0
    for n, p in model.named_parameters():
        if n.endswith("bias"):
            p.requires_grad_(True)
            n_bias += 1
        elif name_matches(n, keep):
            p.requires_grad_(True)
    if not n_bias:
        raise ValueError(f"{type(model).__name__} has no bias parameters; BitFit needs them")
    lock_frozen_batchnorm(model)
    model._suite_bitfit = True
    return model


def trainable_parameter_report(model: nn.Module) -> dict:
    """Counts of total / trainable parameters, the trainable fraction, a breakdown of the trainable ones
    (lora, bias, head, other), and the fp32 size of the trainable tensors (≈ adapter file size)."""
    heads = head_names(model)
    total = trainable = 0
    kinds = {"lora": 0, "bias": 0, "head": 0, "other": 0}
    base_total = 0
    for n, p in model.named_parameters():
        total += p.numel()
        if "lora_" not in n:
            base_total += p.numel()
        if not p.requires_grad:
            continue
        trainable += p.numel()
        if "lora_" in n:
            kinds["lora"] += p.numel()
        elif name_matches(n.replace(".base_layer", ""), heads):
            kinds["head"] += p.numel()
        elif n.endswith("bias"):
            kinds["bias"] += p.numel()
        else:
            kinds["other"] += p.numel()
    return {
        "total": total,
        "base_total": base_total,
        "trainable": trainable,
        "fraction": trainable / max(total, 1),
        "fraction_of_base": trainable / max(base_total, 1),
        "by_kind": kinds,
        "trainable_mb": trainable * 4 / 2**20,
    }


def save_adapter(model: nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    """Write only the trainable parameters (LoRA matrices, biases for BitFit, the head) to a safetensors
    file, with the LoRA config in its metadata so :func:`load_adapter` can rebuild the layers."""
    from core.checkpoint import save_weights

    state = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if not state:
        raise AdapterError("model has no trainable parameters to save as an adapter")
    meta = {"format": _FORMAT, "lora": json.dumps(getattr(model, "_suite_lora", None)),
            "bitfit": json.dumps(bool(getattr(model, "_suite_bitfit", False))),
            "user": json.dumps(metadata or {})}
    return save_weights(path, state, metadata=meta)


def load_adapter(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an adapter written by :func:`save_adapter` into a base model (LoRA layers are injected first
    when the model has none). Every tensor in the file must fit; returns the model."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"adapter file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001
        raise AdapterError(f"cannot read adapter {path}: {e}") from e
    if meta.get("format") != _FORMAT:
        raise AdapterError(f"{path} is not a suite adapter file (missing format marker {_FORMAT!r})")
    lora = json.loads(meta.get("lora", "null"))
    if lora and not any(_is_lora_layer(m) for m in model.modules()):
        try:
            apply_lora(model, target_modules=lora["target_modules"], r=lora["r"], alpha=lora["alpha"], dropout=lora["dropout"])
        except ValueError as e:
            raise AdapterError(f"adapter {path} does not fit this model ({type(model).__name__}): {str(e)[:300]}") from e
    elif json.loads(meta.get("bitfit", "false")):
        apply_bitfit(model)
    params = dict(model.named_parameters())
    missing = [k for k in state if k not in params]
    if missing:
        raise AdapterError(f"adapter {path} does not fit this model: no parameter named {missing[:3]}")
    bad = [(k, tuple(state[k].shape), tuple(params[k].shape)) for k in state if state[k].shape != params[k].shape]
    if bad:
        raise AdapterError(f"adapter {path} does not fit this model: shape mismatch {bad[:2]} (file vs model)")
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)
    for k in state:
        params[k].requires_grad_(True)
    return model
