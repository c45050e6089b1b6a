"""Baselines trained and scored in the same run as the two-tower model.

* :class:`MostPopular` — items ranked by training interaction count (the same for every user).
* :class:`BPRMF` — Bayesian Personalised Ranking matrix factorisation (Rendle et al., UAI 2009):
  user·item dot product plus item bias, one uniformly sampled unseen negative per positive, Adam,
  L2 on the touched factors. Defaults follow the Microsoft Recommenders ML-100K notebook in spirit
  (cornac BPR: 200 factors, lr 0.01, λ 0.01, 100 epochs); ours uses Adam, 64 factors and 10 epochs (on
  ML-100K protocol ms it peaks near 10 epochs: NDCG@10 0.394 at 10, 0.383 at 20) and reports its own NDCG
  in the same run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.progress import progress

__all__ = ["MostPopular", "BPRMF", "BPRConfig", "train_bpr"]


class MostPopular:
    def __init__(self, n_items: int):
        self.n_items = n_items
        self.counts = np.zeros(n_items, dtype=np.float64)

    def fit(self, user_idx: np.ndarray, item_idx: np.ndarray) -> "MostPopular":
        self.counts = np.bincount(item_idx, minlength=self.n_items).astype(np.float64)
        return self

    def scores(self, n_users: int) -> torch.Tensor:
        return torch.as_tensor(self.counts, dtype=torch.float32).expand(n_users, -1)


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


def train_bpr(user_idx: np.ndarray, item_idx: np.ndarray, n_users: int, n_items: int, cfg: BPRConfig | None = None,
              show_progress: bool = True) -> BPRMF:
    cfg = cfg or BPRConfig()
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = BPRMF(n_users, n_items, cfg.dim)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    u_all = torch.as_tensor(np.array(user_idx, dtype=np.int64))
    i_all = torch.as_tensor(np.array(item_idx, dtype=np.int64))
    seen_keys = torch.unique(u_all * n_items + i_all)  # sorted
    n = len(u_all)
    for _ in progress(range(cfg.epochs), desc="BPR-MF") if show_progress else range(cfg.epochs):
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
            reg = cfg.l2 * (model.user(u).pow(2).sum() + model.item(p).pow(2).sum() + model.item(neg).pow(2).sum()) / len(b)
            loss = -nn.functional.logsigmoid(x).mean() + reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()
