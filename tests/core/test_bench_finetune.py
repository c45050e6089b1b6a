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


def test_reuse_renders_cached_task_rows_and_refuses_another_budget(tmp_path):
    import dataclasses
    import json

    from bench.finetune import QUICK, Budget, Row, main

    def cache(task, variant, metric, budget):
        rows = [dataclasses.asdict(Row(f"{task} x", "full FT", 10, 10, 1.0, 0.5, 100, 0.1)),
                dataclasses.asdict(Row(f"{task} x", variant, 1, 10, 0.5, metric, 10, 0.1, extra={"seeds": [metric, metric]}))]
        (tmp_path / f"{task}.json").write_text(json.dumps({"task": task, "measured": "2026-11-30 00:00 UTC", "minutes": 2.0,
                                                           "budget": dataclasses.asdict(budget), "rows": rows}, default=str))

    cache("B", "LoRA r=8 (all linear layers), lr 0.0005, 6 epochs, merged", 0.495, Budget())
    cache("A", "BitFit (biases + head)", 0.4, Budget())
    out = tmp_path / "BENCHMARKS.md"
    assert main(["--tasks", "", "--reuse", "A,B", "--cache-dir", str(tmp_path), "--benchmarks", str(out)]) == 0
    text = out.read_text()
    assert text.index("| A x |") < text.index("| B x |")  # task order kept
    assert "task A measured 2026-11-30 00:00 UTC (2.0 min)" in text
    assert "B x LoRA: 10.00% of parameters trained (target ≤ 5%), 99.0% of full-FT metric" in text and "— **missed**" in text  # 10 % > 5 %
    cache("A", "BitFit (biases + head)", 0.4, QUICK)
    with pytest.raises(SystemExit, match="another budget"):
        main(["--tasks", "", "--reuse", "A", "--cache-dir", str(tmp_path), "--no-write"])
