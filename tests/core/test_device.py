import pytest
import torch

from core.device import resolve_device, seed_everything


def test_auto_and_cpu():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
def test_cuda_requested_without_gpu_is_clear():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda")


def test_unknown_device():
    with pytest.raises(ValueError, match="unknown --device"):
        resolve_device("tpu")


def test_seeding_repeats():
    seed_everything(7)
    a = torch.randn(3)
    seed_everything(7)
    assert torch.equal(a, torch.randn(3))


def test_cpu_autocast_follows_the_hardware(monkeypatch):
    from core.device import amp_dtype, autocast, cpu_has_bf16_matrix_units

    cpu = torch.device("cpu")
    conv = torch.nn.Conv3d(1, 2, 3)
    x = torch.randn(1, 1, 6, 6, 6)
    with autocast(cpu):
        y = conv(x)
    assert y.dtype == (torch.bfloat16 if cpu_has_bf16_matrix_units() else torch.float32)
    with autocast(cpu, enabled=False):
        assert conv(x).dtype == torch.float32
    monkeypatch.setenv("SUITE_CPU_AMP", "0")  # the documented switch for fp32 everywhere
    assert amp_dtype(cpu) is None
    with autocast(cpu):
        assert conv(x).dtype == torch.float32
