"""Files and queries a new user brings: odd ids, dates, tiny data, bad k, data changed after training.
Each case either works correctly or fails with one line naming the input (exit 2, no traceback)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from domains.recommendation.data import InteractionDataError, SplitError, load_interactions, split_interactions


def _csv(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_iso_dates_become_epoch_seconds_whatever_their_format(tmp_path):
    # pandas parses ISO strings at microsecond resolution: dividing by 1e9 gave 1577836 instead of 1577836800
    p = _csv(tmp_path, "d.csv", "user_id,item_id,timestamp\na,x,2020-01-01T00:00:00Z\nb,y,2020-01-02\nc,z,1577836800\n")
    ts = load_interactions(p).interactions.set_index("user_id")["timestamp"]
    assert ts.to_dict() == {"a": 1577836800, "b": 1577923200, "c": 1577836800}
    bad = _csv(tmp_path, "bad.csv", "user_id,item_id,timestamp\na,x,2020-01-01\nb,y,not a date\n")
    with pytest.raises(InteractionDataError, match=r"timestamp.*\[3\].*not a date"):
        load_interactions(bad)


def test_parquet_date_columns_become_epoch_seconds_and_missing_dates_are_refused(tmp_path):
    # a datetime64 column went through to_numeric: microseconds (or ms), and NaT became -9.2e18 (sorted first, silently)
    when = pd.to_datetime(["2020-01-01", "2020-01-02"])
    for unit, tz in (("us", None), ("ms", "Europe/Paris"), ("ns", "UTC")):
        t = pd.Series(when).dt.tz_localize(tz).astype(f"datetime64[{unit}, {tz}]" if tz else f"datetime64[{unit}]")
        pd.DataFrame({"user_id": [1, 2], "item_id": [5, 5], "timestamp": t}).to_parquet(tmp_path / "d.parquet")
        expected = [1577836800, 1577923200] if tz in (None, "UTC") else [1577833200, 1577919600]
        assert load_interactions(tmp_path / "d.parquet").interactions["timestamp"].tolist() == expected
    pd.DataFrame({"user_id": [1, 2], "item_id": [5, 5], "timestamp": [when[0], pd.NaT]}).to_parquet(tmp_path / "nat.parquet")
    with pytest.raises(InteractionDataError, match="missing date"):
        load_interactions(tmp_path / "nat.parquet")


def test_a_file_mixing_seconds_and_milliseconds_is_put_in_seconds(tmp_path):
    # the later event in milliseconds sorted after every later event in seconds: leave-last-out tested the wrong item
    p = _csv(tmp_path, "m.csv", "user_id,item_id,timestamp\na,x,1577836800000\na,y,1577923200\nb,x,1577836801\nb,y,1577836802\n")
    inter = load_interactions(p).interactions
    assert inter["timestamp"].tolist() == [1577836800, 1577923200, 1577836801, 1577836802]
    assert split_interactions(inter, "leave-last-out").test.set_index("user_id")["item_id"].to_dict() == {"a": "y", "b": "y"}
    only_ms = _csv(tmp_path, "ms.csv", "user_id,item_id,timestamp\na,x,1577836800000\na,y,1577923200000\n")
    assert load_interactions(only_ms).interactions["timestamp"].tolist() == [1577836800000, 1577923200000]  # one unit: left alone


def test_ids_keep_their_identity(tmp_path):
    # leading zeros, 20+ digit ids, "NA", spaces/commas/unicode stay distinct text ids; "12.0" is the integer 12
    for ids in (["007", "7"], ["12345678901234567890123", "12345678901234567890124"], ["NA", "null", "user 3, é"]):
        p = _csv(tmp_path, "i.csv", "user_id,item_id,timestamp\n" + "".join(f'"{u}",x,{t}\n' for t, u in enumerate(ids)))
        assert sorted(load_interactions(p).interactions["user_id"]) == sorted(ids)
    f = _csv(tmp_path, "f.csv", "user_id,item_id,timestamp\n3.0,300.0,1\n4.0,300.0,2\n")
    inter = load_interactions(f).interactions
    assert inter["user_id"].tolist() == [3, 4] and inter["item_id"].tolist() == [300, 300]


def test_files_are_read_by_content_not_only_by_name(tmp_path):
    df = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [5, 6, 5], "timestamp": [1, 2, 3]})
    df.to_parquet(tmp_path / "parquet.csv")  # Parquet under a .csv name: was a UnicodeDecodeError
    (tmp_path / "semi.csv").write_text(df.to_csv(index=False, sep=";"))
    (tmp_path / "tabs.csv").write_text(df.to_csv(index=False, sep="\t"))
    (tmp_path / "bom.csv").write_text(df.to_csv(index=False), encoding="utf-8-sig")
    for name in ("parquet.csv", "semi.csv", "tabs.csv", "bom.csv"):
        pd.testing.assert_frame_equal(load_interactions(tmp_path / name).interactions[["user_id", "item_id", "timestamp"]], df, check_dtype=False)


def test_catalogue_with_one_text_id_still_matches_numeric_interaction_ids(tmp_path):
    # one non-numeric catalogue id made the catalogue text ("1") and the interactions integers (1): every row was dropped
    p = _csv(tmp_path, "i.csv", "user_id,item_id,timestamp\n1,1,1\n1,2,2\n2,1,3\n")
    items = _csv(tmp_path, "items.csv", "item_id,title\n1,One\n2,\nabc,Letters\n3\n")
    data = load_interactions(p, items=items)
    assert data.report.rows_out == 3 and data.report.unknown_items_dropped == 0
    titles = data.items.set_index("item_id")["title"].to_dict()
    assert titles == {"1": "One", "2": "2", "abc": "Letters", "3": "3"}  # blank/missing titles: the id, not "nan"


def test_a_user_table_listing_a_user_twice_is_refused(tmp_path):
    p = _csv(tmp_path, "i.csv", "user_id,item_id,timestamp\n1,5,1\n2,5,2\n")
    users = _csv(tmp_path, "u.csv", "user_id,age\n1,20\n1,30\n2,40\n")
    with pytest.raises(InteractionDataError, match=r"user table lists 1 user id\(s\) twice.*\[3\]"):
        load_interactions(p, users=users)


@pytest.mark.parametrize("col,value", [("rating", "inf"), ("timestamp", "inf"), ("rating", "-inf")])
def test_non_finite_numbers_are_refused(tmp_path, col, value):
    row = {"user_id": "a", "item_id": "x", "rating": "1", "timestamp": "1"} | {col: value}
    p = _csv(tmp_path, "n.csv", "user_id,item_id,rating,timestamp\na,y,1,1\n" + ",".join(row.values()) + "\n")
    with pytest.raises(InteractionDataError, match=rf"{col}.*non-finite"):
        load_interactions(p)


def test_ranking_metrics_with_a_catalogue_smaller_than_k():
    from domains.recommendation.metrics import ranking_metrics

    m = ranking_metrics(np.array([[1, 0], [0, -1]]), [np.array([0]), np.array([1])], n_items=2, k=10)
    assert m["recall@10"] == pytest.approx(0.5) and m["precision@10"] == pytest.approx(0.05)
    assert m["ndcg@10"] == pytest.approx(0.5 * (1 / np.log2(3)))


def test_too_little_data_for_a_split_is_a_named_error(tmp_path, capsys):
    from domains.recommendation.data import check_split_sizes
    from domains.recommendation.sequential import load_leave_last_out
    from domains.recommendation.training import TrainConfig, prepare_inputs

    inter = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "x"], "rating": 1.0, "timestamp": [1, 2, 3]})
    singles = inter.drop_duplicates("user_id")
    for name, df in (("msr-stratified-75", inter), ("leave-last-out", singles)):  # 2 rows: both stay in train at 75 %
        with pytest.raises(SplitError, match="leaves no test interactions.*at least"):
            check_split_sizes(split_interactions(df, name), None, "x.csv")
    p = tmp_path / "two.csv"  # a has a test item under leave-last-out; its one training row leaves no validation item
    inter.to_csv(p, index=False)
    with pytest.raises(SplitError, match="validation carve.*--validation-ratio 0"):
        prepare_inputs(TrainConfig(data=str(p), split="leave-last-out", text="none"))
    with pytest.raises(SplitError, match="validation carve"):
        load_leave_last_out(str(p), with_text=False)


def _exit_code(main, argv) -> int:
    """A command's exit code: flags outside their declared range end parse_config with SystemExit(2), as argparse does."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_settings_that_cannot_train_are_refused_before_a_run_folder(tmp_path, capsys):
    from domains.recommendation import train, train_sequential

    p = tmp_path / "i.csv"
    p.write_text("user_id,item_id,timestamp\na,x,1\n")
    runs = ["--runs-dir", str(tmp_path / "runs"), "--data", str(p)]
    assert _exit_code(train.main, [*runs, "--no-track", "--k", "0", "--epochs", "0", "--validation-ratio", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "--k 0" in err and "--epochs 0" in err and "--validation-ratio 1.5" in err and "Traceback" not in err
    assert _exit_code(train_sequential.main, [*runs, "--k", "-1"]) == 2
    assert "--k -1" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_user_ids_given_as_float_text_are_found():
    from domains.recommendation.inference import lookup_id

    assert [lookup_id({12: 0}, k) for k in ("12", "12.0", 12.0, " 12 ", "12.5", 12.5, "1e1")] == [0, 0, 0, 0, None, None, None]
    assert [lookup_id({"007": 0, "7": 1}, k) for k in ("007", "7", 7)] == [0, 1, 1]
    assert lookup_id({"user 3, é": 0}, " user 3, é\n") == 0  # the loader strips ids; a pasted id with blanks around it is the same user


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A two-step run on 12 users with text ids (spaces, commas, unicode)."""
    from domains.recommendation.train import TrainConfig, train

    d = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    rows = [(f"user {u}, é", f"itém {i}", int(t)) for u in range(12) for t, i in enumerate(rng.choice(30, 8, replace=False))]
    data = d / "inter.csv"
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(data, index=False)
    run = train(TrainConfig(runs_dir=str(d / "runs"), name="tiny", data=str(data), track=False, epochs=1, max_steps=2, baselines=False,
                            text="none", wide=False))
    return run, data, d


def test_bad_k_is_one_line_and_large_k_returns_every_unseen_item(tiny_run, capsys):
    from domains.recommendation import recommend, score
    from domains.recommendation.inference import InvalidQueryError, Recommender

    run, _, d = tiny_run
    jobs = ["--model-run", str(run), "--runs-dir", str(d / "jobs")]
    for k in ("0", "-1"):
        assert _exit_code(recommend.main, [*jobs, "--user", "user 3, é", "--k", k]) == 2
        assert _exit_code(recommend.main, [*jobs, "--similar-to", "itém 1", "--k", k]) == 2
        assert _exit_code(score.main, [*jobs, "--k", k, "--no-progress"]) == 2
        assert "expected" in capsys.readouterr().err
    assert _exit_code(score.main, [*jobs, "--users-per-item", "0", "--no-progress"]) == 2
    assert not (d / "jobs").exists()  # refused before any job folder
    rec = Recommender.load(run)
    with pytest.raises(InvalidQueryError):
        rec.recommend("user 3, é", k=0)
    out = rec.recommend("user 3, é", k=1000)
    seen = set(rec.history("user 3, é")["item_id"])
    ranked = int((rec.popularity > 0).sum())  # items without a training interaction are in no list (test_untrained_items.py)
    assert ranked < rec.space.n_items and len(out) == ranked - len(seen) and not (set(out["item_id"]) & seen)


def test_evaluate_refuses_data_changed_after_training(tiny_run, capsys):
    from domains.recommendation import evaluate

    run, data, d = tiny_run
    jobs = ["--model-run", str(run), "--runs-dir", str(d / "eval"), "--no-track"]
    assert evaluate.main(jobs) == 0
    original = data.read_text(encoding="utf-8")
    try:
        data.write_text("\n".join(original.splitlines()[:-10]) + "\n", encoding="utf-8")
        assert evaluate.main(jobs) == 2
        assert "changed after training" in capsys.readouterr().err
    finally:
        data.write_text(original, encoding="utf-8")


def test_an_approximate_index_that_found_nothing_unseen_has_recall_zero_not_missing():
    from domains.recommendation.topk import approx_recall

    out = pd.DataFrame({"user_id": ["a", "a"], "item_id": ["x", "y"], "method": "exact"})  # IVF's one probed list held only seen items
    assert approx_recall(out, ["faiss-ivf"]) == {"faiss-ivf": 0.0}
    assert approx_recall(out) == {}
