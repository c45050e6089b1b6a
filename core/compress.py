"""Compression and export for deployment on CPU: magnitude pruning (unstructured and structured) with a
short recovery fine-tune, int8 quantization (torchao: the PT2E flow with the x86 Inductor quantizer for conv nets, ``quantize_`` for Linear layers —
``torch.ao.quantization`` eager mode is deprecated upstream), ONNX export with an onnxruntime parity
check, ONNX Runtime int8, and on-disk size.

    prune(model, 0.5)                                  # global L1, unstructured, permanent
    prune(model, 0.3, structured=True, permanent=False); recovery_finetune(model, batches, loss_fn, steps=50)
    q = quantize_int8(model, (x,), calibration=[(x1,), (x2,)])  # compiled int8 module
    export_onnx(model, (x,), "model.onnx")            # raises if onnxruntime disagrees with torch
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from core.logging import get_logger

__all__ = [
    "has_conv_layers",
    "prune",
    "remove_pruning",
    "sparsity",
    "recovery_finetune",
    "quantize_int8",
    "auto_int8_method",
    "export_onnx",
    "onnx_parity",
    "quantize_onnx_int8",
    "OnnxRunner",
    "model_size_bytes",
    "ExportError",
]

log = get_logger("compress")

_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class ExportError(RuntimeError):
    """Export failed or the exported model disagrees with the PyTorch model."""


def _prunable(model: nn.Module, include_head: bool) -> list[tuple[str, nn.Module]]:
    from core.finetune.transfer import name_matches, head_names

    heads = [] if include_head else head_names(model)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _PRUNABLE) and not name_matches(n, heads)]


def prune(model: nn.Module, amount: float, structured: bool = False, n: int = 2, dim: int = 0,
          include_head: bool = False, permanent: bool = True) -> dict:
    """Magnitude pruning of Linear/Conv weights (the head is left alone unless ``include_head``).

    * unstructured: the ``amount`` fraction of smallest-|w| weights across all layers together (global L1);
    * structured: in every layer, the ``amount`` fraction of output channels (``dim=0``) with the smallest
      L``n`` norm is zeroed — whole filters, so a runtime or a later slimming pass can drop them.

    With ``permanent=False`` masks stay attached (pruned weights stay zero during
    :func:`recovery_finetune`); call :func:`remove_pruning` afterwards. Returns :func:`sparsity`."""
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount}")
    layers = _prunable(model, include_head)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Linear/Conv layers to prune")
    if structured:
        for _, m in layers:
            if m.weight.shape[dim] > 1:
                tprune.ln_structured(m, "weight", amount=amount, n=n, dim=dim)
    else:
        tprune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=tprune.L1Unstructured, amount=amount)
    if permanent:
        remove_pruning(model)
    return sparsity(model, include_head=include_head)


def remove_pruning(model: nn.Module) -> nn.Module:
    """Fold pruning masks into the weights (makes pruning permanent, restores plain parameters)."""
    for m in model.modules():
        if tprune.is_pruned(m) and hasattr(m, "weight_orig"):
            tprune.remove(m, "weight")
    return model


@torch.no_grad()
def sparsity(model: nn.Module, include_head: bool = False) -> dict:
    """Fraction of zero weights in prunable layers and of all-zero output channels."""
    zeros = total = zero_ch = chans = 0
    for _, m in _prunable(model, include_head):
        w = m.weight
        zeros += int((w == 0).sum())
        total += w.numel()
        per_ch = w.reshape(w.shape[0], -1).abs().sum(1)
        zero_ch += int((per_ch == 0).sum())
        chans += w.shape[0]
    return {"weight_sparsity": zeros / max(total, 1), "channel_sparsity": zero_ch / max(chans, 1), "weights": total}


def recovery_finetune(model: nn.Module, batches: Iterable[tuple], loss_fn: Callable, steps: int = 50, lr: float = 1e-3,
                      finalize: bool = True) -> list[float]:
    """Short fine-tune after pruning so the remaining weights compensate. ``batches`` yields
    ``(inputs_tuple_or_tensor, target)``; it is cycled until ``steps``. Masks (``permanent=False``) keep
    pruned weights at zero throughout; ``finalize`` then makes the pruning permanent. Returns losses."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses: list[float] = []
    data = list(batches) if not isinstance(batches, list) else batches
    if not data:
        raise ValueError("recovery_finetune needs at least one batch")
    for step in range(steps):
        inputs, target = data[step % len(data)]
        inputs = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
        loss = loss_fn(model(*inputs), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    if finalize:
        remove_pruning(model)
    return losses


def has_conv_layers(model: nn.Module) -> bool:
    """Convolutional models quantize with PT2E static int8; for the others see :func:`auto_int8_method`."""
    return any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in model.modules())


# Measured with `python bench/int8_cpu.py` (BENCHMARKS "int8-cpu-no-amx", an AMD EPYC with AVX2 and no int8 dot-product
# instructions; latency vs fp32 eager, each candidate in its own process): torchao dynamic int8 23x on MiniLM-L6 and
# 13-23x on MLPs 256-2048 wide; torchao weight-only int8 0.81-0.95x on MiniLM and the wider MLPs but 2.35x on the
# 256-wide one (and it needs a compile); PT2E cannot trace MiniLM and is 2.42x on the 256-wide MLP. None is faster than
# fp32 on every model, so "auto" keeps fp32 there: never slower, exact, nothing to compile.
NO_INT8_DOT_FIGURES = "torchao dynamic int8 13-23x slower, weight-only 0.81-2.35x the fp32 latency"


def auto_int8_method(model: nn.Module) -> tuple[str, str]:
    """What ``quantize_int8(model, method="auto")`` does here, and why: ``(method, reason)`` with method one of
    ``"pt2e"``, ``"torchao"`` or ``"fp32"`` (no int8: the model comes back unquantized).

    * a model with convolutions → ``"pt2e"`` (the int8 CNN of ``bench/finetune.py``: 1.85x fp32 on the AVX2 EPYC, 3.4x on AMX);
    * a Linear-only model → ``"torchao"`` on CUDA machines, on CPUs with int8 dot-product instructions
      (AVX512-VNNI, AVX-VNNI, AMX-INT8) and where the CPU cannot be told (:func:`core.device.cpu_has_int8_dot_product`
      is None: not x86 Linux);
    * a Linear-only model on a CPU known to lack them → ``"fp32"``: no torch int8 path was reliably faster than fp32
      there (:data:`NO_INT8_DOT_FIGURES`); ONNX Runtime int8 is (:func:`export_onnx` + :func:`quantize_onnx_int8`).

    The CPU check is read from :mod:`core.device` at call time, so tests can monkeypatch it."""
    from core import device

    if has_conv_layers(model):
        return "pt2e", "the model has convolutions: PT2E static int8 with the x86 Inductor quantizer"
    if torch.cuda.is_available():
        return "torchao", "Linear-only model on a CUDA machine: torchao dynamic int8"
    dot = device.cpu_has_int8_dot_product()
    if dot is False:
        return "fp32", ("Linear-only model and this CPU has no int8 dot-product instructions (AVX512-VNNI/AVX-VNNI/AMX-INT8): "
                        f"no torch int8 path was reliably faster than fp32 on such a CPU ({NO_INT8_DOT_FIGURES}; bench/int8_cpu.py); "
                        "for int8 here use export_onnx + quantize_onnx_int8 (0.36-0.53x the fp32 latency on MiniLM and 1024-2048-wide MLPs), or force method='torchao'")
    why = "has int8 dot-product instructions" if dot else "could not be checked for int8 dot-product instructions"
    return "torchao", f"Linear-only model, the CPU {why}: torchao dynamic int8"


def quantize_int8(model: nn.Module, example_inputs: tuple, calibration: Sequence[tuple] | None = None,
                  method: str = "auto", compile: bool = True) -> nn.Module:
    """int8 copy of ``model`` for CPU inference, with the non-deprecated stacks:

    * ``"pt2e"`` — static int8 (weights and activations) via ``torch.export`` → torchao ``prepare_pt2e``
      with the x86 Inductor quantizer → calibrate on ``calibration`` (default: ``example_inputs``) →
      ``convert_pt2e``. Best for convolutional nets.
    * ``"torchao"`` — ``torchao.quantization.quantize_`` with int8 dynamic activations and int8 weights on
      every ``nn.Linear`` (per-batch activation scales; no calibration). Best for transformers and MLPs on a
      CPU with int8 dot-product instructions (or CUDA); on a CPU without them it warns: many times slower than fp32.
    * ``"auto"`` — :func:`auto_int8_method`: ``pt2e`` when the model has convolutions, else ``torchao`` —
      except on a CPU known to lack int8 dot-product instructions, where a Linear-only model is returned as an
      fp32 copy (not compiled: compiling fp32 gained at most 11 percent there and cost 32 percent on a small MLP) with one
      warning. The choice and its reason are logged (INFO; the fp32 fallback as a WARNING).

    ``compile`` wraps the result in ``torch.compile`` so Inductor fuses real int8 kernels (the first call
    compiles, which takes tens of seconds; without it the reference graph runs — correct, not fast). A PT2E
    model is exported at the example's shapes: serve at that batch size."""
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    if method == "auto":
        method, why = auto_int8_method(model)
        if method == "fp32":
            log.warning("quantize_int8(method='auto'): kept fp32 — %s", why)
            return copy.deepcopy(model).eval()
        log.info("quantize_int8(method='auto'): %s", why)
    if method not in ("pt2e", "torchao"):
        raise ValueError(f"method must be 'auto', 'pt2e' or 'torchao', got {method!r}")
    model = copy.deepcopy(model).eval()
    if method == "torchao":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        from core import device

        if device.cpu_has_int8_dot_product() is False and not torch.cuda.is_available():
            log.warning("this CPU has no int8 dot-product instructions (AVX512-VNNI/AVX-VNNI/AMX-INT8): torchao's dynamic int8 "
                        "layers run much SLOWER than fp32 here (MiniLM 21x on an AMD EPYC, BENCHMARKS finetune-no-amx); "
                        "for CPU serving on it export to ONNX and use quantize_onnx_int8 (1.6x faster than ONNX fp32 on the same "
                        "MiniLM), or keep fp32 (method='auto' does)")

        if not any(isinstance(m, nn.Linear) for m in model.modules()):
            raise ValueError(f"{type(model).__name__} has no nn.Linear layers for torchao int8; use method='pt2e'")
        quantize_(model, Int8DynamicActivationInt8WeightConfig())
        q = model
    else:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
        with torch.no_grad():
            try:
                graph = torch.export.export(model, example_inputs).module()
            except Exception as e:  # noqa: BLE001
                raise ExportError(f"torch.export could not trace {type(model).__name__} for quantization: {str(e).splitlines()[0]}") from e
            prepared = prepare_pt2e(graph, quantizer)
            for batch in (calibration or [example_inputs]):
                prepared(*(batch if isinstance(batch, tuple) else (batch,)))
            q = convert_pt2e(prepared)
    if compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # constant-fold the int8 weights: needed for the fused CPU kernels
        q = torch.compile(q)
    return q


def export_onnx(model: nn.Module, example: tuple | torch.Tensor, path: str | Path, check: bool = True,
                input_names: Sequence[str] | None = None, dynamic_batch: bool = True, atol: float = 1e-4, rtol: float = 1e-3) -> Path:
    """Export to ONNX (the ``torch.export``-based exporter, batch axis dynamic) and, with ``check``, run the
    file in onnxruntime on ``example`` (and on a batch of a different size) and raise :class:`ExportError`
    if any output differs beyond ``atol + rtol * |ref|``. Written atomically."""
    from core.io import atomic_path

    example = example if isinstance(example, tuple) else (example,)
    names = list(input_names or [f"input_{i}" for i in range(len(example))])
    model = model.eval()
    dyn = tuple({0: torch.export.Dim("batch", min=1, max=4096)} for _ in example) if dynamic_batch else None
    path = Path(path)
    with atomic_path(path) as tmp, torch.no_grad():
        try:
            prog = torch.onnx.export(model, example, input_names=names, output_names=["output"], dynamic_shapes=dyn, dynamo=True,
                                     verbose=False)
            prog.save(str(tmp))
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"ONNX export of {type(model).__name__} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if check:
        onnx_parity(model, example, path, input_names=names, atol=atol, rtol=rtol)
        if dynamic_batch and example[0].shape[0] > 1:
            onnx_parity(model, tuple(x[:1] for x in example), path, input_names=names, atol=atol, rtol=rtol)
    return path


class OnnxRunner:
    """A CPU onnxruntime session called like a module: ``OnnxRunner(path)(x) -> torch.Tensor``."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = {n: x.detach().cpu().numpy() for n, x in zip(self.input_names, inputs)}
        return torch.from_numpy(self.session.run(None, feed)[0])


def onnx_parity(model: nn.Module, example: tuple, path: str | Path, input_names: Sequence[str] | None = None,
                atol: float = 1e-4, rtol: float = 1e-3) -> float:
    """Max |torch - onnxruntime| on ``example``; raises :class:`ExportError` beyond tolerance."""
    example = example if isinstance(example, tuple) else (example,)
    runner = OnnxRunner(path)
    with torch.no_grad():
        ref = model.eval()(*example)
    ref = ref if isinstance(ref, torch.Tensor) else ref[0]
    got = runner(*example)
    if got.shape != ref.shape:
        raise ExportError(f"ONNX output shape {tuple(got.shape)} != torch {tuple(ref.shape)} for {path}")
    diff = (got - ref.float()).abs()
    tol = atol + rtol * ref.abs()
    if bool((diff > tol).any()):
        raise ExportError(f"ONNX parity check failed for {path}: max |diff| {float(diff.max()):.3g} (atol {atol}, rtol {rtol})")
    return float(diff.max())


def quantize_onnx_int8(path: str | Path, out_path: str | Path) -> Path:
    """ONNX Runtime dynamic int8 quantization of the weights (activations quantized per batch): an int8
    deployment path that needs no compiler. Returns ``out_path``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from core.io import atomic_path

    with atomic_path(out_path) as tmp:
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8)
    return Path(out_path)


def model_size_bytes(model_or_path: nn.Module | dict | str | os.PathLike) -> int:
    """On-disk size: of a file as is, or of a module / state dict serialised as safetensors."""
    if isinstance(model_or_path, (str, os.PathLike)):
        return Path(model_or_path).stat().st_size
    from core.checkpoint import save_weights

    with tempfile.TemporaryDirectory() as d:
        p = save_weights(Path(d) / "w.safetensors", model_or_path)
        return p.stat().st_size
