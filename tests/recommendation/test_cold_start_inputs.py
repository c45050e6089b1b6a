"""api.cold_start_inputs says whether a run can place a new item, and from what, as the model really does it: the
dashboard's cold-start caption used to say 'from its title alone' for a run trained with --text none on items
without genres, and then showed the model's refusal. Checked against the model's own answer on tiny real runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from domains.recommendation import api
from domains.recommendation.inference import InvalidQueryError

GENRES = ["Action", "Comedy", "Drama"]


def _train(d, name: str, data: str):
    from domains.recommendation.train import TrainConfig, train

    return train(TrainConfig(runs_dir=str(d / "runs"), name=name, data=data, track=False, epochs=1, max_steps=1, baselines=False,
                             text="none", wide=False, validation_ratio=0, id_dim=8, feature_dim=4, hidden=[8], out_dim=8))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two --text none runs: interactions alone (no genres), and a MovieLens folder whose movies have genres."""
    d = tmp_path_factory.mktemp("cold-inputs")
    rng = np.random.default_rng(0)
    rows = [(u, i, t) for u in range(1, 9) for t, i in enumerate(rng.choice(np.arange(1, 21), 6, replace=False))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(d / "inter.csv", index=False)
    ml = d / "ml-tiny"
    ml.mkdir()
    (ml / "ratings.dat").write_text("".join(f"{u}::{i}::4::{1700000000 + t}\n" for u, i, t in rows), encoding="latin-1")
    (ml / "movies.dat").write_text("".join(f"{i}::Movie {i} (199{i % 10})::{GENRES[i % 3]}|{GENRES[(i + 1) % 3]}\n" for i in range(1, 21)),
                                   encoding="latin-1")
    return {"plain": _train(d, "plain", str(d / "inter.csv")), "genres": _train(d, "genres", str(ml))}


def test_a_run_without_text_or_genres_cannot_place_a_new_item(runs):
    rec = api.load_recommender(runs["plain"])
    inputs = api.cold_start_inputs(rec)
    assert inputs == api.ColdStartInputs(title=False, genres=())
    assert not inputs.placeable
    said = inputs.describe()
    assert "cannot place" in said and "title alone" not in said and "--text none" in said
    with pytest.raises(InvalidQueryError, match="cannot be placed"):  # the model agrees
        rec.cold_start_item("Space Station Rescue", [], k_users=3)


def test_a_run_with_genres_but_no_text_places_from_genres_not_the_title(runs):
    rec = api.load_recommender(runs["genres"])
    inputs = api.cold_start_inputs(rec)
    assert inputs.placeable and not inputs.title and inputs.genres == tuple(GENRES)
    assert "from its genres alone" in inputs.describe() and "does not read the title" in inputs.describe()
    # what it says is what the model does: the title changes nothing, the genres do
    a = rec.cold_start_item("Space Station Rescue", ["Action"], k_users=8)
    b = rec.cold_start_item("A Quiet Garden", ["Action"], k_users=8)
    c = rec.cold_start_item("Space Station Rescue", ["Drama"], k_users=8)
    assert np.allclose(a["score"].to_numpy(), b["score"].to_numpy())
    assert not np.allclose(a.set_index("user_id")["score"].sort_index().to_numpy(), c.set_index("user_id")["score"].sort_index().to_numpy())


def test_the_sentence_for_each_case():
    assert api.ColdStartInputs(title=True, genres=("Action",)).describe() == "the model places it from its title and genres alone."
    assert "from its title alone (this run's items have no genres)" in api.ColdStartInputs(title=True, genres=()).describe()
    with pytest.raises(api.ArgumentError, match="expected a loaded recommender"):
        api.cold_start_inputs("runs/recommendation/latest")
