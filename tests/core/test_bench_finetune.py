"""The fine-tuning benchmark runs end to end (quick mode) and writes its BENCHMARKS.md section."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_bench_finetune_quick_writes_its_section(tmp_path):
    from bench.finetune import main

    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n<!-- bench:other:start -->\nkeep me\n<!-- bench:other:end -->\n")
    assert main(["--quick", "--write", "--benchmarks", str(out)]) == 0
    text = out.read_text()
    assert "keep me" in text and "<!-- bench:finetune:start -->" in text
    for variant in ("full FT, ImageNet init", "full FT, random init", "LoRA r=4", "BitFit", "int8", "distilled student", "B genres"):
        assert variant in text, variant
    assert "failed:" not in text
