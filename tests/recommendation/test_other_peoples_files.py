"""Interaction files as other people export them: Amazon review dumps (JSON lines), CSVs with a field more
than their header, compressed CSVs with another separator, unsigned 64-bit ids, implicit 0/1 ratings.
Each is read correctly or refused in one line naming the file and what was expected (not silently wrong)."""

from __future__ import annotations

import gzip
import json
import logging

import numpy as np
import pandas as pd
import pytest

from domains.recommendation.data import InteractionDataError, load_dataset, load_interactions

AMAZON = [  # the 2014/2018 Amazon review dumps' fields (one object per line), with a nested field and leading-zero asins
    {"reviewerID": "A2SUAM1J3GNN3B", "asin": "0000013714", "overall": 5.0, "unixReviewTime": 1393545600, "reviewTime": "02 28, 2014",
     "style": {"Format:": " Hardcover"}},
    {"reviewerID": "A14VAT5EAX3D9S", "asin": "0000013714", "overall": 4.0, "unixReviewTime": 1363392000, "reviewTime": "03 16, 2013"},
    {"reviewerID": "A2SUAM1J3GNN3B", "asin": "0005080789", "overall": 1.0, "unixReviewTime": 1393632000, "reviewTime": "03 1, 2014"},
]


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_amazon_json_lines_are_read_with_their_ids_as_written(tmp_path):
    p = _write(tmp_path / "Books_5.json", "".join(json.dumps(r) + "\n" for r in AMAZON) + "\n")  # a blank last line too
    inter = load_dataset(str(p)).interactions  # was: --data ... expected a .parquet/.csv interaction file
    assert inter[["user_id", "item_id", "rating", "timestamp"]].values.tolist() == [
        ["A2SUAM1J3GNN3B", "0000013714", 5.0, 1393545600], ["A14VAT5EAX3D9S", "0000013714", 4.0, 1363392000],
        ["A2SUAM1J3GNN3B", "0005080789", 1.0, 1393632000]]
    array = _write(tmp_path / "array.json", json.dumps(AMAZON))
    assert load_interactions(array).interactions["item_id"].tolist() == inter["item_id"].tolist()
    pd.DataFrame(AMAZON).drop(columns="style").to_csv(tmp_path / "amazon.csv", index=False)  # the same columns as a CSV
    assert load_interactions(tmp_path / "amazon.csv").interactions["user_id"].tolist() == inter["user_id"].tolist()
    # ids beyond 64 bits stay exact and distinct (pandas' JSON reader refused them: "Value is too big!")
    big = _write(tmp_path / "big.jsonl", '{"user_id": 12345678901234567890123, "item_id": 1, "timestamp": 1}\n'
                                         '{"user_id": 12345678901234567890124, "item_id": 1, "timestamp": 2}\n')
    assert load_interactions(big).interactions["user_id"].tolist() == ["12345678901234567890123", "12345678901234567890124"]
    bad = _write(tmp_path / "bad.jsonl", json.dumps(AMAZON[0]) + "\n<html>\n")
    with pytest.raises(InteractionDataError, match=r"bad.jsonl: line 2 is not a JSON object"):
        load_interactions(bad)
    with pytest.raises(InteractionDataError, match=r"line 2 is not a JSON object"):
        load_interactions(_write(tmp_path / "list.jsonl", json.dumps(AMAZON[0]) + "\n[1, 2]\n"))


def test_csv_rows_with_more_fields_than_the_header_are_refused_not_shifted(tmp_path):
    # pandas made the first field the index: user_id read the item, item_id the timestamp, timestamp the extra field
    shifted = _write(tmp_path / "extra.csv", "user_id,item_id,timestamp\n1,5,100,7\n2,6,200,8\n3,7,300,9\n")
    with pytest.raises(InteractionDataError, match=r"extra.csv: line\(s\) \[2, 3, 4\] hold 4 fields but the header names 3"):
        load_interactions(shifted)
    trailing = _write(tmp_path / "trailing.csv", "user_id,item_id,rating,timestamp\n1,5,4,100,\n2,6,3,200,\n")  # trailing separators
    inter = load_interactions(trailing).interactions  # was: 'timestamp' has 2 missing values
    assert inter[["user_id", "item_id", "rating", "timestamp"]].values.tolist() == [[1, 5, 4, 100], [2, 6, 3, 200]]


def test_compressed_csv_with_another_separator(tmp_path):
    (tmp_path / "r.csv.gz").write_bytes(gzip.compress(b"user_id;item_id;timestamp\n1;2;10\n1;3;11\n"))  # was: missing columns ['user_id;item_id;timestamp']
    assert load_interactions(tmp_path / "r.csv.gz").interactions[["user_id", "item_id", "timestamp"]].values.tolist() == [[1, 2, 10], [1, 3, 11]]


def test_unsigned_64_bit_ids_stay_positive_and_distinct(tmp_path):
    ids = np.array([2**63 + 5, 2**64 - 1, 7], dtype=np.uint64)  # e.g. hashed ids written as uint64: astype(int64) made them negative
    pd.DataFrame({"user_id": ids, "item_id": [1, 2, 3], "timestamp": [1, 2, 3]}).to_parquet(tmp_path / "u64.parquet")
    assert load_interactions(tmp_path / "u64.parquet").interactions["user_id"].tolist() == ["9223372036854775813", "18446744073709551615", "7"]
    small = np.array([5, 7], dtype=np.uint64)  # small unsigned ids stay integers
    pd.DataFrame({"user_id": small, "item_id": [1, 2], "timestamp": [1, 2]}).to_parquet(tmp_path / "small.parquet")
    assert load_interactions(tmp_path / "small.parquet").interactions["user_id"].tolist() == [5, 7]


def test_timestamps_beyond_64_bits_are_refused(tmp_path):
    p = _write(tmp_path / "t.csv", "user_id,item_id,timestamp\na,x,1577836800\na,y,1e30\n")  # became -9223372036854775808: sorted first
    with pytest.raises(InteractionDataError, match=r"'timestamp' has 1 value\(s\) too large.*\[3\].*1e30"):
        load_interactions(p)


def test_zero_ratings_are_used_as_positives_and_said_so(tmp_path, caplog):
    p = _write(tmp_path / "clicks.csv", "user_id,item_id,rating,timestamp\n1,2,0,1\n1,3,1,2\n2,2,0,3\n")
    logging.getLogger("suite").propagate = True
    with caplog.at_level(logging.WARNING):
        assert len(load_interactions(p).interactions) == 3
    assert any("2 row(s) with a rating of 0 or below" in r.getMessage() for r in caplog.records)


def test_a_movielens_dat_file_points_to_its_folder(tmp_path):
    (tmp_path / "ml-1m").mkdir()
    p = _write(tmp_path / "ml-1m" / "ratings.dat", "1::10::5::978300760\n")
    with pytest.raises(InteractionDataError, match=rf"pass its folder, --data {tmp_path / 'ml-1m'}"):
        load_dataset(str(p))


@pytest.mark.parametrize("command,flag", [("train", "--split-seed"), ("train", "--seed"), ("train_sequential", "--seed")])
def test_training_refuses_a_seed_numpy_cannot_take(tmp_path, capsys, command, flag):
    import importlib

    main = importlib.import_module(f"domains.recommendation.{command}").main
    p = _write(tmp_path / "i.csv", "user_id,item_id,timestamp\na,x,1\n")
    with pytest.raises(SystemExit) as e:  # flags outside their declared range end argument parsing, as argparse does
        main(["--runs-dir", str(tmp_path / "runs"), "--data", str(p), "--no-track", flag, "-1"])  # a ValueError traceback, after the run folder
    assert e.value.code == 2 and f"{flag} -1" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_train_and_recommend_from_amazon_json_lines(tmp_path, capsys):
    from domains.recommendation import recommend
    from domains.recommendation.train import TrainConfig, train

    rng = np.random.default_rng(0)
    rows = [{"reviewerID": f"A{u:04d}X", "asin": f"{i:010d}", "overall": float(rng.integers(1, 6)), "unixReviewTime": 1393545600 + 86400 * t}
            for u in range(10) for t, i in enumerate(rng.choice(20, 5, replace=False))]
    p = _write(tmp_path / "reviews.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    run = train(TrainConfig(runs_dir=str(tmp_path / "runs"), data=str(p), track=False, epochs=1, max_steps=1, baselines=False, text="none",
                            wide=False, validation_ratio=0))
    jobs = ["--model-run", str(run), "--runs-dir", str(tmp_path / "jobs")]
    assert recommend.main([*jobs, "--user", "A0003X", "--k", "3"]) == 0
    out = pd.read_parquet(next((tmp_path / "jobs").rglob("recommendations.parquet")))
    assert len(out) == 3 and not out["fallback"].any() and all(len(i) == 10 and i.isdigit() for i in out["item_id"])  # asins kept as written


def test_ids_saved_as_the_parquet_index_are_read(tmp_path):
    df = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [5, 6, 5], "timestamp": [1, 2, 3]})
    df.set_index("user_id").to_parquet(tmp_path / "by_user.parquet")  # was: missing column(s) ['user_id'] (it is the index)
    df.set_index(["user_id", "item_id"]).to_parquet(tmp_path / "by_pair.parquet")
    for name in ("by_user.parquet", "by_pair.parquet"):
        assert load_interactions(tmp_path / name).interactions[["user_id", "item_id", "timestamp"]].values.tolist() == df.values.tolist()


def test_the_order_within_a_second_is_kept_and_durations_and_periods_are_times():
    from domains.recommendation.data import split_interactions, validate_interactions

    # a click log with fractions of a second, not in time order: truncating to seconds tied them and leave-last-out took the file's last row
    log_ = pd.DataFrame({"user_id": ["u"] * 3, "item_id": ["late", "early", "first"], "timestamp": [1.7e9 + 0.7, 1.7e9 + 0.2, 1.7e9 - 5]})
    for ts in (log_["timestamp"], pd.to_datetime(log_["timestamp"], unit="s"), pd.to_datetime(log_["timestamp"], unit="s").dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")):
        inter = validate_interactions(log_.assign(timestamp=ts))[0].interactions
        assert inter["timestamp"].tolist() == [1700000000700, 1700000000200, 1699999995000]  # whole milliseconds
        assert split_interactions(inter, "leave-last-out").test["item_id"].tolist() == ["late"]
    whole = validate_interactions(log_.assign(timestamp=[1.7e9 + 1, 1.7e9, 1.7e9 - 5]))[0].interactions
    assert whole["timestamp"].tolist() == [1700000001, 1700000000, 1699999995]  # whole seconds stay seconds
    base = pd.DataFrame({"user_id": [1, 1], "item_id": [5, 6]})
    spans = validate_interactions(base.assign(timestamp=pd.to_timedelta([30, 10], unit="s")))[0].interactions  # was a TypeError
    assert spans["timestamp"].tolist() == [30, 10]
    months = validate_interactions(base.assign(timestamp=pd.period_range("2020-01", periods=2, freq="M")))[0].interactions  # was a TypeError
    assert months["timestamp"].tolist() == [1577836800, 1580515200]
