"""An interaction file without a timestamp column (user, item[, rating]: an implicit-feedback export) was refused in one
line whatever the split. The splits that need no time now read it in file order — the same split as the same file with
one constant time for every row — and train / evaluate / score / recommend run on it; the splits that order a user's
interactions by time (leave-last-out, train_sequential) are still one line naming the split."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from domains.recommendation.data import (LEAVE_LAST_OUT, LEGACY_STRATIFIED, MSR_STRATIFIED, SplitError, load_interactions, require_timestamps,
                                         split_interactions, validation_split)


def _rows(seed: int = 0) -> pd.DataFrame:
    """24 users, 6-14 items each, ratings 1-5, and a few repeated (user, item) rows with another rating."""
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{i}", int(rng.integers(1, 6))) for u in range(24) for i in rng.choice(60, int(rng.integers(6, 15)), replace=False)]
    rows += [(u, i, 9) for u, i, _ in rows[5:40:7]]  # repeats (rating 9): the one last in the file is kept
    order = rng.permutation(len(rows))  # users interleaved, as an export writes them
    return pd.DataFrame([rows[j] for j in order], columns=["user_id", "item_id", "rating"])


def _pairs(df: pd.DataFrame) -> list[tuple]:
    return sorted(zip(df["user_id"], df["item_id"], df["rating"]))


@pytest.fixture()
def files(tmp_path):
    df = _rows()
    without = tmp_path / "implicit.csv"
    df.to_csv(without, index=False)
    constant = tmp_path / "constant.csv"
    df.assign(timestamp=1_700_000_000).to_csv(constant, index=False)
    return df, without, constant


def test_a_file_without_timestamps_splits_like_the_same_file_with_one_constant_time(files, caplog):
    df, without, constant = files
    with caplog.at_level(logging.INFO):
        a = load_interactions(without)
    said = [r.getMessage() for r in caplog.records if "no timestamp column" in r.getMessage()]
    assert len(said) == 1 and "file's row order" in said[0] and LEAVE_LAST_OUT in said[0], said
    b = load_interactions(constant)
    assert not a.timestamps and b.timestamps and a.report.timestamps is False
    # file order kept, the last of each repeated pair kept (its rating 9)
    expected = df.drop_duplicates(["user_id", "item_id"], keep="last")
    assert list(zip(a.interactions["user_id"], a.interactions["item_id"], a.interactions["rating"])) == \
        list(zip(expected["user_id"], expected["item_id"], expected["rating"].astype(float)))
    assert 0 < (a.interactions["rating"] == 9).sum() < (df["rating"] == 9).sum()  # the test needs repeats both before and after their first row
    for name in (MSR_STRATIFIED, LEGACY_STRATIFIED):
        sa, sb = split_interactions(a.interactions, name, seed=7), split_interactions(b.interactions, name, seed=7)
        assert len(sa.test) > 20 and _pairs(sa.test) == _pairs(sb.test) and _pairs(sa.train) == _pairs(sb.train)
        va, vb = validation_split(sa.train, name, seed=3), validation_split(sb.train, name, seed=3)
        assert len(va.test) > 0 and _pairs(va.test) == _pairs(vb.test)
    with pytest.raises(SplitError, match=f"split {LEAVE_LAST_OUT} needs each interaction's time"):
        require_timestamps(a, LEAVE_LAST_OUT, "--data implicit.csv")
    require_timestamps(b, LEAVE_LAST_OUT, "--data constant.csv")  # a file with times: nothing to refuse


@pytest.mark.parametrize("command", ["train", "train_sequential"])
def test_splits_that_need_time_are_one_line_naming_the_split(command, files, tmp_path, capsys):
    from domains.recommendation import train, train_sequential

    _, without, _ = files
    runs = tmp_path / "runs"
    args = ["--data", str(without), "--runs-dir", str(runs), "--no-track", "--epochs", "1"]
    if command == "train":
        rc = train.main([*args, "--split", "leave-last-out", "--text", "none", "--no-wide", "--no-baselines"])
    else:
        rc = train_sequential.main([*args, "--no-text"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(lines) == 1, err
    assert LEAVE_LAST_OUT in lines[0] and "no timestamp column" in lines[0] and "implicit.csv" in lines[0], lines[0]
    assert not runs.exists() or not any(runs.rglob("run.json"))


def test_train_evaluate_score_and_recommend_run_on_a_file_without_timestamps(files, tmp_path, capsys):
    from domains.recommendation import evaluate, recommend, score
    from domains.recommendation.train import TrainConfig, train

    _, without, constant = files
    run = train(TrainConfig(runs_dir=str(tmp_path / "runs"), name="implicit", data=str(without), track=False, epochs=1, max_steps=2,
                            baselines=False, text="none", wide=False))
    assert (run / "metrics.json").is_file()
    trained = pd.read_parquet(run / "train.parquet")
    same = split_interactions(load_interactions(constant).interactions, MSR_STRATIFIED, seed=42)
    assert sorted(zip(trained["user_id"], trained["item_id"])) == sorted(zip(same.train["user_id"], same.train["item_id"]))
    jobs = ["--model-run", str(run), "--runs-dir", str(tmp_path / "jobs")]
    assert evaluate.main([*jobs, "--no-track"]) == 0, capsys.readouterr().err
    assert recommend.main([*jobs, "--user", "u3", "--k", "3"]) == 0, capsys.readouterr().err
    assert "Top 3 for user u3" in capsys.readouterr().out
    assert score.main([*jobs, "--k", "3", "--no-progress", "--index", "none"]) == 0, capsys.readouterr().err


def test_a_file_missing_an_id_column_is_told_timestamp_is_optional(tmp_path):
    # since the timestamp column became optional, this message still said 'missing column(s) ['item_id', 'timestamp'];
    # expected user_id, item_id, timestamp[, rating]' — as if the file also had to gain a timestamp column
    from domains.recommendation.data import InteractionDataError, validate_interactions

    p = tmp_path / "no_item.csv"
    p.write_text("user_id,rating\n1,2\n1,3\n")
    with pytest.raises(InteractionDataError) as e:
        load_interactions(p)
    msg = str(e.value)
    assert "missing column(s) ['item_id'];" in msg and "'timestamp'" not in msg.split("found")[0], msg
    assert "timestamp optional" in msg and "leave-last-out" in msg and "train_sequential" in msg and "\n" not in msg, msg
    with pytest.raises(InteractionDataError, match=r"missing column\(s\) \['user_id', 'item_id'\]; .*timestamp optional"):
        validate_interactions(pd.DataFrame({"timestamp": [1, 2]}))  # a DataFrame from the Python API: the same line
