"""Pruning, int8 quantization and ONNX export: sparsity is what was asked, accuracy survives, files agree."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.compress import (
    ExportError,
    OnnxRunner,
    export_onnx,
    model_size_bytes,
    onnx_parity,
    prune,
    quantize_int8,
    quantize_onnx_int8,
    recovery_finetune,
    sparsity,
)


def _convnet(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5),
    ).eval()


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 6)).eval()


def test_unstructured_pruning_removes_the_smallest_weights_globally():
    m = _mlp()
    before = torch.cat([m[0].weight.flatten().abs(), m[2].weight.flatten().abs()]).detach()
    rep = prune(m, 0.6)
    assert rep["weight_sparsity"] == pytest.approx(0.6, abs=0.01)
    after = torch.cat([m[0].weight.flatten(), m[2].weight.flatten()]).detach()
    kept, dropped = before[after != 0], before[after == 0]
    assert float(kept.min()) >= float(dropped.max())
    assert int((m[4].weight == 0).sum()) == 0  # the head is left alone
    assert not hasattr(m[0], "weight_orig")  # permanent


def test_structured_pruning_with_recovery_keeps_channels_dead_and_lowers_loss():
    torch.manual_seed(0)
    teacher = _mlp(1)
    x = torch.randn(256, 32)
    y = teacher(x).argmax(1)
    m = _mlp(1)
    rep = prune(m, 0.5, structured=True, permanent=False)
    assert rep["channel_sparsity"] == pytest.approx(0.5, abs=0.02)
    dead = m[0].weight.detach().abs().sum(1) == 0
    losses = recovery_finetune(m, [(x, y)], nn.functional.cross_entropy, steps=40, lr=3e-3)
    assert losses[-1] < losses[0]
    assert bool((m[0].weight.detach()[dead] == 0).all()) and not hasattr(m[0], "weight_orig")
    assert sparsity(m)["channel_sparsity"] == pytest.approx(0.5, abs=0.02)


def test_static_int8_pt2e_tracks_fp32_on_a_convnet():
    m = _convnet()
    calib = [(torch.randn(8, 3, 32, 32),) for _ in range(4)]
    x = torch.randn(8, 3, 32, 32)
    q = quantize_int8(m, (x,), calibration=calib, compile=False)
    with torch.no_grad():
        ref, out = m(x), q(x)
    assert out.shape == ref.shape
    rel = float((out - ref).norm() / ref.norm())
    assert rel < 0.1, f"int8 relative error {rel:.3f}"
    code = q.code if hasattr(q, "code") else ""
    assert "quantize_per_tensor" in code or "quantize_per_channel" in code, "no quantize ops in the converted graph"


def test_dynamic_int8_for_linear_models():
    m = _mlp()
    x = torch.randn(16, 32)
    q = quantize_int8(m, (x,), compile=False)  # auto -> torchao int8 dynamic on the Linear layers
    assert "Int8" in type(q[0].weight).__name__ or "Affine" in type(q[0].weight).__name__, type(q[0].weight)
    with torch.no_grad():
        rel = float((q(x) - m(x)).norm() / m(x).norm())
    assert rel < 0.05
    with pytest.raises(ValueError, match="method"):
        quantize_int8(m, (x,), method="eager")


def test_onnx_export_parity_and_int8_file(tmp_path):
    m = _convnet()
    x = torch.randn(3, 3, 32, 32)
    path = export_onnx(m, (x,), tmp_path / "m.onnx")
    assert path.is_file()
    run = OnnxRunner(path)
    x7 = torch.randn(7, 3, 32, 32)  # dynamic batch
    torch.testing.assert_close(run(x7), m(x7).detach(), atol=1e-4, rtol=1e-3)
    other = _convnet(seed=5)
    with pytest.raises(ExportError, match="parity"):
        onnx_parity(other, (x,), path)
    mlp = _mlp()
    p32 = export_onnx(mlp, (torch.randn(4, 32),), tmp_path / "mlp.onnx")
    p8 = quantize_onnx_int8(p32, tmp_path / "mlp.int8.onnx")
    assert model_size_bytes(p8) < 0.4 * model_size_bytes(p32)
    xi = torch.randn(64, 32)
    agree = (OnnxRunner(p8)(xi).argmax(1) == mlp(xi).argmax(1)).float().mean()
    assert agree > 0.9
    assert model_size_bytes(mlp) == pytest.approx(4 * sum(p.numel() for p in mlp.parameters()), rel=0.05)


@pytest.mark.parametrize("has_vnni, warned", [(False, True), (True, False), (None, False)])
def test_torchao_int8_on_a_cpu_without_int8_dot_product_warns(monkeypatch, caplog, has_vnni, warned):
    """On an AVX2-only CPU (the AMD EPYC of BENCHMARKS finetune-no-amx) torchao's dynamic int8 ran 21x slower than fp32:
    the user who asks for it is told, once, and pointed at ONNX Runtime int8."""
    import core.device

    monkeypatch.setattr(core.device, "cpu_has_int8_dot_product", lambda: has_vnni)
    caplog.set_level("WARNING", logger="suite")
    quantize_int8(_mlp(), (torch.randn(4, 32),), compile=False)
    assert ("no int8 dot-product instructions" in caplog.text) is warned
    assert ("quantize_onnx_int8" in caplog.text) is warned

