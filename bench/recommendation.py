"""Recommendation benchmark → BENCHMARKS.md section "recommendation".

1. Training throughput of the TorchRec two-tower (EmbeddingBagCollection + KeyedJaggedTensor) as a
   ratio to a plain-PyTorch ``nn.EmbeddingBag`` two-tower of the same size (same tables, MLPs, loss,
   batches) — measured in this process, interleaved.
2. Scoring: users/s of exact top-K (matmul + topk, seen items excluded) and of FAISS HNSW / IVF search,
   index build time, and recall@10 of the approximate lists against exact — on the real ML-100K vectors.
3. Memory: peak RSS growth of building item vectors + an HNSW index as the catalogue grows
   (synthetic catalogues of random unit vectors at 1.7k, 10k and 50k items; ``--quick`` stops at 10k).

    python bench/recommendation.py [--steps 20] [--repeats 3] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from core.bench import PeakRSS, machine_line, markdown_table, write_benchmark_section  # noqa: E402
from domains.recommendation.model import ITEM_FEATURES, TwoTower, sampled_softmax_loss  # noqa: E402
from domains.recommendation.config import TrainConfig  # noqa: E402
from domains.recommendation.model import sampling_log_q  # noqa: E402
from domains.recommendation.training import Prepared, build_model, prepare_inputs  # noqa: E402


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
    from domains.recommendation.topk import build_index, drop_seen

    torch.manual_seed(0)
    model = build_model(cfg, prep.space)  # untrained vectors of the real feature pipeline; search cost does not depend on training
    from domains.recommendation.model import all_embeddings

    U, V = all_embeddings(model, prep.batcher, prep.space.n_users, prep.space.n_items)
    seen = prep.seen()
    from domains.recommendation.metrics import top_k

    k = 10
    t0 = time.perf_counter()
    exact, _ = top_k(U @ V.T, k, seen)
    t_exact = time.perf_counter() - t0
    rows = [{"method": "exact (matmul + topk)", "users/s": len(U) / t_exact, "index build ms": 0.0, "recall@10 vs exact": 1.0}]
    q = np.ascontiguousarray(U.numpy())
    max_seen = max(len(s) for s in seen)
    for kind in ("hnsw", "ivf"):
        t0 = time.perf_counter()
        index = build_index(V.numpy(), kind)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, I = index.search(q, k + max_seen)
        t_s = time.perf_counter() - t0
        got, _ = drop_seen(I, np.zeros(I.shape, np.float32), seen, k, len(V))
        rec = [len(set(g[g >= 0].tolist()) & set(e.tolist())) / k for g, e in zip(got, exact)]
        rows.append({"method": f"FAISS {kind}", "users/s": len(U) / t_s, "index build ms": build * 1000, "recall@10 vs exact": float(np.mean(rec))})
    return rows, {"users": len(U), "items": len(V)}


def memory_growth(quick: bool) -> list[dict]:
    from domains.recommendation.topk import build_index

    import faiss

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    cfg = TrainConfig(track=False)
    prep = prepare_inputs(cfg)  # once: the real ML-100K features feed both the training and the scoring measurements
    train_rows = train_throughput(cfg, prep, args.steps, args.repeats)
    score_rows, sizes = scoring(cfg, prep)
    mem_rows = memory_growth(args.quick)
    md = "\n\n".join([
        "## recommendation",
        f"`python bench/recommendation.py` — {machine_line()}, torch threads {args.threads}. Real ML-100K features and batches "
        f"(batch 1024, {args.steps} steps × {args.repeats} interleaved repeats).",
        "**Training throughput** (ratio = TorchRec / plain nn.EmbeddingBag, same tables, MLPs, loss and batches, same process):",
        markdown_table(train_rows),
        f"**Scoring** {sizes['users']} users × {sizes['items']} items, top-10 with seen items excluded:",
        markdown_table(score_rows),
        "**Memory growth with catalogue size** (synthetic 64-d unit item vectors + HNSW M=32, efConstruction 80; "
        "RSS growth is noisy because freed memory is reused — the serialized index size is the exact figure):",
        markdown_table(mem_rows),
    ])
    write_benchmark_section("recommendation", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
