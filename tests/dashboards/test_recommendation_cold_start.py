"""The recommendation page's cold-start tab on a run whose items have no genres (interactions without a
catalogue): it used to offer a 'Genres (comma separated)' box pre-filled with 'Action, Sci-Fi' — genres the
model never saw, so every placement ended in 'unknown genre(s)'. Then its caption said the item was placed
'from its title alone' and the model's refusal followed (this run, --text none, reads no title either). Now the
caption says what api.cold_start_inputs says: this run cannot place a new item, and why; no inputs, no error.
The session's ml-100k dashboard run has genres, so this page gets its own tiny run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")


@pytest.fixture(scope="module")
def genreless_runs(tmp_path_factory) -> Path:
    """A runs root holding one tiny run trained on interactions alone (no item catalogue, --text none)."""
    from domains.recommendation.train import TrainConfig, train

    d = tmp_path_factory.mktemp("cold-start-page")
    rng = np.random.default_rng(0)
    rows = [(u, f"item{i}", t) for u in range(8) for t, i in enumerate(rng.choice(20, 6, replace=False))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(d / "inter.csv", index=False)
    train(TrainConfig(runs_dir=str(d / "runs"), name="no-genres", data=str(d / "inter.csv"), track=False, epochs=1, max_steps=1,
                      baselines=False, text="none", wide=False, validation_ratio=0, id_dim=8, feature_dim=4, hidden=[8], out_dim=8))
    return d / "runs"


def test_cold_start_offers_no_genres_the_model_does_not_know(genreless_runs, monkeypatch):
    from domains.recommendation import api

    assert api.genre_vocabulary(api.load_recommender(genreless_runs / "recommendation" / "no-genres")) == []
    monkeypatch.setenv("SUITE_RUNS_DIR", str(genreless_runs))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/recommendation.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key="recommendation_run").value.startswith("no-genres")
    # no genre input at all: neither the typed box (pre-filled with genres the model never saw) nor a multiselect
    assert "rec_cold_genres_text" not in [t.key for t in at.text_input]
    assert "rec_cold_genres" not in [m.key for m in at.multiselect]
    # the caption tells the truth: this tower reads neither title text nor genres, so no new item can be placed
    captions = [c.value for c in at.caption]
    assert not any("title alone" in c or "title and genres" in c for c in captions), captions
    assert any("cannot place one" in c and "--text none" in c and "no genres" in c for c in captions), captions
    assert "rec_cold_title" not in [t.key for t in at.text_input]  # nothing to type for a placement that cannot be made
    assert not at.error, [e.value for e in at.error]
    # the other tabs still work on this run
    assert any({"item_id", "score"} <= set(d.value.columns) for d in at.dataframe)
