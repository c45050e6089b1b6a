"""Sequence-aware recommendation for the temporal protocol: a SASRec-style causal transformer over
each user's ordered history.

    item vector  e(i) = TorchRec EmbeddingCollection[item_id](i) + W·MiniLM(title, year, genres)(i)
    user state   h_t  = causal self-attention blocks over e(s_1) + p_1, …, e(s_t) + p_t   (positions p)
    score(t, j)  = h_t · e(j) / temperature   (input and output item vectors are the same table, as SASRec)

The user's "tower" is the hidden state at the last position; item vectors are shared with the input,
so serving is the same ``U @ Vᵀ`` as the two-tower (:func:`user_item_vectors`).

Losses (``SequenceConfig.loss``), each over every real position of every sequence in the batch:

* ``sampled_softmax`` (the model of this module): the two-tower's in-batch sampled softmax with
  log-Q correction (Yi et al. 2019) — the candidates are the distinct target items of the batch,
  each logit minus ``logq_weight · log Q(j)`` (Q = the item's share of training targets);
* ``bce``: SASRec's original loss (Kang & McAuley, ICDM 2018): one uniformly sampled negative per position;
* ``ce``: full softmax over the catalogue (Klenitskiy & Vasilev, RecSys 2023).

``item_table="plain"`` with ``text_dim=0`` and ``loss="bce"`` is the plain SASRec reference
(its own ``nn.Embedding``, no text).

Protocol (:func:`leave_last_out_split`): the project's ``leave-last-out`` split and its validation split
(:func:`domains.recommendation.data.split_interactions` / ``validation_split``): per user, interactions
ordered by time (ties: file order), the last item is the test target, the second-to-last the
validation target, the rest the training sequence. Training uses
the training sequences only; validation chooses the epoch (early stopping on NDCG@10); the test
input is the sequence up to and including the validation item. Every evaluation ranks the FULL
catalogue (no sampled negatives) with the user's input items removed (:func:`evaluate_next_item`).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor

from core.progress import progress
from domains.recommendation.data import LEAVE_LAST_OUT, check_split_sizes, group_by_user, split_interactions, validation_split
from domains.recommendation.metrics import ranking_metrics, top_k
from domains.recommendation.model import FeatureSpace, model_spec, register_model

__all__ = ["SequenceConfig", "SequenceModel", "LeaveLastOut", "leave_last_out_split", "train_sequence_model", "evaluate_next_item",
           "user_item_vectors", "causal_mask", "text_init", "SEQ_FEATURE", "SequenceTrainConfig", "sequence_loss", "tiled_windows",
           "OURS", "REFERENCE", "TRAIN", "train_and_evaluate", "LeaveLastOutData", "load_leave_last_out", "fit_and_test"]

SEQ_FEATURE = "item_seq"

# The measured settings (bench/recommendation.py --part sequential; chosen on validation, see the domain README,
# "Sequence model"): the sequence model, the plain SASRec reference and the training budget rule of both.
_COMMON = dict(max_len=50, dim=64, heads=2, layers=2, dropout=0.2, temperature=0.1)
# loss "ce" (full-catalogue softmax; session 4, chosen on validation: seed-0 0.1347 vs 0.1305 with the sampled softmax over the
# batch's targets + 1,000 uniform items, which stays available: loss="sampled_softmax"; negatives/correction are unused with "ce")
OURS = dict(_COMMON, text_dim=384, item_table="torchrec", loss="ce", negatives=1000, correction="inclusion")
REFERENCE = dict(_COMMON, text_dim=0, item_table="plain", loss="ce")
TRAIN = dict(epochs=40, patience=5, batch_size=64, lr=2e-3, windows="all")  # the same budget rule for both models (on ML-100K both stopped after 26-33 epochs)


# ---------------------------------------------------------------------------------------------
# protocol: leave-last-out with the second-to-last item for validation
# ---------------------------------------------------------------------------------------------
@dataclass
class LeaveLastOut:
    """Per user row: the ordered item rows of each part (empty arrays for users too short to split)."""

    train: list[np.ndarray]  # s[:-2]
    valid: list[np.ndarray]  # [s[-2]]
    test: list[np.ndarray]  # [s[-1]]
    n_items: int

    def history(self, part: str) -> list[np.ndarray]:
        """Model input for predicting ``part``: train → s[:-2] (for valid), test → s[:-1]."""
        if part == "valid":
            return self.train
        if part == "test":
            return [np.concatenate([t, v]) for t, v in zip(self.train, self.valid)]
        raise ValueError(f"part must be 'valid' or 'test', got {part!r}")


    @classmethod
    def from_frames(cls, fit: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame, user_index: dict, item_index: dict) -> "LeaveLastOut":
        """From the frames of :func:`domains.recommendation.data.split_interactions` (``leave-last-out``:
        its train part → ``fit`` + ``valid`` through :func:`domains.recommendation.data.validation_split`,
        its test part → ``test``). ``fit`` rows are ordered by time per user (ties in file order, as
        those functions order them)."""
        n_users, n_items = len(user_index), len(item_index)

        def per_user(df: pd.DataFrame) -> list[np.ndarray]:
            df = df.assign(_pos=np.arange(len(df))).sort_values(["timestamp", "_pos"], kind="stable")
            u = df["user_id"].map(user_index).to_numpy(np.int64)
            i = df["item_id"].map(item_index).to_numpy(np.int64)
            return group_by_user(u, i, n_users)

        return cls(per_user(fit), per_user(valid), per_user(test), n_items)


def leave_last_out_split(inter: pd.DataFrame, user_index: dict, item_index: dict, source: str = "interactions") -> LeaveLastOut:
    """The project's ``leave-last-out`` split (test = each user's last interaction) with its validation
    split (the last interaction of the training part), as per-user ordered item rows; :class:`SplitError`
    when either is empty (users with too few interactions)."""
    split = split_interactions(inter, LEAVE_LAST_OUT)
    valid = validation_split(split.train, LEAVE_LAST_OUT)
    check_split_sizes(split, valid, source)
    return LeaveLastOut.from_frames(valid.train, valid.test, split.test, user_index, item_index)


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------
@dataclass
class SequenceConfig:
    max_len: int = 100  # positions attended (the latest max_len items of a history)
    dim: int = 64
    heads: int = 2
    layers: int = 2
    dropout: float = 0.2
    text_dim: int = 384  # 0: no item text
    item_table: str = "torchrec"  # torchrec (EmbeddingCollection over a KeyedJaggedTensor) | plain (nn.Embedding)
    loss: str = "sampled_softmax"  # sampled_softmax | bce | ce
    temperature: float = 0.1  # scores are cosine / temperature when normalize, else raw dot products
    normalize: bool = True
    logq_weight: float = 1.0
    # sampled_softmax candidates: the distinct targets of the batch plus ``negatives`` items drawn uniformly
    # without replacement (mixed negative sampling, Yang et al. 2020); the correction subtracts
    # ``logq_weight · log P(item is a candidate)`` (``correction="inclusion"``: 1 − (1 − M/n)(1 − q)^N for
    # N targets, M uniform draws out of n items) or ``log q`` (``"frequency"``, the two-tower's in-batch form)
    negatives: int = 0
    correction: str = "frequency"  # frequency | inclusion
    text_dropout: float = 0.0  # dropout on the projected text vector (training only)
    id_init: str = "normal"  # normal: N(0, 0.05²) id embeddings | text: the text vectors' top ``dim`` principal components (same scale)


def causal_mask(lengths: torch.Tensor, L: int) -> torch.Tensor:
    """(B, 1, L, L) boolean "may attend" for left-padded sequences: query t sees real keys ≤ t; a
    padding query sees only itself (so no row is empty)."""
    pos = torch.arange(L)
    causal = pos[None, :] <= pos[:, None]  # [query, key]
    real = pos[None, :] >= (L - lengths)[:, None]  # (B, L) key is a real item
    allowed = causal[None] & real[:, None, :]
    allowed |= torch.eye(L, dtype=torch.bool)[None]
    return allowed[:, None]


def text_init(text: torch.Tensor, dim: int, std: float = 0.05) -> torch.Tensor:
    """(n_items, dim) initial id embeddings from item text vectors: the centred text projected on its top
    ``dim`` principal components, scaled to an overall standard deviation ``std`` (the random init's), so
    items with similar titles/genres start close together. Deterministic (no random draw)."""
    x = text.float() - text.float().mean(0, keepdim=True)
    _, _, vt = torch.linalg.svd(x, full_matrices=False)
    z = x @ vt[:dim].T
    if z.shape[1] < dim:  # fewer text dimensions than the model width: pad with zeros
        z = F.pad(z, (0, dim - z.shape[1]))
    return z * (std / z.std().clamp(min=1e-12))


class _Block(nn.Module):
    """Pre-norm transformer block (nanoGPT style): x + attn(LN x), x + FFN(LN x); the point-wise FFN
    keeps the model width, as SASRec's does (not the 4× of language models)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=2)
        q, k, v = (t.view(B, L, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, L, D)))
        return x + self.mlp(self.ln2(x))


class SequenceModel(nn.Module):
    """Causal transformer user tower over item vectors (see module docstring). Item row ``r`` is table
    index ``r + 1``; index 0 is padding / unknown. Registry name ``sasrec`` (:func:`create_model`)."""

    name = "sasrec"

    def __init__(self, n_items: int, cfg: SequenceConfig | None = None, text: torch.Tensor | None = None):
        super().__init__()
        cfg = cfg or SequenceConfig()
        if cfg.item_table not in ("torchrec", "plain") or cfg.loss not in ("sampled_softmax", "bce", "ce") \
                or cfg.correction not in ("frequency", "inclusion") or cfg.id_init not in ("normal", "text"):
            raise ValueError(f"item_table must be torchrec|plain, loss sampled_softmax|bce|ce, correction frequency|inclusion and id_init "
                             f"normal|text, got {cfg.item_table!r}, {cfg.loss!r}, {cfg.correction!r}, {cfg.id_init!r}")
        if cfg.id_init == "text" and not cfg.text_dim:
            raise ValueError("id_init='text' needs item text (text_dim > 0)")
        if cfg.text_dim and (text is None or text.shape != (n_items, cfg.text_dim)):
            raise ValueError(f"text_dim={cfg.text_dim} needs an ({n_items}, {cfg.text_dim}) item text tensor, got "
                             f"{None if text is None else tuple(text.shape)}")
        self.cfg, self.n_items = cfg, n_items
        if cfg.item_table == "torchrec":
            self.item_ec = EmbeddingCollection(tables=[EmbeddingConfig(name="t_item_seq", embedding_dim=cfg.dim, num_embeddings=n_items + 1,
                                                                       feature_names=[SEQ_FEATURE])], device=torch.device("cpu"))
            for p in self.item_ec.parameters():
                nn.init.normal_(p, std=0.05)
        else:
            self.item_emb = nn.Embedding(n_items + 1, cfg.dim)
            nn.init.normal_(self.item_emb.weight, std=0.05)
        if cfg.id_init == "text":
            with torch.no_grad():
                self._id_table()[1:] = text_init(text, cfg.dim, std=0.05)
        if cfg.text_dim:
            self.register_buffer("text", torch.cat([torch.zeros(1, cfg.text_dim), text.float()]), persistent=True)
            self.text_proj = nn.Linear(cfg.text_dim, cfg.dim)
            self.text_drop = nn.Dropout(cfg.text_dropout)
        else:
            self.text_proj = None
        self.pos = nn.Embedding(cfg.max_len, cfg.dim)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([_Block(cfg.dim, cfg.heads, cfg.dropout) for _ in range(cfg.layers)])
        self.ln = nn.LayerNorm(cfg.dim)

    def model_kwargs(self) -> dict:
        return asdict(self.cfg)

    def _id_table(self) -> torch.Tensor:
        """The (n_items + 1, dim) id-embedding weight (row 0 = padding)."""
        if self.cfg.item_table == "torchrec":
            return self.item_ec.embeddings["t_item_seq"].weight
        return self.item_emb.weight

    def spec(self) -> dict:
        """``{"name": "sasrec", "kwargs"}``: what :func:`domains.recommendation.model.create_model` needs
        (with the run's FeatureSpace) to rebuild this model; the item text vectors are a buffer of its weights."""
        return model_spec(self.name, self.model_kwargs())

    # item vectors -------------------------------------------------------------------------
    def _id_vectors(self, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Id embeddings of flat table indices (one jagged feature: ``lengths`` per row)."""
        if self.cfg.item_table == "torchrec":
            kjt = KeyedJaggedTensor(keys=[SEQ_FEATURE], values=values, lengths=lengths.to(torch.int32))
            return self.item_ec(kjt)[SEQ_FEATURE].values()
        return self.item_emb(values)

    def item_vectors(self, table_idx: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(N, dim) vectors of flat table indices (0 = padding gives the zero-text id-0 vector)."""
        lengths = torch.tensor([len(table_idx)]) if lengths is None else lengths
        e = self._id_vectors(table_idx, lengths)
        if self.text_proj is not None:
            e = e + self.text_drop(self.text_proj(self.text[table_idx]))
        return e

    def all_item_vectors(self) -> torch.Tensor:
        """(n_items, dim) output vectors of item rows 0..n_items-1 (normalised when ``cfg.normalize``)."""
        v = self.item_vectors(torch.arange(1, self.n_items + 1))
        return F.normalize(v, dim=-1) if self.cfg.normalize else v

    # sequences ----------------------------------------------------------------------------
    def forward(self, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Jagged item-table indices (oldest first per row, ≤ max_len each) → (B, L, dim) hidden states,
        left-padded: row b's latest item sits at position L-1."""
        B, L = len(lengths), self.cfg.max_len
        lengths = lengths.long()
        if int(lengths.max()) > L:
            raise ValueError(f"a sequence is longer than max_len={L}; cut it first")
        e = self.item_vectors(values, lengths) * math.sqrt(self.cfg.dim)
        row = torch.repeat_interleave(torch.arange(B), lengths)
        start = torch.cumsum(lengths, 0) - lengths
        col = torch.arange(len(values)) - start[row] + (L - lengths)[row]
        x = torch.zeros(B * L, self.cfg.dim, dtype=e.dtype)
        x = x.index_copy(0, row * L + col, e).view(B, L, -1)
        real = (torch.arange(L)[None, :] >= (L - lengths)[:, None]).unsqueeze(-1)
        x = self.drop((x + self.pos.weight[None]) * real)
        mask = causal_mask(lengths, L)
        for blk in self.blocks:
            x = blk(x, mask) * real
        h = self.ln(x)
        return F.normalize(h, dim=-1) if self.cfg.normalize else h

    def last_state(self, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, dim) user vectors: the hidden state at each row's latest item."""
        return self.forward(values, lengths)[:, -1]


def _jagged(seqs: list[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Latest ``max_len`` items of each sequence as table indices (item row + 1), flat + lengths."""
    cut = [s[-max_len:] for s in seqs]
    lengths = torch.tensor([len(s) for s in cut], dtype=torch.long)
    values = torch.as_tensor(np.concatenate(cut).astype(np.int64) + 1 if len(cut) else np.empty(0, np.int64))
    return values, lengths


@torch.no_grad()
def user_item_vectors(model: SequenceModel, histories: list[np.ndarray], batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, V): one vector per history (its last hidden state; zeros for an empty history) and per item."""
    was = model.training
    model.eval()
    out = torch.zeros(len(histories), model.cfg.dim)
    nonempty = [r for r, h in enumerate(histories) if len(h)]
    for s in range(0, len(nonempty), batch):
        rows = nonempty[s:s + batch]
        v, ln = _jagged([histories[r] for r in rows], model.cfg.max_len)
        out[rows] = model.last_state(v, ln)
    V = model.all_item_vectors()
    model.train(was)
    return out, V


def evaluate_next_item(scores: torch.Tensor, histories: list[np.ndarray], targets: list[np.ndarray], k: int = 10) -> dict[str, float]:
    """FULL ranking: every catalogue item is scored, the user's input items are removed, the rest is
    ranked; metrics from :func:`domains.recommendation.metrics.ranking_metrics` (``hr@k`` = recall@k
    with one target). Users without a target are skipped."""
    if scores.shape[0] != len(targets):
        raise ValueError(f"scores has {scores.shape[0]} rows but there are {len(targets)} users")
    recs, _ = top_k(scores, k, histories)
    m = ranking_metrics(recs, targets, scores.shape[1], k)
    m[f"hr@{k}"] = m[f"recall@{k}"]
    return m


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
@dataclass
class SequenceTrainConfig:
    epochs: int = 60  # upper bound; early stopping on validation NDCG@10 picks the epoch
    patience: int = 8  # epochs without a validation improvement before stopping
    batch_size: int = 128  # sequences per batch
    lr: float = 1e-3
    weight_decay: float = 0.0
    k: int = 10
    seed: int = 0
    windows: str = "random"  # random: one window of ≤ max_len+1 items per user and epoch | all: tile the whole sequence


def sequence_loss(model: SequenceModel, h: torch.Tensor, targets: torch.Tensor, log_q: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Training loss of ``h`` (N, dim) states against ``targets`` (N,) item rows (``cfg.loss``); ``log_q``
    (n_items,) is the log share of each item among the training targets, ``g`` draws the negatives."""
    cfg = model.cfg
    if cfg.loss == "ce":
        V = model.all_item_vectors()
        return F.cross_entropy(h @ V.T / (cfg.temperature if cfg.normalize else 1.0), targets)
    if cfg.loss == "bce":
        neg = torch.randint(0, model.n_items, targets.shape, generator=g)
        vv = model.item_vectors(torch.cat([targets, neg]) + 1)
        if cfg.normalize:
            vv = F.normalize(vv, dim=-1)
        vp, vn = vv.split(len(targets))
        scale = cfg.temperature if cfg.normalize else 1.0
        pos, negs = (h * vp).sum(-1) / scale, (h * vn).sum(-1) / scale
        return F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + F.binary_cross_entropy_with_logits(negs, torch.zeros_like(negs))
    # sampled softmax over the distinct target items of the batch (+ ``negatives`` uniform draws), log-Q corrected
    n, m = model.n_items, min(cfg.negatives, model.n_items)
    cand = torch.cat([targets, torch.randperm(n, generator=g)[:m]]) if m else targets
    uniq, inv = torch.unique(cand, return_inverse=True)
    label = inv[:len(targets)]
    v = model.item_vectors(uniq + 1)
    if cfg.normalize:
        v = F.normalize(v, dim=-1)
    logits = h @ v.T / (cfg.temperature if cfg.normalize else 1.0)
    if cfg.logq_weight:
        if cfg.correction == "inclusion":  # P(j among the candidates) for N targets drawn by q and m uniform draws
            q = log_q[uniq].exp()
            p = 1.0 - (1.0 - m / n) * torch.exp(len(targets) * torch.log1p(-q.clamp(max=1 - 1e-6)))
            corr = torch.log(p.clamp(min=1e-12))
        else:
            corr = log_q[uniq]
        logits = logits - cfg.logq_weight * corr[None, :]
    return F.cross_entropy(logits, label)


def _training_windows(seqs: list[np.ndarray], max_len: int, g: np.random.Generator) -> list[np.ndarray]:
    """One window of ≤ max_len + 1 items per sequence; long sequences get a random window (a fresh one
    every epoch), so their early items are trained on too."""
    out = []
    for s in seqs:
        if len(s) <= max_len + 1:
            out.append(s)
        else:
            end = int(g.integers(max_len + 1, len(s) + 1))
            out.append(s[end - max_len - 1:end])
    return out


def tiled_windows(seqs: list[np.ndarray], max_len: int) -> list[np.ndarray]:
    """Every sequence tiled into windows of ≤ max_len + 1 items from its end backwards (consecutive
    windows share one item), so every training target is predicted once per epoch."""
    out = []
    for s in seqs:
        end = len(s)
        while end >= 2:
            out.append(s[max(0, end - max_len - 1):end])
            end -= max_len
    return out


def train_sequence_model(split: LeaveLastOut, cfg: SequenceConfig, tcfg: SequenceTrainConfig, text: torch.Tensor | None = None,
                         show_progress: bool = False, on_epoch: Callable[[int, float, float], None] | None = None) -> tuple[SequenceModel, dict]:
    """Train on ``split.train`` sequences (every position predicts the next item), evaluate NDCG@k on
    the validation targets after every epoch, keep the best epoch's weights, stop after ``patience``
    epochs without improvement. Returns the best model and a history dict (per-epoch loss and
    validation NDCG, the chosen epoch). ``on_epoch(epoch, loss, valid_ndcg)`` is called each epoch."""
    if tcfg.windows not in ("random", "all"):
        raise ValueError(f"windows must be random|all, got {tcfg.windows!r}")
    torch.manual_seed(tcfg.seed)
    g = torch.Generator().manual_seed(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed)
    model = SequenceModel(split.n_items, cfg, text if cfg.text_dim else None)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    counts = np.bincount(np.concatenate([s[1:] for s in split.train if len(s) > 1] or [np.empty(0, np.int64)]), minlength=split.n_items)
    log_q = torch.as_tensor(np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1)), dtype=torch.float32)
    users = [r for r, s in enumerate(split.train) if len(s) >= 2]
    valid_hist = split.history("valid")
    best, best_state, best_epoch, bad = -1.0, None, 0, 0
    hist: dict = {"loss": [], "valid_ndcg": []}
    t0 = time.perf_counter()
    epochs = progress(range(tcfg.epochs), desc=f"seq[{cfg.loss}]") if show_progress else range(tcfg.epochs)
    for epoch in epochs:
        model.train()
        order = rng.permutation(users)
        if tcfg.windows == "all":
            windows = tiled_windows([split.train[r] for r in order], cfg.max_len)
            windows = [windows[i] for i in rng.permutation(len(windows))]
        else:
            windows = _training_windows([split.train[r] for r in order], cfg.max_len, rng)
        tot, n = 0.0, 0
        for s in range(0, len(windows), tcfg.batch_size):
            w = windows[s:s + tcfg.batch_size]
            inp_v, inp_l = _jagged([x[:-1] for x in w], cfg.max_len)
            H = model(inp_v, inp_l)  # (B, L, d)
            L = cfg.max_len
            real = torch.arange(L)[None, :] >= (L - inp_l)[:, None]
            tgt = torch.as_tensor(np.concatenate([x[1:] for x in w]).astype(np.int64))  # same order as real positions, row-major
            loss = sequence_loss(model, H[real], tgt, log_q, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot, n = tot + float(loss.detach()) * len(tgt), n + len(tgt)
        U, V = user_item_vectors(model, valid_hist)
        ndcg = evaluate_next_item(U @ V.T, valid_hist, split.valid, tcfg.k)[f"ndcg@{tcfg.k}"]
        hist["loss"].append(tot / max(n, 1))
        hist["valid_ndcg"].append(ndcg)
        if on_epoch is not None:
            on_epoch(epoch + 1, tot / max(n, 1), ndcg)
        if ndcg > best:
            best, best_state, best_epoch, bad = ndcg, copy.deepcopy(model.state_dict()), epoch + 1, 0
        else:
            bad += 1
            if bad >= tcfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    hist.update({"best_epoch": best_epoch, "best_valid_ndcg": best, "epochs_run": len(hist["loss"]), "seconds": time.perf_counter() - t0,
                 "config": asdict(cfg), "train_config": asdict(tcfg)})
    return model.eval(), hist


@register_model(SequenceModel.name)
def _sasrec(space: FeatureSpace, device: torch.device | str = "cpu", **kwargs) -> SequenceModel:
    """Registry builder: the text buffer starts at zeros and is filled by the run's saved weights."""
    cfg = SequenceConfig(**kwargs)
    return SequenceModel(space.n_items, cfg, torch.zeros(space.n_items, cfg.text_dim) if cfg.text_dim else None)


# ---------------------------------------------------------------------------------------------
# one training run: data → split → train (validation early stopping) → test once → artifacts
# ---------------------------------------------------------------------------------------------
@dataclass
class LeaveLastOutData:
    """A data set under leave-last-out: its feature space, the split and the item text vectors."""

    space: FeatureSpace
    split: LeaveLastOut
    text: torch.Tensor | None


def load_leave_last_out(data: str, with_text: bool = True, date_order: str = "auto", columns: dict | None = None,
                        items: str | None = None, users: str | None = None) -> LeaveLastOutData:
    """``data`` (``ml-100k``, a MovieLens folder or an interaction file) split leave-last-out, with the
    MiniLM item text vectors when ``with_text`` — what the command and the bench both start from
    (``date_order``: how day/month timestamps are read, ``columns``, ``items``, ``users``: the file's own field names and tables, :func:`domains.recommendation.data.load_dataset`)."""
    from domains.recommendation.data import LEAVE_LAST_OUT, load_dataset, require_timestamps
    from domains.recommendation.model import item_text_embeddings, item_texts

    inter = load_dataset(data, date_order=date_order, columns=columns, items=items, users=users)
    require_timestamps(inter, LEAVE_LAST_OUT, f"--data {data}", needed_by=" (train_sequential's next-item protocol)")
    space = FeatureSpace.build(inter.users, inter.items)
    split = leave_last_out_split(inter.interactions, space.user_index(), space.item_index(), source=f"--data {data}")
    return LeaveLastOutData(space, split, item_text_embeddings(item_texts(inter.items)) if with_text else None)


def fit_and_test(split: LeaveLastOut, cfg: SequenceConfig, tcfg: SequenceTrainConfig, text: torch.Tensor | None = None,
                 show_progress: bool = False, on_epoch: Callable[[int, float, float], None] | None = None
                 ) -> tuple[SequenceModel, dict, dict[str, float]]:
    """Train with validation early stopping (:func:`train_sequence_model`), then score the test items once
    with FULL ranking; returns the model, its training history and the test metrics at ``tcfg.k``."""
    model, hist = train_sequence_model(split, cfg, tcfg, text if cfg.text_dim else None, show_progress=show_progress, on_epoch=on_epoch)
    test_hist = split.history("test")
    U, V = user_item_vectors(model, test_hist)
    return model, hist, evaluate_next_item(U @ V.T, test_hist, split.test, tcfg.k)


def train_and_evaluate(data: str, cfg: SequenceConfig, tcfg: SequenceTrainConfig, run=None, show_progress: bool = True,
                       loaded: LeaveLastOutData | None = None) -> dict:
    """Train the sequence model on ``data`` (``ml-100k``, a MovieLens folder or an interaction file)
    under leave-last-out, choose the epoch on the validation items, evaluate the test items once
    (FULL ranking) next to most-popular on the same test input. With a :class:`core.runs.Run`, logs
    per-epoch ``loss`` / ``valid_ndcg@k`` and writes ``model.safetensors``, ``model.json`` (registry
    spec), ``feature_space.json``, ``validation_curve.json`` and ``eval_metrics.json`` into it.
    Returns the summary metrics (the run's ``metrics.json`` when the caller finishes the run with them).
    ``loaded``: ``data`` already read by :func:`load_leave_last_out` (the command reads it before the run starts)."""
    from core.checkpoint import save_weights
    from core.io import atomic_write_json

    d = load_leave_last_out(data, with_text=bool(cfg.text_dim)) if loaded is None else loaded
    space, split, text = d.space, d.split, d.text
    if text is not None and text.shape[1] != cfg.text_dim:
        cfg = SequenceConfig(**{**asdict(cfg), "text_dim": int(text.shape[1])})
    k = tcfg.k

    def on_epoch(epoch: int, loss: float, ndcg: float) -> None:
        if run is not None:
            run.log_metrics({"loss": loss, f"valid_ndcg@{k}": ndcg}, step=epoch)

    model, hist, ours = fit_and_test(split, cfg, tcfg, text, show_progress=show_progress, on_epoch=on_epoch)
    test_hist = split.history("test")
    pop = np.bincount(np.concatenate(test_hist), minlength=split.n_items).astype(np.float32)
    most_popular = evaluate_next_item(torch.as_tensor(pop)[None].expand(len(test_hist), -1), test_hist, split.test, k)
    summary = {f"ndcg@{k}": ours[f"ndcg@{k}"], f"hr@{k}": ours[f"hr@{k}"], f"valid_ndcg@{k}": hist["best_valid_ndcg"],
               "best_epoch": hist["best_epoch"], "epochs_run": hist["epochs_run"], "train_seconds": hist["seconds"],
               f"most_popular/ndcg@{k}": most_popular[f"ndcg@{k}"], f"most_popular/hr@{k}": most_popular[f"hr@{k}"],
               "protocol": "leave-last-out (validation = second-to-last item), full ranking", "data": data,
               "test_users": int(sum(len(t) > 0 for t in split.test))}
    if run is not None:
        save_weights(run.path("model.safetensors"), model, metadata={"format": "sasrec-v1"})
        atomic_write_json(run.path("model.json"), {**model.spec(), "k": k})
        atomic_write_json(run.path("feature_space.json"), space.to_dict())
        atomic_write_json(run.path("validation_curve.json"), {"valid_ndcg": hist["valid_ndcg"], "loss": hist["loss"],
                                                             "best_epoch": hist["best_epoch"], f"valid_ndcg@{k}": hist["best_valid_ndcg"]})
        atomic_write_json(run.path("eval_metrics.json"), {"sequence_model": ours, "most_popular": most_popular})
    return summary
