"""Transfer learning on any ``nn.Module``: freeze/unfreeze by name pattern, frozen BatchNorm kept in eval,
gradual unfreezing, discriminative (layer-wise decayed) learning rates, and head replacement.

Patterns are matched against parameter (and module) names: a glob (``"blocks.[0-3].*"``) or a plain
prefix (``"conv_stem"`` matches ``conv_stem.weight``). ``None`` means every parameter.
"""

from __future__ import annotations

import fnmatch
from typing import Iterable, Sequence

from torch import nn

__all__ = [
    "name_matches",
    "freeze",
    "unfreeze",
    "lock_frozen_batchnorm",
    "layer_groups",
    "GradualUnfreezer",
    "discriminative_param_groups",
    "replace_head",
    "head_names",
]

_STAT_BN = nn.modules.batchnorm._BatchNorm


def name_matches(name: str, patterns: Sequence[str] | None) -> bool:
    """Whether the parameter/module ``name`` is selected by ``patterns``: equal to one, below one
    (``"encoder"`` selects ``"encoder.0.weight"``) or an ``fnmatch`` glob; ``None`` selects everything."""
    if patterns is None:
        return True
    for p in patterns:
        if name == p or name.startswith(p + ".") or fnmatch.fnmatchcase(name, p):
            return True
    return False


def _as_patterns(patterns: str | Iterable[str] | None) -> list[str] | None:
    if patterns is None:
        return None
    if isinstance(patterns, str):
        return [patterns]
    return list(patterns)


def _set_requires_grad(model: nn.Module, patterns, flag: bool) -> list[str]:
    pats = _as_patterns(patterns)
    changed = []
    for name, p in model.named_parameters():
        if name_matches(name, pats) and p.requires_grad != flag:
            p.requires_grad_(flag)
            changed.append(name)
    if pats is not None and not any(name_matches(n, pats) for n, _ in model.named_parameters()):
        raise ValueError(f"no parameter of {type(model).__name__} matches {pats}; names look like {[n for n, _ in model.named_parameters()][:4]}")
    lock_frozen_batchnorm(model)
    if flag:  # re-enable running-stat updates of BN layers that became trainable
        for m in model.modules():
            if isinstance(m, _STAT_BN) and not _bn_is_frozen(m):
                m.train(model.training)
    return changed


def freeze(model: nn.Module, patterns: str | Iterable[str] | None = None) -> list[str]:
    """Stop gradients for matching parameters; BatchNorm layers whose affine weights are frozen also stop
    updating their running statistics (they stay in eval mode even under ``model.train()``). Returns the
    names that changed."""
    return _set_requires_grad(model, patterns, False)


def unfreeze(model: nn.Module, patterns: str | Iterable[str] | None = None) -> list[str]:
    """Re-enable gradients for matching parameters (and running-stat updates of their BatchNorm layers)."""
    return _set_requires_grad(model, patterns, True)


def _bn_is_frozen(m: nn.Module) -> bool:
    return getattr(m, "weight", None) is not None and not m.weight.requires_grad  # a BN without affine never counts as frozen


def _bn_pre_hook(m: nn.Module, _inputs) -> None:
    if m.training and _bn_is_frozen(m):
        m.training = False  # model.train() will set it again; this hook turns it off on every call


def lock_frozen_batchnorm(model: nn.Module) -> int:
    """Make every BatchNorm whose scale is frozen behave as in eval (no running-stat updates, batch stats
    not used) even while the model trains. Idempotent; returns the number of BN layers currently frozen."""
    n = 0
    for m in model.modules():
        if isinstance(m, _STAT_BN):
            if not getattr(m, "_suite_bn_hook", False):
                m.register_forward_pre_hook(_bn_pre_hook)
                m._suite_bn_hook = True
            n += _bn_is_frozen(m)
    return n


def head_names(model: nn.Module) -> list[str]:
    """Names of the head's modules: what the model declares in ``suite_heads`` (a list of module names —
    set by a domain whose model has several outputs, e.g. the finance TFT's log-vol output and variance
    head), else timm's ``pretrained_cfg['classifier']``, a ``head`` attribute, or the last ``nn.Linear``."""
    declared = getattr(model, "suite_heads", None)
    if declared is not None:
        names = dict(model.named_modules())
        missing = [n for n in declared if n not in names]
        if missing:
            raise ValueError(f"{type(model).__name__}.suite_heads names modules it does not have: {missing}")
        return list(declared)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    cls = cfg.get("classifier") if isinstance(cfg, dict) else None
    if cls:
        cls = [cls] if isinstance(cls, str) else list(cls)
        names = dict(model.named_modules())
        present = [c for c in cls if c in names]
        if present:  # a timm model: its declared classifier (none when num_classes=0 made it Identity)
            return [c for c in present if not isinstance(names[c], nn.Identity)]
    if hasattr(model, "head"):  # e.g. TextEncoder: ``head`` is None when it only embeds
        return ["head"] if isinstance(model.head, nn.Module) and not isinstance(model.head, nn.Identity) else []
    if hasattr(getattr(model, "config", None), "model_type"):  # a bare Hugging Face encoder has no head
        return []
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return last[-1:]


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Give ``model`` a freshly initialised head for ``num_classes`` labels (timm ``reset_classifier``
    when available, else the head found by :func:`head_names` is swapped for a new Linear)."""
    if hasattr(model, "reset_classifier"):
        model.reset_classifier(num_classes)
        return model
    names = head_names(model)
    if not names:
        raise ValueError(f"cannot find a head (Linear layer) in {type(model).__name__} to replace")
    parent_name, _, attr = names[0].rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    if not isinstance(old, nn.Linear):
        raise ValueError(f"head {names[0]} is a {type(old).__name__}, expected nn.Linear")
    setattr(parent, attr, nn.Linear(old.in_features, num_classes).to(old.weight.device))
    return model


def layer_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names grouped by depth, input -> output (stem, stages..., head).

    timm models use their own ``group_matcher``; Hugging Face encoders split at ``embeddings`` /
    ``layer.<i>``; anything else is grouped by top-level child in definition order."""
    names = [n for n, _ in model.named_parameters()]
    if hasattr(model, "group_matcher"):
        from timm.models import group_parameters

        grouped = group_parameters(model, model.group_matcher(coarse=False))
        return [list(v) for _, v in sorted(grouped.items(), key=lambda kv: kv[0])]
    import re

    def key(n: str):
        m = re.search(r"\.layer\.(\d+)\.", n)
        if m:
            return (1, int(m.group(1)))
        if "embeddings" in n:
            return (0, 0)
        if n.startswith("head") or ".pooler." in n:
            return (3, 0)
        return None

    if any(re.search(r"\.layer\.\d+\.", n) for n in names):
        groups: dict = {}
        for n in names:
            k = key(n) or (2, 0)
            groups.setdefault(k, []).append(n)
        return [groups[k] for k in sorted(groups)]
    groups2: dict[str, list[str]] = {}
    for n in names:
        groups2.setdefault(n.split(".")[0], []).append(n)
    return list(groups2.values())


class GradualUnfreezer:
    """ULMFiT-style schedule: start with only the head trainable, then every ``every`` epochs unfreeze one
    more group of layers from the top. Call :meth:`step` at the start of each epoch.

        unfreezer = GradualUnfreezer(model, every=1)
        for epoch in range(E): unfreezer.step(epoch); train_one_epoch(...)

    Keep all parameters in the optimizer from the start (frozen ones have no gradient and are skipped).
    """

    def __init__(self, model: nn.Module, groups: list[list[str]] | None = None, every: int = 1, start_trainable: int = 1):
        self.model = model
        self.groups = groups or layer_groups(model)
        self.every = max(1, int(every))
        self.start_trainable = start_trainable
        self.trainable_groups = 0
        freeze(model)
        self._unfreeze_top(start_trainable)

    def _unfreeze_top(self, k: int) -> None:
        k = min(k, len(self.groups))
        for g in self.groups[len(self.groups) - k :]:
            unfreeze(self.model, g)
        self.trainable_groups = k

    def step(self, epoch: int) -> int:
        """Set the trainable depth for ``epoch``; returns the number of trainable groups."""
        self._unfreeze_top(self.start_trainable + epoch // self.every)
        return self.trainable_groups


def discriminative_param_groups(
    model: nn.Module,
    lr: float,
    decay: float = 0.8,
    weight_decay: float = 0.0,
    groups: list[list[str]] | None = None,
    trainable_only: bool = False,
) -> list[dict]:
    """Optimizer parameter groups with layer-wise decayed learning rates: the last (head) group gets
    ``lr``, each earlier group ``decay`` times the next. Biases and norm scales get no weight decay.
    Pass the result to any ``torch.optim`` optimizer."""
    groups = groups or layer_groups(model)
    params = dict(model.named_parameters())
    out: list[dict] = []
    depth = len(groups)
    for i, g in enumerate(groups):
        scale = decay ** (depth - 1 - i)
        decayed = [params[n] for n in g if params[n].ndim > 1 and (params[n].requires_grad or not trainable_only)]
        plain = [params[n] for n in g if params[n].ndim <= 1 and (params[n].requires_grad or not trainable_only)]
        if decayed:
            out.append({"params": decayed, "lr": lr * scale, "weight_decay": weight_decay, "depth": i})
        if plain:
            out.append({"params": plain, "lr": lr * scale, "weight_decay": 0.0, "depth": i})
    covered = {id(p) for g in out for p in g["params"]}
    rest = [p for p in params.values() if id(p) not in covered and (p.requires_grad or not trainable_only)]
    if rest:  # parameters no group named (e.g. added after grouping) train at the head's rate
        out.append({"params": rest, "lr": lr, "weight_decay": weight_decay, "depth": depth})
    return out
