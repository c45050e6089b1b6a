"""Recommendation benchmark → BENCHMARKS.md section "recommendation".

Parts (``--part``; each writes ``<out>/<part>.json``, and every call rewrites the section from all the
JSON files present, so parts can run separately or in parallel and the table says what each holds):

* ``stratified`` — ML-100K, Microsoft Recommenders' ``python_stratified_split(ratio=0.75, seed=42)``
  (split ``msr-stratified-75``): the two-tower (epoch by validation early stopping, then refit) against
  EASE, iALS, item-kNN, SAR, BPR (implicit and ours) and most-popular, for every seed of ``--seeds``.
  The seed sets the per-user validation carve (``data.validation_split``) and the model init. Every
  baseline's hyper-parameters are chosen on that validation split (``baselines.tune``), then it is
  refitted on the whole training part and evaluated once on the test split, with the same top-k
  metrics code (seen items removed) as the two-tower.
* ``sequential`` — ML-100K leave-last-out (test = last item, validation = second-to-last): the
  sequence model (``sequential.py``: causal transformer over TorchRec item embeddings + MiniLM text,
  full-catalogue softmax CE since session 4; before: sampled softmax over the batch's targets + 1,000 uniform
  items, log-Q corrected) and a plain SASRec reference (own ``nn.Embedding``, no text, full softmax CE) against most-popular, item-kNN, BPR, EASE
  and iALS; FULL ranking over the catalogue, history removed. Baselines are tuned on validation and
  refitted on everything but the last item; the sequence models (settings: ``sequential.OURS`` /
  ``REFERENCE`` / ``TRAIN``, the same budget rule for both; ``--seq-epochs`` overrides the cap) pick
  their epoch on validation and read the history including the validation item at test time (they are
  not refitted). ``python -m domains.recommendation.train_sequential`` trains one of them as a run.
* ``scale`` — time and peak memory of one training pass from 100K to 1M interactions (synthetic,
  MovieLens-1M-shaped: Zipf item popularity) for the two-tower (real pipeline through a Parquet
  file), EASE, iALS, item-kNN and the sequence model.
* ``scoring10m`` — the scoring path (``topk``: exact matmul + top-k with seen items removed; FAISS
  HNSW + ``drop_seen``) on a synthetic 10M-interaction, 100k-user × 100k-item catalogue (random
  unit vectors; labelled synthetic).
* ``serving`` — TorchRec two-tower training throughput vs a plain ``nn.EmbeddingBag`` copy, exact vs
  FAISS scoring on the real ML-100K vectors, HNSW memory as the catalogue grows.

    python bench/recommendation.py --part stratified --seeds 0 1 2
    python bench/recommendation.py --part all --quick       # tiny settings: smoke only
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit's ALS warns (and slows) with a threaded BLAS
os.environ.setdefault("SUITE_PROGRESS", "0")  # no progress bars in the bench log
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from core.bench import PeakRSS, cpu_kind, cpu_label, machine_line, markdown_table, write_benchmark_section  # noqa: E402
from domains.recommendation import baselines as B  # noqa: E402
from domains.recommendation import sequential as SEQ  # noqa: E402
from domains.recommendation.config import TrainConfig  # noqa: E402
from domains.recommendation.evaluation import evaluate_scores, model_scores  # noqa: E402
from domains.recommendation.model import ITEM_FEATURES, TwoTower, sampled_softmax_loss, sampling_log_q  # noqa: E402
from domains.recommendation.training import WIDE_BLEND_GRID, Prepared, Trainer, build_model, fit_two_tower, id_trained_items, local_trainer, prepare_inputs, saved_model_item_rows  # noqa: E402

PARTS = ["stratified", "sequential", "scale", "scoring10m", "serving"]
K = 10
OUT = Path(__file__).resolve().parents[1] / "runs" / "bench-recommendation"  # + "-no-amx" on a CPU without AMX (main)

# baselines of each protocol, and the grids used (the library defaults, trimmed where a grid edge never won in development)
STRATIFIED_BASELINES = ["most_popular", "ease", "item_knn", "sar", "ials", "bpr_cornac", "bpr", "bpr_torch"]
SEQUENTIAL_BASELINES = ["most_popular", "item_knn", "bpr", "ease", "ials"]
BENCH_GRIDS = {  # trimmed to what the shared 2-core machine allows in one evening (grid edges that never won in development dropped)
    "item_knn": {"k": [50, 100, 200, 400], "shrink": [0.0, 10.0, 50.0]},
    "ials": {"factors": [32, 64], "regularization": [1.0, 5.0], "alpha": [1.0, 3.0], "iterations": [5, 10, 15, 25]},
    "bpr": {"factors": [64], "learning_rate": [0.005, 0.01], "regularization": [0.001], "iterations": [25, 50, 100]},
    # cornac's BPR (Microsoft Recommenders' table: k 200, lr 0.01, λ 0.001, 100 iterations); every 50 iterations scored on validation
    "bpr_cornac": {"k": [200], "learning_rate": [0.01, 0.02], "lambda_reg": [0.001, 0.01], "max_iter": [50, 100, 150, 200, 300]},
    "bpr_torch": {"dim": [128], "lr": [0.005], "l2": [1e-4, 1e-3], "optimizer": ["adam"], "epochs": [5, 10, 20, 30]},
}
# the two-tower's flags beyond the training command's defaults (none: the defaults, temperature 0.03 and weight
# average 0.995, were chosen on validation; domain README, hyper-parameter tables)
TWO_TOWER_FLAGS: dict = {}
# the two-tower variants of the stratified table: the plain towers and the wide-and-deep hybrid (a fixed EASE part + the towers)
TWO_TOWER_VARIANTS = {"two_tower": {"wide": False}, "two_tower_wide": {"wide": True, "wide_mode": "blend"}}
QUICK_GRIDS = {
    "ease": {"lam": [200.0, 500.0]}, "item_knn": {"k": [100], "shrink": [10.0]}, "sar": {"similarity": ["jaccard"], "threshold": [1]},
    "ials": {"factors": [32], "regularization": [1.0], "alpha": [1.0], "iterations": [3, 5]},
    "bpr": {"factors": [32], "learning_rate": [0.01], "regularization": [0.001], "iterations": [5, 10]},
    "bpr_cornac": {"k": [32], "learning_rate": [0.01], "lambda_reg": [0.001], "max_iter": [10, 20]},
    "bpr_torch": {"dim": [32], "lr": [0.01], "l2": [0.001], "optimizer": ["sgd"], "batch_size": [1024], "epochs": [2, 4]},
}
LABELS = {"two_tower": "two-tower (TorchRec, ours; plain towers)",
          "two_tower_wide": "two-tower wide & deep (ours: the TorchRec towers + a fixed EASE item-item part, its weight chosen on validation)", "most_popular": "most popular", "ease": "EASE", "item_knn": "item-kNN (cosine)",
          "sar": "SAR (no time decay)", "ials": "iALS (implicit)", "bpr": "BPR (implicit; popularity-sampled negatives)",
          "bpr_cornac": "BPR (cornac 3.0.1; uniform negatives, as in Microsoft Recommenders' table)",
          "bpr_torch": "BPR-MF (ours, Adam)", "seq": "sequence model (ours: causal transformer, TorchRec + MiniLM text, full-catalogue softmax CE)",
          "sasrec_ref": "plain SASRec reference (nn.Embedding, no text, full-softmax CE)"}


def grid(name: str, quick: bool) -> dict:
    if quick:
        return QUICK_GRIDS.get(name, B.GRIDS[name])
    return BENCH_GRIDS.get(name, B.GRIDS[name])


def tune_and_test(name: str, X_fit, valid_truth, X_final, final_seen, test_truth, seed: int, quick: bool, popularity=None) -> dict:
    """Tune ``name`` on (X_fit → valid_truth), refit on X_final, evaluate once on test_truth."""
    t0 = time.perf_counter()
    res = B.tune(name, X_fit, valid_truth, K, grid=grid(name, quick), seed=seed)
    model = B.make_baseline(name, seed=seed, **res.params).fit(X_final)
    m = evaluate_scores(model.scores(X_final), final_seen, test_truth, X_final.shape[1], K, popularity)
    return {"model": name, "seed": seed, **m, "params": res.params, f"valid_ndcg@{K}": res.valid_metric, "trials": len(res.trials),
            "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------
# stratified: two-tower vs tuned baselines
# ---------------------------------------------------------------------------------------------
def two_tower_run(cfg: TrainConfig, prep: Prepared, name: str = "two_tower") -> dict:
    """The training command's select (early stopping on validation) + refit, without a run folder."""
    def make_trainer() -> Trainer:
        model = build_model(cfg, prep.space)
        return local_trainer(cfg, model, torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay))

    t0 = time.perf_counter()
    state, stats, selection = fit_two_tower(prep, cfg, None, make_trainer)
    model = build_model(cfg, prep.space)
    model.load_state_dict(state)
    if cfg.history:
        prep.batcher.set_history(prep.seen())
    # as train's own evaluation (finish_run): items the returned weights never trained on are in no ranked list (d5de968, 30adf5c)
    m = evaluate_scores(model_scores(model, prep, id_trained_items(saved_model_item_rows(prep, cfg), cfg)), prep.seen(), prep.truth(), prep.space.n_items, K, prep.popularity())
    params = {"epochs": selection["best_epoch"]}
    if getattr(model, "wide_dim", 0):
        params["wide gain"] = round(float(model.wide_gain()), 2)
    return {"model": name, "seed": cfg.seed, **m, "params": params, f"valid_ndcg@{K}": selection[f"valid_ndcg@{K}"],
            "curve": selection["curve"], "seconds": time.perf_counter() - t0}


class Rows(list):
    """Rows of a part, written to its JSON after every row (a part killed midway keeps what it finished)."""

    def __init__(self, save):
        super().__init__()
        self.save = save

    def append(self, row: dict) -> None:
        super().append(row)
        self.save(self)


def part_stratified(seeds: list[int], quick: bool, models: list[str] | None = None, rows: Rows | None = None) -> dict:
    rows = Rows(lambda r: None) if rows is None else rows
    for seed in seeds:
        torch.manual_seed(seed)
        np.random.seed(seed)
        cfg = TrainConfig(track=False, seed=seed, threads=1, **TWO_TOWER_FLAGS, **({"epochs": 2, "max_steps": 5} if quick else {}))
        prep = prepare_inputs(cfg)
        n_u, n_i = prep.space.n_users, prep.space.n_items
        X_fit = B.interaction_matrix(prep.fit_u, prep.fit_i, n_u, n_i)
        X_train = B.interaction_matrix(prep.train_u, prep.train_i, n_u, n_i)
        from domains.recommendation.data import group_by_user

        valid_truth = group_by_user(prep.valid_u, prep.valid_i, n_u)
        for name in STRATIFIED_BASELINES:
            if models and name not in models:
                continue
            r = tune_and_test(name, X_fit, valid_truth, X_train, prep.seen(), prep.truth(), seed, quick, prep.popularity())
            print(f"seed {seed} {name}: ndcg@10 {r['ndcg@10']:.4f} (valid {r['valid_ndcg@10']:.4f}, {r['params']}, {r['seconds']:.0f}s)", flush=True)
            rows.append(r)
        for name, flags in TWO_TOWER_VARIANTS.items():
            if models and name not in models:
                continue
            vcfg = TrainConfig(**{**cfg.__dict__, **flags})
            r = two_tower_run(vcfg, prep, name)
            print(f"seed {seed} {name}: ndcg@10 {r['ndcg@10']:.4f} (valid {r['valid_ndcg@10']:.4f}, {r['params']}, {r['seconds']:.0f}s)", flush=True)
            rows.append(r)
    return {"rows": rows, "split": prep.split_info["split"], "validation": prep.split_info["validation"], "seeds": seeds, "quick": quick,
            "two_tower_flags": TWO_TOWER_FLAGS}


# ---------------------------------------------------------------------------------------------
# sequential: leave-last-out, full ranking
# ---------------------------------------------------------------------------------------------
# chosen on validation NDCG@10 only (bench/recommendation_seq_tune.py; the tuning runs are listed in the domain README)
# (one source with the training command's defaults: domains/recommendation/sequential.py OURS / REFERENCE / TRAIN)
SEQ_MODEL, SEQ_REF, SEQ_TRAIN = dict(SEQ.OURS), dict(SEQ.REFERENCE), dict(SEQ.TRAIN)


def part_sequential(seeds: list[int], quick: bool, models: list[str] | None = None, rows: Rows | None = None) -> dict:
    from domains.recommendation.sequential import SequenceConfig, SequenceTrainConfig, fit_and_test, load_leave_last_out

    d = load_leave_last_out("ml-100k")
    space, split, text = d.space, d.split, d.text
    n_u, n_i = space.n_users, space.n_items

    def matrix(seqs):
        u = np.repeat(np.arange(n_u), [len(s) for s in seqs])
        return B.interaction_matrix(u, np.concatenate(seqs), n_u, n_i)

    X_fit, test_hist = matrix(split.train), split.history("test")
    X_final = matrix(test_hist)
    rows = Rows(lambda r: None) if rows is None else rows
    tcfg_over = {"epochs": 2, "patience": 2} if quick else {}
    for seed in seeds:
        for name in SEQUENTIAL_BASELINES:
            if (name not in B.SEEDED and seed != 0) or (models and name not in models):  # deterministic here (no validation carve): seed 0 only
                continue
            r = tune_and_test(name, X_fit, split.valid, X_final, test_hist, split.test, seed, quick)
            r[f"hr@{K}"] = r[f"recall@{K}"]
            print(f"seed {seed} {name}: ndcg@10 {r['ndcg@10']:.4f} hr@10 {r['hr@10']:.4f} (valid {r['valid_ndcg@10']:.4f}, {r['params']})", flush=True)
            rows.append(r)
        for name, kw in (("seq", SEQ_MODEL), ("sasrec_ref", SEQ_REF)):
            if models and name not in models:
                continue
            t0 = time.perf_counter()
            cfg = SequenceConfig(**kw)
            _, hist, m = fit_and_test(split, cfg, SequenceTrainConfig(**{**SEQ_TRAIN, **tcfg_over, "seed": seed, "k": K}), text,
                                      on_epoch=lambda e, loss, v, name=name: print(f"seed {seed} {name} epoch {e}: loss {loss:.3f} valid ndcg@10 {v:.4f} "
                                                                                  f"({time.perf_counter() - t0:.0f} s)", flush=True))
            rows.append({"model": name, "seed": seed, **m, "params": {"epochs": hist["best_epoch"]}, f"valid_ndcg@{K}": hist["best_valid_ndcg"],
                         "curve": hist["valid_ndcg"], "seconds": time.perf_counter() - t0})
            print(f"seed {seed} {name}: ndcg@10 {m['ndcg@10']:.4f} hr@10 {m['hr@10']:.4f} (valid {hist['best_valid_ndcg']:.4f}, epoch {hist['best_epoch']})", flush=True)
    return {"rows": rows, "seeds": seeds, "quick": quick, "seq_model": SEQ_MODEL, "seq_ref": SEQ_REF, "seq_train": SEQ_TRAIN,
            "test_users": int(sum(len(t) > 0 for t in split.test))}


# ---------------------------------------------------------------------------------------------
# scale: 100K → 1M interactions
# ---------------------------------------------------------------------------------------------
def synthetic_interactions(n: int, n_users: int, n_items: int, seed: int = 0, zipf: float = 0.9) -> pd.DataFrame:
    """``n`` distinct (user, item) pairs: users uniform, items Zipf-distributed (exponent ``zipf``), random timestamps."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1) ** zipf
    p /= p.sum()
    keys = np.empty(0, np.int64)
    while len(keys) < n:
        m = int((n - len(keys)) * 1.3) + 1000
        u = rng.integers(0, n_users, m)
        i = rng.choice(n_items, m, p=p)
        keys = np.unique(np.concatenate([keys, u.astype(np.int64) * n_items + i]))
    keys = rng.permutation(keys)[:n]
    return pd.DataFrame({"user_id": keys // n_items + 1, "item_id": keys % n_items + 1, "timestamp": rng.integers(0, 10**9, n)})


def measure(fn) -> tuple[float, float, object]:
    gc.collect()
    with PeakRSS() as m:
        t0 = time.perf_counter()
        out = fn()
        secs = time.perf_counter() - t0
    return secs, m.delta_mb, out


SCALE_STEPS = ["two-tower", "EASE", "iALS", "item-kNN", "sequence model"]


def _scale_step(step: str, path: str, n_users: int, n_items: int, quick: bool) -> dict:
    """One step of ``scale``, run in a fresh process (:func:`part_scale`): build the step's inputs from the
    Parquet file, then time it and sample its peak RSS above the level its inputs already hold — no memory
    freed by another step can be reused, so the MB column is this step's own growth."""
    torch.set_num_threads(1)
    df = pd.read_parquet(path)
    if step == "sequence model":  # a bounded number of batches, extrapolated to one epoch
        from domains.recommendation.sequential import LeaveLastOut, SequenceConfig, SequenceTrainConfig, train_sequence_model

        order = np.lexsort((df["timestamp"].to_numpy(), df["user_id"].to_numpy()))
        u, i = df["user_id"].to_numpy()[order] - 1, df["item_id"].to_numpy()[order] - 1
        bounds = np.searchsorted(u, np.arange(n_users + 1))
        sub = [i[bounds[k]:bounds[k + 1]] for k in range(min(n_users, 64 * (3 if quick else 10)))]
        split = LeaveLastOut([q[:-2] for q in sub], [q[-2:-1] for q in sub], [q[-1:] for q in sub], n_items)
        scfg = SequenceConfig(**{**SEQ_MODEL, "text_dim": 0})
        secs, mb, _ = measure(lambda: train_sequence_model(split, scfg, SequenceTrainConfig(epochs=1, patience=1, batch_size=64)))
        return {"sequence model epoch s (est.)": secs * n_users / len(sub), "sequence model peak MB": mb}
    from domains.recommendation.training import train_epochs

    cfg = TrainConfig(track=False, data=path, text="none", seed=0, threads=1, split="leave-last-out")
    prep = prepare_inputs(cfg)
    if step == "two-tower":
        steps = 10 if quick else 60
        cfg.max_steps = steps
        model = build_model(cfg, prep.space)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        log_q = sampling_log_q(prep.train_i, prep.space.n_items)
        secs, mb, _ = measure(lambda: train_epochs(model, prep, cfg, opt, prep.train_u, prep.train_i, log_q, epochs=1, desc="scale two-tower"))
        rate = steps * cfg.batch_size / secs
        return {"two-tower examples/s": rate, "two-tower epoch s (est.)": len(prep.train_u) / rate, "two-tower peak MB": mb}
    X = B.interaction_matrix(prep.train_u, prep.train_i, prep.space.n_users, prep.space.n_items)
    make = {"EASE": lambda: B.EASE(500.0), "iALS": lambda: B.IALS(64, 1.0, 1.0, 15), "item-kNN": lambda: B.ItemKNN(100, 10.0)}[step]
    secs, mb, _ = measure(lambda: make().fit(X))
    return {f"{step} fit s": secs, f"{step} peak MB": mb}


def part_scale(quick: bool) -> dict:
    """Time and peak memory per step and size; every step in its own fresh (spawned) process, one at a time."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    sizes = [20_000, 50_000] if quick else [100_000, 300_000, 1_000_000]
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="rec-scale-"))
    for n in sizes:
        n_users, n_items = max(100, int(6040 * n / 1e6)), max(200, int(3706 * (n / 1e6) ** 0.5))
        path = tmp / f"inter-{n}.parquet"
        synthetic_interactions(n, n_users, n_items).to_parquet(path, index=False)
        row = {"interactions": n, "users": n_users, "items": n_items}
        for step in SCALE_STEPS:
            with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
                row.update(pool.submit(_scale_step, step, str(path), n_users, n_items, quick).result())
        print(row, flush=True)
        rows.append(row)
    return {"rows": rows, "quick": quick, "per_step_process": True}


# ---------------------------------------------------------------------------------------------
# scoring path on a synthetic 10M-interaction, 100k-item catalogue
# ---------------------------------------------------------------------------------------------
def part_scoring10m(quick: bool) -> dict:
    import faiss

    from domains.recommendation.data import group_by_user
    from domains.recommendation.metrics import top_k
    from domains.recommendation.topk import build_index, drop_seen

    n_users, n_items, n = (10_000, 10_000, 1_000_000) if quick else (100_000, 100_000, 10_000_000)
    sample = 1024 if quick else 4096
    out = {"users": n_users, "items": n_items, "interactions": n, "sample_users": sample, "quick": quick}
    with PeakRSS() as total:
        t0 = time.perf_counter()
        df = synthetic_interactions(n, n_users, n_items, seed=0)
        u, i = df["user_id"].to_numpy() - 1, df["item_id"].to_numpy() - 1
        del df
        seen = group_by_user(u, i, n_users)
        out.update({"distinct interactions": int(len(u)), "data s": time.perf_counter() - t0})
        del u, i
        U = torch.nn.functional.normalize(torch.randn(n_users, 64, generator=torch.Generator().manual_seed(1)), dim=1)
        V = torch.nn.functional.normalize(torch.randn(n_items, 64, generator=torch.Generator().manual_seed(2)), dim=1)
        rows = np.arange(sample)
        t0 = time.perf_counter()
        exact = []
        for s in range(0, sample, 512):
            r = rows[s:s + 512]
            idx, _ = top_k(U[r] @ V.T, K, [seen[j] for j in r])
            exact.append(idx)
        exact = np.concatenate(exact)
        t_exact = time.perf_counter() - t0
        t0 = time.perf_counter()
        index = build_index(V.numpy(), "hnsw")
        build = time.perf_counter() - t0
        max_seen = max(len(seen[j]) for j in rows)
        t0 = time.perf_counter()
        D, I = index.search(np.ascontiguousarray(U[rows].numpy()), K + max_seen)
        got, _ = drop_seen(I, D, [seen[j] for j in rows], K, n_items)
        t_hnsw = time.perf_counter() - t0
        recall = float(np.mean([len(set(g[g >= 0].tolist()) & set(e.tolist())) / K for g, e in zip(got, exact)]))
        out.update({"exact users/s": sample / t_exact, "exact all users s (est.)": n_users / (sample / t_exact),
                    "hnsw build s": build, "hnsw users/s": sample / t_hnsw, "hnsw all users s (est.)": n_users / (sample / t_hnsw),
                    "hnsw recall@10 vs exact": recall, "hnsw index MB": faiss.serialize_index(index).nbytes / 2**20,
                    "item vectors MB": V.numel() * 4 / 2**20, "seen lists MB": sum(s.nbytes for s in seen) / 2**20})
    out["peak RSS growth MB"] = total.delta_mb
    print(out, flush=True)
    return out


# ---------------------------------------------------------------------------------------------
# serving: TorchRec vs plain throughput, exact vs FAISS on ML-100K, HNSW memory growth
# ---------------------------------------------------------------------------------------------
class PlainTwoTower(nn.Module):
    """The same architecture with one nn.EmbeddingBag per table (no TorchRec)."""

    def __init__(self, ref: TwoTower):
        super().__init__()
        self.bags = nn.ModuleDict()
        for ebc in (ref.user_ebc, ref.item_ebc):
            for c in ebc.embedding_bag_configs():
                mode = "mean" if c.pooling.name == "MEAN" else "sum"
                self.bags[c.feature_names[0]] = nn.EmbeddingBag(c.num_embeddings, c.embedding_dim, mode=mode)
        self.user_keys = ref.user_keys
        self.user_mlp = ref.user_mlp.__class__(*[type(m)(m.in_features, m.out_features) if isinstance(m, nn.Linear) else type(m)() for m in ref.user_mlp])
        self.item_mlp = ref.item_mlp.__class__(*[type(m)(m.in_features, m.out_features) if isinstance(m, nn.Linear) else type(m)() for m in ref.item_mlp])
        self.text_proj = nn.Linear(ref.text_proj.in_features, ref.text_proj.out_features) if ref.text_proj is not None else None
        self.normalize = ref.cfg.normalize

    def _pool(self, kjt, keys):
        out = []
        d = kjt.to_dict()
        for k in keys:
            jt = d[k]
            out.append(self.bags[k](jt.values(), jt.offsets()[:-1]))
        return torch.cat(out, 1)

    def forward(self, ukjt, ikjt, text):
        u = self.user_mlp(self._pool(ukjt, self.user_keys))
        parts = [self._pool(ikjt, ITEM_FEATURES)] + ([self.text_proj(text)] if self.text_proj is not None else [])
        v = self.item_mlp(torch.cat(parts, 1))
        if self.normalize:
            u, v = nn.functional.normalize(u, dim=-1), nn.functional.normalize(v, dim=-1)
        return u, v


def train_throughput(cfg: TrainConfig, prep: Prepared, steps: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    tr = build_model(cfg, prep.space)
    plain = PlainTwoTower(tr)
    n_params = (sum(p.numel() for p in tr.parameters()), sum(p.numel() for p in plain.parameters()))
    assert n_params[0] == n_params[1], n_params
    log_q = sampling_log_q(prep.train_i, prep.space.n_items)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(steps):
        b = torch.randint(0, len(prep.train_u), (cfg.batch_size,), generator=g)
        u, i = torch.as_tensor(prep.train_u[b]), torch.as_tensor(prep.train_i[b])
        batches.append((prep.batcher.user_kjt(u, cfg.id_dropout, g, exclude_items=i, history_dropout=cfg.history_dropout),
                        prep.batcher.item_kjt(i, cfg.id_dropout, g), prep.batcher.item_text(i), i))

    def run(model) -> float:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        t0 = time.perf_counter()
        for uk, ik, tx, i in batches:
            uv, iv = model(uk, ik, tx)
            loss = sampled_softmax_loss(uv, iv, i, log_q[i], cfg.temperature, cfg.logq_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return steps * cfg.batch_size / (time.perf_counter() - t0)

    run(tr), run(plain)  # warm-up
    rates = {"torchrec": [], "plain": []}
    for _ in range(repeats):
        rates["torchrec"].append(run(tr))
        rates["plain"].append(run(plain))
    med = {k: float(np.median(v)) for k, v in rates.items()}
    return [{"model": "TorchRec EBC two-tower", "examples/s (median)": med["torchrec"], "ratio vs plain": med["torchrec"] / med["plain"], "params": n_params[0]},
            {"model": "plain nn.EmbeddingBag two-tower (reference)", "examples/s (median)": med["plain"], "ratio vs plain": 1.0, "params": n_params[1]}]


def scoring(cfg: TrainConfig, prep: Prepared) -> tuple[list[dict], dict]:
    from domains.recommendation.metrics import top_k
    from domains.recommendation.model import all_embeddings
    from domains.recommendation.topk import build_index, drop_seen

    torch.manual_seed(0)
    model = build_model(cfg, prep.space)  # untrained vectors of the real feature pipeline; search cost does not depend on training
    U, V = all_embeddings(model, prep.batcher, prep.space.n_users, prep.space.n_items)
    seen = prep.seen()
    t0 = time.perf_counter()
    exact, _ = top_k(U @ V.T, K, seen)
    t_exact = time.perf_counter() - t0
    rows = [{"method": "exact (matmul + topk)", "users/s": len(U) / t_exact, "index build ms": 0.0, "recall@10 vs exact": 1.0}]
    q = np.ascontiguousarray(U.numpy())
    max_seen = max(len(s) for s in seen)
    for kind in ("hnsw", "ivf"):
        t0 = time.perf_counter()
        index = build_index(V.numpy(), kind)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, I = index.search(q, K + max_seen)
        t_s = time.perf_counter() - t0
        got, _ = drop_seen(I, np.zeros(I.shape, np.float32), seen, K, len(V))
        rec = [len(set(g[g >= 0].tolist()) & set(e.tolist())) / K for g, e in zip(got, exact)]
        rows.append({"method": f"FAISS {kind}", "users/s": len(U) / t_s, "index build ms": build * 1000, "recall@10 vs exact": float(np.mean(rec))})
    return rows, {"users": len(U), "items": len(V)}


def memory_growth(quick: bool) -> list[dict]:
    import faiss

    from domains.recommendation.topk import build_index

    sizes = [1682, 10_000] + ([] if quick else [50_000])
    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        with PeakRSS() as m:
            v = rng.standard_normal((n, 64)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            t0 = time.perf_counter()
            index = build_index(v, "hnsw")
            build = time.perf_counter() - t0
        rows.append({"catalogue items": n, "vectors MB": v.nbytes / 2**20, "HNSW index MB (serialized)": faiss.serialize_index(index).nbytes / 2**20,
                     "peak RSS growth MB": m.delta_mb, "HNSW build s": build})
        del index, v
    return rows


def part_serving(quick: bool, steps: int, repeats: int) -> dict:
    cfg = TrainConfig(track=False)
    prep = prepare_inputs(cfg)
    # the towers only: since wide & deep became the default the model also holds the wide part (a fixed item-item matrix
    # and one learned gain), the same dense work on both sides, which PlainTwoTower does not copy
    towers = dataclasses.replace(cfg, wide=False)
    return {"train": train_throughput(towers, prep, steps, repeats), "scoring": scoring(cfg, prep), "memory": memory_growth(quick),
            "steps": steps, "repeats": repeats}


# ---------------------------------------------------------------------------------------------
# the BENCHMARKS section
# ---------------------------------------------------------------------------------------------
def _mean_sd(v: list[float]) -> str:
    v = [x for x in v if x == x]
    if not v:
        return ""
    return f"{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f}" if len(v) > 1 else f"{v[0]:.4f}"


def _params(rows: list[dict]) -> str:
    seen = []
    for r in rows:
        s = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
        seen.append(f"s{r['seed']}: {s}" if s else "—")
    return "; ".join(dict.fromkeys(seen)) if seen else ""


def summary_table(rows: list[dict], order: list[str], metrics: list[str]) -> list[dict]:
    out = []
    for name in order:
        rs = [r for r in rows if r["model"] == name]
        if not rs:
            continue
        row = {"model": LABELS.get(name, name), "seeds": ",".join(str(r["seed"]) for r in rs)}
        for m in metrics:
            row[m] = _mean_sd([r[m] for r in rs])
        row[f"valid NDCG@{K}"] = _mean_sd([r[f"valid_ndcg@{K}"] for r in rs])
        row["chosen on validation"] = _params(rs)
        out.append(row)
    return sorted(out, key=lambda r: -float(r[metrics[0]].split()[0] or 0))


def _two_tower_settings() -> str:
    d = TrainConfig()
    return (f"--temperature {d.temperature}, --ema-decay {d.ema_decay} (weight average), --history-pooling {d.history_pooling}, "
            f"--softmax {d.softmax}, --epochs {d.epochs} --patience {d.patience}")


def render(out_dir: Path) -> str:
    parts = {}
    days = set()  # the days the rendered parts' files were written: the section says when its figures were measured
    for p in PARTS:  # "<part>.json" or per-seed files "<part>-s<seeds>.json" (parts run as separate processes): rows concatenated
        files = sorted(out_dir.glob(f"{p}.json")) + sorted(out_dir.glob(f"{p}-s*.json"))
        for f in files:
            days.add(time.strftime("%Y-%m-%d", time.localtime(f.stat().st_mtime)))
            d = json.loads(f.read_text())
            if p not in parts:
                parts[p] = d
            else:
                rows = parts[p]["rows"] + d.get("rows", [])
                parts[p] = {**d, **parts[p]}
                parts[p]["rows"] = rows
                parts[p]["seeds"] = sorted(set(parts[p]["seeds"]) | set(d["seeds"]))
                parts[p]["quick"] = parts[p]["quick"] or d["quick"]
    measured = f"{min(days)} … {max(days)}" if len(days) > 1 else next(iter(days), None)  # the first and last day, or today
    md = ["## recommendation",
          f"`python bench/recommendation.py --part <part>` — {machine_line(measured)}; torch threads 1. {_load_note(parts)}"
          "Times are indicative, ratios inside one part are fair. Every model of a table is ranked by the "
          "same top-k code (`evaluation.evaluate_scores` / `sequential.evaluate_next_item`) with the user's training items removed; "
          "hyper-parameters and epochs are chosen on a validation split carved from the training part, the test split is used once."]
    cpus = sorted({d["cpu"] for d in parts.values() if d.get("cpu")})
    if len(cpus) > 1 or (cpus and cpus[0] != cpu_label()):
        md.append("Parts measured on another CPU than this report's: " + "; ".join(f"{p}: {d.get('cpu', 'not recorded')}" for p, d in parts.items()) + ".")
    if "stratified" in parts:
        p = parts["stratified"]
        md += [f"### ML-100K, split `{p.get('split', 'msr-stratified-75')}` (Microsoft Recommenders' `python_stratified_split(ratio=0.75, seed=42)`), k = 10"
               + (" — QUICK SMOKE SETTINGS, not a result" if p["quick"] else ""),
               f"Mean ± sd over seeds {p['seeds']} (seed = validation carve, {p.get('validation', {}).get('ratio', 0.2)} of each user's training rows, "
               "+ model init). Baselines: grid search on validation (`baselines.tune`, grids in `bench/recommendation.py`), "
               "refit on the whole training part. Two-tower rows: the training command's early stopping + refit (`training.fit_two_tower`) "
               f"with {_two_tower_settings()}; plain = `--no-wide`; wide & deep = `--wide --wide-mode blend` (the default since session 4): the "
               "same towers, trained exactly as the plain row, plus a FIXED linear item-item part — EASE's closed form (λ 500) fitted on the "
               "training rows of each phase only (select: the fit part; refit: the training split) — scored as cosine + 0.03 × gain × "
               "(history · B); the gain is chosen with the epoch on the validation carve "
               f"({len(WIDE_BLEND_GRID)} values of 0.03 × gain: {', '.join(f'{c:g}' for c in WIDE_BLEND_GRID)}; 'wide gain' below). EASE is a "
               "component of the wide & deep model. "
               + "Published anchors (Microsoft Recommenders, same split): BPR 0.442, BiVAE 0.475.",
               markdown_table(summary_table(p["rows"], [*TWO_TOWER_VARIANTS, *STRATIFIED_BASELINES], [f"ndcg@{K}", f"precision@{K}", f"recall@{K}", f"map_ms@{K}"]))]
    if "sequential" in parts:
        p = parts["sequential"]
        # the sequence models' settings come from the files that hold their rows (a baselines-only file may be older)
        # (per model: a file's seq_model describes its "seq" rows only, its seq_ref its "sasrec_ref" rows)
        files = [json.loads(f.read_text()) for f in sorted(out_dir.glob("sequential*.json"))]
        ours = [d for d in files if any(r["model"] == "seq" for r in d.get("rows", []))]
        refs = [d for d in files if any(r["model"] == "sasrec_ref" for r in d.get("rows", []))]
        settings = ({json.dumps(d.get("seq_model")) for d in ours} | {"ref " + json.dumps(d.get("seq_ref")) for d in refs}
                    | {"train " + json.dumps(d.get("seq_train")) for d in ours + refs})
        if ours:
            p = {**p, "seq_model": ours[0]["seq_model"], "seq_train": ours[0]["seq_train"]}
        if refs:
            p = {**p, "seq_ref": refs[0]["seq_ref"], "seq_train": refs[0]["seq_train"]}
        if len(settings) > (1 if ours else 0) + (1 if refs else 0) + 1:
            p["seq_train"] = {**p["seq_train"], "WARNING": "the sequence-model files were made with DIFFERENT settings"}
        md += ["### ML-100K leave-last-out (test = last item, validation = second-to-last), FULL ranking over 1,682 items, k = 10"
               + (" — QUICK SMOKE SETTINGS, not a result" if p["quick"] else ""),
               f"Mean ± sd over seeds {p['seeds']} (model init; the split has no randomness, so EASE, item-kNN and most-popular are "
               f"deterministic and run once); {p.get('test_users', 943)} test users. "
               f"Sequence models: {json.dumps(p['seq_model'])} / reference {json.dumps(p['seq_ref'])}, training {json.dumps(p['seq_train'])}; "
               "epoch chosen on validation NDCG@10 (early stopping), test input = history incl. the validation item. Baselines: tuned on "
               "validation, refitted on all but the last item. HR@10 = recall@10 with one test item.",
               markdown_table(summary_table(p["rows"], ["seq", "sasrec_ref", *SEQUENTIAL_BASELINES], [f"ndcg@{K}", f"hr@{K}"]))]
    if "scale" in parts:
        p = parts["scale"]
        md += ["### Time and memory from 100K to 1M interactions (SYNTHETIC, MovieLens-1M-shaped: 6,040 users and 3,706 items at 1M, Zipf 0.9 items)"
               + (" — QUICK SMOKE SETTINGS" if p["quick"] else ""),
               "One training pass each: two-tower through the real pipeline (`prepare_inputs` on a Parquet file, leave-last-out, no text), "
               "timed over 60 batches of 1024 and extrapolated to an epoch; EASE (λ 500), iALS (64 factors, 15 iterations), item-kNN "
               "(k 100) fits; the sequence model (no text) over 10 batches of 64 users, extrapolated. Peak MB = peak RSS growth during the step "
               + ("above what its inputs hold, each step in its own fresh process (nothing freed by another step is reused). "
                  if p.get("per_step_process") else
                  "(noisy: memory freed by an earlier step is reused, so near-zero rows mean 'fit in what was already held'). ")
               + "The load on the "
               "machine changed during this part (rows measured at different moments): compare columns within a row, not speeds across rows.",
               markdown_table(p["rows"])]
    if "scoring10m" in parts:
        p = parts["scoring10m"]
        md += [f"### Scoring path, SYNTHETIC {p['interactions']:,}-interaction catalogue: {p['users']:,} users × {p['items']:,} items"
               + (" — QUICK SMOKE SETTINGS" if p["quick"] else ""),
               f"Random 64-d unit vectors (untrained; HNSW recall on random vectors is a hard case), seen lists from Zipf-distributed "
               f"interactions; timed on {p['sample_users']:,} users and extrapolated to all. Exact = `metrics.top_k` on matmul chunks of 512 "
               "users with seen items removed; HNSW = `topk.build_index('hnsw')` + `topk.drop_seen`.",
               markdown_table([{"quantity": k, "value": v} for k, v in p.items() if k not in ("quick",)])]
    if "serving" in parts:
        p = parts["serving"]
        rows, sizes = p["scoring"]
        md += ["### Serving (real ML-100K features)",
               f"**Training throughput** (TorchRec / plain nn.EmbeddingBag, same tables, MLPs, loss and batches — the two towers, without the default's wide part, which is the same dense work on both sides; batch 1024, {p['steps']} steps × {p['repeats']} interleaved repeats):",
               markdown_table(p["train"]),
               f"**Scoring** {sizes['users']} users × {sizes['items']} items, top-10 with seen items excluded:", markdown_table(rows),
               "**HNSW memory with catalogue size** (synthetic 64-d unit vectors, M=32, efConstruction 80; the serialized size is the exact figure):",
               markdown_table(p["memory"])]
    return "\n\n".join(md)


def _load_note(parts: dict) -> str:
    """How loaded the 2-core machine was while each part ran (parts measured before this was recorded: "not recorded")."""
    loads = "; ".join(f"{p} {d['load_average'][0]}–{d['load_average'][1]}" if d.get("load_average") else f"{p} not recorded" for p, d in parts.items())
    return f"1-min load average at the start–end of each part: {loads} (2 cores: above 2, other jobs shared them). "


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    ap.add_argument("--part", choices=[*PARTS, "all", "report"], default="all")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="tiny settings (smoke test of the bench itself; tables are marked)")
    ap.add_argument("--steps", type=int, default=20, help="serving: training steps per throughput repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="where each part's JSON goes (default runs/bench-recommendation, "
                    "or runs/bench-recommendation-no-amx on a CPU without AMX bf16 units: one report per kind of CPU)")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--models", type=lambda v: [m for m in v.split(",") if m], default=None,
                    help="stratified/sequential: only these models (comma-separated: two_tower, seq, sasrec_ref, ease, ials, ...)")
    ap.add_argument("--per-seed-file", action="store_true", help="stratified/sequential: write <part>-s<seeds>.json (one process per seed; "
                    "the report concatenates them) instead of <part>.json")
    ap.add_argument("--seq-epochs", type=int, default=None, help=f"sequential: epoch cap of both sequence models (default {SEQ_TRAIN['epochs']}; "
                    "patience unchanged); recorded in the part's JSON")
    args = ap.parse_args(argv)
    if args.seq_epochs:
        SEQ_TRAIN["epochs"] = args.seq_epochs  # the module's dict: part_sequential and the JSON metadata read it
    torch.set_num_threads(1)
    import faiss

    faiss.omp_set_num_threads(1)
    args.out = args.out or (OUT if cpu_kind() == "amx" else OUT.with_name(OUT.name + "-no-amx"))
    args.out.mkdir(parents=True, exist_ok=True)
    todo = PARTS if args.part == "all" else ([] if args.part == "report" else [args.part])
    for part in todo:
        t0, load0 = time.perf_counter(), os.getloadavg()[0]
        name = part
        if args.per_seed_file and part in ("stratified", "sequential"):
            name = f"{part}-s{'-'.join(map(str, args.seeds))}" + (f"-{'-'.join(args.models)}" if args.models else "")

        def save(rows, name=name, part=part):
            meta = {"seeds": args.seeds, "quick": args.quick, "complete": False}
            if part == "sequential":
                meta.update(seq_model=SEQ_MODEL, seq_ref=SEQ_REF, seq_train=SEQ_TRAIN)
            if part == "stratified":
                meta.update(two_tower_flags=TWO_TOWER_FLAGS)
            tmp = args.out / f".{name}.json.tmp"
            tmp.write_text(json.dumps({**meta, "rows": list(rows)}, indent=1, default=float))
            tmp.replace(args.out / f"{name}.json")

        if part == "stratified":
            res = part_stratified(args.seeds, args.quick, args.models, Rows(save))
        elif part == "sequential":
            res = part_sequential(args.seeds, args.quick, args.models, Rows(save))
        elif part == "scale":
            res = part_scale(args.quick)
        elif part == "scoring10m":
            res = part_scoring10m(args.quick)
        else:
            res = part_serving(args.quick, args.steps, args.repeats)
        res["wall_seconds"] = time.perf_counter() - t0
        res["cpu"] = cpu_label()  # the report names the CPU each part was measured on
        res["load_average"] = [round(load0, 1), round(os.getloadavg()[0], 1)]  # 1-min, at its start and end
        res["complete"] = True
        res["rows"] = list(res["rows"]) if "rows" in res else res.get("rows")
        if res["rows"] is None:
            del res["rows"]
        tmp = args.out / f".{name}.json.tmp"
        tmp.write_text(json.dumps(res, indent=1, default=float))
        tmp.replace(args.out / f"{name}.json")
        print(f"{part}: done in {res['wall_seconds']:.0f} s -> {args.out / (name + '.json')}", flush=True)
    md = render(args.out)
    if not args.no_write:
        write_benchmark_section("recommendation", md, per_cpu=True)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
