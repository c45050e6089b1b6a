"""With ``--no-refit`` and a validation part, the saved weights are the selected epoch's, trained on the fit part only: an
item that appears only in validation rows was never trained on (its id embedding keeps its random initial value), although
train.parquet — the whole training split, from which serving used to derive the trained items — holds it. Such an item is
in no ranked list: train's test evaluation and serving read the same set, the one the run saved (trained_items.safetensors)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def no_refit_run(tmp_path_factory):
    """30 users buy among items P0..P14 over 6 days; user u0's second-to-last purchase — the validation row of leave-last-out —
    is V, which nobody else buys: V is in train.parquet but not in the fit part the saved weights were trained on."""
    from domains.recommendation.train import main as train

    tmp = tmp_path_factory.mktemp("norefit")
    rng = np.random.default_rng(0)
    rows = []
    for u in range(30):
        items = [f"P{i}" for i in rng.choice(15, 6, replace=False)]
        if u == 0:
            items[4] = "V"  # second-to-last: the validation row (the last one is the test row)
        rows += [{"user_id": f"u{u}", "item_id": it, "timestamp": 1_000_000 + 86_400 * t} for t, it in enumerate(items)]
    data = tmp / "events.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    runs = tmp / "runs"
    assert train(["--runs-dir", str(runs), "--no-track", "--data", str(data), "--name", "norefit", "--no-wide", "--text", "none",
                  "--no-baselines", "--epochs", "2", "--batch-size", "32", "--split", "leave-last-out", "--no-refit", "--seed", "0"]) == 0
    return runs / "recommendation" / "norefit"


def test_an_item_only_in_validation_rows_is_in_no_list(no_refit_run):
    from domains.recommendation.inference import Recommender

    run = no_refit_run
    assert "V" in set(pd.read_parquet(run / "train.parquet")["item_id"])  # what serving used to take as trained
    rec = Recommender.load(run)
    v = rec.item_row("V")
    assert rec.untrained is not None and bool(rec.untrained[v])
    assert json.loads((run / "model.json").read_text())["trained_items"] == "trained_items.safetensors"
    for user in ("u1", "u2", "u3"):
        whole = rec.recommend(user, k=rec.space.n_items)  # every item the user's list can hold
        assert len(whole) > 5 and "V" not in set(whole["item_id"]), (user, list(whole["item_id"]))
    assert "V" not in set(rec.similar_items("P0", k=rec.space.n_items)["item_id"])


def test_trains_test_table_is_what_serving_ranks(no_refit_run):
    """train's test evaluation used the same trained set as serving: re-deriving the table from the saved run matches."""
    from domains.recommendation.evaluation import reevaluate_run

    assert reevaluate_run(no_refit_run)["difference"] < 1e-6


def test_a_run_recorded_before_the_file_takes_train_parquets_items(no_refit_run, tmp_path):
    import shutil

    from domains.recommendation.inference import Recommender

    old = tmp_path / "old"
    shutil.copytree(no_refit_run, old)
    spec = json.loads((old / "model.json").read_text())
    del spec["trained_items"]  # a run trained between d5de968 and the file: its items of train.parquet, as train evaluated it
    (old / "model.json").write_text(json.dumps(spec))
    (old / "trained_items.safetensors").unlink()
    rec = Recommender.load(old)
    assert not bool(rec.untrained[rec.item_row("V")])


def test_a_missing_trained_items_file_is_one_line(no_refit_run, tmp_path):
    import shutil

    from domains.recommendation.inference import NotARecommendationRun, Recommender

    broken = tmp_path / "broken"
    shutil.copytree(no_refit_run, broken)
    (broken / "trained_items.safetensors").unlink()
    with pytest.raises(NotARecommendationRun, match="trained_items.safetensors missing"):
        Recommender.load(broken)
