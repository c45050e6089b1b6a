"""python -m domains.recommendation.train_sequential (issue 16.5): the sequence model is reachable from a
command that trains it on leave-last-out, evaluates the test items once with full ranking next to
most-popular, and saves a run whose weights the model registry rebuilds to the same test figures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from core.checkpoint import load_weights
from domains.recommendation.data import load_dataset
from domains.recommendation.model import FeatureSpace, create_model
from domains.recommendation.sequential import evaluate_next_item, leave_last_out_split, user_item_vectors
from domains.recommendation.train_sequential import main


@pytest.fixture(autouse=True)
def restore_threads():
    """The command sets torch's thread count (--threads 1, its default); give the other tests theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _ordered_interactions(path, n_users: int = 60, n_items: int = 60, length: int = 12):
    """Every user walks the catalogue in order from a random start: the next item is always current + 1."""
    rng = np.random.default_rng(0)
    rows = [(u, int((start + t) % n_items), 1000 * u + t) for u in range(n_users) for start in [int(rng.integers(n_items))] for t in range(length)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_parquet(path, index=False)


def test_train_sequential_command_trains_evaluates_and_saves_a_rebuildable_run(tmp_path, capsys):
    data = tmp_path / "walk.parquet"
    _ordered_interactions(data)
    runs = tmp_path / "runs"
    rc = main(["--data", str(data), "--no-text", "--item-table", "plain", "--loss", "ce", "--max-len", "10", "--dim", "16", "--layers", "1",
               "--dropout", "0", "--epochs", "12", "--patience", "12", "--batch-size", "8", "--lr", "0.01", "--no-track",
               "--runs-dir", str(runs), "--name", "s"])
    assert rc == 0
    run = runs / "recommendation" / "s"
    metrics = json.loads((run / "metrics.json").read_text())
    # the order is learnable (popularity is flat here: most-popular sits near chance) and the command reports both
    assert metrics["ndcg@10"] > 0.8 and metrics["hr@10"] > 0.9
    assert metrics["most_popular/ndcg@10"] < 0.3 and metrics["most_popular/hr@10"] < 0.5
    assert metrics["test_users"] == 60 and 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= 12
    curve = json.loads((run / "validation_curve.json").read_text())
    assert len(curve["valid_ndcg"]) == metrics["epochs_run"] and max(curve["valid_ndcg"]) == pytest.approx(metrics["valid_ndcg@10"])
    assert len((run / "metrics.jsonl").read_text().splitlines()) == metrics["epochs_run"]  # one progress row per epoch
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["command"] == "train_sequential" and info["kind"] == "job"
    assert not (runs / "recommendation" / "latest").exists()  # the two-tower commands' default model run is untouched
    assert "NDCG@10" in capsys.readouterr().out

    # the saved weights, rebuilt through the registry, give the same test figure
    spec = json.loads((run / "model.json").read_text())
    assert spec["name"] == "sasrec"
    inter = load_dataset(str(data))
    space = FeatureSpace.build(inter.users, inter.items)
    assert json.loads((run / "feature_space.json").read_text()) == json.loads(json.dumps(space.to_dict()))
    model = create_model({"name": spec["name"], "kwargs": spec["kwargs"]}, space)
    model.load_state_dict(load_weights(run / "model.safetensors"))
    split = leave_last_out_split(inter.interactions, space.user_index(), space.item_index())
    hist = split.history("test")
    U, V = user_item_vectors(model.eval(), hist)
    assert evaluate_next_item(U @ V.T, hist, split.test, 10)["ndcg@10"] == pytest.approx(metrics["ndcg@10"], abs=1e-6)


def test_train_sequential_refuses_text_init_without_text(tmp_path, capsys):
    data = tmp_path / "walk.parquet"
    _ordered_interactions(data, n_users=5)
    rc = main(["--data", str(data), "--no-text", "--id-init", "text", "--no-track", "--runs-dir", str(tmp_path / "runs")])
    assert rc == 2 and "--id-init text needs --text" in capsys.readouterr().err


def test_command_defaults_are_the_measured_settings():
    """The command's defaults are the README table's settings (one source: sequential.OURS / TRAIN)."""
    from dataclasses import asdict

    from domains.recommendation.sequential import OURS, TRAIN, SequenceConfig
    from domains.recommendation.train_sequential import TrainSequentialConfig

    cfg = TrainSequentialConfig()
    assert asdict(cfg.model_config()) == asdict(SequenceConfig(**OURS))
    assert {k: getattr(cfg.train_config(), k) for k in TRAIN} == TRAIN
