"""Baselines trained and scored on the same split as the two-tower model and the sequence model.

Every baseline is fitted on a binary user × item matrix ``X`` (:func:`interaction_matrix`; rows =
user rows, columns = item rows of the run's feature space) and returns a dense ``(n_users, n_items)``
float32 score tensor; ranking (seen items removed) and metrics are the shared
:func:`domains.recommendation.evaluation.evaluate_scores`, so every model of a table is judged by the
same lines as the two-tower.

* :class:`MostPopular` — items ranked by training interaction count (the same for every user).
* :class:`EASE` — Steck, WWW 2019: ``B = I - P / diag(P)``, ``P = (XᵀX + λI)⁻¹``, diagonal forced to
  zero; scores ``X B``. Closed form, one hyper-parameter (λ).
* :class:`ItemKNN` — item-based collaborative filtering: cosine similarity ``XᵢᵀXⱼ / (‖Xᵢ‖‖Xⱼ‖ + shrink)``,
  each item keeps its ``k`` most similar neighbours; scores ``X S``.
* :class:`SAR` — Microsoft's Smart Adaptive Recommendations without time decay: item co-occurrence
  turned into Jaccard / lift / raw co-occurrence similarity; scores ``X S``.
* :class:`IALS` — implicit-feedback ALS (Hu, Koren & Volinsky 2008) from the ``implicit`` package
  (``implicit.cpu.als.AlternatingLeastSquares``, one thread, seeded).
* :class:`ImplicitBPR` — BPR (Rendle et al., UAI 2009) from ``implicit`` (``implicit.cpu.bpr``:
  SGD, item bias, verified negatives, one thread, seeded).
* :class:`CornacBPR` — BPR from ``cornac`` (the implementation of Microsoft Recommenders' published
  table: uniform negatives, SGD), optional dependency.
* :class:`BPRMF` / :func:`train_bpr` — our PyTorch BPR-MF (Adam, item bias); kept for the two-tower's
  training run, which reports it next to its own numbers.

Hyper-parameters are chosen on a validation split (:func:`tune`): every grid point is fitted on the
training part and scored on the validation part; iterative models (iALS, BPR) are fitted once to the
largest iteration count and evaluated at every count of the grid through the package's per-iteration
callback (early stopping on validation). The grids are :data:`GRIDS`; the test split is never seen here.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from core.progress import progress
from domains.recommendation.evaluation import evaluate_scores

__all__ = ["MostPopular", "BPRMF", "BPRConfig", "train_bpr", "EASE", "ItemKNN", "SAR", "IALS", "ImplicitBPR", "CornacBPR", "TorchBPR",
           "interaction_matrix", "rows_of", "BASELINES", "GRIDS", "make_baseline", "tune", "TuneResult"]


def interaction_matrix(user_idx: np.ndarray, item_idx: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary (n_users, n_items) CSR matrix, float32 (duplicates count once)."""
    u = np.asarray(user_idx, dtype=np.int64)
    i = np.asarray(item_idx, dtype=np.int64)
    X = sp.csr_matrix((np.ones(len(u), dtype=np.float32), (u, i)), shape=(n_users, n_items))
    X.sum_duplicates()
    X.data[:] = 1.0
    return X


def rows_of(X: sp.csr_matrix) -> list[np.ndarray]:
    """Each row's column indices (a user's items), as int64 arrays."""
    return [X.indices[X.indptr[r]:X.indptr[r + 1]].astype(np.int64) for r in range(X.shape[0])]


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
class MostPopular:
    """Training interaction counts. ``fit(user_idx, item_idx)`` or ``fit(X)``; ``scores(n_users)`` or ``scores(X)``."""

    def __init__(self, n_items: int | None = None):
        self.n_items = n_items
        self.counts = np.zeros(n_items or 0, dtype=np.float64)

    def fit(self, user_idx, item_idx: np.ndarray | None = None) -> "MostPopular":
        if item_idx is None:  # a user × item matrix
            X = user_idx
            self.n_items = X.shape[1]
            self.counts = np.asarray(X.sum(0)).ravel().astype(np.float64)
        else:
            self.counts = np.bincount(item_idx, minlength=self.n_items).astype(np.float64)
        return self

    def scores(self, n_users) -> torch.Tensor:
        n = n_users.shape[0] if sp.issparse(n_users) else int(n_users)
        return torch.as_tensor(self.counts, dtype=torch.float32).expand(n, -1)


class EASE:
    """Embarrassingly Shallow Autoencoder (Steck 2019); dense ``n_items²`` item-item weights."""

    def __init__(self, lam: float = 500.0):
        self.lam = float(lam)
        self.B: np.ndarray | None = None

    def fit(self, X: sp.csr_matrix) -> "EASE":
        G = (X.T @ X).toarray().astype(np.float64)
        G[np.diag_indices_from(G)] += self.lam
        P = np.linalg.inv(G)
        B = P / (-np.diag(P))[None, :]
        B[np.diag_indices_from(B)] = 0.0
        self.B = B.astype(np.float32)
        return self

    def scores(self, X: sp.csr_matrix) -> torch.Tensor:
        return torch.from_numpy(np.asarray(X @ self.B, dtype=np.float32))


def _keep_top_k_per_column(S: np.ndarray, k: int) -> np.ndarray:
    if k >= S.shape[0]:
        return S
    t = torch.from_numpy(S)
    idx = torch.topk(t, k, dim=0).indices
    out = torch.zeros_like(t)
    out.scatter_(0, idx, t.gather(0, idx))
    return out.numpy()


class ItemKNN:
    """Item-based kNN with shrunk cosine similarity; column j holds item j's ``k`` nearest items."""

    def __init__(self, k: int = 100, shrink: float = 10.0):
        self.k, self.shrink = int(k), float(shrink)
        self.S: np.ndarray | None = None

    def fit(self, X: sp.csr_matrix) -> "ItemKNN":
        C = (X.T @ X).toarray().astype(np.float32)
        norms = np.sqrt(np.diag(C)).astype(np.float32)
        S = C / (norms[:, None] * norms[None, :] + self.shrink + 1e-9)
        S[np.diag_indices_from(S)] = 0.0
        self.S = _keep_top_k_per_column(S, self.k)
        return self

    def scores(self, X: sp.csr_matrix) -> torch.Tensor:
        return torch.from_numpy(np.asarray(X @ self.S, dtype=np.float32))


class SAR:
    """SAR (Microsoft Recommenders) on binary affinities, without time decay: item co-occurrence counts
    (pairs seen together by at least ``threshold`` users) → ``jaccard`` / ``lift`` / ``cooccurrence``."""

    def __init__(self, similarity: str = "jaccard", threshold: int = 1):
        if similarity not in ("jaccard", "lift", "cooccurrence"):
            raise ValueError(f"similarity must be jaccard, lift or cooccurrence, got {similarity!r}")
        self.similarity, self.threshold = similarity, int(threshold)
        self.S: np.ndarray | None = None

    def fit(self, X: sp.csr_matrix) -> "SAR":
        C = (X.T @ X).toarray().astype(np.float32)
        C[C < self.threshold] = 0.0
        d = np.diag(C).copy()
        if self.similarity == "jaccard":
            S = C / np.maximum(d[:, None] + d[None, :] - C, 1e-9)
        elif self.similarity == "lift":
            S = C / np.maximum(d[:, None] * d[None, :], 1e-9)
        else:
            S = C
        self.S = S.astype(np.float32)
        return self

    def scores(self, X: sp.csr_matrix) -> torch.Tensor:
        return torch.from_numpy(np.asarray(X @ self.S, dtype=np.float32))


class _ImplicitModel:
    """Shared part of the ``implicit`` wrappers: fit with a per-iteration callback, dense scores."""

    model = None

    def _fit(self, X: sp.csr_matrix, callback: Callable[[int], None] | None = None):
        from threadpoolctl import threadpool_limits

        cb = None if callback is None else (lambda it, *_: callback(it + 1))
        with threadpool_limits(1, "blas"):  # implicit's own advice: its solver is slower with a threaded BLAS
            self.model.fit(sp.csr_matrix(X, dtype=np.float32), show_progress=False, callback=cb)
        return self

    def fit(self, X: sp.csr_matrix, callback: Callable[[int], None] | None = None):
        """``callback(iterations_done)`` runs after every iteration (used for early stopping on validation)."""
        return self._fit(X, callback)

    def scores(self, X: sp.csr_matrix | None = None) -> torch.Tensor:
        U = np.asarray(self.model.user_factors, dtype=np.float32)
        V = np.asarray(self.model.item_factors, dtype=np.float32)
        return torch.from_numpy(U) @ torch.from_numpy(V).T


class IALS(_ImplicitModel):
    """``implicit.cpu.als.AlternatingLeastSquares`` (confidence ``1 + alpha·x``, conjugate gradient)."""

    def __init__(self, factors: int = 64, regularization: float = 0.1, alpha: float = 10.0, iterations: int = 15, seed: int = 0):
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        self.kwargs = {"factors": int(factors), "regularization": float(regularization), "alpha": float(alpha), "iterations": int(iterations)}
        with threadpool_limits(1, "blas"):  # its constructor warns about a threaded BLAS otherwise
            self.model = AlternatingLeastSquares(**self.kwargs, random_state=seed, num_threads=1)


class ImplicitBPR(_ImplicitModel):
    """``implicit.cpu.bpr.BayesianPersonalizedRanking`` (SGD; one extra factor holds the item bias)."""

    def __init__(self, factors: int = 100, learning_rate: float = 0.01, regularization: float = 0.01, iterations: int = 100, seed: int = 0):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        self.kwargs = {"factors": int(factors), "learning_rate": float(learning_rate), "regularization": float(regularization), "iterations": int(iterations)}
        self.model = BayesianPersonalizedRanking(**self.kwargs, random_state=seed, num_threads=1)


class CornacBPR:
    """``cornac.models.BPR`` — the BPR of Microsoft Recommenders' ML-100K table (0.442 NDCG@10 with
    k = 200, 100 iterations, lr 0.01, λ 0.001): SGD per sampled triple, positives drawn uniformly over
    the interactions, negatives uniformly over the items (skipped when seen), item bias, uniform init.
    (``implicit``'s BPR draws negatives in proportion to popularity, which ranks worse here: BENCHMARKS.md.)
    Trained in chunks of ``chunk`` iterations on one model object (its factors and RNG carry over), so
    ``callback(iterations_done)`` can score the model every ``chunk`` iterations (early stopping on
    validation). Optional dependency: ``pip install cornac==3.0.1``."""

    def __init__(self, k: int = 200, learning_rate: float = 0.01, lambda_reg: float = 0.001, max_iter: int = 100, seed: int = 0,
                 chunk: int = 10):
        try:
            import cornac  # noqa: F401
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("the 'bpr_cornac' baseline needs cornac: pip install cornac==3.0.1") from e
        self.kwargs = {"k": int(k), "learning_rate": float(learning_rate), "lambda_reg": float(lambda_reg), "max_iter": int(max_iter)}
        self.seed, self.chunk = seed, int(chunk)
        self.model = None
        self.rows: tuple[np.ndarray, np.ndarray] | None = None  # cornac's internal user / item order -> our rows
        self.shape: tuple[int, int] = (0, 0)

    def fit(self, X: sp.csr_matrix, callback: Callable[[int], None] | None = None) -> "CornacBPR":
        from cornac.data import Dataset
        from cornac.models import BPR

        coo = X.tocoo()
        ds = Dataset.from_uir(list(zip(coo.row.tolist(), coo.col.tolist(), [1.0] * coo.nnz)), seed=self.seed)
        self.rows = (np.array([ds.user_ids[j] for j in range(ds.num_users)], dtype=np.int64),
                     np.array([ds.item_ids[j] for j in range(ds.num_items)], dtype=np.int64))
        self.shape = X.shape
        total = self.kwargs["max_iter"]
        step = min(self.chunk, total) if callback is not None else total
        self.model = BPR(k=self.kwargs["k"], max_iter=step, learning_rate=self.kwargs["learning_rate"], lambda_reg=self.kwargs["lambda_reg"],
                         seed=self.seed, verbose=False)
        done = 0
        while done < total:
            self.model.max_iter = min(step, total - done)
            self.model.fit(ds)  # continues from the current factors (cornac initialises them only once) with fresh samples
            done += self.model.max_iter
            if callback is not None:
                callback(done)
        return self

    def scores(self, X: sp.csr_matrix | None = None) -> torch.Tensor:
        """Dense scores; items without a training interaction rank last, users without one get zeros."""
        m = self.model
        S = np.full(self.shape, -1e9, dtype=np.float32)
        S[np.setdiff1d(np.arange(self.shape[0]), self.rows[0])] = 0.0
        S[np.ix_(self.rows[0], self.rows[1])] = np.asarray(m.u_factors @ m.i_factors.T + m.i_biases[None, :], dtype=np.float32)
        return torch.from_numpy(S)


class TorchBPR:
    """:func:`train_bpr` behind the common ``fit(X)`` / ``scores(X)`` interface."""

    def __init__(self, dim: int = 64, lr: float = 0.005, l2: float = 1e-4, epochs: int = 10, batch_size: int = 1024, optimizer: str = "adam",
                 seed: int = 0):
        self.cfg = BPRConfig(dim=int(dim), epochs=int(epochs), lr=float(lr), l2=float(l2), batch_size=int(batch_size), seed=seed,
                             optimizer=optimizer)
        self.model: BPRMF | None = None

    def fit(self, X: sp.csr_matrix, callback: Callable[[int], None] | None = None) -> "TorchBPR":
        coo = X.tocoo()
        cb = None
        if callback is not None:
            def cb(epoch, model):
                self.model = model
                callback(epoch)
        self.model = train_bpr(coo.row, coo.col, X.shape[0], X.shape[1], self.cfg, show_progress=False, callback=cb)
        return self

    def scores(self, X: sp.csr_matrix | None = None) -> torch.Tensor:
        return self.model.scores()


class BPRMF(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int = 64):
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.normal_(self.user.weight, std=0.01)
        nn.init.normal_(self.item.weight, std=0.01)
        nn.init.zeros_(self.item_bias.weight)

    def score_pairs(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return (self.user(u) * self.item(i)).sum(-1) + self.item_bias(i).squeeze(-1)

    @torch.no_grad()
    def scores(self) -> torch.Tensor:
        return self.user.weight @ self.item.weight.T + self.item_bias.weight.T


@dataclass
class BPRConfig:
    dim: int = 64
    epochs: int = 10
    lr: float = 0.005
    l2: float = 1e-4
    batch_size: int = 1024
    seed: int = 0
    optimizer: str = "adam"  # adam: mean loss, Adam; sgd: cornac's per-sample SGD (summed over the batch, per-sample L2, uniform init)


def train_bpr(user_idx: np.ndarray, item_idx: np.ndarray, n_users: int, n_items: int, cfg: BPRConfig | None = None,
              show_progress: bool = True, callback: Callable[[int, BPRMF], None] | None = None) -> BPRMF:
    """Our BPR-MF: one uniformly sampled unseen negative per positive, Adam, L2 on the touched factors.
    ``callback(epochs_done, model)`` runs after every epoch."""
    cfg = cfg or BPRConfig()
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be adam or sgd, got {cfg.optimizer!r}")
    sgd = cfg.optimizer == "sgd"
    model = BPRMF(n_users, n_items, cfg.dim)
    if sgd:  # cornac's initialisation: uniform(-0.5, 0.5) / k, zero biases
        with torch.no_grad():
            model.user.weight.uniform_(-0.5, 0.5).div_(cfg.dim)
            model.item.weight.uniform_(-0.5, 0.5).div_(cfg.dim)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr) if sgd else torch.optim.Adam(model.parameters(), lr=cfg.lr)
    u_all = torch.as_tensor(np.array(user_idx, dtype=np.int64))
    i_all = torch.as_tensor(np.array(item_idx, dtype=np.int64))
    seen_keys = torch.unique(u_all * n_items + i_all)  # sorted
    n = len(u_all)
    for epoch in progress(range(cfg.epochs), desc="BPR-MF") if show_progress else range(cfg.epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, cfg.batch_size):
            b = perm[s : s + cfg.batch_size]
            u, p = u_all[b], i_all[b]
            neg = torch.randint(0, n_items, (len(b),), generator=g)
            # resample negatives that are actually seen (once; the rest are rare on sparse data)
            key = u * n_items + neg
            pos = torch.searchsorted(seen_keys, key).clamp_max(len(seen_keys) - 1)
            clash = seen_keys[pos] == key
            if clash.any():
                neg[clash] = torch.randint(0, n_items, (int(clash.sum()),), generator=g)
            x = model.score_pairs(u, p) - model.score_pairs(u, neg)
            if sgd:  # the gradient of each sample's term is cornac's SGD step: z·(v_i − v_j) − λ·u, etc.
                sq = (model.user(u).pow(2).sum() + model.item(p).pow(2).sum() + model.item(neg).pow(2).sum()
                      + model.item_bias(p).pow(2).sum() + model.item_bias(neg).pow(2).sum())
                loss = -nn.functional.logsigmoid(x).sum() + 0.5 * cfg.l2 * sq
            else:
                reg = cfg.l2 * (model.user(u).pow(2).sum() + model.item(p).pow(2).sum() + model.item(neg).pow(2).sum()) / len(b)
                loss = -nn.functional.logsigmoid(x).mean() + reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if callback is not None:
            callback(epoch + 1, model.eval())
    return model.eval()


# ---------------------------------------------------------------------------------------------
# registry, grids, tuning on validation
# ---------------------------------------------------------------------------------------------
BASELINES: dict[str, type] = {"most_popular": MostPopular, "ease": EASE, "item_knn": ItemKNN, "sar": SAR, "ials": IALS, "bpr": ImplicitBPR,
                             "bpr_cornac": CornacBPR, "bpr_torch": TorchBPR}
SEEDED = ("ials", "bpr", "bpr_cornac", "bpr_torch")  # constructors that take a seed (model init / negative sampling)
ITERATIVE = {"ials": "iterations", "bpr": "iterations", "bpr_cornac": "max_iter", "bpr_torch": "epochs"}  # evaluated at every count of the grid from one fit

#: validation grids (ML-100K scale; each point is one fit, iteration counts share a fit)
GRIDS: dict[str, dict[str, list]] = {
    "most_popular": {},
    "ease": {"lam": [50.0, 100.0, 200.0, 300.0, 500.0, 800.0, 1500.0]},
    "item_knn": {"k": [20, 50, 100, 200, 400], "shrink": [0.0, 10.0, 50.0, 100.0]},
    "sar": {"similarity": ["jaccard", "lift", "cooccurrence"], "threshold": [1, 2]},
    "ials": {"factors": [32, 64, 128], "regularization": [0.01, 0.1, 1.0], "alpha": [1.0, 5.0, 20.0], "iterations": [5, 10, 15, 25]},
    "bpr": {"factors": [64, 200], "learning_rate": [0.01, 0.05], "regularization": [0.001, 0.01], "iterations": [25, 50, 100, 200]},
    "bpr_cornac": {"k": [200], "learning_rate": [0.01], "lambda_reg": [0.001, 0.01], "max_iter": [50, 100, 200, 300]},
    "bpr_torch": {"dim": [64, 128], "lr": [0.001, 0.005], "l2": [1e-5, 1e-4, 1e-3], "epochs": [5, 10, 20, 40]},
}


def make_baseline(name: str, seed: int = 0, **kwargs):
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {sorted(BASELINES)}")
    if name == "most_popular":
        return MostPopular()
    return BASELINES[name](**kwargs, seed=seed) if name in SEEDED else BASELINES[name](**kwargs)


@dataclass
class TuneResult:
    name: str
    params: dict  # the chosen hyper-parameters
    valid_metric: float  # their validation score
    trials: list[dict]  # every grid point: params + validation metric
    seconds: float


def tune(name: str, X_fit: sp.csr_matrix, valid_truth: list[np.ndarray], k: int = 10, grid: dict[str, list] | None = None,
         seed: int = 0, metric: str | None = None, show_progress: bool = False) -> TuneResult:
    """Fit ``name`` on ``X_fit`` at every point of ``grid`` (default :data:`GRIDS`), rank with the fitted
    items excluded, and keep the point with the best validation ``metric`` (default NDCG@k)."""
    grid = GRIDS[name] if grid is None else grid
    metric = metric or f"ndcg@{k}"
    seen = rows_of(X_fit)
    n_items = X_fit.shape[1]
    it_key = ITERATIVE.get(name)
    fixed_keys = [g for g in grid if g != it_key]
    points = [dict(zip(fixed_keys, vals)) for vals in itertools.product(*(grid[g] for g in fixed_keys))]
    trials: list[dict] = []
    t0 = time.perf_counter()
    for p in progress(points, desc=f"tune {name}") if show_progress else points:
        if it_key and grid.get(it_key):
            checkpoints = sorted(grid[it_key])
            model = make_baseline(name, seed=seed, **p, **{it_key: checkpoints[-1]})

            def at(it, model=model, p=p, checkpoints=checkpoints):
                if it in checkpoints:
                    m = evaluate_scores(model.scores(X_fit), seen, valid_truth, n_items, k)[metric]
                    trials.append({**p, it_key: it, metric: m})

            model.fit(X_fit, callback=at)
        else:
            model = make_baseline(name, seed=seed, **p).fit(X_fit)
            trials.append({**p, metric: evaluate_scores(model.scores(X_fit), seen, valid_truth, n_items, k)[metric]})
    best = max(trials, key=lambda r: r[metric])
    params = {key: v for key, v in best.items() if key != metric}
    return TuneResult(name=name, params=params, valid_metric=float(best[metric]), trials=trials, seconds=time.perf_counter() - t0)
