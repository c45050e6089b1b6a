"""Files whose fields are not ours (session 14). RecBole's atomic files name their ids after the data set — Yelp's
``business_id``, LastFM's ``artist_id``, the session sets' ``session_id`` — and rate in ``stars`` or ``weight``; such a
file was one line, "missing column(s) ['item_id'] … found [...]", with no way to say which field is which. ``train`` and
``train_sequential`` now take ``--user-col``/``--item-col``/``--rating-col``/``--time-col`` (``columns=`` in Python),
recorded with the run so that ``evaluate`` re-reads the data the same way, and the refusal names the flag. Amazon Reviews
2023 (``user_id, parent_asin, asin, rating, timestamp`` in ms) gave each colour or size of a product an item of its own
(``asin``); its item is now the product, ``parent_asin``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from domains.recommendation.checks import ArgumentError
from domains.recommendation.data import InteractionDataError, load_dataset, load_interactions


def _yelp(folder, users: int = 12, per_user: int = 8):
    """A RecBole-style Yelp folder: ``yelp.inter`` (review_id, user_id, business_id, stars, date) and ``yelp.item``."""
    import numpy as np

    folder.mkdir()
    rng = np.random.default_rng(0)
    lines = ["review_id:token\tuser_id:token\tbusiness_id:token\tstars:float\tuseful:float\tdate:float"]
    for u in range(users):
        for t, b in enumerate(rng.choice(30, per_user, replace=False)):
            lines.append(f"r{u}-{t}\tu{u}\tb{b}\t{1 + (u + t) % 5}\t0\t{1_500_000_000 + 1000 * u + t}")
    (folder / "yelp.inter").write_text("\n".join(lines) + "\n")
    items = ["business_id:token\titem_name:token_seq\tcity:token\tcategories:token_seq"] + [f"b{b}\tShop {b}\tTown\tFood Bars" for b in range(30)]
    (folder / "yelp.item").write_text("\n".join(items) + "\n")
    return folder


YELP = {"item_id": "business_id", "rating": "stars", "timestamp": "date"}


def test_a_recbole_file_with_other_id_fields_is_read_with_named_columns(tmp_path):
    folder = _yelp(tmp_path / "yelp")
    with pytest.raises(InteractionDataError) as e:
        load_dataset(str(folder))
    msg = str(e.value)
    assert "\n" not in msg and "missing column(s) ['item_id']" in msg
    assert "'business_id'" in msg and "--item-col FIELD" in msg and msg.endswith("its id fields: review_id, business_id"), msg  # the old line had no flag

    data = load_dataset(str(folder), columns=YELP)
    inter = data.interactions
    assert len(inter) == 96 and set(inter["item_id"]) <= {f"b{b}" for b in range(30)}
    first = inter[(inter["user_id"] == "u0")].sort_values("timestamp").iloc[0]
    assert (first["rating"], first["timestamp"]) == (1.0, 1_500_000_000)  # stars and date, not 1.0 and time 0
    titles = dict(zip(data.items["item_id"], data.items["title"]))
    assert titles["b3"] == "Shop 3" and data.items["genres"].iloc[0] == ["Food", "Bars"]  # the .item file, by its business_id
    assert len(data.items) == 30


def test_named_columns_refusals_are_one_line(tmp_path):
    folder = _yelp(tmp_path / "yelp")
    with pytest.raises(InteractionDataError, match=r"--item-col 'biz': no such field; its fields are \['review_id', 'user_id', 'business_id', 'stars', 'useful', 'date'\]$"):
        load_dataset(str(folder), columns={"item_id": "biz"})
    with pytest.raises(ArgumentError, match=r"^--user-col and --item-col: both name the field 'business_id'"):
        load_dataset(str(folder), columns={"user_id": "business_id", "item_id": "Business_ID"})
    with pytest.raises(InteractionDataError, match=r"^--item-col with --data ml-100k: the bundled data set's fields and tables are known"):
        load_dataset("ml-100k", columns={"item_id": "business_id"})
    ml = tmp_path / "ml-1m"
    ml.mkdir()
    (ml / "ratings.dat").write_text("1::10::5::978300760\n")
    with pytest.raises(InteractionDataError, match=r"--user-col with .*ml-1m: a MovieLens folder \(ratings.dat\), whose fields are known"):
        load_dataset(str(ml), columns={"user_id": "uid"})


def test_the_named_field_wins_over_a_field_of_our_name(tmp_path):
    """An export with an account ``user_id`` and the ``customer`` the user means: the named one is the user."""
    p = tmp_path / "orders.csv"
    p.write_text("user_id,customer,sku,ts\nadmin,c1,s1,10\nadmin,c2,s1,11\nadmin,c1,s2,12\n")
    inter = load_interactions(p, columns={"user_id": "customer", "item_id": "SKU", "timestamp": "ts"}).interactions
    assert sorted(zip(inter["user_id"], inter["item_id"], inter["timestamp"])) == [("c1", "s1", 10), ("c1", "s2", 12), ("c2", "s1", 11)]


def test_amazon_reviews_2023_items_are_products_not_variants(tmp_path):
    """Amazon Reviews 2023: ``asin`` is one variant (colour, size) of the product ``parent_asin``; the benchmark files and
    its metadata key items by ``parent_asin``. Timestamps are milliseconds."""
    rows = [
        {"rating": 5.0, "title": "Great", "text": "ok", "images": [], "asin": "B00RED", "parent_asin": "B00SHIRT", "user_id": "AG1",
         "timestamp": 1588687728923, "helpful_vote": 0, "verified_purchase": True},
        {"rating": 4.0, "title": "Good", "text": "fine", "images": [{"small_image_url": "x"}], "asin": "B00BLUE", "parent_asin": "B00SHIRT",
         "user_id": "AG2", "timestamp": 1588687728000, "helpful_vote": 1, "verified_purchase": True},
        {"rating": 1.0, "title": "Bad", "text": "no", "images": [], "asin": "B00MUG", "parent_asin": "B00MUG", "user_id": "AG1",
         "timestamp": 1588687728924, "helpful_vote": 0, "verified_purchase": False},
    ]
    p = tmp_path / "Clothing.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    inter = load_interactions(p).interactions
    assert sorted(set(inter["item_id"])) == ["B00MUG", "B00SHIRT"]  # was B00BLUE, B00MUG, B00RED: two shirts
    ag1 = inter[inter["user_id"] == "AG1"].sort_values("timestamp")
    assert ag1["item_id"].tolist() == ["B00SHIRT", "B00MUG"] and ag1["timestamp"].tolist() == [1588687728923, 1588687728924]  # ms kept: 1 ms apart, in order
    bench = tmp_path / "Clothing.train.csv"  # the benchmark split files: user_id,parent_asin,rating,timestamp (was: missing item_id)
    pd.DataFrame([{k: r[k] for k in ("user_id", "parent_asin", "rating", "timestamp")} for r in rows]).to_csv(bench, index=False)
    assert sorted(set(load_interactions(bench).interactions["item_id"])) == ["B00MUG", "B00SHIRT"]


def test_train_takes_the_columns_and_evaluate_reads_the_data_as_train_did(tmp_path, capsys):
    from domains.recommendation.evaluate import main as evaluate
    from domains.recommendation.train import main as train

    folder = _yelp(tmp_path / "yelp")
    runs = tmp_path / "runs"
    common = ["--runs-dir", str(runs), "--no-track", "--data", str(folder)]
    assert train(common + ["--name", "y", "--split", "leave-last-out", "--epochs", "1", "--max-steps", "2", "--text", "none", "--no-baselines",
                           "--no-wide", "--validation-ratio", "0"]) == 2  # no flags: the one line
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "--item-col FIELD" in err[0], err
    assert not (runs / "recommendation" / "y").exists()
    flags = ["--item-col", "business_id", "--rating-col", "stars", "--time-col", "date"]
    assert train(common + ["--name", "y", "--split", "leave-last-out", "--epochs", "1", "--max-steps", "2", "--text", "none", "--no-baselines",
                           "--no-wide", "--validation-ratio", "0", *flags]) == 0
    run = runs / "recommendation" / "y"
    assert json.loads((run / "config.json").read_text())["item_col"] == "business_id"
    assert evaluate(["--runs-dir", str(runs), "--no-track", "--model-run", str(run)]) == 0  # re-reads --data with the run's columns
    from domains.recommendation.config import TrainConfig

    recorded = json.loads((run / "config.json").read_text())
    assert TrainConfig.fixed_on_resume(recorded) != TrainConfig.fixed_on_resume({**recorded, "item_col": "review_id"})  # a resume keeps them


def test_a_named_field_saved_as_the_parquet_index_is_found(tmp_path):
    p = tmp_path / "orders.parquet"
    pd.DataFrame({"customer": ["c1", "c2", "c1"], "sku": ["s1", "s1", "s2"], "ts": [1, 2, 3]}).set_index("customer").to_parquet(p)
    inter = load_interactions(p, columns={"user_id": "customer", "item_id": "sku", "timestamp": "ts"}).interactions
    assert sorted(zip(inter["user_id"], inter["item_id"])) == [("c1", "s1"), ("c1", "s2"), ("c2", "s1")]


def test_a_shop_brings_its_catalogue_and_customers_beside_the_orders(tmp_path, monkeypatch, capsys):
    """``--items``/``--users``: a CSV or Parquet export had no way to bring its product catalogue (titles, categories: the
    item tower's features, what ``recommend --new-title`` places a new item by) or its customer table — only RecBole
    and MovieLens folders did. Paths are recorded absolute, so evaluate from another folder reads the same tables."""
    from domains.recommendation.evaluate import main as evaluate
    from domains.recommendation.recommend import main as recommend
    from domains.recommendation.train import main as train

    rng = np.random.default_rng(0)
    cats = ["Shirts", "Mugs", "Lamps"]
    orders = [(f"c{u}", f"S{s}", 100 * u + t) for u in range(12) for t, s in enumerate(rng.choice(30, 8, replace=False))]
    pd.DataFrame(orders, columns=["customer", "sku", "ts"]).to_csv(tmp_path / "orders.csv", index=False)
    pd.DataFrame({"sku": [f"S{s}" for s in range(30)], "title": [f"{cats[s % 3]} no. {s}" for s in range(30)],
                  "categories": [f"{cats[s % 3]}|Home" for s in range(30)]}).to_csv(tmp_path / "products.csv", index=False)
    pd.DataFrame({"customer": [f"c{u}" for u in range(12)], "age": ["25-34", "56+", "18-24"] * 4, "gender": ["F", "M"] * 6}).to_csv(tmp_path / "customers.csv", index=False)
    monkeypatch.chdir(tmp_path)
    flags = ["--runs-dir", "runs", "--no-track", "--data", "orders.csv", "--items", "products.csv", "--users", "customers.csv",
             "--user-col", "customer", "--item-col", "sku", "--time-col", "ts", "--epochs", "1", "--max-steps", "2", "--text", "none",
             "--no-baselines", "--no-wide"]
    assert train([*flags, "--name", "shop"]) == 0  # was 2: unrecognized arguments --items, --users
    run = tmp_path / "runs" / "recommendation" / "shop"
    recorded = json.loads((run / "config.json").read_text())
    assert (recorded["items"], recorded["users"]) == (str(tmp_path / "products.csv"), str(tmp_path / "customers.csv"))
    items = pd.read_parquet(run / "items.parquet").set_index("item_id")
    assert items.loc["S4", "title"] == "Mugs no. 4" and list(items.loc["S4", "genres"]) == ["Mugs", "Home"]
    assert sorted(set(pd.read_parquet(run / "users.parquet")["age"])) == [18, 25, 56]
    capsys.readouterr()
    assert recommend(["--runs-dir", "runs", "--model-run", "shop", "--new-title", "Blue shirt", "--new-genres", "Shirts"]) == 0  # placed by its category
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert evaluate(["--runs-dir", str(tmp_path / "runs"), "--no-track", "--model-run", str(run), "--data", str(tmp_path / "orders.csv")]) == 0
    capsys.readouterr()
    assert train(["--runs-dir", "runs", "--no-track", "--items", str(tmp_path / "products.csv"), "--name", "b"]) == 2  # with the bundled data
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert err == ["error: --items with --data ml-100k: the bundled data set's fields and tables are known; these flags are for an interaction file "
                   "or a RecBole .inter file given as --data"], err
