"""Distillation loss: the maths against a hand computation, dense logits, and that it actually teaches."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from core.distill import DistillationLoss, distill_step, soft_target_loss


def test_classification_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    y = torch.tensor([0, 3, 1, 2, 0])
    T, a = 3.0, 0.7
    loss = DistillationLoss(T, a)(s, t, y)
    ps, pt = (s / T).softmax(1), (t / T).softmax(1)
    kl = sum(float((pt[i] * (pt[i] / ps[i]).log()).sum()) for i in range(5)) / 5
    ce = -sum(math.log(float(s.softmax(1)[i, y[i]])) for i in range(5)) / 5
    assert float(loss) == pytest.approx(a * T * T * kl + (1 - a) * ce, rel=1e-5)


def test_soft_term_is_zero_iff_student_matches_teacher_and_never_negative():
    t = torch.randn(6, 5)
    assert float(soft_target_loss(t.clone(), t, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_target_loss(t + 1.0, t, 2.0)) == pytest.approx(0.0, abs=1e-6)  # softmax shift invariance
    assert float(soft_target_loss(torch.randn(6, 5), t, 2.0)) > 0


def test_dense_logits_equal_per_voxel_classification():
    s, t = torch.randn(2, 3, 4, 5, 6), torch.randn(2, 3, 4, 5, 6)
    y = torch.randint(0, 3, (2, 4, 5, 6))
    dense = DistillationLoss(2.0, 0.5)(s, t, y)
    flat = DistillationLoss(2.0, 0.5)(s.movedim(1, -1).reshape(-1, 3), t.movedim(1, -1).reshape(-1, 3), y.reshape(-1))
    torch.testing.assert_close(dense, flat)
    dense_ch = DistillationLoss(2.0, 0.5)(s, t, y[:, None])  # (N,1,*) labels as MONAI keeps them
    torch.testing.assert_close(dense_ch, dense)
    with pytest.raises(ValueError, match="same shape"):
        DistillationLoss()(s, t[:, :2], y)


def test_multilabel_and_alpha_extremes():
    s, t = torch.randn(4, 6), torch.randn(4, 6)
    y = (torch.rand(4, 6) > 0.5).float()
    T = 2.0
    soft = nn.functional.binary_cross_entropy_with_logits(s / T, torch.sigmoid(t / T)) * T * T
    hard = nn.functional.binary_cross_entropy_with_logits(s, y)
    torch.testing.assert_close(DistillationLoss(T, 1.0, multilabel=True)(s, t, y), soft)
    torch.testing.assert_close(DistillationLoss(T, 0.0, multilabel=True)(s, t, y), hard)
    with pytest.raises(ValueError):
        DistillationLoss(temperature=0)


def test_distillation_moves_student_towards_teacher():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 4))
    student = nn.Linear(8, 4)
    x = torch.randn(256, 8)
    y = teacher(x).argmax(1)
    loss_fn = DistillationLoss(4.0, 0.9)
    opt = torch.optim.Adam(student.parameters(), lr=0.05)
    before = float(soft_target_loss(student(x), teacher(x), 4.0).detach())
    for _ in range(60):
        distill_step(student, teacher, (x,), y, loss_fn, opt)
    after = float(soft_target_loss(student(x), teacher(x), 4.0).detach())
    assert after < 0.5 * before
    assert (student(x).argmax(1) == y).float().mean() > 0.7  # a linear student of a ReLU teacher: close, not exact


def test_truncated_student_keeps_the_backbones_first_stages_and_is_independent_of_it():
    timm = pytest.importorskip("timm")
    from core.distill import TruncatedStudent

    torch.manual_seed(0)
    backbone = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=6, in_chans=1)
    student = TruncatedStudent(backbone, stages=5, num_classes=6)
    n_b, n_s = (sum(p.numel() for p in m.parameters()) for m in (backbone, student))
    assert n_b / n_s >= 4  # the benchmark's ≥ 4× fewer parameters
    x = torch.randn(2, 1, 64, 64)
    backbone.eval(), student.eval()
    with torch.no_grad():
        torch.testing.assert_close(student.forward_features(x), backbone.blocks[:5](backbone.bn1(backbone.conv_stem(x))))
        assert student(x).shape == (2, 6)
        student.blocks[0][0].conv_dw.weight.add_(1.0)  # a copy: training the student leaves the backbone alone
        assert not torch.equal(student.blocks[0][0].conv_dw.weight, backbone.blocks[0][0].conv_dw.weight)
    with pytest.raises(ValueError, match="stages"):
        TruncatedStudent(backbone, stages=99, num_classes=6)
    with pytest.raises(ValueError, match="conv_stem"):
        TruncatedStudent(nn.Linear(3, 3), stages=1, num_classes=2)
