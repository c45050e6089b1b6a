"""Train the TorchRec two-tower retrieval model, and the baselines in the same run.

    python -m domains.recommendation.train                       # ML-100K, protocol ms (Microsoft Recommenders)
    python -m domains.recommendation.train --protocol temporal   # leave-last-out
    python -m domains.recommendation.train --data my.parquet     # your interactions (user_id,item_id,timestamp[,rating])
    python -m domains.recommendation.train --dmp                 # through DistributedModelParallel (gloo, CPU)
    torchrun --nproc_per_node=2 -m domains.recommendation.train --dmp --sharding table_wise

Supports: in-batch sampled softmax with log-Q correction and temperature; ID dropout (cold start);
item text from MiniLM (``--text precomputed`` cached, ``--text lora`` fine-tuned with LoRA through
core.finetune, ``--text none``); most-popular and BPR-MF baselines evaluated on the same split.
Refuses: sharding types TorchRec does not support on CPU (row_wise, table_row_wise, grid_shard).

Writes under one run directory: ``config.json``, ``data_report.json``, ``split.json``,
``feature_space.json``, ``model.safetensors`` (+ ``text_lora.safetensors`` with --text lora),
``item_text.safetensors``, ``train.parquet`` (the training interactions, for seen-item exclusion),
``users.parquet``/``items.parquet``, ``eval_metrics.parquet`` (model vs baselines) and ``metrics.json``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.checkpoint import save_weights
from core.cli import run_cli
from core.device import set_cpu_threads
from core.config import DeviceConfig, ResumeConfig, RunConfig, SeedConfig, TrackingConfig
from core.io import atomic_write_json, atomic_write_parquet
from core.progress import progress
from core.runs import Run
from domains.recommendation.data import PROTOCOLS, InteractionDataError, group_by_user, load_dataset, split_interactions
from domains.recommendation.model import (Batcher, FeatureSpace, TwoTower, TwoTowerConfig, all_embeddings, item_text_embeddings,
                                          item_texts, sampled_softmax_loss)

DOMAIN = "recommendation"
CPU_SHARDING = ("table_wise", "column_wise", "table_column_wise", "data_parallel")


@dataclass
class TrainConfig(TrackingConfig, SeedConfig, DeviceConfig, ResumeConfig, RunConfig):
    data: str = field(default="ml-100k", metadata={"help": "ml-100k (bundled), a MovieLens folder (ml-1m/ml-20m) or a .parquet/.csv interaction file"})
    protocol: str = field(default="ms", metadata={"help": "ms = per-user stratified random 75/25 (Microsoft Recommenders); temporal = leave-last-out", "choices": list(PROTOCOLS)})
    split_seed: int = field(default=42, metadata={"help": "seed of the train/test split (Microsoft Recommenders uses 42)"})
    k: int = field(default=10, metadata={"help": "cut-off of the ranking metrics"})
    epochs: int = field(default=7, metadata={"help": "passes over the training interactions (ML-100K protocol ms, seed 0: NDCG@10 0.430 at 4, 0.457 at 7, 0.434 at 10 epochs)"})
    batch_size: int = field(default=1024, metadata={"help": "interactions per batch (= in-batch negatives + 1)"})
    lr: float = field(default=0.005, metadata={"help": "Adam learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay on the dense (MLP) parameters"})
    id_dim: int = field(default=64, metadata={"help": "user/item id embedding size"})
    feature_dim: int = field(default=16, metadata={"help": "embedding size of the other sparse features"})
    hidden: list[int] = field(default_factory=lambda: [128], metadata={"help": "hidden sizes of both tower MLPs"})
    out_dim: int = field(default=64, metadata={"help": "size of the user/item vectors"})
    temperature: float = field(default=0.05, metadata={"help": "softmax temperature on the cosine scores"})
    normalize: bool = field(default=True, metadata={"help": "L2-normalise user/item vectors (cosine / temperature); --no-normalize uses the raw dot product"})
    logq_weight: float = field(default=1.0, metadata={"help": "log-Q popularity correction strength (1 = Yi et al. 2019, 0 = off)"})
    history: bool = field(default=True, metadata={"help": "user tower also reads the user's training items as a mean-pooled bag (the target item is removed from its own input)"})
    history_dropout: float = field(default=0.2, metadata={"help": "fraction of history items dropped at random per training example (denoising)"})
    id_dropout: float = field(default=0.1, metadata={"help": "fraction of training ids replaced by 'unknown' (teaches the towers to use features: cold start)"})
    text: str = field(default="precomputed", metadata={"help": "item text from MiniLM: precomputed (cached), lora (fine-tuned), none", "choices": ["precomputed", "lora", "none"]})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank with --text lora"})
    baselines: bool = field(default=True, metadata={"help": "also train/evaluate most-popular and BPR-MF on the same split"})
    bpr_epochs: int = field(default=10, metadata={"help": "BPR-MF epochs (on ML-100K ms: 10 epochs NDCG@10 0.394, 20 epochs 0.383 — it over-fits after ~10)"})
    bpr_dim: int = field(default=64, metadata={"help": "BPR-MF factors"})
    dmp: bool = field(default=False, metadata={"help": "train through TorchRec DistributedModelParallel (gloo on CPU; torchrun for >1 process)"})
    sharding: str = field(default="table_wise", metadata={"help": "sharding type of the embedding tables with --dmp", "choices": list(CPU_SHARDING)})
    threads: int = field(default=1, metadata={"help": "torch CPU threads (0 = torch default). 1 was the fastest for this small model on the busy shared 2-core machine, in ad-hoc timings"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many steps (0 = all epochs); for smoke tests"})


# ---------------------------------------------------------------------------------------------
# prepared inputs shared by training, evaluation and serving
# ---------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    space: FeatureSpace
    users: pd.DataFrame
    items: pd.DataFrame
    train_u: np.ndarray  # row indices into space.user_ids
    train_i: np.ndarray
    test_u: np.ndarray
    test_i: np.ndarray
    text: torch.Tensor | None  # None with --text none, and with --text lora until training has run
    batcher: Batcher
    split_info: dict
    data_report: dict

    def seen(self) -> list[np.ndarray]:
        return group_by_user(self.train_u, self.train_i, self.space.n_users)

    def truth(self) -> list[np.ndarray]:
        return group_by_user(self.test_u, self.test_i, self.space.n_users)

    def popularity(self) -> np.ndarray:
        """Share of training users that interacted with each item."""
        return np.bincount(self.train_i, minlength=self.space.n_items) / max(self.space.n_users, 1)


def prepare_inputs(cfg: TrainConfig) -> tuple[Prepared, pd.DataFrame]:
    data = load_dataset(cfg.data)
    split = split_interactions(data.interactions, cfg.protocol, cfg.split_seed)
    space = FeatureSpace.build(data.users, data.items)
    uidx, iidx = space.user_index(), space.item_index()
    # frozen MiniLM vectors only for --text precomputed: with --text lora the LoRA encoder produces
    # them in the graph, and train() stores its fine-tuned vectors here after training
    text = item_text_embeddings(item_texts(data.items)) if cfg.text == "precomputed" else None
    batcher = Batcher(space.user_feature_table(data.users), space.item_feature_arrays(data.items), text)
    prep = Prepared(space=space, users=data.users, items=data.items,
                    train_u=split.train["user_id"].map(uidx).to_numpy(np.int64), train_i=split.train["item_id"].map(iidx).to_numpy(np.int64),
                    test_u=split.test["user_id"].map(uidx).to_numpy(np.int64), test_i=split.test["item_id"].map(iidx).to_numpy(np.int64),
                    text=text, batcher=batcher, split_info={"protocol": cfg.protocol, "seed": cfg.split_seed, **split.info},
                    data_report=data.report.to_dict() if data.report else {})
    if cfg.history:
        batcher.set_history(prep.seen())
    return prep, split.train


# ---------------------------------------------------------------------------------------------
# evaluation of any score matrix on the prepared split
# ---------------------------------------------------------------------------------------------
def evaluate_scores(scores: torch.Tensor, prep: Prepared, k: int) -> dict[str, float]:
    from domains.recommendation.metrics import ranking_metrics, top_k

    recs, _ = top_k(scores, k, prep.seen())
    return ranking_metrics(recs, prep.truth(), prep.space.n_items, k, prep.popularity())


def model_scores(model: TwoTower, prep: Prepared) -> torch.Tensor:
    U, V = all_embeddings(model, prep.batcher, prep.space.n_users, prep.space.n_items)
    return U @ V.T


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def model_config(cfg: TrainConfig) -> TwoTowerConfig:
    """The model part of the training config (also saved as ``model_config.json`` for serving)."""
    return TwoTowerConfig(id_dim=cfg.id_dim, feature_dim=cfg.feature_dim, hidden=list(cfg.hidden), out_dim=cfg.out_dim,
                          text_dim=384 if cfg.text != "none" else 0, temperature=cfg.temperature, logq_weight=cfg.logq_weight,
                          history=cfg.history, normalize=cfg.normalize)


def build_model(cfg: TrainConfig, space: FeatureSpace, device="cpu") -> TwoTower:
    return TwoTower(space, model_config(cfg), device=device)


class LoraText(torch.nn.Module):
    """MiniLM with LoRA adapters (core.finetune) producing item text vectors inside the graph."""

    def __init__(self, texts: list[str], r: int):
        super().__init__()
        from core.backbones import create_backbone
        from core.finetune import apply_lora

        enc = create_backbone("minilm-l6-v2")
        self.encoder = apply_lora(enc, target_modules=["query", "value"], r=r, alpha=2 * r)
        tok = enc.tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
        self.register_buffer("ids", tok["input_ids"], persistent=False)
        self.register_buffer("mask", tok["attention_mask"], persistent=False)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        rows = torch.unique(rows, return_inverse=True)
        uniq, inv = rows
        enc = self.encoder if hasattr(self.encoder, "pool") else self.encoder.base_model.model
        e = enc.pool(self.ids[uniq], self.mask[uniq])
        return torch.nn.functional.normalize(e, dim=-1)[inv]


def train_epochs(model, prep: Prepared, cfg: TrainConfig, optimizer, train_u: np.ndarray, train_i: np.ndarray, log_q: torch.Tensor,
                 run: Run | None = None, lora_text: LoraText | None = None, rank: int = 0) -> dict:
    g = torch.Generator().manual_seed(cfg.seed + 1000 * rank)
    u_all = torch.as_tensor(np.array(train_u, dtype=np.int64))  # a copy: the caller's arrays may be read-only
    i_all = torch.as_tensor(np.array(train_i, dtype=np.int64))
    n = len(u_all)
    steps_per_epoch = max(1, n // cfg.batch_size)  # drop the ragged last batch: equal steps on every rank (DMP)
    step, examples, t0 = 0, 0, time.perf_counter()
    loss_val = float("nan")
    bar = progress(total=cfg.epochs * steps_per_epoch, desc="two-tower" + (f" rank{rank}" if rank else ""), unit="step") if rank == 0 else None
    model.train()
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=g)
        for s in range(steps_per_epoch):
            b = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            u, i = u_all[b], i_all[b]
            ukjt = prep.batcher.user_kjt(u, cfg.id_dropout, g, exclude_items=i, history_dropout=cfg.history_dropout)
            ikjt = prep.batcher.item_kjt(i, cfg.id_dropout, g)
            text = lora_text(i) if lora_text is not None else prep.batcher.item_text(i)
            uv, iv = model(ukjt, ikjt, text)
            loss = sampled_softmax_loss(uv, iv, i, log_q[i], cfg.temperature, cfg.logq_weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            examples += len(b)
            loss_val = float(loss.detach())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_val:.3f}", epoch=epoch)
            if run is not None and step % 50 == 0:
                run.log_metrics({"loss": loss_val, "epoch": epoch}, step)
            if cfg.max_steps and step >= cfg.max_steps:
                break
        if cfg.max_steps and step >= cfg.max_steps:
            break
    if bar is not None:
        bar.close()
    secs = time.perf_counter() - t0
    return {"steps": step, "train_seconds": secs, "train_examples_per_s": examples / max(secs, 1e-9), "final_loss": loss_val}


def _log_q(train_i: np.ndarray, n_items: int) -> torch.Tensor:
    counts = np.bincount(train_i, minlength=n_items).astype(np.float64)
    q = np.maximum(counts, 1.0) / counts.sum()
    return torch.as_tensor(np.log(q), dtype=torch.float32)


def train(cfg: TrainConfig) -> Path:
    """Train, evaluate model + baselines, save everything; returns the run directory."""
    if cfg.threads > 0:
        set_cpu_threads(cfg.threads)
    if cfg.dmp:
        from domains.recommendation.distributed import train_dmp

        return train_dmp(cfg)
    prep, train_df = prepare_inputs(cfg)
    with Run.start(DOMAIN, cfg) as run:
        model = build_model(cfg, prep.space)
        lora_text = LoraText(item_texts(prep.items), cfg.lora_r) if cfg.text == "lora" else None
        params = list(model.parameters()) + ([p for p in lora_text.parameters() if p.requires_grad] if lora_text else [])
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        stats = train_epochs(model, prep, cfg, opt, prep.train_u, prep.train_i, _log_q(prep.train_i, prep.space.n_items), run, lora_text)
        if lora_text is not None:  # freeze the fine-tuned text vectors into the run (serving needs no encoder)
            with torch.no_grad():
                prep.text = torch.cat([lora_text(torch.arange(s, min(s + 256, prep.space.n_items))) for s in range(0, prep.space.n_items, 256)])
                prep.batcher.text = prep.text
            from core.finetune import save_adapter

            save_adapter(lora_text.encoder, run.path("text_lora.safetensors"))
        return finish_run(run, cfg, prep, model, train_df, stats)


def finish_run(run: Run, cfg: TrainConfig, prep: Prepared, model, train_df: pd.DataFrame, stats: dict) -> Path:
    """Evaluate the model and the baselines on the same split; save artifacts; close the run."""
    from domains.recommendation.baselines import BPRConfig, MostPopular, train_bpr

    rows = []
    model_m = evaluate_scores(model_scores(model, prep), prep, cfg.k)
    rows.append({"model": "two_tower", **model_m})
    if cfg.baselines:
        pop = MostPopular(prep.space.n_items).fit(prep.train_u, prep.train_i)
        rows.append({"model": "most_popular", **evaluate_scores(pop.scores(prep.space.n_users), prep, cfg.k)})
        bpr = train_bpr(prep.train_u, prep.train_i, prep.space.n_users, prep.space.n_items, BPRConfig(dim=cfg.bpr_dim, epochs=cfg.bpr_epochs, seed=cfg.seed))
        rows.append({"model": "bpr_mf", **evaluate_scores(bpr.scores(), prep, cfg.k)})
    table = pd.DataFrame(rows)
    atomic_write_parquet(table, run.path("eval_metrics.parquet"), index=False)
    save_weights(run.path("model.safetensors"), model, metadata={"format": "two-tower-v1"})
    if prep.text is not None:
        save_weights(run.path("item_text.safetensors"), {"emb": prep.text.contiguous()})
    atomic_write_json(run.path("feature_space.json"), prep.space.to_dict())
    atomic_write_json(run.path("model_config.json"), {**asdict(model_config(cfg)), "k": cfg.k})
    atomic_write_json(run.path("split.json"), prep.split_info)
    atomic_write_json(run.path("data_report.json"), prep.data_report)
    atomic_write_parquet(train_df[["user_id", "item_id", "timestamp"]].reset_index(drop=True), run.path("train.parquet"), index=False)
    atomic_write_parquet(prep.users.reset_index(drop=True), run.path("users.parquet"), index=False)
    atomic_write_parquet(prep.items.reset_index(drop=True), run.path("items.parquet"), index=False)
    summary = {f"{r['model']}/{k}": v for r in rows for k, v in r.items() if k != "model"}
    summary.update({f"ndcg@{cfg.k}": model_m[f"ndcg@{cfg.k}"], "protocol": cfg.protocol, **stats})
    lines = [f"{r['model']:>13s}: " + "  ".join(f"{m}={r[m]:.4f}" for m in (f"ndcg@{cfg.k}", f"recall@{cfg.k}", f"precision@{cfg.k}", f"map@{cfg.k}", f"coverage@{cfg.k}")) for r in rows]
    print("\n".join(lines), flush=True)
    return run.finish(summary)


def main(argv: list[str] | None = None) -> int:
    return run_cli(TrainConfig, train, argv, doc=__doc__, prog="python -m domains.recommendation.train", user_errors=(InteractionDataError, ValueError,))


if __name__ == "__main__":
    sys.exit(main())
