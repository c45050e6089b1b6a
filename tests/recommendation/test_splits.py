"""Splits by name: the exact Microsoft Recommenders split, and the validation split carved from a training part."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from domains.recommendation.data import SplitError, load_ml100k, split_interactions, validation_split

# sha256 of the sorted "user\titem" test pairs of recommenders 1.2.1's
# python_stratified_split(ml100k in u.data line order, ratio=0.75, seed=42), made by:
#   from recommenders.datasets.python_splitters import python_stratified_split
#   df = load_ml100k().interactions.sort_index().rename(columns={"user_id": "userID", "item_id": "itemID"}).reset_index(drop=True)
#   _, te = python_stratified_split(df, ratio=0.75, seed=42)
#   sha256("\n".join(f"{u}\t{i}" for u, i in sorted(zip(te.userID, te.itemID))))
MSR_SEED42_TEST_PAIRS = (25008, "b86ac4b1ad4bfe9068d23e54f79488e80d608faf8a315122d49f0e5763cdecf9")


@pytest.fixture(scope="module")
def ml100k():
    return load_ml100k()


def _digest(pairs) -> tuple[int, str]:
    pairs = sorted((int(u), int(i)) for u, i in pairs)
    return len(pairs), hashlib.sha256("\n".join(f"{u}\t{i}" for u, i in pairs).encode()).hexdigest()


def test_prepared_ml100k_keeps_the_u_data_line_order(ml100k):
    from domains.recommendation.data import DATASETS

    inter = ml100k.interactions.sort_index()
    raw = pd.read_csv(DATASETS[0].locate()["ml-100k.inter"], sep="\t")  # recbole's copy, in u.data's line order
    assert (raw.iloc[:, :2].to_numpy() == inter[["user_id", "item_id"]].to_numpy()).all()
    assert inter[["user_id", "item_id"]].iloc[0].tolist() == [196, 242] and inter[["user_id", "item_id"]].iloc[-1].tolist() == [12, 203]  # u.data's first and last lines


def test_msr_split_is_the_frozen_microsoft_recommenders_split(ml100k):
    s = split_interactions(ml100k.interactions, "msr-stratified-75", 42)
    assert _digest(zip(s.test["user_id"], s.test["item_id"])) == MSR_SEED42_TEST_PAIRS
    assert len(s.train) + len(s.test) == 100_000 and s.protocol == "ms" and s.info["split"] == "msr-stratified-75"


@pytest.mark.parametrize("seed", [42, 3])
def test_msr_split_equals_recommenders_python_stratified_split(ml100k, seed):
    splitters = pytest.importorskip("recommenders.datasets.python_splitters")
    df = ml100k.interactions.sort_index().rename(columns={"user_id": "userID", "item_id": "itemID"}).reset_index(drop=True)
    train, test = splitters.python_stratified_split(df, ratio=0.75, seed=seed)
    ours = split_interactions(ml100k.interactions, "msr-stratified-75", seed)
    assert set(zip(test["userID"], test["itemID"])) == set(zip(ours.test["user_id"], ours.test["item_id"]))
    assert set(zip(train["userID"], train["itemID"])) == set(zip(ours.train["user_id"], ours.train["item_id"]))


def test_split_names_and_aliases(ml100k):
    a = split_interactions(ml100k.interactions, "ms", 42)
    assert a.info["split"] == "stratified-75-legacy"
    assert split_interactions(ml100k.interactions, "temporal").info["split"] == "leave-last-out"
    with pytest.raises(SplitError, match="unknown split"):
        split_interactions(ml100k.interactions, "random-ish")


def test_validation_split_is_carved_from_train_per_user_and_seeded(ml100k):
    s = split_interactions(ml100k.interactions, "msr-stratified-75", 42)
    v = validation_split(s.train, "msr-stratified-75", seed=0, ratio=0.2)
    assert len(v.train) + len(v.test) == len(s.train)
    key = lambda df: set(zip(df["user_id"], df["item_id"]))  # noqa: E731
    assert not key(v.train) & key(v.test) and not key(v.test) & key(s.test)  # validation never touches the test split
    n = s.train.groupby("user_id").size()
    nv = v.test.groupby("user_id").size().reindex(n.index, fill_value=0)
    assert (nv == np.clip(np.round(0.2 * n), 1, n - 1)).all()  # every user keeps fit rows and gives validation rows
    assert key(validation_split(s.train, "msr-stratified-75", seed=0).test) == key(v.test)
    assert key(validation_split(s.train, "msr-stratified-75", seed=1).test) != key(v.test)
    t = split_interactions(ml100k.interactions, "leave-last-out")
    vt = validation_split(t.train, "leave-last-out")
    last = t.train.sort_values(["user_id", "timestamp"]).groupby("user_id").tail(1)
    assert len(vt.test) == 943 and (vt.test.set_index("user_id")["timestamp"] == last.set_index("user_id")["timestamp"].loc[vt.test["user_id"]].values).all()
