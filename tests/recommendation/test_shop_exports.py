"""What an e-commerce team's exports look like (session 14 real-use pass): a spreadsheet saved with emptied rows under
the data (``,,,``) was refused as rows with empty ids; an order table with one row per basket (a list of items) made the
basket's text ``"[1 2]"`` one item id, silently; Amazon Reviews 2023's item metadata (keyed by ``parent_asin``, its
category path in ``categories``) was refused as an item table without ``item_id``."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from domains.recommendation.data import InteractionDataError, load_interactions


def test_empty_rows_below_a_spreadsheet_export_are_skipped_not_refused(tmp_path):
    p = tmp_path / "orders.csv"
    p.write_text("user_id,item_id,timestamp\n1,a,10\n2,b,11\n,,\n , ,\n,,\n")  # what Excel saves after rows were cleared
    inter = load_interactions(p).interactions
    assert sorted(zip(inter["user_id"], inter["item_id"])) == [(1, "a"), (2, "b")]
    middle = tmp_path / "middle.csv"
    middle.write_text("user_id,item_id,timestamp\n1,a,10\n,,\n2,b,11\n")  # inside the data: still a row with a missing id, refused
    with pytest.raises(InteractionDataError, match=r"middle\.csv: 1 row\(s\) with an empty user_id \(first at file rows \[3\]\)"):
        load_interactions(middle)
    only = tmp_path / "only.csv"
    only.write_text("user_id,item_id,timestamp\n,,\n")
    with pytest.raises(InteractionDataError, match="empty user_id"):  # nothing but empty rows: not an empty success
        load_interactions(only)


def test_a_basket_per_row_is_refused_not_read_as_one_item(tmp_path):
    baskets = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [[10, 11], [12], [10]], "timestamp": [1, 2, 3]})
    p = tmp_path / "orders.parquet"
    baskets.to_parquet(p)
    with pytest.raises(InteractionDataError) as e:
        load_interactions(p)  # was: items "[10 11]", "[12]", "[10]" — three ids that are none of the products
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{p}: column 'item_id' holds 3 list(s) or object(s) instead of one id per row (first at rows [2, 3, 4]: [10, 11])"), msg
    assert msg.endswith("one row per item (e.g. df.explode('item_id'))"), msg
    j = tmp_path / "orders.jsonl"
    j.write_text(json.dumps({"user_id": {"id": 1}, "item_id": 10, "timestamp": 1}) + "\n")
    with pytest.raises(InteractionDataError, match=r"column 'user_id' holds 1 list\(s\) or object\(s\)"):
        load_interactions(j)
    exploded = tmp_path / "exploded.parquet"
    baskets.explode("item_id").to_parquet(exploded)
    inter = load_interactions(exploded).interactions
    assert sorted(inter["item_id"]) == [10, 10, 11, 12]  # the same orders, one row per item: read


def test_amazon_2023_item_metadata_is_a_catalogue(tmp_path):
    reviews = tmp_path / "Clothing.jsonl"
    reviews.write_text("".join(json.dumps(r) + "\n" for r in [
        {"rating": 5.0, "asin": "B00RED", "parent_asin": "B00SHIRT", "user_id": "AG1", "timestamp": 1588687728923},
        {"rating": 4.0, "asin": "B00BLUE", "parent_asin": "B00SHIRT", "user_id": "AG2", "timestamp": 1588687728000},
        {"rating": 1.0, "asin": "B00MUG", "parent_asin": "B00MUG", "user_id": "AG1", "timestamp": 1588687728924}]))
    meta = tmp_path / "meta_Clothing.jsonl"
    meta.write_text("".join(json.dumps(r) + "\n" for r in [
        {"main_category": "AMAZON FASHION", "title": "Cotton shirt", "average_rating": 4.2, "categories": ["Clothing", "Men", "Shirts"],
         "details": {"Color": "Red"}, "price": None, "parent_asin": "B00SHIRT"},
        {"main_category": "Home", "title": "Mug", "average_rating": 4.0, "categories": [], "details": {}, "price": 9.99, "parent_asin": "B00MUG"},
        {"main_category": "Home", "title": "Plate", "average_rating": 3.0, "categories": ["Kitchen"], "details": {}, "price": 5.0, "parent_asin": "B00PLATE"}]))
    data = load_interactions(reviews, items=meta)  # was: "item table has no 'item_id' column"
    items = data.items.set_index("item_id")
    assert items.loc["B00SHIRT", "title"] == "Cotton shirt" and list(items.loc["B00SHIRT", "genres"]) == ["Clothing", "Men", "Shirts"]
    assert list(items.loc["B00MUG", "genres"]) == [] and data.report.items_without_interactions == 1  # the plate: in the catalogue, never bought


def test_decimal_commas_of_a_european_spreadsheet_are_read(tmp_path):
    p = tmp_path / "bewertungen.csv"
    p.write_bytes("Kunde;Artikel;rating;timestamp\nk1;Stuhl;4,5;10\nk2;Tisch;3;11\nk1;Tisch;2,25;12\n".encode("cp1252"))
    inter = load_interactions(p, columns={"user_id": "Kunde", "item_id": "Artikel"}).interactions
    assert sorted(zip(inter["user_id"], inter["item_id"], inter["rating"].tolist())) == [("k1", "Stuhl", 4.5), ("k1", "Tisch", 2.25), ("k2", "Tisch", 3.0)]
    thousands = tmp_path / "thousands.csv"  # "1,234" is a thousands separator in English: never 1.234
    thousands.write_text('user_id,item_id,rating,timestamp\n1,a,"1,234",10\n')
    with pytest.raises(InteractionDataError, match=r"column 'rating' has 1 missing or non-numeric value\(s\) \(first at file rows \[2\]: \['1,234'\]\)"):
        load_interactions(thousands)


def test_age_groups_of_a_customer_table_are_buckets_not_unknown(tmp_path):
    from domains.recommendation.model import AGE_BUCKETS, FeatureSpace

    inter = tmp_path / "orders.csv"
    inter.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},a,{u}\n" for u in range(1, 8)))
    users = tmp_path / "customers.csv"
    users.write_text("user_id,age,gender\n1,Under 18,F\n2,18-24,M\n3,25–34,F\n4,35 - 44,M\n5,56+,F\n6,unknown,M\n7,41,F\n")
    data = load_interactions(inter, users=users)
    ages = dict(zip(data.users["user_id"], data.users["age"]))
    assert ages == {1: 17, 2: 18, 3: 25, 4: 35, 5: 56, 6: -1, 7: 41}  # was -1 for every group
    space = FeatureSpace.build(data.users, data.items)
    buckets = dict(zip(data.users["user_id"], space.user_feature_table(data.users)[:, 1].tolist()))  # the age column of the user tower's table
    assert AGE_BUCKETS == [18, 25, 35, 45, 50, 56]
    assert len({buckets[u] for u in (1, 2, 3, 4, 5)}) == 5 and buckets[6] == 0 and buckets[7] == buckets[4]  # one bucket per group; 41 is in 35-44


def test_files_joined_with_their_headers_are_refused(tmp_path):
    p = tmp_path / "clicks.csv"  # cat jan.csv feb.csv: no timestamp column, so the header row was read as user 'user_id' clicking 'item_id'
    p.write_text("user_id,item_id\n1,a\n2,b\nuser_id,item_id\n3,a\n")
    with pytest.raises(InteractionDataError) as e:
        load_interactions(p)
    assert str(e.value) == (f"{p}: line(s) [4] repeat the header line (user_id, item_id); expected one header line "
                            "(files joined with their headers? keep the first file's only)")


def test_a_csv_click_log_in_fractional_seconds_keeps_its_order(tmp_path):
    """time.time() written to a CSV: the text '1700000000.7' was truncated to whole seconds (Parquet and JSON numbers were
    not), tying the clicks of a second, and leave-last-out took the later line of a tie instead of the latest click."""
    from domains.recommendation.data import split_interactions

    p = tmp_path / "clicks.csv"
    p.write_text("user_id,item_id,timestamp\nu,late,1700000000.7\nu,early,1700000000.2\nu,first,1699999995\n")
    inter = load_interactions(p).interactions
    assert inter["timestamp"].tolist() == [1700000000700, 1700000000200, 1699999995000]  # whole milliseconds, as a Parquet float column
    assert split_interactions(inter, "leave-last-out").test["item_id"].tolist() == ["late"]  # was "early": the later line of the tie


def test_a_spark_parquet_folder_is_one_table(tmp_path):
    """A data team's export is a folder (``events.parquet/day=…/part-….parquet``, ``_SUCCESS``): it was taken for a
    MovieLens folder ("no u.data …, nor a RecBole .inter file")."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from domains.recommendation.data import load_dataset

    df = pd.DataFrame({"user_id": [f"u{i % 7}" for i in range(60)], "item_id": [f"s{i % 11}" for i in range(60)], "timestamp": range(60),
                       "day": ["2024-01-01"] * 30 + ["2024-01-02"] * 30})
    folder = tmp_path / "events.parquet"
    pq.write_to_dataset(pa.Table.from_pandas(df, preserve_index=False), str(folder), partition_cols=["day"])
    (folder / "_SUCCESS").touch()
    data = load_dataset(str(folder))
    got = data.interactions.sort_values("timestamp")
    assert got[["user_id", "item_id", "timestamp"]].values.tolist() == df[["user_id", "item_id", "timestamp"]].values.tolist()
    assert data.name == "events"
    (folder / "day=2024-01-03").mkdir()
    pd.DataFrame({"user": [1], "other": ["x"]}).to_parquet(folder / "day=2024-01-03" / "part-bad.parquet")  # a part of another schema
    with pytest.raises(InteractionDataError, match=r"events\.parquet: 1 row\(s\) with an empty user_id"):  # its rows have no user: refused
        load_dataset(str(folder))


def test_a_customer_table_of_other_ids_is_refused_not_ignored(tmp_path, caplog):
    """Customer numbers written another way in the customer table ('C-001' for 1): every user's features were unknown,
    silently (the table's users only counted as 'without history'); now one line, and a partial match is a warning."""
    import logging

    orders = tmp_path / "orders.csv"
    orders.write_text("user_id,item_id,timestamp\n1,a,10\n2,b,11\n3,a,12\n")
    other = tmp_path / "customers.csv"
    other.write_text("user_id,age,gender\nC-001,30,F\nC-002,41,M\nC-003,25,F\n")
    with pytest.raises(InteractionDataError) as e:
        load_interactions(orders, users=other)
    assert str(e.value) == (f"{orders}: none of its 3 user(s) (e.g. ['1', '2', '3']) is in the user table; expected the user ids of the user table "
                            "(e.g. ['C-001', 'C-002', 'C-003'])")
    some = tmp_path / "some.csv"
    some.write_text("user_id,age,gender\n1,30,F\n2,41,M\n")
    with caplog.at_level(logging.WARNING):
        users = load_interactions(orders, users=some).users.set_index("user_id")
    assert users.loc[3, "age"] == -1 and users.loc[1, "age"] == 30
    assert "1 interacting user(s) are not in the user table (e.g. [3]); their age, gender and occupation are unknown" in caplog.text


def test_categories_keep_their_words_and_a_saved_list_is_read_as_one(tmp_path):
    """A catalogue saved by pandas (a list column becomes "['Clothing, Shoes & Jewelry', 'Men']") had genres such as
    "['Clothing," and "Jewelry',"; multi-word categories written with | ("Home & Kitchen|Mugs") were cut at every space."""
    orders = tmp_path / "orders.csv"
    orders.write_text("user_id,item_id,timestamp\n1,a,10\n1,b,11\n2,c,12\n2,d,13\n")
    products = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "title": ["Shirt", "Mug", "Lamp", "Toy"],
                             "genres": [["Clothing, Shoes & Jewelry", "Men"], None, None, None]})
    products.loc[1, "genres"] = "Home & Kitchen|Mugs"
    products.loc[2, "genres"] = '["Tools", "Lighting"]'  # a JSON array as text
    products.loc[3, "genres"] = "Toys Games"  # RecBole's token_seq: space-separated, as before
    products.to_csv(tmp_path / "products.csv", index=False)  # the list of row 0 is written as its Python text
    items = load_interactions(orders, items=tmp_path / "products.csv").items.set_index("item_id")
    assert [list(items.loc[i, "genres"]) for i in "abcd"] == [["Clothing, Shoes & Jewelry", "Men"], ["Home & Kitchen", "Mugs"],
                                                              ["Tools", "Lighting"], ["Toys", "Games"]]
