"""Knowledge distillation (Hinton et al., 2015): a student learns from a teacher's temperature-softened
outputs plus the ground truth.

    loss = alpha * T² * KL(softmax(t/T) ‖ softmax(s/T)) + (1 - alpha) * hard_loss(s, y)

Works for classification logits ``(N, C)`` and dense logits ``(N, C, *spatial)`` (segmentation: the KL is
taken per voxel over the class axis and averaged over voxels). ``multilabel=True`` uses per-label
sigmoid soft targets with binary cross-entropy instead (e.g. multi-genre tagging). The T² factor keeps the
soft-target gradients on the same scale as the hard loss when T changes.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DistillationLoss", "soft_target_loss", "distill_step", "TruncatedStudent"]


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0, multilabel: bool = False) -> torch.Tensor:
    """The temperature-scaled soft part alone (already multiplied by T²), mean over samples / voxels."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} must have the same shape")
    T = float(temperature)
    t = teacher_logits.detach()
    if multilabel:
        return F.binary_cross_entropy_with_logits(student_logits / T, torch.sigmoid(t / T)) * T * T
    if student_logits.ndim < 2:
        raise ValueError("logits need a class axis: (N, C) or (N, C, *spatial)")
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    log_p_t = F.log_softmax(t / T, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)  # (N, *spatial)
    return kl.mean() * T * T


class DistillationLoss(nn.Module):
    """``alpha`` weights the soft (teacher) term, ``1 - alpha`` the hard (label) term.

    ``hard_loss`` defaults to cross-entropy (multi-class, any number of spatial dims, ``ignore_index``
    honoured) or BCE-with-logits when ``multilabel``; pass e.g. MONAI's DiceCELoss for segmentation.
    After each call ``self.last`` holds the soft and hard parts as floats, for logging."""

    def __init__(self, temperature: float = 4.0, alpha: float = 0.5, multilabel: bool = False,
                 hard_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None, ignore_index: int = -100):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature, self.alpha, self.multilabel = float(temperature), float(alpha), multilabel
        self.ignore_index = ignore_index
        self.hard_loss = hard_loss
        self.last: dict[str, float] = {}

    def _hard(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.hard_loss is not None:
            return self.hard_loss(s, y)
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(s, y.to(s.dtype))
        if y.ndim == s.ndim and y.shape[1] == 1 and s.shape[1] != 1:  # (N,1,*) label maps as MONAI keeps them
            y = y[:, 0]
        return F.cross_entropy(s, y.long(), ignore_index=self.ignore_index)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        soft = soft_target_loss(student_logits, teacher_logits, self.temperature, self.multilabel)
        if target is None or self.alpha == 1.0:
            hard = torch.zeros((), device=soft.device)
            loss = soft if target is None else self.alpha * soft
        else:
            hard = self._hard(student_logits, target)
            loss = self.alpha * soft + (1.0 - self.alpha) * hard
        self.last = {"soft": float(soft.detach()), "hard": float(hard.detach())}
        return loss


def distill_step(student: nn.Module, teacher: nn.Module, batch_inputs: tuple, target: torch.Tensor, loss_fn: DistillationLoss,
                 optimizer: torch.optim.Optimizer) -> float:
    """One optimisation step of ``student`` against a frozen ``teacher`` (kept in eval, no grad)."""
    teacher.eval()
    with torch.no_grad():
        t = teacher(*batch_inputs)
    student.train()
    loss = loss_fn(student(*batch_inputs), t, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


class TruncatedStudent(nn.Module):
    """A smaller network made of the first ``stages`` stages of a timm EfficientNet / MobileNet-family
    backbone (``conv_stem``, ``bn1``, ``blocks``) with global average pooling and a new linear ``head``.

    Layer-dropping distillation (as DistilBERT takes every other layer of BERT): the student keeps the
    backbone's weights for the stages it keeps — ImageNet weights, or the fine-tuned teacher's — so it
    starts from useful features instead of random init. The backbone passed in is copied, not shared."""

    def __init__(self, backbone: nn.Module, stages: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        import copy

        for attr in ("conv_stem", "bn1", "blocks"):
            if not hasattr(backbone, attr):
                raise ValueError(f"{type(backbone).__name__} has no {attr!r}: TruncatedStudent needs a timm EfficientNet/MobileNet-family model")
        if not 1 <= stages <= len(backbone.blocks):
            raise ValueError(f"stages must be in 1..{len(backbone.blocks)}, got {stages}")
        self.conv_stem = copy.deepcopy(backbone.conv_stem)
        self.bn1 = copy.deepcopy(backbone.bn1)
        self.blocks = nn.Sequential(*[copy.deepcopy(backbone.blocks[i]) for i in range(stages)])
        channels = _out_channels(self.blocks[-1])
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.bn1(self.conv_stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.forward_features(x).mean((2, 3))))


def _out_channels(stage: nn.Module) -> int:
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("stage has no Conv2d layer")
    return int(convs[-1].out_channels)
