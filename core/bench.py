"""Helpers for ``bench/``: timing, peak memory, and writing one section of BENCHMARKS.md.

Speed is always reported as a ratio against a reference measured in the same process.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from typing import Callable

from core.io import write_marked_block

__all__ = ["write_benchmark_section", "time_it", "cpu_latency", "PeakRSS", "markdown_table", "machine_line", "cpu_label", "cpu_kind"]

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def cpu_label() -> str:
    """The CPU model (``/proc/cpuinfo``), torch's CPU capability and whether it has AMX bf16 units — figures
    differ between CPUs (an Intel Xeon with AMX trains in bf16; an AMD EPYC has no such units), so every
    benchmark line names the CPU it was measured on."""
    import platform

    import torch

    from core.device import cpu_info_field

    name = cpu_info_field("model name") or platform.processor() or "unknown CPU"
    return (f"{name}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            + ("AMX bf16 units present (amx_bf16)" if _has_amx() else "no AMX bf16 units"))


def _has_amx() -> bool:
    from core.device import cpu_has_bf16_matrix_units

    return cpu_has_bf16_matrix_units(honour_setting=False)  # the hardware, whatever SUITE_CPU_AMP says


def cpu_kind() -> str:
    """``"amx"`` or ``"no-amx"``: the two kinds of CPU the suite reports separately (see :func:`write_benchmark_section`)."""
    return "amx" if _has_amx() else "no-amx"


def machine_line(measured: str | None = None) -> str:
    """The machine, device, torch version and CPU (:func:`cpu_label`), and when the figures were measured
    (``measured``: e.g. a date range when a report renders parts measured on different days; default today)."""
    import platform

    import torch

    dev = "CUDA " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return (f"{platform.machine()}, {os.cpu_count()} cores, {dev}, torch {torch.__version__}, measured {measured or time.strftime('%Y-%m-%d')}; "
            f"CPU: {cpu_label()}")


def write_benchmark_section(key: str, markdown: str, path: Path = BENCHMARKS_MD, per_cpu: bool = False) -> str:
    """Replace (or append) the block between ``<!-- bench:key:start -->`` and ``...:end -->``,
    so each bench command owns its own section of BENCHMARKS.md. ``per_cpu`` (speed and memory figures):
    on a CPU without AMX bf16 units the block is ``key-no-amx`` and its first heading says so, so a run on
    one kind of CPU never overwrites the other kind's figures. Returns the key written."""
    if per_cpu and cpu_kind() == "no-amx":
        key = f"{key}-no-amx"
        lines = markdown.strip().split("\n")
        if lines and lines[0].startswith("#"):
            lines[0] += " — on a CPU without bf16 matrix units (no AMX, e.g. AMD EPYC)"
        markdown = "\n".join(lines)
    write_marked_block(path, f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->", markdown.strip(),
                       new_file="# Benchmarks\n\nEvery number below is written by the `bench/` command named in its section, on the data named there, with its baseline measured in the same run.\n")
    return key


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "_(no rows)_"
    columns = columns or list(rows[0])
    def fmt(v):
        if v is None:  # a metric recorded as null (e.g. HD95 of an absent class): no number
            return "–"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def time_it(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def cpu_latency(fn: Callable[..., object], inputs: tuple, repeats: int) -> float:
    """Median CPU seconds of one call ``fn(*inputs)`` under ``torch.no_grad`` after one warm-up call (which compiles
    a compiled model). CPU time, not wall time: on a shared machine wall time mostly measures the neighbours; run
    single-threaded so it is the latency an idle core would see."""
    import torch

    with torch.no_grad():
        fn(*inputs)
        times = []
        for _ in range(repeats):
            t0 = time.process_time()
            fn(*inputs)
            times.append(time.process_time() - t0)
    return float(statistics.median(times))


class PeakRSS:
    """Sample this process's resident memory in a thread; ``peak_mb`` above the start level.

        with PeakRSS() as m: work()
        m.peak_mb, m.delta_mb
    """

    def __init__(self, interval: float = 0.02):
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.start_mb = self.peak_mb = 0.0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.start_mb = self.peak_mb = self._proc.memory_info().rss / 2**20
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)

    @property
    def delta_mb(self) -> float:
        return self.peak_mb - self.start_mb

