"""Ids are what the data wrote: `recommend --user 007` does not find user 7 (the loader keeps "007" and "7" apart,
so answering for 7 could be answering for someone else) — it is one line naming the near match; a float id column
mixing 1 and 1.5 no longer turns the 1 into "1.0" (which no catalogue matches); JSON lines are decoded as CSV files
are (UTF-16 with its byte-order mark, a UTF-8 byte-order mark, cp1252)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from domains.recommendation.data import InteractionDataError, load_interactions


@pytest.fixture(scope="module")
def int_id_run(tmp_path_factory):
    """A tiny two-tower run whose user and item ids are integers (users 1..12, so user 7 exists and "007" does not)."""
    from domains.recommendation.train import TrainConfig, train

    d = tmp_path_factory.mktemp("ids")
    rng = np.random.default_rng(0)
    rows = [(u, int(i) + 1, t) for u in range(1, 13) for t, i in enumerate(rng.choice(25, 6, replace=False))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(d / "inter.csv", index=False)
    run = train(TrainConfig(runs_dir=str(d / "runs"), name="ints", data=str(d / "inter.csv"), track=False, epochs=1, max_steps=1,
                            baselines=False, text="none", wide=False, validation_ratio=0))
    return run, d


def test_a_typed_id_is_looked_up_as_written_and_a_numerically_equal_one_is_named(int_id_run):
    from core.errors import UserInputError
    from domains.recommendation.api import UnknownItemError, load_recommender

    run, _ = int_id_run
    rec = load_recommender(run)
    assert not rec.recommend("7")["fallback"].any() and rec.user_row("7") == rec.user_row(7) == rec.user_row(" 7 ") is not None
    with pytest.raises(UserInputError, match=r"^no user '007' in this run; did you mean '7'\?") as e:
        rec.recommend("007")  # was user 7's list
    from dashboards.common import error_message

    assert error_message(e.value) == str(e.value)  # the page's typed-id box shows this line (not "the run's files lack ...")
    with pytest.raises(UserInputError, match="did you mean '7'"):
        rec.history("+007")
    assert rec.recommend("999")["fallback"].all()  # an unknown id with no near match is still a new user (popularity)
    assert rec.recommend("abc")["fallback"].all()
    with pytest.raises(UnknownItemError, match=r"^no item '03' in this run; did you mean '3'\?"):
        rec.similar_items("03")  # was item 3's neighbours
    assert len(rec.similar_items("3", k=2)) == 2


def test_recommend_user_007_is_one_line_naming_user_7_and_makes_no_job(int_id_run, capsys):
    from domains.recommendation import recommend

    run, d = int_id_run
    jobs = d / "jobs"
    assert recommend.main(["--model-run", str(run), "--runs-dir", str(jobs), "--user", "007"]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "no user '007'" in lines[0] and "did you mean '7'?" in lines[0], err
    assert "Traceback" not in err and not jobs.exists()
    assert recommend.main(["--model-run", str(run), "--runs-dir", str(jobs), "--user", "7"]) == 0
    out = capsys.readouterr().out
    assert "Top 10 for user 7" in out and "FALLBACK" not in out


def test_text_ids_007_and_7_are_two_users_and_an_integer_finds_the_text_id():
    from domains.recommendation.inference import lookup_id

    idx = {"007": 0, "7": 1, "x": 2}
    assert [lookup_id(idx, k) for k in ("007", "7", 7, 7.0, " 007 ", "07")] == [0, 1, 1, 1, 0, None]
    assert lookup_id({12: 0}, "12.0") == 0 and lookup_id({12: 0}, "012") is None  # the loader reads "12.0" as 12, "012" as text


def test_near_ids_are_the_same_number_written_another_way():
    from domains.recommendation.inference import near_ids

    assert near_ids(["007", "7", "x", "70"], "07") == ["007", "7"] and near_ids([12, 13], "012") == [12] and near_ids([12], "a12") == []


def test_a_json_id_column_mixing_1_and_1_5_keeps_1_matching_the_catalogue(tmp_path):
    rows = [{"user_id": 1, "item_id": 1, "timestamp": 10, "rating": 1}, {"user_id": 2, "item_id": 1.5, "timestamp": 11, "rating": 1.0},
            {"user_id": 2, "item_id": 2, "timestamp": 12, "rating": 4.5}]
    (tmp_path / "i.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "items.csv").write_text("item_id,title\n1,One\n1.5,One and a half\n2,Two\n")
    data = load_interactions(tmp_path / "i.jsonl", items=tmp_path / "items.csv")
    assert data.report.unknown_items_dropped == 0  # was 2: "1.0" and "2.0" matched no catalogue id
    assert data.interactions["item_id"].tolist() == ["1", "1.5", "2"]
    assert data.interactions["rating"].tolist() == [1.0, 1.0, 4.5]  # numbers outside the id columns are numbers


def test_a_parquet_float_id_column_with_a_fraction_is_refused_in_one_line(tmp_path):
    pd.DataFrame({"user_id": [1, 2, 3], "item_id": [1.0, 1.5, 2.0], "timestamp": [1, 2, 3]}).to_parquet(tmp_path / "f.parquet")
    with pytest.raises(InteractionDataError) as e:
        load_interactions(tmp_path / "f.parquet")
    msg = str(e.value)
    assert "\n" not in msg and "f.parquet" in msg and "'item_id'" in msg and "1.5" in msg and "integers or text" in msg
    pd.DataFrame({"user_id": [1, 2], "item_id": [1.0, 2.0], "timestamp": [1, 2]}).to_parquet(tmp_path / "whole.parquet")
    assert load_interactions(tmp_path / "whole.parquet").interactions["item_id"].tolist() == [1, 2]  # whole floats are the integers


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "cp1252"])
@pytest.mark.parametrize("array", [False, True])
def test_json_lines_are_decoded_like_csv(tmp_path, encoding, array):
    rows = [{"user_id": "Zoë", "item_id": "Crème brûlée €", "timestamp": 1}, {"user_id": "Zoë", "item_id": "Ça", "timestamp": 2},
            {"user_id": "b", "item_id": "Ça", "timestamp": 3}]
    text = json.dumps(rows, ensure_ascii=False) if array else "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (tmp_path / "i.jsonl").write_text(text, encoding=encoding)
    pd.DataFrame(rows).to_csv(tmp_path / "i.csv", index=False, encoding=encoding)
    from_json = load_interactions(tmp_path / "i.jsonl").interactions
    pd.testing.assert_frame_equal(from_json, load_interactions(tmp_path / "i.csv").interactions)
    assert from_json["item_id"].tolist() == ["Crème brûlée €", "Ça", "Ça"]
