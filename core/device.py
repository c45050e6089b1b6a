"""Device selection, seeding and determinism."""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

import numpy as np
import torch

from core.errors import UserInputError

__all__ = ["DeviceError", "resolve_device", "seed_everything", "autocast", "amp_dtype", "cpu_has_bf16_matrix_units", "cpu_has_int8_dot_product", "cpu_info_field", "device_summary", "set_cpu_threads"]


class DeviceError(UserInputError, RuntimeError):
    """A --device this machine does not have (or does not know)."""


class UnknownDeviceError(DeviceError, ValueError):
    pass


def resolve_device(preference: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU. ``cpu``, ``cuda`` or ``cuda:N`` force one.

    Asking for CUDA on a machine without it is an error, not a silent fallback.
    """
    pref = (preference or "auto").lower()
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {preference} requested but CUDA is not available on this machine; use --device cpu or auto")
        dev = torch.device(pref)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {preference}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    if pref == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError("--device mps requested but MPS is not available")
        return torch.device("mps")
    if pref == "cpu":
        return torch.device("cpu")
    raise UnknownDeviceError(f"unknown --device {preference!r}; expected auto, cpu, cuda or cuda:N")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices). ``deterministic`` also asks torch for
    deterministic kernels (slower; warns instead of failing where none exists)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def cpu_info_field(key: str) -> str | None:
    """The first ``key`` line of ``/proc/cpuinfo`` (``"model name"``, ``"flags"``), or None where there is none (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.split(":", 1)[0].strip() == key), None)


def cpu_has_int8_dot_product() -> bool | None:
    """Whether this CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8), which fast int8
    matrix multiplication needs: without them ``torch._int_mm`` — what torchao's dynamic int8 linear layers run —
    has no fast kernel, and on an AMD EPYC with AVX2 only a quantized MiniLM ran 21x slower
    than fp32 (``bench/finetune.py``, BENCHMARKS "finetune-no-amx"). None when it cannot be told (no
    ``/proc/cpuinfo``, not x86). Where it is False, ``core.compress.quantize_int8(method="auto")`` keeps Linear-only
    models fp32 (``core.compress.auto_int8_method``, which looks this function up at call time: monkeypatch it here)."""
    flags = cpu_info_field("flags")
    if flags is None:
        return None
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags.split()))


def cpu_has_bf16_matrix_units(honour_setting: bool = True) -> bool:
    """True when this CPU multiplies bf16 matrices natively (Intel AMX, Sapphire Rapids and newer)
    and oneDNN can use it. There a MONAI 3D UNet training step ran about twice as fast in bf16 as in
    fp32 (ad-hoc timing; bench/medical.py has the pipeline-level figure); on CPUs without it, bf16 is
    emulated and slower than fp32. ``SUITE_CPU_AMP=0`` turns CPU mixed precision off (False here), unless
    ``honour_setting`` is False: what the hardware has, e.g. to label a benchmark with its CPU."""
    if honour_setting and os.environ.get("SUITE_CPU_AMP", "1") == "0":
        return False
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(amx and amx() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype worth using on ``device``, or None for plain fp32: bf16 (fp16 where bf16 is
    missing) on CUDA; bf16 on a CPU with bf16 matrix units; None on other CPUs."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_bf16_matrix_units():
        return torch.bfloat16
    return None


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision where it pays (see :func:`amp_dtype`); a no-op context elsewhere. Callers
    compute losses and metrics on ``.float()`` outputs."""
    dtype = amp_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def device_summary(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def set_cpu_threads(threads: int = 0) -> int:
    """Set torch's CPU threads. ``threads`` > 0: exactly that many; 0: all cores minus the current
    1-minute load (at least 1). Oversubscribed OpenMP threads were several times slower per step
    than one thread on a busy 2-core machine (ad-hoc timings, not a bench), so a busy machine gets fewer."""
    n = os.cpu_count() or 1
    if threads <= 0:
        try:
            busy = int(round(os.getloadavg()[0]))
        except OSError:
            busy = 0
        threads = max(1, min(n, n - busy))
    torch.set_num_threads(threads)
    return threads
