"""bench/recommendation_shop.py: the command behind the README's figures on never-sold catalogue items. On a tiny shop
(--quick) the run's lists under the current rule hold no never-sold item, while the same weights with every item
ranked (the behaviour before session 14) put never-sold items into the lists."""

from __future__ import annotations

import json

import pytest


def test_quick_shop_never_sold_items_only_in_the_every_item_lists(tmp_path, capsys):
    from bench.recommendation_shop import main

    assert main(["--quick", "--seeds", "0", "--no-full", "--no-write", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "shop.json").read_text())
    rows = {r["model"]: r for r in res["rows"]}
    assert set(rows) == {"rule", "every_item", "most_popular"}
    assert res["shop"]["items"] == 300 and res["shop"]["items_bought"] <= 30
    rule, every = rows["rule"], rows["every_item"]
    assert rule["never_sold_top10"] == 0 and rule["never_sold_first"] == 0 and rule["untrained_top10"] == 0
    assert every["never_sold_top10"] > 0.05  # same weights, every item by its own random id: they enter the lists
    assert rule["run_reported_ndcg"] == pytest.approx(rule["ndcg@10"], abs=1e-9)  # what train evaluated is what we rank
    assert 0 < rule["ndcg@10"] <= 1 and 0 < rows["most_popular"]["ndcg@10"] <= 1
    out = capsys.readouterr().out
    assert "QUICK SMOKE SETTINGS" in out and "| two-tower, current rule" in out
    assert main(["--report", "--no-write", "--out", str(tmp_path)]) == 0  # the table again from the JSON, nothing trained
    assert "| two-tower, every item ranked" in capsys.readouterr().out


def test_the_shop_is_deterministic_and_sells_only_its_sold_items(tmp_path):
    from bench.recommendation_shop import make_shop

    a = make_shop(tmp_path / "a", items=200, sold=20, users=30, categories=4, zipf=1.0, seed=3)
    b = make_shop(tmp_path / "b", items=200, sold=20, users=30, categories=4, zipf=1.0, seed=3)
    assert (tmp_path / "a" / "shop.inter").read_bytes() == (tmp_path / "b" / "shop.inter").read_bytes() and a == b
    assert len(a["sold_ids"]) <= 20 and a["interactions"] >= 30 * 8
    lines = (tmp_path / "a" / "shop.item").read_text().splitlines()
    assert len(lines) == 201  # the catalogue lists every item, sold or not
    inter = [ln.split("\t") for ln in (tmp_path / "a" / "shop.inter").read_text().splitlines()[1:]]
    for user in {u for u, _, _ in inter}:  # timestamps increase within a user's purchases
        times = [float(t) for u, _, t in inter if u == user]
        assert times == sorted(times) and len(set(times)) == len(times)


def test_help_runs():
    from bench.recommendation_shop import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0


def test_impossible_shop_settings_are_refused_before_anything_runs(tmp_path):
    from bench.recommendation_shop import main

    for bad in (["--sold", "0"], ["--sold", "400", "--items", "300"], ["--in-category", "1.5"]):
        with pytest.raises(SystemExit) as e:
            main(["--quick", "--no-write", "--out", str(tmp_path), *bad])
        assert e.value.code == 2, bad
    assert not (tmp_path / "shop.json").exists()
