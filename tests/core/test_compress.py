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


def test_dynamic_int8_for_linear_models(monkeypatch):
    import core.device

    monkeypatch.setattr(core.device, "cpu_has_int8_dot_product", lambda: True)  # a VNNI/AMX CPU, whatever runs the test
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
    q = quantize_int8(_mlp(), (torch.randn(4, 32),), method="torchao", compile=False)
    assert "Int8" in type(q[0].weight).__name__, "an explicit method='torchao' still quantizes"
    assert ("no int8 dot-product instructions" in caplog.text) is warned
    assert ("quantize_onnx_int8" in caplog.text) is warned


def _int8_weights(model):
    return [type(m.weight).__name__ for m in model.modules() if isinstance(m, nn.Linear) and type(m.weight) is not nn.Parameter]


def test_auto_int8_keeps_a_linear_model_fp32_on_a_cpu_without_int8_dot_product(monkeypatch, caplog):
    """There every torch int8 path measured slower than fp32 (bench/int8_cpu.py; torchao dynamic 21x on MiniLM):
    "auto" must not pick one. The user gets an fp32 copy, told once why and where int8 does pay (ONNX Runtime)."""
    import core.device

    monkeypatch.setattr(core.device, "cpu_has_int8_dot_product", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    caplog.set_level("INFO", logger="suite")
    m = _mlp()
    x = torch.randn(8, 32)
    q = quantize_int8(m, (x,))  # default compile=True: the fp32 copy comes back eager, nothing to compile
    assert q is not m and not isinstance(q, torch._dynamo.eval_frame.OptimizedModule)
    assert _int8_weights(q) == []
    with torch.no_grad():
        torch.testing.assert_close(q(x), m(x), rtol=0, atol=0)
    q[0].weight.data.zero_()
    assert bool(m[0].weight.abs().sum() > 0), "a copy: the caller's model is untouched"
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "kept fp32" in warnings[0].getMessage()
    assert "quantize_onnx_int8" in warnings[0].getMessage() and "method='torchao'" in warnings[0].getMessage()


@pytest.mark.parametrize("has_dot, cuda, expected", [
    (True, False, "torchao"),   # Intel VNNI/AMX: unchanged
    (None, False, "torchao"),   # cannot tell (not x86 Linux): unchanged
    (False, True, "torchao"),   # a CUDA machine: unchanged
    (False, False, "fp32"),     # AVX2-only CPU: no int8 path that is slower
])
def test_auto_int8_method_per_cpu_kind(monkeypatch, has_dot, cuda, expected):
    import core.device
    from core.compress import auto_int8_method

    monkeypatch.setattr(core.device, "cpu_has_int8_dot_product", lambda: has_dot)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    method, why = auto_int8_method(_mlp())
    assert method == expected and why
    assert auto_int8_method(_convnet())[0] == "pt2e", "conv nets: PT2E static int8 on every CPU (1.85x fp32 on the AVX2 EPYC)"


def test_auto_int8_quantizes_a_linear_model_on_a_cpu_with_int8_dot_product(monkeypatch, caplog):
    import core.device

    monkeypatch.setattr(core.device, "cpu_has_int8_dot_product", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    caplog.set_level("INFO", logger="suite")
    q = quantize_int8(_mlp(), (torch.randn(8, 32),), compile=False)
    assert len(_int8_weights(q)) == 3
    assert "torchao dynamic int8" in caplog.text and not [r for r in caplog.records if r.levelname == "WARNING"]

