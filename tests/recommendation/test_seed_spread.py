"""api.seed_spread reads what bench/recommendation.py writes: <protocol>.json and the per-seed files of --per-seed-file."""

from __future__ import annotations

import json

from domains.recommendation import api


def test_seed_spread_concatenates_per_seed_files(tmp_path):
    bench = tmp_path / api.BENCH_DIR
    bench.mkdir()
    for seed, v in ((0, 0.40), (1, 0.42)):
        rows = [{"model": "ease", "seed": seed, "ndcg@10": v, "valid_ndcg@10": 0.2, "params": {}}]
        (bench / f"stratified-s{seed}-ease.json").write_text(json.dumps({"rows": rows, "seeds": [seed], "quick": False}))
    (bench / "stratified-s2-two_tower.json").write_text(json.dumps({"rows": [{"model": "two_tower", "seed": 2, "ndcg@10": 0.3, "params": {}}],
                                                                    "seeds": [2], "quick": True}))
    (bench / "sequential-s0-seq.json").write_text(json.dumps({"rows": [{"model": "seq", "seed": 0, "ndcg@10": 0.1, "params": {}}], "seeds": [0]}))
    sp = api.seed_spread(tmp_path, "stratified")
    t = sp.table[sp.table["metric"] == "ndcg@10"].set_index("model")
    assert t.loc["ease", "n_seeds"] == 2 and abs(t.loc["ease", "mean"] - 0.41) < 1e-9 and t.loc["two_tower", "n_seeds"] == 1
    assert "seq" not in t.index and sp.seeds == (0, 1, 2) and sp.quick  # one smoke file marks the whole spread
    assert api.seed_spread(tmp_path / "nothing", "stratified").table.empty


def test_seed_spread_stamp_changes_when_a_per_seed_file_is_rewritten(tmp_path):
    """The dashboard caches the spread by this stamp: rewriting only a per-seed file must refresh it."""
    import os

    assert api.seed_spread_stamp(tmp_path, "stratified") == 0.0
    bench = tmp_path / api.BENCH_DIR
    bench.mkdir()
    (bench / "stratified.json").write_text("{}")
    per_seed = bench / "stratified-s1-ease.json"
    per_seed.write_text("{}")
    os.utime(bench / "stratified.json", (1_000, 1_000))
    os.utime(per_seed, (2_000, 2_000))
    assert api.seed_spread_stamp(tmp_path, "stratified") == 2_000
    os.utime(per_seed, (3_000, 3_000))
    assert api.seed_spread_stamp(tmp_path, "stratified") == 3_000
    (bench / "sequential-s0-seq.json").write_text("{}")  # another protocol's file does not count
    os.utime(bench / "sequential-s0-seq.json", (9_000, 9_000))
    assert api.seed_spread_stamp(tmp_path, "stratified") == 3_000
