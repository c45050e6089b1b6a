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


def test_choose_lora_applies_the_rule_fixed_before_the_search():
    from bench.finetune import choose_lora

    def rec(config, epochs, seed, val, params=100, fraction=0.01):
        return {"config": config, "epochs": epochs, "seed": seed, "val": val, "params": params, "fraction": fraction}

    res = [rec("full FT", 1, s, 0.60) for s in (0, 1)] + [rec("full FT", 2, s, v) for s, v in ((0, 0.70), (1, 0.72))]
    res += [rec("big", 2, s, 0.71, params=200) for s in (0, 1)]  # best score, more parameters
    res += [rec("small", 1, s, 0.709) for s in (0, 1)] + [rec("small", 2, s, 0.70) for s in (0, 1)]
    res += [rec("too big", 2, s, 0.80, params=10**6, fraction=0.06) for s in (0, 1)]  # above 5 % of the parameters: not a candidate
    pick = choose_lora(res)
    assert pick["reference_epochs"] == 2  # the reference's best mean validation epoch count
    assert pick["config"] == "small" and pick["epochs"] == 1  # within 0.3 points of the best, fewer parameters
    assert abs(pick["score"] - (0.709 / 0.70 + 0.709 / 0.72) / 2) < 1e-9
    assert choose_lora(res, tolerance=0.0)["config"] == "big"
