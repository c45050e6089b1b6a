"""Compression and export for deployment on CPU: magnitude pruning (unstructured and structured) with a
short recovery fine-tune, int8 quantization (torchao: the PT2E flow with the x86 Inductor quantizer for conv nets, ``quantize_`` for Linear layers
(dynamic int8, or int8 weights only) —
``torch.ao.quantization`` eager mode is deprecated upstream), ONNX export with an onnxruntime parity
check, ONNX Runtime int8, and on-disk size.

    prune(model, 0.5)                                  # global L1, unstructured, permanent
    prune(model, 0.3, structured=True, permanent=False); recovery_finetune(model, batches, loss_fn, steps=50)
    q = quantize_int8(model, (x,), calibration=[(x1,), (x2,)])  # compiled int8 module
    q = quantize_int8(model, (x,), method="weight_only"); save_int8_weights(q, "m.int8.safetensors")
    q = load_int8_weights("m.int8.safetensors", model)  # model: the fp32 architecture
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

from core.errors import one_line
from core.logging import get_logger

__all__ = [
    "has_conv_layers",
    "prune",
    "remove_pruning",
    "sparsity",
    "recovery_finetune",
    "quantize_int8",
    "INT8_METHODS",
    "save_int8_weights",
    "load_int8_weights",
    "auto_int8_method",
    "cpu_lacks_int8_dot_product",
    "NO_INT8_DOT_PRODUCT",
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


def cpu_lacks_int8_dot_product() -> bool:
    """True on a machine without CUDA whose CPU is known to lack int8 dot-product instructions (AVX512-VNNI, AVX-VNNI,
    AMX-INT8; :func:`core.device.cpu_has_int8_dot_product` is False): there torchao's dynamic int8 layers have no fast
    kernel. The one test behind both ``auto``'s fp32 fallback and ``method="torchao"``'s warning; read from
    :mod:`core.device` at call time, so tests can monkeypatch it."""
    from core import device

    return not torch.cuda.is_available() and device.cpu_has_int8_dot_product() is False


# The figures are the BENCHMARKS.md section "int8-cpu-no-amx" (`python bench/int8_cpu.py --repeats 10` on an AMD EPYC with
# AVX2 only, latency vs fp32 eager, each candidate in its own process), quoted here once; its test compares them with
# that section. PT2E is left out: it cannot trace MiniLM.
NO_INT8_DOT_PRODUCT = ("this CPU has no int8 dot-product instructions (AVX512-VNNI/AVX-VNNI/AMX-INT8); on such a CPU "
                       "(BENCHMARKS section int8-cpu-no-amx, bench/int8_cpu.py) torchao dynamic int8 (method='torchao') ran "
                       "15.4-25.0x the fp32 latency on MiniLM-L6 and 256-2048-wide MLPs, int8 weight-only (method='weight_only', "
                       "Linear weights 4x smaller) 0.75-1.08x, ONNX Runtime int8 (export_onnx + quantize_onnx_int8) 0.28-0.86x")


def auto_int8_method(model: nn.Module) -> tuple[str, str]:
    """What ``quantize_int8(model, method="auto")`` does here, and why: ``(method, reason)`` with method one of
    ``"pt2e"``, ``"torchao"`` or ``"fp32"`` (no int8: the model comes back unquantized).

    * a model with convolutions → ``"pt2e"`` (the int8 CNN of ``bench/finetune.py``: 1.85x fp32 on the AVX2 EPYC, 3.4x on AMX);
    * a Linear-only model → ``"torchao"`` on CUDA machines, on CPUs with int8 dot-product instructions
      (AVX512-VNNI, AVX-VNNI, AMX-INT8) and where the CPU cannot be told (:func:`core.device.cpu_has_int8_dot_product`
      is None: not x86 Linux);
    * a Linear-only model where :func:`cpu_lacks_int8_dot_product` → ``"fp32"``: no torch int8 path was faster than
      fp32 on every model measured there (:data:`NO_INT8_DOT_PRODUCT`; core/README.md says why not weight-only int8);
      ONNX Runtime int8 was (:func:`export_onnx` + :func:`quantize_onnx_int8`).
    """
    if has_conv_layers(model):
        return "pt2e", "the model has convolutions: PT2E static int8 with the x86 Inductor quantizer"
    if cpu_lacks_int8_dot_product():
        return "fp32", f"Linear-only model and {NO_INT8_DOT_PRODUCT}; method='torchao' or 'weight_only' forces int8"
    if torch.cuda.is_available():
        return "torchao", "Linear-only model on a CUDA machine: torchao dynamic int8"
    from core import device

    why = "has int8 dot-product instructions" if device.cpu_has_int8_dot_product() else "could not be checked for int8 dot-product instructions"
    return "torchao", f"Linear-only model, the CPU {why}: torchao dynamic int8"


INT8_METHODS = ("auto", "pt2e", "torchao", "weight_only")


def quantize_int8(model: nn.Module, example_inputs: tuple, calibration: Sequence[tuple] | None = None,
                  method: str = "auto", compile: bool = True) -> nn.Module:
    """int8 copy of ``model`` for CPU inference, with the non-deprecated stacks:

    * ``"pt2e"`` — static int8 (weights and activations) via ``torch.export`` → torchao ``prepare_pt2e``
      with the x86 Inductor quantizer → calibrate on ``calibration`` (default: ``example_inputs``) →
      ``convert_pt2e``. Best for convolutional nets.
    * ``"torchao"`` — ``torchao.quantization.quantize_`` with int8 dynamic activations and int8 weights on
      every ``nn.Linear`` (per-batch activation scales; no calibration). Best for transformers and MLPs on a
      CPU with int8 dot-product instructions (or CUDA); on a CPU without them it warns (:data:`NO_INT8_DOT_PRODUCT`).
    * ``"weight_only"`` — ``quantize_`` with ``Int8WeightOnlyConfig``: every ``nn.Linear`` weight stored as int8 with a
      per-output-row scale, activations stay fp32 (no calibration, no int8 dot products needed). Linear weights take a
      quarter of their fp32 memory; the speed depends on the model (:data:`NO_INT8_DOT_PRODUCT`). Save it with
      :func:`save_int8_weights`, load with :func:`load_int8_weights`.
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
    if method not in INT8_METHODS:
        raise ValueError(f"method must be one of {', '.join(repr(m) for m in INT8_METHODS)}, got {method!r}")
    model = copy.deepcopy(model).eval()
    if method in ("torchao", "weight_only"):
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

        if not any(isinstance(m, nn.Linear) for m in model.modules()):
            raise ValueError(f"{type(model).__name__} has no nn.Linear layers for torchao int8 (method={method!r}); use method='pt2e'")
        if method == "torchao" and cpu_lacks_int8_dot_product():
            log.warning("quantize_int8(method='torchao'): %s", NO_INT8_DOT_PRODUCT)
        quantize_(model, Int8DynamicActivationInt8WeightConfig() if method == "torchao" else Int8WeightOnlyConfig())
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
                raise ExportError(f"torch.export could not trace {type(model).__name__} for quantization: {one_line(e, None)}") from e
            prepared = prepare_pt2e(graph, quantizer)
            for batch in (calibration or [example_inputs]):
                prepared(*(batch if isinstance(batch, tuple) else (batch,)))
            q = convert_pt2e(prepared)
    return _compiled(q) if compile else q


def _compiled(q: nn.Module) -> nn.Module:
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # constant-fold the int8 weights: needed for the fused CPU kernels
    return torch.compile(q)


_INT8_FILE_FORMAT = "core.compress torchao int8 v1"
_INT8_ROOT = "model."  # torchao's layout splits each name at its last dot: a bare nn.Linear's "weight" has none


def save_int8_weights(model: nn.Module, path: str | Path) -> Path:
    """Save a ``quantize_int8(method="weight_only" or "torchao")`` model (compiled or not) as safetensors: each int8
    weight as its int8 data, scale and zero point plus a JSON description (torchao's safetensors layout, nothing
    pickled). Read it back with :func:`load_int8_weights`. Written atomically."""
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    from core.checkpoint import save_weights

    inner = getattr(model, "_orig_mod", model)  # a torch.compile wrapper saves the module it wraps
    state = {_INT8_ROOT + k: v for k, v in inner.state_dict().items()}
    if not any(type(v) is not torch.Tensor for v in state.values()):
        raise ValueError(f"{type(inner).__name__} has no torchao int8 weights to save (quantize it with quantize_int8(method='weight_only' "
                         "or 'torchao'); plain weights go through core.checkpoint.save_weights)")
    try:
        tensors, metadata = flatten_tensor_state_dict(state)
    except ValueError as e:
        raise ValueError(f"cannot save {type(inner).__name__} as int8 safetensors: {e}") from e
    return save_weights(path, tensors, metadata={**metadata, "format": _INT8_FILE_FORMAT})


def _lookup_outside_dtypes_and_members(metadata: dict[str, str]) -> str | None:
    """torchao rebuilds ``{"_type": "torch.dtype", "_data": NAME}`` as ``getattr(torch, NAME)`` and an allow-listed enum's
    ``{"_type": ENUM, "_data": NAME}`` as ``getattr(ENUM, NAME)``: any attribute, not only a dtype or a member — a file
    could put ``torch.load`` where a dtype or a granularity belongs, which loaded and failed later inside the model. The
    first entry that names something else (``"torch.dtype 'load'"``), else None."""
    import enum
    import json

    from torchao.prototype.safetensors.safetensors_utils import ALLOWED_CLASSES

    def bad(o) -> str | None:
        if isinstance(o, list):
            return next((b for v in o if (b := bad(v))), None)
        if not isinstance(o, dict):
            return None
        kind, data = o.get("_type"), o.get("_data")
        if kind == "torch.dtype" and not isinstance(getattr(torch, str(data), None), torch.dtype):
            return f"torch.dtype {data!r}"
        cls = ALLOWED_CLASSES.get(kind) if isinstance(kind, str) else None
        if isinstance(cls, type) and issubclass(cls, enum.Enum) and not isinstance(data, dict) and str(data) not in cls.__members__:
            return f"{kind} {data!r}"
        return next((b for v in o.values() if (b := bad(v))), None)

    for text in metadata.values():
        try:
            found = bad(json.loads(text))
        except ValueError:  # not JSON ("format"; a damaged entry is torchao's to report)
            continue
        if found:
            return found
    return None


def load_int8_weights(path: str | Path, model: nn.Module, compile: bool = True) -> nn.Module:
    """The int8 model saved by :func:`save_int8_weights`, built on a copy of ``model`` (the fp32 architecture it was
    quantized from; its weights are replaced, the caller's module is untouched). The tensors are read with safetensors
    and the int8 layout from the file's JSON metadata (only torchao's allow-listed tensor classes; nothing is unpickled).
    ``compile`` as in :func:`quantize_int8`. A file that is not such a file, or does not fit ``model``, raises
    :class:`core.checkpoint.CheckpointError` naming the file."""
    from safetensors import safe_open
    from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

    from core.checkpoint import CheckpointError, CheckpointMismatchError, state_mismatch
    from core.errors import plain

    if not Path(path).is_file():
        raise CheckpointError(f"int8 weights file {plain(path)} does not exist")
    try:  # safetensors only, whatever the suffix: a .pt is not even opened with torch.load
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a bad header
        raise CheckpointError(f"cannot read int8 weights file {plain(path)} as safetensors ({type(e).__name__}: "
                              f"{one_line(e)}); expected a file written by "
                              "core.compress.save_int8_weights") from e
    if metadata.get("format") != _INT8_FILE_FORMAT:
        raise CheckpointError(f"weights file {plain(path)} is not an int8 file written by core.compress.save_int8_weights "
                              f"(metadata format {plain(metadata.get('format'))}); expected {_INT8_FILE_FORMAT!r} — plain weights load "
                              "with core.checkpoint.load_weights")
    lookup = _lookup_outside_dtypes_and_members(metadata)
    if lookup:
        raise CheckpointError(f"weights file {plain(path)}: its int8 description is damaged (it names {lookup}, which is not a dtype or "
                              "a member of its kind); expected the metadata save_int8_weights writes")
    try:
        state, leftover = unflatten_tensor_state_dict(tensors, metadata)
    except Exception as e:  # noqa: BLE001 - torchao raises ValueError/KeyError/JSON errors for a damaged description
        raise CheckpointError(f"weights file {plain(path)}: its int8 description is damaged ({type(e).__name__}: "
                              f"{one_line(e)}); expected the metadata save_int8_weights writes") from e
    if leftover:
        raise CheckpointError(f"weights file {plain(path)} holds tensor {plain(next(iter(leftover)))} that its int8 description does not "
                              f"name ({len(leftover)} such); expected only the tensors save_int8_weights writes")
    state = {k.removeprefix(_INT8_ROOT): v for k, v in state.items()}
    q = copy.deepcopy(model).eval()
    problem = state_mismatch(q, state)
    if problem:
        raise CheckpointMismatchError(f"int8 weights {plain(path)} do not fit {type(q).__name__}: {problem}")
    q.load_state_dict(state, assign=True)  # assign: the int8 tensors replace the fp32 parameters instead of being copied into them
    return _compiled(q) if compile else q


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
            raise ExportError(f"ONNX export of {type(model).__name__} failed: {type(e).__name__}: {one_line(e, None)}") from e
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
