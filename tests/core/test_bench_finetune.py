"""The fine-tuning benchmark runs end to end (quick mode) and writes its BENCHMARKS.md section."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.slow
def test_bench_finetune_quick_writes_its_section(tmp_path):
    from bench.finetune import main

    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n<!-- bench:other:start -->\nkeep me\n<!-- bench:other:end -->\n")
    assert main(["--quick", "--write", "--benchmarks", str(out)]) == 0
    text = out.read_text()
    from core.bench import cpu_kind

    key = "finetune" if cpu_kind() == "amx" else "finetune-no-amx"  # speed sections are per kind of CPU (write_benchmark_section)
    assert "keep me" in text and f"<!-- bench:{key}:start -->" in text
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


def test_cv_units_partition_the_training_items():
    from bench.finetune import SELECT_B_CV_UNITS, cv_units

    n = 1346
    plan = cv_units(n, SELECT_B_CV_UNITS)
    assert len({seed for _, _, seed, _, _ in plan}) == len(plan) == 10  # one seed per unit
    for rep in (0, 1):
        folds = [(v, f) for r, _, _, v, f in plan if r == rep]
        assert np.array_equal(np.sort(np.concatenate([v for v, _ in folds])), np.arange(n))  # every item validated once per repeat
        for v, f in folds:
            assert len(np.intersect1d(v, f)) == 0 and len(v) + len(f) == n
    v0 = plan[0][3]
    assert np.array_equal(v0, np.arange(n // 5))  # repeat 0 fold 0 = the single split of --select B (first 20 %)
    v_rep1 = next(v for r, fold, _, v, _ in plan if r == 1 and fold == 0)
    assert not np.array_equal(np.sort(v_rep1), v0)  # repeat 1 re-partitions the items


def test_choose_lora_divides_by_the_reference_of_the_same_unit():
    from bench.finetune import choose_lora

    def rec(config, epochs, fold, val, params=100):
        return {"config": config, "epochs": epochs, "seed": 0, "repeat": 0, "fold": fold, "val": val, "params": params, "fraction": 0.01}

    # the same seed in two folds: each LoRA value must be divided by its own fold's full FT
    res = [rec("full FT", 1, 0, 0.50), rec("full FT", 1, 1, 0.80), rec("lora", 1, 0, 0.50), rec("lora", 1, 1, 0.80)]
    assert abs(choose_lora(res)["score"] - 1.0) < 1e-12


def test_lora_target_uses_the_full_ft_of_the_same_seed():
    from bench.finetune import Row, targets

    ref = Row("B x", "full FT", 100, 100, 1.0, 0.70, None, None)
    lora = Row("B x", "LoRA r=8", 1, 100, 0.5, 0.686, None, None, extra={"seeds": [0.686, 0.66], "ref_seeds": [0.70, 0.66]})
    line = next(t for t in targets("B x", [ref, lora]) if "LoRA" in t)
    assert "mean ± sd over 2 seeds 99.0% ± 1.4%" in line and "per seed 98.0%, 100.0%" in line  # not 0.66 / 0.70
    assert "same seed" in line and line.endswith("**met**")
    lora.extra["ref_seeds"] = None  # older caches: every seed against the table's reference
    assert "mean ± sd over 2 seeds 96.1%" in next(t for t in targets("B x", [ref, lora]) if "LoRA" in t)


def test_reuse_compares_only_the_budget_fields_of_the_cached_task(tmp_path):
    import dataclasses
    import json

    from bench.finetune import Budget, Row, main

    def cache(task, budget):
        rows = [dataclasses.asdict(Row(f"{task} x", "full FT", 10, 10, 1.0, 0.5, 100, 0.1))]
        (tmp_path / f"{task}.json").write_text(json.dumps({"task": task, "measured": "2026-11-30 00:00 UTC", "minutes": 1.0,
                                                           "budget": budget, "rows": rows}, default=str))

    old = dataclasses.asdict(Budget())
    del old["lora_seeds"]  # a task-A cache written before task B's seeds existed
    old["text_epochs"] = 3  # and with another task-B epoch count
    cache("A", old)
    cache("B", dataclasses.asdict(dataclasses.replace(Budget(), lora_seeds=(0, 1, 2))))
    assert main(["--tasks", "", "--reuse", "A", "--cache-dir", str(tmp_path), "--no-write"]) == 0
    with pytest.raises(SystemExit, match="another budget"):  # task B's own seeds differ
        main(["--tasks", "", "--reuse", "B", "--cache-dir", str(tmp_path), "--no-write"])


@pytest.mark.slow
def test_task_b_seed_pairs_in_a_worker_match_the_in_process_ones(tmp_path):
    import dataclasses

    import bench.finetune as bf

    b = dataclasses.replace(bf.QUICK, lora_seeds=(0, 1, 2))
    got = {}
    for workers in (0, 1):
        bf.SEED_WORKERS = workers
        try:
            rows = bf.task_genres(b, tmp_path)
        finally:
            bf.SEED_WORKERS = 0
        lora = next(r for r in rows if r.variant.startswith("LoRA"))
        assert len(lora.extra["seeds"]) == len(lora.extra["ref_seeds"]) == 3
        assert lora.extra["ref_seeds"][0] == rows[0].metric  # seed 0's reference is the table's full-FT row
        got[workers] = (lora.extra["seeds"], lora.extra["ref_seeds"])
    assert np.allclose(got[0], got[1], atol=1e-6)  # seeds 2.. trained in another process give the same pairs
