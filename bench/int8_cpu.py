"""Which int8 path pays for a Linear-heavy model on *this* CPU — the measurement behind ``quantize_int8(method="auto")``.

On a CPU without int8 dot-product instructions (AVX512-VNNI, AVX-VNNI, AMX-INT8) torchao's dynamic int8 ran the
MiniLM text model 21x slower than fp32 (BENCHMARKS "finetune-no-amx"). This probe times, on the same inputs (each
candidate in a process of its own, see below), the candidates for Linear-only models and reports each one's latency against fp32 eager and its output
error against fp32 (and, where one is written, the size of its file: safetensors for torch, .onnx for ONNX Runtime):

* fp32 eager (reference) and fp32 + ``torch.compile`` (what the compiler alone gives);
* torchao int8 dynamic activations + int8 weights + compile (``quantize_int8(method="torchao")``);
* torchao int8 weight-only + compile (``quantize_int8(method="weight_only")``, ``Int8WeightOnlyConfig``);
* PT2E static int8 with the x86 Inductor quantizer + compile (``quantize_int8(method="pt2e")``);
* ONNX Runtime fp32 and ONNX Runtime dynamic int8 (``export_onnx`` + ``quantize_onnx_int8``).

Models: MiniLM-L6 (the sentence encoder of ``bench/finetune.py`` task B, with a random 19-way head; MovieLens titles
tokenised to 16 tokens, batch 32) and 4-layer MLPs 256, 1024 and 2048 wide (batch 32). Latency is the
median CPU time of one call over ``--repeats`` calls after a warm-up (which compiles), one thread — the machine is
shared, so CPU time rather than wall time. Every candidate runs in a fresh process with its own fp32 eager timing
(shared processes leaked compiler state between candidates: a torchao row came out 12x faster and 20x less accurate). Errors over 4 batches: max |out - fp32| / max |fp32| and relative L2.

    python bench/int8_cpu.py                     # MiniLM and three MLPs, 10 repeats; prints the table (7.0 min idle on the 2-core AMD EPYC, BENCHMARKS int8-cpu-no-amx)
    python bench/int8_cpu.py --models mlp --repeats 5 --write   # also writes section "int8-cpu[-no-amx]" of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.bench import cpu_latency, machine_line, markdown_table, write_benchmark_section  # noqa: E402
from core.compress import OnnxRunner, export_onnx, model_size_bytes, quantize_int8, quantize_onnx_int8, save_int8_weights  # noqa: E402
from core.device import cpu_has_int8_dot_product  # noqa: E402


def log(msg: str) -> None:
    print(f"[bench.int8_cpu {time.strftime('%H:%M:%S')}] {msg}", flush=True)



@torch.no_grad()
def outputs(fn, batches: list[tuple]) -> torch.Tensor:
    return torch.cat([fn(*b).float() for b in batches])


class MiniLMLogits(nn.Module):
    """The backbone returns logits; kept as is (a wrapper only to give every candidate the same call)."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, ids, mask):
        return self.m(ids, mask)


def minilm_case(batch: int):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bench.finetune import QUICK, genres_data  # the task-B items and tokenisation (16 tokens)
    from core.backbones import create_backbone

    d = genres_data(QUICK)
    torch.manual_seed(0)
    model = MiniLMLogits(create_backbone("minilm-l6-v2", num_classes=d["C"])).eval()
    ids, mask = d["ids"], d["mask"]
    batches = [(ids[i : i + batch], mask[i : i + batch]) for i in range(0, 4 * batch, batch)]
    return "MiniLM-L6 (22.7 M params, 16 tokens)", model, batches


def mlp_case(batch: int, width: int = 1024):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                          nn.Linear(width, 10)).eval()
    batches = [(torch.randn(batch, width),) for _ in range(4)]
    return f"MLP {width}×4 ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params)", model, batches


def make_case(spec: str, batch: int):
    """``minilm``, ``mlp`` (1024 wide) or ``mlp:WIDTH``."""
    name, _, width = spec.strip().partition(":")
    if name == "minilm" and not width:
        return minilm_case(batch)
    if name == "mlp":
        return mlp_case(batch, int(width or 1024))
    raise SystemExit(f"--models: unknown entry {spec!r}; expected minilm, mlp or mlp:WIDTH")


CANDIDATES = {
    "fp32 + torch.compile": "compile",
    "torchao int8 dynamic + compile (method='torchao')": "torchao",
    "torchao int8 weight-only + compile (method='weight_only')": "weight_only",
    "PT2E static int8, x86 Inductor quantizer + compile (method='pt2e')": "pt2e",
    "ONNX Runtime fp32": "ort-fp32",
    "ONNX Runtime int8 dynamic (quantize_onnx_int8)": "ort-int8",
}


def build(kind: str, model: nn.Module, batches: list[tuple], tmp: Path):
    """(callable, on-disk size or None) of candidate ``kind``."""
    x = batches[0]
    if kind == "compile":
        return torch.compile(model), None
    if kind in ("torchao", "weight_only"):  # size: the int8 safetensors file save_int8_weights writes
        q = quantize_int8(model, x, method=kind)
        return q, save_int8_weights(q, tmp / "m.int8.safetensors").stat().st_size
    if kind == "pt2e":
        return quantize_int8(model, x, calibration=batches, method="pt2e"), None
    p32 = export_onnx(model, x, tmp / "m.onnx", check=True, atol=1e-3)
    if kind == "ort-fp32":
        return OnnxRunner(p32, threads=1), p32.stat().st_size
    p8 = quantize_onnx_int8(p32, tmp / "m.int8.onnx")
    return OnnxRunner(p8, threads=1), p8.stat().st_size


def measure(spec: str, variant: str, batch: int, repeats: int) -> dict:
    """One candidate on one model, in a process of its own (the pool below starts one per task): torch.compile,
    torchao and ONNX export leave global state behind (Inductor settings, caches) that changed a later candidate's
    kernels and numbers when they shared a process. fp32 eager is timed in the same process as the reference."""
    torch.set_num_threads(1)
    name, model, batches = make_case(spec, batch)
    x = batches[0]
    ref = outputs(model, batches)
    lat_ref = cpu_latency(model, x, repeats)
    row = {"model": name, "variant": variant, "fp32 eager (ms)": f"{1000 * lat_ref:.1f}"}
    if variant == "fp32 eager (reference)":
        log(f"{name}: fp32 eager {1000 * lat_ref:.1f} ms")
        return {**row, "CPU latency (ms)": f"{1000 * lat_ref:.1f}", "vs fp32 eager": "1.00", "max error / max": "0", "rel. L2 error": "0",
                "size": f"{model_size_bytes(model) / 1e6:.1f} MB", "note": ""}
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as d:
            fn, size = build(CANDIDATES[variant], model, batches, Path(d))
            lat = cpu_latency(fn, x, repeats)
            out = outputs(fn, batches)
        err, rel = float((out - ref).abs().max() / ref.abs().max()), float((out - ref).norm() / ref.norm())
        log(f"  {name} {variant}: {1000 * lat:.1f} ms ({lat / lat_ref:.2f}x fp32), error {err:.2g} (L2 {rel:.2g})")
        return {**row, "CPU latency (ms)": f"{1000 * lat:.1f}", "vs fp32 eager": f"{lat / lat_ref:.2f}", "max error / max": f"{err:.2g}",
                "rel. L2 error": f"{rel:.2g}", "size": f"{size / 1e6:.1f} MB" if size else "–",
                "note": f"build+warm-up {time.perf_counter() - t0 - lat * repeats:.0f} s"}
    except Exception as e:  # noqa: BLE001 - a candidate that fails is a result too
        log(f"  {name} {variant}: failed: {e}")
        return {**row, "CPU latency (ms)": "–", "vs fp32 eager": "–", "max error / max": "–", "rel. L2 error": "–", "size": "–",
                "note": f"failed: {type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="minilm,mlp:256,mlp:1024,mlp:2048",
                    help="comma-separated: minilm, mlp (1024 wide) or mlp:WIDTH (4 Linear layers of that width)")
    ap.add_argument("--repeats", type=int, default=10, help="timed calls per candidate (median reported)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows")
    ap.add_argument("--write", action="store_true", help="write the table to BENCHMARKS.md (section per CPU kind)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from bench.int8_cpu import measure as importable  # spawn must import it

    variants = ["fp32 eager (reference)"] + [v for v in CANDIDATES if not (a.no_onnx and CANDIDATES[v].startswith("ort"))]
    rows: list[dict] = []
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"), max_tasks_per_child=1) as pool:
        for m in a.models.split(","):
            make_case(m, a.batch) if m.strip().startswith("mlp") else None  # a bad --models entry fails here, not in a worker
            rows += [pool.submit(importable, m, v, a.batch, a.repeats).result() for v in variants]
    load1 = os.getloadavg()[0]
    dot = cpu_has_int8_dot_product()
    cmd = "python bench/int8_cpu.py" + (f" --models {a.models}" if a.models != ap.get_default("models") else "") + f" --repeats {a.repeats}"
    md = (f"## int8 candidates for Linear-only models on this CPU (`{cmd}`)\n\n"
          f"{machine_line()}; int8 dot-product instructions (AVX512-VNNI/AVX-VNNI/AMX-INT8): "
          f"{'yes' if dot else 'no' if dot is False else 'unknown'}; 1-min load {load0:.1f} → {load1:.1f}; "
          f"whole run {(time.perf_counter() - t0) / 60:.1f} min. Batch {a.batch}, one thread, median CPU time of {a.repeats} calls "
          f"after a warm-up; each candidate in a fresh process, its ratio to fp32 eager timed in that process. Errors over 4 batches: max |output − fp32 eager| / max |fp32 eager|, and ‖output − fp32 eager‖ / ‖fp32 eager‖.\n\n"
          + markdown_table(rows) + "\n")
    print(md)
    if a.write:
        write_benchmark_section("int8-cpu", md, per_cpu=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
