"""Evaluation table of a trained run: the two-tower model against the baselines on the same split.

    python -m domains.recommendation.evaluate                       # latest run
    python -m domains.recommendation.evaluate --run-dir runs/recommendation/<name>

The numbers are computed by ``train`` on its held-out split (protocol and seed in ``split.json``):
Recall/NDCG/Precision/MAP@K, catalogue coverage and popularity bias (definitions in
``domains/recommendation/metrics.py``). This command re-derives the two-tower row from the saved
weights (a check that the saved model is the evaluated one) and prints the table with the public
anchors (Microsoft Recommenders, ML-100K, protocol ms: BPR 0.442, BiVAE 0.475, popularity ~0.22 NDCG@10).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.cli import run_cli
from core.config import DeviceConfig, ResumeConfig, RunConfig, SeedConfig, TrackingConfig
from core.io import atomic_write_json
from core.runs import latest_run_dir

ANCHORS_NDCG10 = {"ms_recommenders_bpr": 0.442, "ms_recommenders_bivae": 0.475, "popularity_approx": 0.22}


@dataclass
class EvaluateConfig(TrackingConfig, SeedConfig, DeviceConfig, ResumeConfig, RunConfig):
    run_dir: str | None = field(default=None, metadata={"help": "trained run (default: <runs-dir>/recommendation/latest)"})


def load_metrics(run_dir: str | Path) -> pd.DataFrame:
    p = Path(run_dir) / "eval_metrics.parquet"
    if not p.is_file():
        raise FileNotFoundError(f"{run_dir} has no eval_metrics.parquet; train with `python -m domains.recommendation.train`")
    return pd.read_parquet(p)


def evaluate(cfg: EvaluateConfig) -> pd.DataFrame:
    import numpy as np

    from domains.recommendation.data import group_by_user, load_dataset, split_interactions
    from domains.recommendation.inference import Recommender
    from domains.recommendation.metrics import ranking_metrics

    run_dir = Path(cfg.run_dir) if cfg.run_dir else latest_run_dir("recommendation", cfg.runs_dir)
    table = load_metrics(run_dir)
    tcfg = json.loads((run_dir / "config.json").read_text())
    k = int(tcfg.get("k", 10))
    rec = Recommender.load(run_dir)
    data = load_dataset(tcfg.get("data", "ml-100k"))
    split = split_interactions(data.interactions, tcfg.get("protocol", "ms"), int(tcfg.get("split_seed", 42)))
    uidx, iidx = rec.space.user_index(), rec.space.item_index()
    tu = split.test["user_id"].map(uidx).to_numpy(np.int64)
    ti = split.test["item_id"].map(iidx).to_numpy(np.int64)
    truth = group_by_user(tu, ti, rec.space.n_users)
    # the serving top-k (seen items excluded); its popularity fallback only touches users without
    # training history, and those have no test items under either protocol, so the metrics are the model's
    recs, _ = rec.recommend_rows(np.arange(rec.space.n_users), k)
    again = ranking_metrics(recs, truth, rec.space.n_items, k, rec.popularity / rec.space.n_users)
    saved = table[table["model"] == "two_tower"].iloc[0]
    diff = abs(again[f"ndcg@{k}"] - float(saved[f"ndcg@{k}"]))
    if diff > 1e-4:
        raise RuntimeError(f"re-evaluated NDCG@{k} {again[f'ndcg@{k}']:.4f} differs from the training run's {saved[f'ndcg@{k}']:.4f}")
    pd.set_option("display.width", 200)
    cols = ["model", f"ndcg@{k}", f"recall@{k}", f"precision@{k}", f"map@{k}", f"coverage@{k}", f"pop_lift@{k}"]
    print(f"protocol {tcfg.get('protocol')} (split seed {tcfg.get('split_seed')}), {int(saved['users_evaluated'])} users, k={k}")
    print(table[[c for c in cols if c in table.columns]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"public anchors NDCG@10 (Microsoft Recommenders, ML-100K, same protocol): {ANCHORS_NDCG10}")
    atomic_write_json(run_dir / "evaluation.json", {"reevaluated_ndcg": again[f"ndcg@{k}"], "anchors_ndcg10": ANCHORS_NDCG10,
                                                    "table": table.to_dict(orient="records")})
    print(f"Run directory: {run_dir}")
    return table


def main(argv: list[str] | None = None) -> int:
    return run_cli(EvaluateConfig, evaluate, argv, doc=__doc__, prog="python -m domains.recommendation.evaluate", user_errors=(ValueError,))


if __name__ == "__main__":
    sys.exit(main())
