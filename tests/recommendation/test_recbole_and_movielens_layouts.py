"""Data formats users bring as they ship (session 13): RecBole's atomic files (``x.inter`` with ``name:type`` headers,
``x.item`` / ``x.user`` beside it, or the dataset folder), MovieLens 10M / 20M / 25M folders, and MovieLens files
re-saved as UTF-16. Small files in each real layout, written from the bundled ML-100K; every value read is asserted."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest

from domains.recommendation.data import InteractionDataError, load_dataset, load_interactions, load_ml100k, load_movielens_folder, split_interactions

COLS = ["user_id", "item_id", "rating", "timestamp"]


def _recbole_folder(folder):
    """RecBole's own ml-100k atomic files (the ones the bundled data is prepared from), copied as a user has them."""
    folder.mkdir()
    recbole = Path(list(importlib.util.find_spec("recbole").submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    for ext in ("inter", "item", "user"):
        shutil.copy(recbole / f"ml-100k.{ext}", folder / f"ml-100k.{ext}")
    return folder


def _pairs(split):
    return sorted(map(tuple, split.test[["user_id", "item_id"]].values.tolist()))


def test_a_recbole_dataset_folder_or_its_inter_file_reads_as_the_bundled_data(tmp_path):
    # --data ml-100k/ml-100k.inter was 'expected ... a .parquet/.csv/.jsonl interaction file', the folder 'no u.data ... found'
    folder = _recbole_folder(tmp_path / "ml-100k")
    bundled = load_ml100k()
    for source in (folder, folder / "ml-100k.inter"):
        got = load_dataset(str(source))
        assert got.interactions[COLS].values.tolist() == bundled.interactions.sort_index()[COLS].values.tolist()  # the file's line order
        assert _pairs(split_interactions(got.interactions)) == _pairs(split_interactions(bundled.interactions))  # msr-stratified-75: the same test pairs
        pd.testing.assert_frame_equal(got.items, bundled.items)  # the .item file beside it: title, year, genres
        pd.testing.assert_frame_equal(got.users, bundled.users, check_dtype=False)  # the .user file: age, gender, occupation


def test_recbole_files_other_than_the_bundled_ones(tmp_path):
    # a RecBole .inter alone (no side files), ml-1m's genre field name, typed headers under a .tsv name
    (tmp_path / "mine").mkdir()
    inter = tmp_path / "mine" / "mine.inter"
    inter.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\nu1\ti1\t4.0\t881250949\nu1\ti2\t3\t881250950\nu2\ti1\t5\t881250951\n")
    d = load_interactions(inter)
    assert d.interactions[COLS].values.tolist() == [["u1", "i1", 4.0, 881250949], ["u1", "i2", 3.0, 881250950], ["u2", "i1", 5.0, 881250951]]
    assert d.items["title"].tolist() == ["i1", "i2"]  # no .item: the id stands in
    (tmp_path / "mine" / "mine.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\n"
                                                  "i1\tHeat\t1995\tAction Crime\ni2\tCasino\t\tDrama\n")
    items = load_dataset(str(tmp_path / "mine")).items.set_index("item_id")
    assert items.loc["i1"].tolist() == ["Heat", 1995, ["Action", "Crime"]] and items.loc["i2"].tolist() == ["Casino", -1, ["Drama"]]
    tsv = tmp_path / "typed.tsv"
    tsv.write_text(inter.read_text())
    assert load_interactions(tsv).interactions[COLS].values.tolist() == d.interactions[COLS].values.tolist()


@pytest.mark.parametrize("header, field, found", [
    ("user_id:token\titem_id:str\trating:float\ttimestamp:float", "item_id:str", "type 'str'"),
    ("user_id:token\titem_id\trating:float\ttimestamp:float", "item_id", "no type"),
])
def test_a_recbole_header_with_an_unknown_type_is_one_line_before_any_run(tmp_path, capsys, header, field, found):
    from domains.recommendation.train import main

    p = tmp_path / "x.inter"
    p.write_text(header + "\n1\t2\t3\t881250949\n")
    runs = tmp_path / "runs"
    assert main(["--data", str(p), "--runs-dir", str(runs), "--no-track", "--text", "none", "--no-wide"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert err == [f"error: {p}: header field {field!r} has {found}; expected RecBole's name:type with a type of token, token_seq, float, float_seq "
                   "(e.g. user_id:token)"]
    assert not runs.exists() or not any(runs.rglob("run.json"))


def test_a_recbole_folder_with_several_inter_files_and_none_named_after_it_asks_which(tmp_path):
    folder = tmp_path / "bench"
    folder.mkdir()
    for part in ("train", "valid", "test"):
        (folder / f"ml.{part}.inter").write_text("user_id:token\titem_id:token\n1\t2\n")
    with pytest.raises(InteractionDataError, match=r"bench: 3 RecBole \.inter files \(ml\.test\.inter, ml\.train\.inter, ml\.valid\.inter\) and none named "
                                                   r"bench\.inter; expected one, or pass the file itself \(--data .*ml\.test\.inter\)$"):
        load_dataset(str(folder))


def _bundled_rows(n):
    b = load_ml100k()
    return b, b.interactions.sort_index().head(n)


def test_movielens_10m_20m_and_25m_folders_read_as_shipped(tmp_path):
    # ml-10M100K: ratings.dat '::' with half stars, movies.dat, tags.dat, no users.dat; ml-20m / ml-25m / ml-latest:
    # ratings.csv userId,movieId,rating,timestamp, movies.csv with quoted titles and '(no genres listed)', links.csv, tags.csv
    bundled, rows = _bundled_rows(300)
    half = rows.assign(rating=rows["rating"] - 0.5 * (rows.index % 2))  # 10M onwards rate in half stars
    items = bundled.items[bundled.items["item_id"].isin(rows["item_id"])]
    titles = [f"{t} ({y})" if y > 0 else t for t, y in zip(items["title"], items["year"])]
    genres = ["|".join(g) or "(no genres listed)" for g in items["genres"]]
    ml10 = tmp_path / "ml-10M100K"
    ml10.mkdir()
    (ml10 / "ratings.dat").write_text("".join(f"{u}::{i}::{r:g}::{t}\n" for u, i, r, t in half[COLS].itertuples(index=False)))
    (ml10 / "movies.dat").write_text("".join(f"{i}::{t}::{g}\n" for i, t, g in zip(items["item_id"], titles, genres)))
    (ml10 / "tags.dat").write_text("15::4973::excellent!::1215184630\n")
    ml25 = tmp_path / "ml-25m"
    ml25.mkdir()
    half.rename(columns={"user_id": "userId", "item_id": "movieId"})[["userId", "movieId", "rating", "timestamp"]].to_csv(ml25 / "ratings.csv", index=False)
    pd.DataFrame({"movieId": items["item_id"], "title": titles, "genres": genres}).to_csv(ml25 / "movies.csv", index=False)
    (ml25 / "links.csv").write_text("movieId,imdbId,tmdbId\n1,0114709,862\n")
    (ml25 / "tags.csv").write_text("userId,movieId,tag,timestamp\n3,260,classic,1439472355\n")
    assert any("," in t for t in titles)  # quoted in movies.csv
    for folder in (ml10, ml25):
        got = load_dataset(str(folder))
        assert got.interactions[COLS].values.tolist() == half[COLS].values.tolist(), folder.name
        mine = got.items.set_index("item_id").loc[items["item_id"]]
        assert mine["title"].tolist() == items["title"].tolist() and mine["year"].tolist() == items["year"].tolist()
        assert [sorted(g) for g in mine["genres"]] == [sorted(g) for g in items["genres"]]
        assert got.users["age"].eq(-1).all()  # no users file in these releases
    alone = load_dataset(str(ml25 / "ratings.csv"))  # the ratings file passed alone: userId/movieId are named so
    assert alone.interactions[COLS].values.tolist() == half[COLS].values.tolist()


def test_movielens_files_saved_as_utf16_are_read(tmp_path):
    # GroupLens' files are latin-1 and were read so unless a UTF-8 byte-order mark said otherwise: a ratings.dat or u.data
    # re-saved as UTF-16 (Windows Notepad's 'Unicode') was read as latin-1, NUL bytes between the digits
    for name, sep in (("u.data", "\t"), ("ratings.dat", "::")):
        folder = tmp_path / name.replace(".", "-")
        folder.mkdir()
        lines = [sep.join(r) for r in (("1", "10", "5", "978300760"), ("1", "20", "3", "978302109"), ("2", "10", "4", "978301968"))]
        (folder / name).write_bytes("\r\n".join(lines).encode("utf-16") + "\r\n".encode("utf-16-le"))
        inter = load_movielens_folder(folder).interactions
        assert inter["user_id"].tolist() == [1, 1, 2] and inter["item_id"].tolist() == [10, 20, 10]
        assert inter["timestamp"].tolist() == [978300760, 978302109, 978301968]


def test_double_colon_ratings_are_parsed_by_the_c_parser_and_titles_with_a_colon_as_before(tmp_path, monkeypatch):
    # ml-1m / ml-10m '::' files went through pandas' python parser (a two-character separator needs it): ~100 k lines/s,
    # ml-10m's 10 M ratings took minutes. Now split at ':' by the C parser when every other field is empty; a file whose
    # fields hold ':' themselves (movies.dat titles) falls back to the python parser, with the same values as before
    import domains.recommendation.data as rec_data

    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::10::5::978300760\n1::20::3.5::978302109\n2::10::4::978301968\n")
    (folder / "movies.dat").write_text("10::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n20::Heat (1995)::Action\n", encoding="latin-1")
    engines = []
    real = pd.read_csv
    monkeypatch.setattr(rec_data.pd, "read_csv", lambda path, *a, **kw: engines.append((Path(path).name, kw.get("engine"))) or real(path, *a, **kw))
    d = load_movielens_folder(folder)
    assert d.interactions[COLS].values.tolist() == [[1, 10, 5.0, 978300760], [1, 20, 3.5, 978302109], [2, 10, 4.0, 978301968]]
    assert d.items.set_index("item_id").loc[10, ["title", "year"]].tolist() == ["Star Wars: Episode IV - A New Hope", 1977]
    assert ("ratings.dat", "python") not in engines and ("ratings.dat", "c") in engines
    assert engines.count(("movies.dat", "python")) == 1  # the titles' ':' : read as before


def _ml1m_titles(tmp_path, titles):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("".join(f"1::{i}::4::97830076{i}\n" for i in range(1, len(titles) + 1)))
    (folder / "movies.dat").write_text("".join(f"{i}::{t}::Drama\n" for i, t in enumerate(titles, 1)), encoding="latin-1")
    return folder


def test_double_colon_fast_path_reads_quotes_as_the_python_parser_does(tmp_path, monkeypatch):
    # the C parser's default quoting dropped the quotes of a title that starts with one ('"Great Performances" Cats'
    # became 'Great Performances Cats'), and an unclosed quote swallowed the lines after it up to the next quote
    # (5 movies read as 3, their ratings then dropped as unknown items) — the python parser keeps '"' as text
    import domains.recommendation.data as rec_data

    titles = ['"Great Performances" Cats (1998)', '"Unclosed (1990)', "Heat (1995)", 'Say "Hi" (1991)', '"Four" (1992)']
    fast = load_movielens_folder(_ml1m_titles(tmp_path, titles))
    monkeypatch.setattr(rec_data, "_read_double_colon", lambda *a, **k: None)  # what the python parser reads
    slow = load_movielens_folder(tmp_path / "ml-1m")
    assert fast.items["title"].tolist() == ['"Great Performances" Cats', '"Unclosed', "Heat", 'Say "Hi"', '"Four"']
    pd.testing.assert_frame_equal(fast.items, slow.items)
    pd.testing.assert_frame_equal(fast.interactions, slow.interactions)


def test_double_colon_fast_path_leaves_lines_with_whitespace_at_an_end_to_the_python_parser(tmp_path, monkeypatch):
    # the python parser strips each line before splitting it; the C parser kept a trailing space or no-break space,
    # so 'Action|Drama ' made a genre 'Drama ' of its own
    import domains.recommendation.data as rec_data

    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::1::4::978300761 \n 1::2::4::978300762\n")
    (folder / "movies.dat").write_text("1::Heat (1995)::Action|Drama \n2::Casino (1995)::Drama\xa0\n", encoding="latin-1")
    fast = load_movielens_folder(folder)
    monkeypatch.setattr(rec_data, "_read_double_colon", lambda *a, **k: None)
    slow = load_movielens_folder(folder)
    assert fast.items["genres"].tolist() == [["Action", "Drama"], ["Drama"]]
    pd.testing.assert_frame_equal(fast.items, slow.items)
    pd.testing.assert_frame_equal(fast.interactions, slow.interactions)
