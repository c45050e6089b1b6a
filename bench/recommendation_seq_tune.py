"""Validation-only tuning of the sequence models of ``bench/recommendation.py --part sequential``.

ML-100K leave-last-out: trains one configuration on the training sequences (``sequential.train_sequence_model``)
and prints its validation NDCG@10 after every epoch (validation = each user's second-to-last item). The test
split is never evaluated here, so settings chosen from its output are chosen on validation only. One JSON line
per run is appended to ``--out``.

    python bench/recommendation_seq_tune.py NAME '{"text_dim": 0, "item_table": "plain", "loss": "ce"}' '{"windows": "all"}'
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("SUITE_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from domains.recommendation.data import load_dataset  # noqa: E402
from domains.recommendation.model import FeatureSpace, item_text_embeddings, item_texts  # noqa: E402
from domains.recommendation.sequential import SequenceConfig, SequenceTrainConfig, leave_last_out_split, train_sequence_model  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("model", type=json.loads, help="SequenceConfig fields (JSON)")
    ap.add_argument("train", type=json.loads, help="SequenceTrainConfig fields (JSON)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "bench-recommendation" / "sequential-tuning.jsonl")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = load_dataset("ml-100k")
    space = FeatureSpace.build(data.users, data.items)
    split = leave_last_out_split(data.interactions, space.user_index(), space.item_index())
    cfg = SequenceConfig(**args.model)
    text = item_text_embeddings(item_texts(data.items)) if cfg.text_dim else None
    t0 = time.time()

    def on_epoch(e, loss, ndcg):
        print(f"{args.name} epoch {e} loss {loss:.3f} valid NDCG@10 {ndcg:.4f} ({time.time() - t0:.0f} s)", flush=True)

    _, hist = train_sequence_model(split, cfg, SequenceTrainConfig(**args.train), text, on_epoch=on_epoch)
    res = {"name": args.name, "model": args.model, "train": args.train, "best_valid_ndcg@10": hist["best_valid_ndcg"],
           "best_epoch": hist["best_epoch"], "epochs_run": hist["epochs_run"], "seconds": hist["seconds"], "curve": hist["valid_ndcg"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(res) + "\n")
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
