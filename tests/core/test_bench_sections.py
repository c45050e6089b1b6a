"""``core.bench``: every benchmark line names its CPU, and a speed section measured on a CPU without AMX bf16 units
goes to its own block (``<key>-no-amx``) instead of overwriting the AMX machine's figures (and vice versa)."""

from __future__ import annotations

from core import bench


def test_per_cpu_sections_never_overwrite_each_other(tmp_path, monkeypatch):
    md = tmp_path / "BENCHMARKS.md"
    monkeypatch.setattr(bench, "_has_amx", lambda: True)
    assert bench.write_benchmark_section("speed", "## Speed\n\nfast: 2.5x", md, per_cpu=True) == "speed"
    monkeypatch.setattr(bench, "_has_amx", lambda: False)
    assert bench.write_benchmark_section("speed", "## Speed\n\nslower: 1.7x", md, per_cpu=True) == "speed-no-amx"
    text = md.read_text()
    assert "fast: 2.5x" in text and "slower: 1.7x" in text  # both kinds kept
    assert "## Speed — on a CPU without bf16 matrix units" in text and text.count("## Speed\n") == 1
    bench.write_benchmark_section("speed", "## Speed\n\nslower: 1.6x", md, per_cpu=True)  # the same kind again: replaced
    text = md.read_text()
    assert "1.7x" not in text and "slower: 1.6x" in text and "fast: 2.5x" in text
    # a section that is not per CPU (quality figures) keeps one block whatever the CPU
    assert bench.write_benchmark_section("quality", "## Quality\n\nDice 0.92", md) == "quality"


def test_machine_line_names_the_cpu(monkeypatch):
    monkeypatch.setattr(bench, "_has_amx", lambda: False)
    line = bench.machine_line("2026-11-30")
    assert "measured 2026-11-30" in line and "CPU: " in line and "no AMX bf16 units" in line
    assert "torch CPU capability" in line


def test_markdown_table_shows_a_null_metric_as_a_dash():
    assert bench.markdown_table([{"class": "x", "HD95 mm": None, "Dice": 0.5}]).splitlines()[-1] == "| x | – | 0.5 |"


def test_the_cpu_kind_is_the_hardware_not_the_mixed_precision_setting(monkeypatch):
    """SUITE_CPU_AMP=0 turns bf16 training off; it does not remove the CPU's AMX units, so a benchmark run with it on
    an AMX machine must not be filed (and labelled) as a CPU without them."""
    from core.device import cpu_has_bf16_matrix_units

    hardware = cpu_has_bf16_matrix_units(honour_setting=False)
    monkeypatch.setenv("SUITE_CPU_AMP", "0")
    assert cpu_has_bf16_matrix_units() is False
    assert bench.cpu_kind() == ("amx" if hardware else "no-amx")


def test_cpu_latency_warms_up_once_then_takes_the_median_cpu_time():
    from core.bench import cpu_latency

    calls = []

    def busy(n):
        calls.append(n)
        sum(i * i for i in range(n))

    t = cpu_latency(busy, (20000,), repeats=5)
    assert len(calls) == 6 and 0 < t < 5  # one warm-up (a compiled model compiles there), then 5 timed calls
