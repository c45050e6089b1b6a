"""The one medical model registry: every network is built from a stored spec ``{"name", "kwargs"}``
(``task.json["model"]``) by :func:`create_model` — training, inference, the MONAI bundle export and the
dashboards all go through it (the timm ``register_model`` / ``create_model`` pattern).

    spec = model_spec("unet", num_classes=5)           # {"name": "unet", "kwargs": {...all defaults filled...}}
    net = create_model(spec)                            # a torch module
    network_def(spec)                                   # the same network as a MONAI bundle ``network_def``

Registered:

* ``unet`` — MONAI UNet with 2 residual units per level, stride 2 between levels (3D, random init).
* ``segresnet`` — MONAI SegResNet (3D, random init).
* ``effnet2d`` — 2.5D: the ImageNet EfficientNet-Lite0 encoder of ``core.backbones``
  (``tf_efficientnet_lite0``, ``features_only``) with a light U-Net decoder (:class:`EfficientUNet2D`),
  run slice by slice over a volume by :class:`SliceStackSegmenter` (``context`` neighbouring axial slices
  on each side as channels).

The 3D nets are described by their MONAI ``network_def`` (``_target_`` + constructor arguments), which
the bundle writes verbatim, so what a 3D model is is spelled once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserInputError
from core.registry import Registry

__all__ = ["register_model", "create_model", "model_spec", "network_def", "list_models", "MODEL_NAMES", "UNET_CHANNELS",
           "EfficientUNet2D", "SliceStackSegmenter", "build_model", "spec_from_task_meta", "UnknownModelError"]

UNET_CHANNELS: tuple[int, ...] = (16, 32, 64, 128)  # the default feature channels per level, spelled once


class UnknownModelError(UserInputError, ValueError):
    """A spec names a model the registry does not know (one line and exit 2 from a command)."""


@dataclass(frozen=True)
class _Entry:
    build: Callable[..., nn.Module]
    defaults: dict[str, Any]
    bundle_def: Callable[..., dict] | None  # kwargs -> MONAI network_def, for exportable models
    volumetric: bool  # a 3D net (the trainer's patch loop) rather than a 2.5D slice net


_REGISTRY: Registry[_Entry] = Registry("medical model", error=UnknownModelError)


def register_model(name: str, *, defaults: dict[str, Any], bundle_def: Callable[..., dict] | None = None, volumetric: bool = True):
    """Decorator: register ``fn(**kwargs) -> nn.Module`` under ``name`` with its default kwargs."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY.register(name, _Entry(fn, dict(defaults), bundle_def, volumetric))
        return fn

    return deco


def list_models(volumetric: bool | None = None) -> list[str]:
    return [n for n, e in _REGISTRY.items() if volumetric is None or e.volumetric == volumetric]


def _entry(name: str) -> _Entry:
    return _REGISTRY.lookup(name)


def model_spec(name: str, **kwargs: Any) -> dict[str, Any]:
    """The stored form of a model: its name and every constructor argument (defaults filled in),
    JSON-able (tuples become lists)."""
    e = _entry(name)
    unknown = sorted(set(kwargs) - set(e.defaults))
    if unknown:
        raise UnknownModelError(f"model {name!r} takes no argument(s) {unknown}; it takes {sorted(e.defaults)}")
    kw = {**e.defaults, **kwargs}
    return {"name": name, "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}}


def create_model(spec: dict[str, Any] | str, **overrides: Any) -> nn.Module:
    """Build the network a spec describes (``overrides`` replace stored kwargs, e.g. ``pretrained=False``)."""
    if isinstance(spec, str):
        spec = model_spec(spec)
    e = _entry(spec["name"])
    kw = {**e.defaults, **spec.get("kwargs", {}), **overrides}
    return e.build(**kw)


def network_def(spec: dict[str, Any]) -> dict[str, Any]:
    """The MONAI bundle ``network_def`` of a 3D model; a :class:`UnknownModelError` for models that are
    not plain MONAI networks (the 2.5D slice model)."""
    e = _entry(spec["name"])
    if e.bundle_def is None:
        raise UnknownModelError(f"model {spec['name']!r} cannot be exported as a MONAI network (only {', '.join(n for n, x in _REGISTRY.items() if x.bundle_def)} can)")
    return e.bundle_def(**{**e.defaults, **spec.get("kwargs", {})})


def _monai(net_def: dict[str, Any]) -> nn.Module:
    from monai.networks import nets

    kw = {k: v for k, v in net_def.items() if k != "_target_"}
    return getattr(nets, net_def["_target_"])(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})


# --- 3D ----------------------------------------------------------------------------------------


def _unet_def(num_classes: int, channels, dropout: float = 0.0) -> dict[str, Any]:
    ch = [int(c) for c in channels]
    return {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": int(num_classes), "channels": ch,
            "strides": [2] * (len(ch) - 1), "num_res_units": 2, "dropout": float(dropout)}


def _segresnet_def(num_classes: int, channels, dropout: float = 0.0) -> dict[str, Any]:
    return {"_target_": "SegResNet", "spatial_dims": 3, "in_channels": 1, "out_channels": int(num_classes), "init_filters": int(channels[0]),
            "dropout_prob": float(dropout) or None}


@register_model("unet", defaults={"num_classes": 5, "channels": UNET_CHANNELS, "dropout": 0.0}, bundle_def=_unet_def)
def unet(num_classes: int, channels, dropout: float = 0.0) -> nn.Module:
    return _monai(_unet_def(num_classes, channels, dropout))


@register_model("segresnet", defaults={"num_classes": 5, "channels": UNET_CHANNELS, "dropout": 0.0}, bundle_def=_segresnet_def)
def segresnet(num_classes: int, channels, dropout: float = 0.0) -> nn.Module:
    return _monai(_segresnet_def(num_classes, channels, dropout))


MODEL_NAMES = ("unet", "segresnet")  # the 3D nets `train --model` offers


def build_model(name: str, num_classes: int, channels: tuple[int, ...] = UNET_CHANNELS, dropout: float = 0.0) -> nn.Module:
    """A 3D segmentation network with ``num_classes`` output channels (logits)."""
    return create_model(model_spec(name, num_classes=num_classes, channels=tuple(channels), dropout=dropout))


# --- 2.5D --------------------------------------------------------------------------------------


class EfficientUNet2D(nn.Module):
    """ImageNet EfficientNet-Lite0 encoder (core registry) + U-Net style decoder, 2D."""

    def __init__(self, num_classes: int, in_chans: int = 3, pretrained: bool | str = True, decoder: int = 32):
        super().__init__()
        from core.backbones import create_backbone

        self.encoder = create_backbone("tf_efficientnet_lite0", pretrained=pretrained, features_only=True, in_chans=in_chans)
        chs = list(self.encoder.feature_info.channels())
        self.lateral = nn.ModuleList(nn.Conv2d(c, decoder, 1) for c in chs)
        self.fuse = nn.ModuleList(nn.Sequential(nn.Conv2d(decoder, decoder, 3, padding=1), nn.BatchNorm2d(decoder), nn.ReLU(inplace=True)) for _ in chs)
        self.head = nn.Conv2d(decoder, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        feats = self.encoder(x)
        y = None
        for f, lat, fuse in zip(reversed(feats), reversed(self.lateral), reversed(self.fuse)):
            z = lat(f)
            if y is not None:
                z = z + F.interpolate(y, size=z.shape[-2:], mode="bilinear", align_corners=False)
            y = fuse(z)
        return F.interpolate(self.head(y), size=size, mode="bilinear", align_corners=False)


class SliceStackSegmenter(nn.Module):
    """Run a 2.5D slice network over a 3D volume (N, 1, X, Y, Z) → (N, C, X, Y, Z) logits, slice by
    slice along Z with ``context`` neighbours on each side as channels; so it plugs into the same
    sliding-window evaluation as the 3D nets."""

    whole_volume = True  # inference feeds the whole volume; the 2D net sees each full slice

    def __init__(self, net2d: nn.Module, context: int = 1, slice_batch: int = 32):
        super().__init__()
        self.net2d, self.context, self.slice_batch = net2d, context, slice_batch

    def forward(self, vol: torch.Tensor) -> torch.Tensor:
        n, _, x, y, z = vol.shape
        k = self.context
        padded = F.pad(vol, (k, k, 0, 0, 0, 0), mode="replicate")
        outs = []
        for b in range(n):
            stack = padded[b, 0].unfold(2, 2 * k + 1, 1)  # X, Y, Z, 2k+1
            stack = stack.permute(2, 3, 0, 1)  # Z, 2k+1, X, Y
            logits = torch.cat([self.net2d(stack[i:i + self.slice_batch]) for i in range(0, z, self.slice_batch)])  # Z, C, X, Y
            outs.append(logits.permute(1, 2, 3, 0))
        return torch.stack(outs)


@register_model("effnet2d", defaults={"num_classes": 5, "context": 1, "pretrained": False, "decoder": 32}, volumetric=False)
def effnet2d(num_classes: int, context: int = 1, pretrained: bool | str = False, decoder: int = 32) -> nn.Module:
    """The 2.5D model as a volume segmenter (its 2D net is ``.net2d``)."""
    return SliceStackSegmenter(EfficientUNet2D(num_classes, in_chans=2 * context + 1, pretrained=pretrained, decoder=decoder), context=context)


def spec_from_task_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The model spec of a trained run's ``task.json``; also reads runs written before specs existed
    (``{"name": "unet", "channels": [...]}`` / ``{"name": "effnet2d", "context": 1}``)."""
    m = dict(meta["model"])
    if "kwargs" in m:
        return {"name": m["name"], "kwargs": dict(m["kwargs"])}
    n = len(meta["class_names"])
    if m["name"] in ("unet", "segresnet"):
        return model_spec(m["name"], num_classes=n, channels=tuple(m["channels"]))
    if m["name"] == "effnet2d":
        return model_spec("effnet2d", num_classes=n, context=int(m["context"]))
    raise UnknownModelError(f"unknown model {m['name']!r} in task.json; registered: {', '.join(_REGISTRY)}")
