"""Train and evaluate the sequence model (SASRec-style causal transformer over TorchRec item embeddings
+ MiniLM item text) on the leave-last-out protocol; saves a run.

    python -m domains.recommendation.train_sequential                     # ML-100K, the measured settings
    python -m domains.recommendation.train_sequential --seed 1 --name s1
    python -m domains.recommendation.train_sequential --no-text --item-table plain --loss ce   # the plain SASRec reference
    python -m domains.recommendation.train_sequential --data my.parquet   # user_id,item_id,timestamp[,rating]

Protocol: per user, interactions ordered by time; the last item is the test target, the second-to-last
the validation target (early stopping on validation NDCG@k chooses the epoch), the rest is trained on.
The test input is the history including the validation item; every item of the catalogue is ranked
(no sampled negatives), the user's input items removed. Most-popular is evaluated on the same test.
Defaults = the settings of the README's leave-last-out table (``sequential.OURS`` / ``sequential.TRAIN``).

Writes under one run directory (kind ``job``: the two-tower commands ``evaluate``/``score``/``recommend``
do not read sequence runs, so ``runs/recommendation/latest`` keeps pointing at the two-tower):
``config.json``, ``metrics.jsonl`` (per-epoch loss and validation NDCG@k), ``metrics.json`` (test
NDCG@k / HR@k, most-popular beside it), ``model.safetensors`` + ``model.json`` (registry name ``sasrec``),
``feature_space.json``, ``validation_curve.json``, ``eval_metrics.json``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from core.cli import run_cli
from core.config import RunConfig, SeedConfig, TrackingConfig, check_ranges
from core.device import set_cpu_threads
from core.runs import Run
from domains.recommendation.config import DataColumnsConfig, data_columns, date_order_field, side_tables, with_absolute_tables
from domains.recommendation.sequential import OURS, TRAIN, SequenceConfig, SequenceTrainConfig, load_leave_last_out, train_and_evaluate
from domains.recommendation.training import DOMAIN

__all__ = ["TrainSequentialConfig", "train_sequential", "main"]


@dataclass
class TrainSequentialConfig(DataColumnsConfig, TrackingConfig, SeedConfig, RunConfig):
    """python -m domains.recommendation.train_sequential"""

    data: str = field(default="ml-100k", metadata={"help": "ml-100k (bundled), a MovieLens folder or a .parquet/.csv/.jsonl interaction file (user_id,item_id,timestamp)"})
    date_order: str = date_order_field()
    max_len: int = field(default=OURS["max_len"], metadata={"min": 1, "help": "positions attended: the latest max-len items of a history"})
    dim: int = field(default=OURS["dim"], metadata={"min": 1, "help": "model width (item vectors, hidden states)"})
    heads: int = field(default=OURS["heads"], metadata={"min": 1, "help": "attention heads per block"})
    layers: int = field(default=OURS["layers"], metadata={"min": 1, "help": "transformer blocks"})
    dropout: float = field(default=OURS["dropout"], metadata={"min": 0, "below": 1, "help": "dropout on inputs, attention and block outputs"})
    text: bool = field(default=True, metadata={"help": "add the projected MiniLM vector of each item's title/year/genres to its id embedding (--no-text: ids only)"})
    item_table: str = field(default=OURS["item_table"], metadata={"help": "torchrec: EmbeddingCollection over a KeyedJaggedTensor; plain: nn.Embedding", "choices": ["torchrec", "plain"]})
    id_init: str = field(default=OURS.get("id_init", "normal"), metadata={"help": "id embeddings start random (normal) or from the text vectors' principal components (text; needs --text)", "choices": ["normal", "text"]})
    loss: str = field(default=OURS["loss"], metadata={"help": "sampled_softmax: in-batch targets + --negatives uniform items, log-Q corrected; "
                                                              "ce: full softmax over the catalogue; bce: SASRec's one negative per position",
                                                      "choices": ["sampled_softmax", "ce", "bce"]})
    negatives: int = field(default=OURS.get("negatives", 0), metadata={"min": 0, "help": "sampled_softmax: uniform negatives per batch on top of the batch's targets (>= catalogue size: every item)"})
    temperature: float = field(default=OURS["temperature"], metadata={"above": 0, "help": "scores are cosine / temperature"})
    epochs: int = field(default=TRAIN["epochs"], metadata={"min": 1, "help": "most epochs; early stopping on validation NDCG@k picks the epoch"})
    patience: int = field(default=TRAIN["patience"], metadata={"min": 0, "help": "stop after this many epochs without a better validation NDCG@k"})
    batch_size: int = field(default=TRAIN["batch_size"], metadata={"min": 1, "help": "training windows (sequences) per batch"})
    lr: float = field(default=TRAIN["lr"], metadata={"above": 0, "help": "Adam learning rate"})
    windows: str = field(default=TRAIN["windows"], metadata={"help": "all: tile every training sequence into windows of max-len+1 items (every target once per epoch); "
                                                                     "random: one random window per user and epoch", "choices": ["all", "random"]})
    k: int = field(default=10, metadata={"min": 1, "help": "cut-off of NDCG@k / HR@k"})
    threads: int = field(default=1, metadata={"min": 0, "help": "torch CPU threads (0 = torch default)"})

    def model_config(self) -> SequenceConfig:
        return SequenceConfig(**{**OURS, "max_len": self.max_len, "dim": self.dim, "heads": self.heads, "layers": self.layers,
                                 "dropout": self.dropout, "text_dim": OURS["text_dim"] if self.text else 0, "item_table": self.item_table,
                                 "id_init": self.id_init, "loss": self.loss, "negatives": self.negatives, "temperature": self.temperature})

    def train_config(self) -> SequenceTrainConfig:
        return SequenceTrainConfig(epochs=self.epochs, patience=self.patience, batch_size=self.batch_size, lr=self.lr, k=self.k,
                                   seed=self.seed, windows=self.windows)


def train_sequential(cfg: TrainSequentialConfig) -> Path:
    """Run the command; returns the run directory."""
    from core.errors import UserInputError

    if cfg.id_init == "text" and not cfg.text:
        raise UserInputError("--id-init text needs --text (the item text vectors)")
    check_ranges(cfg)  # the fields' declared ranges (parse_config checked the flags; this covers a config built in code)
    if cfg.threads > 0:
        set_cpu_threads(cfg.threads)
    # the data and its split before any run folder: a file the run cannot use is one line, exit 2, no failed run left behind
    cfg = with_absolute_tables(cfg)  # config.json records where --items/--users are, whatever folder a later command runs from
    loaded = load_leave_last_out(cfg.data, with_text=cfg.text, date_order=cfg.date_order, columns=data_columns(cfg), **side_tables(cfg))
    with Run.start(DOMAIN, cfg, command="train_sequential", kind="job") as run:
        m = train_and_evaluate(cfg.data, cfg.model_config(), cfg.train_config(), run, loaded=loaded)
        k = cfg.k
        print(f"epoch chosen on validation: {m['best_epoch']} (valid NDCG@{k} {m[f'valid_ndcg@{k}']:.4f}); "
              f"test ({m['test_users']} users, full ranking): NDCG@{k} {m[f'ndcg@{k}']:.4f}  HR@{k} {m[f'hr@{k}']:.4f}  "
              f"| most popular NDCG@{k} {m[f'most_popular/ndcg@{k}']:.4f}  HR@{k} {m[f'most_popular/hr@{k}']:.4f}", flush=True)
        return run.finish(m)


def main(argv: list[str] | None = None) -> int:
    return run_cli(TrainSequentialConfig, train_sequential, argv, doc=__doc__, prog="python -m domains.recommendation.train_sequential")


if __name__ == "__main__":
    sys.exit(main())
