"""Segmentation networks, built through the core backbone registry.

* 3D: ``unet`` (MONAI UNet with residual units) or ``segresnet`` — ``core.backbones.create_backbone``
  (``monai_unet`` / ``monai_segresnet``), randomly initialised (no 3D ImageNet exists).
* 2.5D: :class:`EfficientUNet2D` — the ImageNet-pretrained EfficientNet-Lite0 encoder from the
  registry (``tf_efficientnet_lite0``, ``features_only``) with a light U-Net decoder; the input is
  a stack of ``context`` neighbouring axial slices as channels (2.5D), the output the centre slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.backbones import create_backbone

__all__ = ["ModelConfig", "build_model", "EfficientUNet2D", "SliceStackSegmenter", "MODEL_NAMES"]

MODEL_NAMES = ("unet", "segresnet")


@dataclass
class ModelConfig:
    name: str = "unet"
    num_classes: int = 5
    channels: tuple[int, ...] = (16, 32, 64, 128)
    dropout: float = 0.0


def build_model(name: str, num_classes: int, channels: tuple[int, ...] = (16, 32, 64, 128), dropout: float = 0.0) -> nn.Module:
    """A 3D segmentation network with ``num_classes`` output channels (logits)."""
    if name == "unet":
        return create_backbone("monai_unet", pretrained=False, num_classes=num_classes, channels=tuple(channels),
                               strides=(2,) * (len(channels) - 1), num_res_units=2, dropout=dropout)
    if name == "segresnet":
        return create_backbone("monai_segresnet", pretrained=False, num_classes=num_classes, init_filters=channels[0], dropout_prob=dropout or None)
    raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES} (the 2.5D EfficientNet variant is domains.medical.slices)")


class EfficientUNet2D(nn.Module):
    """ImageNet EfficientNet-Lite0 encoder (core registry) + U-Net style decoder, 2D."""

    def __init__(self, num_classes: int, in_chans: int = 3, pretrained: bool | str = True, decoder: int = 32):
        super().__init__()
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
