"""Evaluation table of a trained run: the two-tower model against the baselines on the same split.

    python -m domains.recommendation.evaluate                       # the newest trained run
    python -m domains.recommendation.evaluate --model-run <name or folder>
    python -m domains.recommendation.evaluate --model-run <name> --data moved/ratings.csv   # its data moved since training
    python -m domains.recommendation.evaluate --model-run <name> --items moved/items.csv    # its --items (or --users) table moved

The numbers are computed by ``train`` on its held-out test split (split name and seed in the trained
run's ``split.json``). This job re-derives the two-tower row from the saved weights (a check that the
saved model is the evaluated one), prints the table with the public anchors (Microsoft Recommenders,
ML-100K, python_stratified_split seed 42: BPR 0.442, BiVAE 0.475, popularity ~0.22 NDCG@10; only for a run on the bundled
ML-100K with that split and k 10 — for other data, splits or k it says they are not comparable) and
writes ``evaluation.json`` into its own run folder (kind "job"; the trained run is not touched).

The data is read again from where ``train`` found it (its absolute path, recorded in the run's
``split.json``), whatever folder this runs from; when it has moved, ``--data`` names its new place
(checked to give the run's split). So do ``--items``/``--users`` for the tables train was given (recorded in the
run's ``config.json``).
"""

from __future__ import annotations

import sys

import pandas as pd

from core.cli import run_cli
from core.io import atomic_write_json
from core.runs import Run
from domains.recommendation.config import EvaluateConfig
from domains.recommendation.evaluation import ANCHORS_SETTING, anchors_for, reevaluate_run, run_data_source, run_side_tables
from domains.recommendation.inference import resolve_two_tower_run
from domains.recommendation.training import DOMAIN

__all__ = ["EvaluateConfig", "evaluate", "main"]


def evaluate(cfg: EvaluateConfig) -> pd.DataFrame:
    model_run = resolve_two_tower_run(cfg.model_run, cfg.runs_dir)  # a sequence run: refused, naming its metrics
    source = run_data_source(model_run, cfg.data)  # a moved data file is one line before a job folder exists
    tables = run_side_tables(model_run, items=cfg.items, users=cfg.users)  # so is a moved --items/--users table
    with Run.start(DOMAIN, cfg, command="evaluate", kind="job") as run:
        res = reevaluate_run(model_run, data=source, tables=tables)
        k, table = res["k"], res["table"]
        if res["difference"] > 1e-4:
            raise RuntimeError(f"re-evaluated NDCG@{k} {res['reevaluated'][f'ndcg@{k}']:.4f} differs from the training run's table by {res['difference']:.2e}")
        pd.set_option("display.width", 200)
        cols = ["model", f"ndcg@{k}", f"recall@{k}", f"precision@{k}", f"map@{k}", f"coverage@{k}", f"pop_lift@{k}"]
        users = int(table[table["model"] == "two_tower"].iloc[0]["users_evaluated"])
        print(f"model run {model_run.name}: split {res['split']} (seed {res['split_seed']}), {users} users, k={k}")
        print(table[[c for c in cols if c in table.columns]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        anchors = anchors_for(source, res["split"], res["split_seed"], k)
        if anchors:
            print(f"public anchors NDCG@10 (Microsoft Recommenders, ML-100K, python_stratified_split seed 42): {anchors}")
        else:  # another data set, split or k: Microsoft Recommenders' ML-100K figures say nothing about this table
            print(f"public anchors: not comparable (they are for {ANCHORS_SETTING}; this run: data {source}, split {res['split']}, "
                  f"split seed {res['split_seed']}, k {k})")
        atomic_write_json(run.path("evaluation.json"), {"model_run": str(model_run), "data": source, "split": res["split"], "reevaluated": res["reevaluated"],
                                                        "anchors_ndcg10": anchors, "table": table.to_dict(orient="records")})
        run.finish({f"ndcg@{k}": res["reevaluated"][f"ndcg@{k}"], "model_run": str(model_run)})
    return table


def main(argv: list[str] | None = None) -> int:
    return run_cli(EvaluateConfig, evaluate, argv, doc=__doc__, prog="python -m domains.recommendation.evaluate")


if __name__ == "__main__":
    sys.exit(main())
