"""Train the TorchRec two-tower retrieval model, and the baselines in the same run.

    python -m domains.recommendation.train                               # ML-100K, Microsoft Recommenders' exact split
    python -m domains.recommendation.train --split leave-last-out        # temporal protocol
    python -m domains.recommendation.train --data my.parquet             # your interactions (user_id,item_id,timestamp[,rating])
    python -m domains.recommendation.train --data path/to/ml-1m          # a MovieLens-1M folder (ratings.dat, users.dat, movies.dat)
    python -m domains.recommendation.train --dmp                         # through DistributedModelParallel (gloo, CPU)
    torchrun --nproc_per_node=2 -m domains.recommendation.train --dmp --sharding table_wise
    python -m domains.recommendation.train --name r1 --resume            # continue r1 from its last checkpoint (bit-exact)

The epoch is chosen on a validation split carved from the training part (early stopping on
NDCG@k); the model is then refitted on the whole training part and evaluated once on the test split
(``domains/recommendation/training.py`` describes the procedure). Writes under one run directory:
``config.json``, ``model.json`` ({name, kwargs} for the model registry), ``model.safetensors``,
``feature_space.json``, ``item_text.safetensors``, ``trained_items.safetensors`` (the items the saved weights were
trained on; the others are in no ranked list), ``split.json``, ``validation_curve.json``,
``data_report.json``, ``data_source.json`` (the --data read, with its content digest: ``--resume`` compares it before reading any data), ``train.parquet``, ``users.parquet``/``items.parquet``, ``eval_metrics.parquet``
(model vs baselines), ``metrics.json`` and ``checkpoints/`` (one per epoch).
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.cli import run_cli
from core.config import check_ranges
from core.device import set_cpu_threads
from core.runs import Run
from domains.recommendation.config import TrainConfig, with_absolute_tables
from domains.recommendation.training import DOMAIN, check_resume, prepare_inputs
from domains.recommendation.training import train as train_in_process

__all__ = ["TrainConfig", "train", "main"]


def train(cfg: TrainConfig) -> Path:
    """Run the training command; returns the run directory."""
    check_ranges(cfg)  # parse_config checked the flags; this covers a TrainConfig built in code
    cfg = with_absolute_tables(cfg)  # config.json records where --items/--users are, whatever folder evaluate runs from
    if cfg.threads > 0:
        set_cpu_threads(cfg.threads)
    if cfg.dmp:
        from core.distributed import DataParallel
        from domains.recommendation.distributed import check_dmp_config, train_dmp

        check_dmp_config(cfg)
    # --resume: what the run folder alone refuses (no such run, another command's run, a run being written, other
    # --data) is one line before the data is read
    check_resume(cfg)
    # the data, its split and the feature space before any run folder: a file the run cannot use (mixed date orders,
    # a missing column, too few interactions) is one line, exit 2, and leaves no failed run behind; loaded once
    prep = prepare_inputs(cfg)
    if cfg.dmp:
        with DataParallel(cfg.device, process_group=True) as dp, Run.start(DOMAIN, cfg, command="train", data_parallel=dp) as run:
            return train_dmp(cfg, run if dp.is_main else None, dp, prep)
    with Run.start(DOMAIN, cfg, command="train") as run:
        return train_in_process(cfg, run, prep)


def main(argv: list[str] | None = None) -> int:
    return run_cli(TrainConfig, train, argv, doc=__doc__, prog="python -m domains.recommendation.train")


if __name__ == "__main__":
    sys.exit(main())
