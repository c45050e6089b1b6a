"""The recommendation Python API as a notebook user calls it: a wrong type, an empty table, a missing column
or a NaN id is one UserInputError line naming the argument, what was found and what was expected —
not an AttributeError/KeyError/numpy message, and never a silent empty result."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from core.errors import UserInputError
from domains.recommendation import api
from domains.recommendation.data import (InteractionDataError, load_dataset, load_interactions, msr_stratified_split, split_interactions,
                                         validate_interactions, validation_split)

INTER = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 2], "item_id": [1, 2, 3, 1, 2, 3], "timestamp": [1, 2, 3, 4, 5, 6]})


def _one_line(excinfo, *words: str) -> str:
    msg = str(excinfo.value)
    assert isinstance(excinfo.value, UserInputError) and "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


@pytest.mark.parametrize("call,words", [
    (lambda: split_interactions(INTER.iloc[:0]), ["inter", "0 rows", "at least one"]),  # returned an empty split silently
    (lambda: split_interactions(INTER.iloc[:0], "leave-last-out"), ["inter", "0 rows"]),
    (lambda: validation_split(INTER.iloc[:0]), ["train", "0 rows"]),
    (lambda: split_interactions(INTER.drop(columns="user_id")), ["inter", "missing column", "user_id", "found"]),  # KeyError 'user_id'
    (lambda: split_interactions(INTER.drop(columns="timestamp"), "temporal"), ["missing column", "timestamp"]),
    (lambda: split_interactions(INTER.assign(user_id=[1, np.nan, 1, 2, 2, 2])), ["user_id", "missing value", "[1]"]),  # numpy bincount message
    (lambda: split_interactions("ratings.csv"), ["inter", "'ratings.csv'", "DataFrame"]),
    (lambda: split_interactions(INTER, seed="a"), ["seed", "'a'", "whole number"]),
    (lambda: split_interactions(INTER, seed=1.5), ["seed", "1.5"]),
    (lambda: msr_stratified_split(INTER, seed=-1), ["seed", "-1", ">= 0"]),
    (lambda: validation_split(INTER, seed=-1), ["seed", "-1"]),
    (lambda: split_interactions(INTER, ratio="0.75"), ["ratio", "'0.75'", "below 1"]),
    (lambda: split_interactions(INTER, ratio=2.0), ["ratio", "2"]),  # silently put every row in train
    (lambda: split_interactions(INTER, ratio=float("nan")), ["ratio", "nan"]),  # silently put every row in test
    (lambda: split_interactions(INTER, protocol=["ms"]), ["unknown split", "list"]),  # unhashable type: 'list'
    (lambda: validate_interactions(INTER.iloc[:0]), ["0 rows", "at least one interaction"]),
    (lambda: validate_interactions(INTER, items=pd.DataFrame({"item_id": ["a", "b"]})), ["none of its 6", "item table", "'a'"]),
    (lambda: validate_interactions("ratings.csv"), ["df", "DataFrame", "load_interactions"]),  # 'str' object has no attribute 'rename'
    (lambda: validate_interactions(INTER, items=3), ["items", "3", "DataFrame"]),
    (lambda: validate_interactions(INTER, duplicates="drop"), ["duplicates", "'drop'", "keep-last"]),  # a plain ValueError
    (lambda: validate_interactions(INTER.assign(timestamp=True)), ["timestamp", "true/false"]),  # every time became 1
    (lambda: load_interactions(INTER), ["path", "DataFrame", "validate_interactions"]),
    (lambda: load_interactions(None), ["path", "None"]),
    (lambda: load_dataset(3), ["source", "3"]),
    (lambda: api.seed_spread("runs", "bogus"), ["protocol", "'bogus'", "stratified"]),  # an empty spread, silently
    (lambda: api.seed_spread(None), ["runs_root", "None"]),
    (lambda: api.training_report(None), ["run_dir", "None"]),
    (lambda: api.load_recommender(None), ["run_dir", "None"]),
    (lambda: api.load_metrics(None), ["run_dir", "None"]),
    (lambda: api.genre_vocabulary(None), ["rec", "None", "load_recommender"]),
    (lambda: api.because_summary(None), ["table", "because_you_watched"]),
])
def test_wrong_arguments_are_one_line_naming_the_argument(call, words):
    with pytest.raises(UserInputError) as e:
        call()
    _one_line(e, *words)


def test_validate_accepts_side_tables_as_paths(tmp_path):
    # items="items.csv" was AttributeError: 'str' object has no attribute 'copy' (load_interactions takes paths there)
    (tmp_path / "items.csv").write_text("item_id,title\n1,One\n2,Two\n3,Three\n")
    data, rep = validate_interactions(INTER, items=tmp_path / "items.csv")
    assert rep.rows_out == 6 and data.items.set_index("item_id")["title"].to_dict() == {1: "One", 2: "Two", 3: "Three"}
    with pytest.raises(InteractionDataError, match="a folder, not a file"):
        load_interactions(tmp_path)


def _bench(root, name, seeds, rows):
    d = root / api.BENCH_DIR
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(json.dumps({"rows": rows, "seeds": seeds}))
    return d / name


@pytest.mark.parametrize("seeds,rows,words", [
    (["a"], [{"model": "x", "seed": 0, "ndcg@10": 0.1}], ["'seeds'", "['a']", "whole numbers"]),  # ValueError: invalid literal for int()
    ("ab", [{"model": "x", "seed": 0, "ndcg@10": 0.1}], ["'seeds'", "'ab'"]),
    ([0.5, True], [{"model": "x", "seed": 0, "ndcg@10": 0.1}], ["'seeds'", "[0.5, True]"]),  # silently read as seeds (0, 1)
    ([0], [{"model": "x", "ndcg@10": 0.1}], ["rows[0]", "seed None"]),  # KeyError from pandas melt
    ([0], [1, 2], ["rows[0]", "is 1"]),
    ([0], "abc", ["'rows'", "'abc'"]),
])
def test_a_damaged_benchmark_file_is_named(tmp_path, seeds, rows, words):
    f = _bench(tmp_path, "stratified.json", seeds, rows)
    with pytest.raises(api.BenchResultsError) as e:
        api.seed_spread(tmp_path, "stratified")
    assert _one_line(e, *words).startswith(str(f))


def test_seed_spread_does_not_follow_links_out_of_the_runs_folder(tmp_path):
    elsewhere, root = tmp_path / "elsewhere", tmp_path / "runs"
    _bench(elsewhere, "stratified.json", [7], [{"model": "planted", "seed": 7, "ndcg@10": 0.9}])
    root.mkdir()
    os.symlink(elsewhere / api.BENCH_DIR, root / api.BENCH_DIR)  # the whole bench folder is a link to another folder
    assert api.seed_spread(root, "stratified").table.empty and api.seed_spread_stamp(root, "stratified") == 0.0
    os.unlink(root / api.BENCH_DIR)
    own = _bench(root, "stratified-s0.json", [0], [{"model": "ease", "seed": 0, "ndcg@10": 0.4}])
    os.symlink(elsewhere / api.BENCH_DIR / "stratified.json", root / api.BENCH_DIR / "stratified-s7.json")  # one file links out
    os.symlink(own, root / api.BENCH_DIR / "stratified-s9.json")  # a link inside the folder is read
    sp = api.seed_spread(root, "stratified")
    assert set(sp.table["model"]) == {"ease"} and sp.seeds == (0,) and int(sp.table["n_seeds"].iloc[0]) == 2
    assert api.seed_spread_files(root, "stratified") == [root / api.BENCH_DIR / "stratified-s0.json", root / api.BENCH_DIR / "stratified-s9.json"]


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    from domains.recommendation.train import TrainConfig, train

    d = tmp_path_factory.mktemp("api-args")
    rng = np.random.default_rng(0)
    rows = [(u, f"item{i}", t) for u in range(8) for t, i in enumerate(rng.choice(20, 6, replace=False))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(d / "inter.csv", index=False)
    run = train(TrainConfig(runs_dir=str(d / "runs"), name="tiny", data=str(d / "inter.csv"), track=False, epochs=1, max_steps=1,
                            baselines=False, text="none", wide=False, validation_ratio=0))
    return api.load_recommender(run)


@pytest.mark.parametrize("call,words", [
    (lambda r: r.recommend([3]), ["user_id", "list", "one id"]),  # TypeError: unhashable type: 'list'
    (lambda r: r.recommend(None), ["user_id", "None"]),  # silently the popularity fallback of an 'unknown user'
    (lambda r: r.recommend(float("nan")), ["user_id", "nan"]),
    (lambda r: r.recommend(3, exclude_seen="no"), ["exclude_seen", "'no'", "True or False"]),  # "no" was true
    (lambda r: r.history([3]), ["user_id", "list"]),
    (lambda r: r.similar_items(["item1"]), ["item_id", "list"]),
    (lambda r: r.cold_start_item("New", "Comedy"), ["genres", "'Comedy'", "['Comedy']"]),  # unknown genre(s) ['C', 'd', 'e', ...]
    (lambda r: r.cold_start_item("New", None), ["genres", "None"]),
    (lambda r: r.cold_start_item("New", [], year="abc"), ["year", "'abc'", "whole number"]),
    (lambda r: r.cold_start_item("New", [], year=1999.5), ["year", "1999.5"]),  # silently the year 1999
    (lambda r: r.cold_start_item(5, []), ["title 5: expected", "text"]),  # said "new item title 5 is blank"
    (lambda r: api.because_you_watched(r, [3]), ["user_id", "list"]),
    (lambda r: api.because_you_watched(r, 3, top="2"), ["top", "'2'"]),
    (lambda r: api.because_you_watched(r, 3, top=0), ["top", "0", ">= 1"]),  # an empty table, silently
    (lambda r: api.because_you_watched(r, 3, item_ids="item1"), ["item_ids", "'item1'", "list"]),  # looked up 'i', 't', ...
    (lambda r: api.because_summary(api.because_you_watched(r, 3), n="2"), ["n", "'2'"]),
])
def test_wrong_query_arguments_are_one_line(rec, call, words):
    with pytest.raises(UserInputError) as e:
        call(rec)
    _one_line(e, *words)
    assert len(rec.recommend(3, k=2)) == 2 and rec.recommend("3", k=2)["fallback"].eq(False).all()  # good calls still work


def test_a_new_item_is_not_placed_by_a_tower_that_reads_neither_text_nor_genres(rec):
    from domains.recommendation.inference import InvalidQueryError

    assert not rec.model.cfg.text_dim and not rec.space.genres  # --text none, interactions without a catalogue
    # every title got the same vector, so the 'users it reaches' were the same list whatever the new item
    with pytest.raises(InvalidQueryError, match="reads no title text.*no genres: a new item cannot be placed"):
        rec.cold_start_item("Space Station Rescue", [])
