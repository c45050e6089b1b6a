"""The TorchRec DistributedModelParallel path: world size 1 in-process and two processes under
torchrun (both default tier: ~10 s each on a quiet machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from domains.recommendation.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[2]


def _check_run(run_dir: Path, world: int) -> None:
    import json

    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["world_size"] == world and m["steps"] > 0
    plan = (run_dir / "sharding_plan.txt").read_text()
    assert "table_wise" in plan and f"world_size={world}" in plan
    table = pd.read_parquet(run_dir / "eval_metrics.parquet").set_index("model")
    # the gathered unsharded model is a trained model, not random init (random scores ~0.01-0.02)
    assert table.loc["two_tower", "ndcg@10"] > 0.1
    from domains.recommendation.api import load_recommender

    assert len(load_recommender(run_dir).recommend(1, k=5)) == 5


def test_dmp_world_size_1(tmp_path):
    cfg = TrainConfig(runs_dir=str(tmp_path), name="dmp1", track=False, dmp=True, epochs=1, max_steps=30, baselines=False)
    run_dir = train(cfg)
    _check_run(run_dir, 1)


def test_dmp_refuses_row_wise_on_cpu(tmp_path):
    cfg = TrainConfig(runs_dir=str(tmp_path), track=False, dmp=True, sharding="row_wise")
    with pytest.raises(ValueError, match="row_wise"):
        train(cfg)


def test_dmp_torchrun_two_processes(tmp_path):
    from core.distributed import free_port

    port = free_port()  # torchrun's --master_port=0 is not a free port: the workers then hang at rendezvous
    env = {**os.environ, "SUITE_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "domains.recommendation.train",
           "--dmp", "--sharding", "table_wise", "--epochs", "1", "--max-steps", "30", "--no-baselines", "--no-track",
           "--runs-dir", str(tmp_path), "--name", "dmp2"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    _check_run(tmp_path / "recommendation" / "dmp2", 2)


@pytest.mark.slow
def test_lora_text_finetune_smoke(tmp_path, monkeypatch):
    """--text lora: MiniLM with LoRA adapters trains jointly; the adapter and the fine-tuned text vectors are saved."""
    import domains.recommendation.training as training_mod

    def frozen(*a, **k):
        raise AssertionError("--text lora must not compute the frozen MiniLM embeddings")

    monkeypatch.setattr(training_mod, "item_text_embeddings", frozen)
    cfg = TrainConfig(runs_dir=str(tmp_path), name="lora", track=False, text="lora", max_steps=2, batch_size=32, epochs=1, baselines=False)
    run_dir = train(cfg)
    from core.checkpoint import load_weights

    assert (run_dir / "text_lora.safetensors").is_file()
    emb = load_weights(run_dir / "item_text.safetensors")["emb"]
    assert emb.shape == (1682, 384)
