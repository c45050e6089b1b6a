"""Two-tower retrieval model on TorchRec.

    user tower: EmbeddingBagCollection[user_id, age_bucket, gender, occupation, history] -> MLP -> L2-normalised u
                (history = the user's TRAINING items as one bag, YouTube-DNN style: mean-pooled by default; ``sqrt``
                 = sum / sqrt(n); ``weighted`` = a learned per-item weight, softmax within the bag, ``history_heads``
                 such weightings concatenated. The training target is removed from its own input; history dropout)
    item tower: EmbeddingBagCollection[item_id, genres (multi-hot bag, mean), year_bucket]
                + MiniLM title embedding (384-d, precomputed once and cached)      -> MLP -> L2-normalised v
    score(u, v) = u·v / temperature

Wide and deep (``TwoTowerConfig.wide``, ``train --wide``): a fixed linear item-item part is added to the towers' score,

    logit(u, j) = u_deep·v_j / temperature + g · x_u·B[:, j]

``x_u`` the user's history as a multi-hot vector, ``B`` EASE's closed form (Steck 2019) fitted on the training rows of
the phase (training.py: never validation or test rows) and kept fixed (a buffer, saved with the weights), ``g`` a gain
(``exp`` of a scalar). How ``g`` and the towers are trained is training.py's ``--wide-mode``: ``blend`` (the towers train
exactly as without the wide part, ``g`` is chosen on the validation split with the epoch) or ``joint`` (the wide scores
enter the training loss, ``g`` is learned and the towers learn the residual; optionally ``wide_gate``: the towers' score ×
a learned scalar that starts at 0).
Serving stays a dot product: ``user_embedding`` = ``[u_deep ; temperature·g·x_u]``, ``item_embedding`` = ``[v_deep ; B[:, j]]``
(so u·v = temperature × logit); :meth:`TwoTower.deep_part` strips the wide columns (similar items use the deep space).
``B`` is dense ``n_items²`` floats: training.py turns the wide part off above ``--wide-max-items``.

Sparse features enter as one :class:`torchrec.KeyedJaggedTensor` per tower, so the same module
trains unsharded on one process or sharded by :class:`torchrec.distributed.DistributedModelParallel`
(``train.py --dmp``). Index 0 of every table is "unknown": unseen users/items/feature values map
there, and ``id_dropout`` replaces a fraction of training ids by it, so the towers also learn to
score from features only — this is what serves a cold-start item known only by title and genres.

Loss (:func:`sampled_softmax_loss`): in-batch sampled softmax (the other positives of the batch are
the negatives) with the log-Q correction of Yi et al. (RecSys 2019): ``logit_ij -= log Q(j)`` where
``Q(j)`` is item j's probability of being sampled into a batch (its share of training
interactions), which removes the popularity skew that in-batch negatives otherwise introduce.
Logits of in-batch items equal to the positive (duplicates) are masked. ``logq_weight`` scales the
correction (1 = Yi et al.; 0 = plain in-batch softmax).

``full_softmax_loss`` (``train --softmax full``): the softmax over the whole catalogue instead
(every item through the item tower at every step), for small catalogues.

Item text: ``create_backbone("minilm-l6-v2")`` (core backbone registry, packaged weights, offline).
By default its embeddings are precomputed and cached (:func:`item_text_embeddings`); with
``text_mode="lora"`` the encoder is fine-tuned jointly through ``core.finetune.apply_lora``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.modules.embedding_configs import PoolingType

from core.errors import UserInputError
from core.logging import get_logger
from core.registry import Registry

__all__ = ["FeatureSpace", "TwoTowerConfig", "TwoTower", "sampled_softmax_loss", "full_softmax_loss", "sampling_log_q", "item_text_embeddings", "item_texts",
           "USER_FEATURES", "ITEM_FEATURES", "AGE_BUCKETS", "Batcher", "all_embeddings", "untrained_id_mask", "rank_mask", "UNTRAINED_NOT_RANKED", "TRAINED_ITEMS", "TRAINED_ITEMS_FILE",
           "register_model", "create_model", "model_spec", "registered_models", "TWO_TOWER", "UnknownModelError"]

log = get_logger("recommendation.model")
USER_FEATURES = ["user_id", "age", "gender", "occupation"]
HISTORY = "history"  # the user's training items, a mean-pooled bag (YouTube-DNN style)
ITEM_FEATURES = ["item_id", "genre", "year"]
AGE_BUCKETS = [18, 25, 35, 45, 50, 56]  # MovieLens-1M style age groups
TEXT_BACKBONE = "minilm-l6-v2"
HISTORY_POOLING = ("mean", "sqrt", "weighted")


# ---------------------------------------------------------------------------------------------
# feature space: raw ids/values -> table indices (index 0 = unknown)
# ---------------------------------------------------------------------------------------------
@dataclass
class FeatureSpace:
    """Vocabularies of every sparse feature, built from the training data's side tables."""

    user_ids: list
    item_ids: list
    genders: list
    occupations: list
    genres: list
    year_min: int
    year_max: int

    @classmethod
    def build(cls, users: pd.DataFrame, items: pd.DataFrame) -> "FeatureSpace":
        years = items["year"][items["year"] > 0]
        genres = sorted({g for gs in items["genres"] for g in gs})
        return cls(user_ids=users["user_id"].tolist(), item_ids=items["item_id"].tolist(),
                   genders=sorted(set(users["gender"].astype(str)) - {"unknown"}),
                   occupations=sorted(set(users["occupation"].astype(str)) - {"unknown"}), genres=genres,
                   year_min=int(years.min()) if len(years) else 1900, year_max=int(years.max()) if len(years) else 2030)

    def to_dict(self) -> dict:
        return {k: [_py(x) for x in v] if isinstance(v, list) else _py(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpace":
        return cls(**d)

    # table sizes (+1 for unknown at index 0)
    def sizes(self) -> dict[str, int]:
        return {"user_id": len(self.user_ids) + 1, "age": len(AGE_BUCKETS) + 2, "gender": len(self.genders) + 1,
                "occupation": len(self.occupations) + 1, "item_id": len(self.item_ids) + 1, "genre": len(self.genres) + 1,
                "year": self.year_max - self.year_min + 2, HISTORY: len(self.item_ids) + 1}

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_index(self) -> dict:
        """id -> row, built once per space (serving looks ids up on every request)."""
        return self._index("user_ids")

    def item_index(self) -> dict:
        return self._index("item_ids")

    def _index(self, attr: str) -> dict:
        ids = getattr(self, attr)
        cache = self.__dict__.setdefault("_index_cache", {})  # not a dataclass field: asdict() skips it
        if attr not in cache or len(cache[attr]) != len(ids):
            cache[attr] = {u: i for i, u in enumerate(ids)}
        return cache[attr]

    def user_feature_table(self, users: pd.DataFrame) -> np.ndarray:
        """(n, 4) int64 table indices in USER_FEATURES order; rows follow ``users``."""
        uidx = self.user_index()
        gidx = {g: i + 1 for i, g in enumerate(self.genders)}
        oidx = {o: i + 1 for i, o in enumerate(self.occupations)}
        age = users["age"].to_numpy()
        age_b = np.where(age < 0, 0, np.searchsorted(AGE_BUCKETS, age, side="right") + 1)
        return np.stack([
            np.array([uidx.get(u, -1) + 1 for u in users["user_id"]], dtype=np.int64),
            age_b.astype(np.int64),
            np.array([gidx.get(str(g), 0) for g in users["gender"]], dtype=np.int64),
            np.array([oidx.get(str(o), 0) for o in users["occupation"]], dtype=np.int64),
        ], 1)

    def item_feature_arrays(self, items: pd.DataFrame) -> dict[str, np.ndarray]:
        """item_id and year indices (n,), genres as CSR (offsets (n+1,), values)."""
        iidx = self.item_index()
        gidx = {g: i + 1 for i, g in enumerate(self.genres)}
        year = items["year"].to_numpy()
        year_i = np.where((year >= self.year_min) & (year <= self.year_max), year - self.year_min + 1, 0)
        glists = [[gidx[g] for g in gs if g in gidx] for gs in items["genres"]]
        offsets = np.zeros(len(glists) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(g) for g in glists])
        values = np.array([g for gs in glists for g in gs], dtype=np.int64)
        return {"item_id": np.array([iidx.get(i, -1) + 1 for i in items["item_id"]], dtype=np.int64),
                "year": year_i.astype(np.int64), "genre_offsets": offsets, "genre_values": values}


def _py(x):
    return x.item() if isinstance(x, np.generic) else x


# ---------------------------------------------------------------------------------------------
# item text
# ---------------------------------------------------------------------------------------------
def item_texts(items: pd.DataFrame) -> list[str]:
    out = []
    for t, y, g in zip(items["title"], items["year"], items["genres"]):
        s = str(t) + (f" ({int(y)})" if int(y) > 0 else "")
        if len(g):
            s += ". " + ", ".join(g)
        out.append(s)
    return out


def _cache_dir() -> Path:
    from core.data import data_root

    return data_root() / ".cache" / "recommendation-text"


def item_text_embeddings(texts: list[str], encoder: nn.Module | None = None, cache: bool = True, batch_size: int = 128) -> torch.Tensor:
    """MiniLM sentence embeddings (N, 384), L2-normalised; cached on disk by a hash of the texts."""
    key = hashlib.sha256(("\n".join([TEXT_BACKBONE, *texts])).encode()).hexdigest()[:20]
    path = _cache_dir() / f"{TEXT_BACKBONE}-{key}.safetensors"
    if cache and path.is_file():
        from core.checkpoint import load_weights

        return load_weights(path)["emb"]
    if encoder is None:
        from core.backbones import create_backbone

        encoder = create_backbone(TEXT_BACKBONE)
    log.info(f"encoding {len(texts)} item texts with {TEXT_BACKBONE}" + (f" (cached afterwards in {path.parent})" if cache else ""))
    emb = encoder.encode(texts, batch_size=batch_size, normalize=True).float().contiguous()
    if cache:
        from core.checkpoint import save_weights

        save_weights(path, {"emb": emb})
    return emb


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------
@dataclass
class TwoTowerConfig:
    id_dim: int = 64
    feature_dim: int = 16
    hidden: list[int] = field(default_factory=lambda: [128])
    out_dim: int = 64
    text_dim: int = 384  # 0 disables the text feature
    temperature: float = 0.05
    logq_weight: float = 1.0
    dropout: float = 0.0
    history: bool = True
    history_pooling: str = "mean"  # mean | sqrt (sum / sqrt(n): the bag's size counts) | weighted (learned per-item weights, softmax within the bag)
    history_heads: int = 1  # with weighted pooling: this many weightings of the same bag, concatenated (multi-interest)
    normalize: bool = True  # cosine (True) or raw dot product, whose item norms can carry popularity
    wide: bool = False  # add the fixed EASE item-item part (B, n_items² buffer) with a learned gain; needs history
    wide_lambda: float = 500.0  # EASE's λ of the wide part (training.py fits B with it)
    wide_gate: bool = False  # the towers' score × a learned scalar that starts at 0 (ReZero-style: training starts from the wide part alone)


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class TwoTower(nn.Module):
    name = "two-tower"  # its registry name (create_model; == TWO_TOWER)

    def __init__(self, space: FeatureSpace, cfg: TwoTowerConfig, device: torch.device | str = "cpu"):
        super().__init__()
        self.cfg = cfg
        sizes = space.sizes()

        def table(feat: str, dim: int, pooling=PoolingType.SUM) -> EmbeddingBagConfig:
            return EmbeddingBagConfig(name=f"t_{feat}", embedding_dim=dim, num_embeddings=sizes[feat], feature_names=[feat], pooling=pooling)

        d, f = cfg.id_dim, cfg.feature_dim
        utables = [table("user_id", d), table("age", f), table("gender", f), table("occupation", f)]
        if cfg.history_pooling not in HISTORY_POOLING:
            raise UserInputError(f"history_pooling {cfg.history_pooling!r}: choose one of {', '.join(HISTORY_POOLING)}")
        weighted = cfg.history and cfg.history_pooling == "weighted"
        if cfg.history and not weighted:
            utables.append(table(HISTORY, d, PoolingType.MEAN))
        self.user_keys = USER_FEATURES + ([HISTORY] if cfg.history and not weighted else [])
        self.user_ebc = EmbeddingBagCollection(tables=utables, device=torch.device(device))
        self.history_ebc = None
        self.history_logit = None
        heads = max(1, cfg.history_heads) if weighted else 1
        if weighted:  # the same item table, pooled with per-sample weights = softmax of a learned per-item logit within the bag
            self.history_ebc = EmbeddingBagCollection(tables=[table(HISTORY, d, PoolingType.SUM)], is_weighted=True, device=torch.device(device))
            self.history_logit = nn.Parameter(torch.zeros(sizes[HISTORY], heads, device=device))
        self.item_ebc = EmbeddingBagCollection(tables=[table("item_id", d), table("genre", f, PoolingType.MEAN), table("year", f)], device=torch.device(device))
        for ebc in (self.user_ebc, self.item_ebc, self.history_ebc):
            for p in (ebc.parameters() if ebc is not None else []):
                nn.init.normal_(p, std=0.05)
        self.user_mlp = _mlp([d + 3 * f + (heads * d if cfg.history else 0), *cfg.hidden, cfg.out_dim], cfg.dropout)
        self.text_proj = nn.Linear(cfg.text_dim, f * 2) if cfg.text_dim else None
        self.item_mlp = _mlp([d + 2 * f + (2 * f if cfg.text_dim else 0), *cfg.hidden, cfg.out_dim], cfg.dropout)
        self.wide_dim = space.n_items if cfg.wide else 0
        if cfg.wide:
            if not cfg.history:
                raise UserInputError("the wide part reads the user's history: it needs the history feature (drop --no-history or --wide)")
            self.register_buffer("wide_B", torch.zeros(space.n_items, space.n_items, device=device))  # set by training (set_wide)
            self.wide_log_gain = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature), device=device))
            if cfg.wide_gate:
                self.deep_gate = nn.Parameter(torch.zeros((), device=device))

    def spec(self) -> dict:
        """``{"name", "kwargs"}``: what :func:`create_model` needs (with the run's FeatureSpace) to rebuild this model."""
        return model_spec(self.name, asdict(self.cfg))

    # -- the wide part --------------------------------------------------------------------------
    @torch.no_grad()
    def set_wide(self, B: torch.Tensor | np.ndarray) -> None:
        """Install the fixed item-item weights (n_items, n_items), diagonal zero (EASE)."""
        B = torch.as_tensor(np.asarray(B), dtype=self.wide_B.dtype)
        if B.shape != self.wide_B.shape:
            raise ValueError(f"wide weights of shape {tuple(B.shape)}; this model's catalogue needs {tuple(self.wide_B.shape)}")
        self.wide_B.copy_(B)

    def wide_gain(self) -> torch.Tensor:
        return self.wide_log_gain.exp()

    def wide_scores(self, history: torch.Tensor, item_rows: torch.Tensor | None = None, B: torch.Tensor | None = None) -> torch.Tensor:
        """g · x_u·B[:, j] in logit units: ``history`` (n, n_items) multi-hot, ``item_rows`` the columns (None: all items);
        ``B`` other item-item weights than the model's (training's cross-fitted ones)."""
        B = self.wide_B if B is None else B
        B = B if item_rows is None else B[:, item_rows]
        return self.wide_gain() * (history @ B)

    def history_multi_hot(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        """The history bag of a user KJT as an (n, n_items) 0/1 matrix (table index i+1 = item row i)."""
        hist = kjt[HISTORY]
        values, lengths = hist.values(), hist.lengths()
        x = torch.zeros(len(lengths), self.wide_dim + 1, dtype=self.wide_B.dtype, device=values.device)
        x[torch.repeat_interleave(torch.arange(len(lengths), device=values.device), lengths), values] = 1.0
        return x[:, 1:]

    def deep_part(self, vecs: torch.Tensor) -> torch.Tensor:
        """The towers' own columns of serving vectors (without the wide part's n_items columns)."""
        return vecs[..., :vecs.shape[-1] - self.wide_dim] if self.wide_dim else vecs

    # -- serving vectors (dot product = temperature × logit) and the towers -----------------------
    def user_embedding(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        u = self.user_deep(kjt)
        if not self.wide_dim:
            return u
        if self.cfg.wide_gate:
            u = u * self.deep_gate
        return torch.cat([u, (self.cfg.temperature * self.wide_gain()) * self.history_multi_hot(kjt)], 1)

    def item_embedding(self, kjt: KeyedJaggedTensor, text: torch.Tensor | None = None) -> torch.Tensor:
        v = self.item_deep(kjt, text)
        if not self.wide_dim:
            return v
        ids = kjt["item_id"].values()  # table index: item row + 1, 0 = unknown (a new item has no co-occurrence: zeros)
        cols = self.wide_B[:, (ids - 1).clamp(min=0)].T * (ids > 0).to(v.dtype)[:, None]
        return torch.cat([v, cols], 1)

    def user_deep(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        kt = self.user_ebc(kjt)
        parts = [kt[k] for k in self.user_keys]
        if self.cfg.history:
            if self.history_ebc is not None:
                parts += self._weighted_history(kjt[HISTORY])
            elif self.cfg.history_pooling == "sqrt":  # mean × sqrt(n) = sum / sqrt(n)
                parts[-1] = parts[-1] * kjt[HISTORY].lengths().to(parts[-1].dtype).sqrt()[:, None]
        return self._user_head(torch.cat(parts, 1))

    def _user_head(self, x: torch.Tensor) -> torch.Tensor:
        """The user tower after pooling: the MLP on the concatenated pooled features, then the L2 normalisation."""
        out = self.user_mlp(x)
        return nn.functional.normalize(out, dim=-1) if self.cfg.normalize else out

    def user_deep_leaving_out(self, kjt: KeyedJaggedTensor, left_out: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        """``user_deep`` of ONE user (``kjt`` of batch size 1) once per entry of ``left_out`` (history table indices = item
        row + 1), each time with every copy of that item removed from the history bag — what ``user_deep`` gives on a bag
        rebuilt without it (an item not in the bag changes nothing), without rebuilding n bags of n - 1 ids (n² ids for a
        user with n history items). The bag is pooled by a mean (``mean``), sum / sqrt(n) (``sqrt``) or softmax weights
        (``weighted``: sum_j a_j e_j / sum_j a_j, a_j = exp(logit_j - max)); each is a ratio of sums over the bag, so
        the sums over "every item but one" are formed once (float64, from prefix and suffix sums over the distinct
        items: no subtraction, so no cancellation when one item dominates the weights) and only the layers after
        pooling run per left-out item. An emptied bag pools to zeros, as the embedding bag does. Eval mode expected."""
        if not self.cfg.history:
            raise ValueError("this model has no history feature: nothing to leave out")
        if kjt.stride() != 1:
            raise ValueError(f"user_deep_leaving_out takes one user's KJT; got a batch of {kjt.stride()}")
        kt = self.user_ebc(kjt)
        fixed = torch.cat([kt[k] for k in USER_FEATURES], 1)  # (1, ·): the features other than the history bag
        values = kjt[HISTORY].values()
        left_out = torch.as_tensor(left_out, dtype=torch.long).reshape(-1)
        items, counts = torch.unique(values, return_counts=True)  # the bag's distinct items and their copies
        weighted = self.history_ebc is not None
        table = (self.history_ebc if weighted else self.user_ebc).embedding_bags[f"t_{HISTORY}"].weight
        heads = self.history_logit.shape[1] if weighted else 1
        if len(items) == 0:  # an empty bag stays empty: zeros, as the embedding bag pools it
            pooled = torch.zeros(len(left_out), heads, table.shape[1], dtype=torch.float64)
        else:
            if weighted:
                logit = self.history_logit[items].double()  # (u, heads)
                a = counts.double()[:, None] * (logit - logit.amax(0)).exp()  # every copy's weight, per head
            else:
                a = counts.double()[:, None]  # mean and sqrt: each copy counts once
            num = a[:, :, None] * table[items].double()[:, None, :]  # (u, heads, d)

            def all_but_one(x: torch.Tensor) -> torch.Tensor:  # row k: the sum of every row but k (exclusive prefix + suffix)
                zero = torch.zeros_like(x[:1])
                return torch.cat([zero, x.cumsum(0)[:-1]]) + torch.cat([x.flip(0).cumsum(0)[:-1].flip(0), zero])

            pos = torch.searchsorted(items, left_out).clamp(max=len(items) - 1)
            found = items[pos] == left_out  # an item not in the bag: the whole bag
            sel_num = torch.where(found[:, None, None], all_but_one(num)[pos], num.sum(0))
            sel_den = torch.where(found[:, None], all_but_one(a)[pos], a.sum(0))
            left = torch.where(found, len(values) - counts[pos], len(values))  # ids left in the bag
            pooled = torch.where(left[:, None, None] > 0, sel_num / sel_den.clamp(min=torch.finfo(torch.float64).tiny)[:, :, None], 0.0)
            if not weighted and self.cfg.history_pooling == "sqrt":  # mean × sqrt(n), as user_deep
                pooled = pooled * left.double().sqrt()[:, None, None]
        pooled = pooled.reshape(len(left_out), -1).to(fixed.dtype)  # heads concatenated, as user_deep concatenates them
        return torch.cat([self._user_head(torch.cat([fixed.expand(len(p), -1), p], 1)) for p in pooled.split(batch)]) \
            if len(left_out) else fixed.new_zeros(0, self.cfg.out_dim)

    def _weighted_history(self, hist) -> list[torch.Tensor]:
        """One pooled vector per head: sum_i softmax_bag(logit[i, h]) · e_i (an empty bag pools to zeros)."""
        values, lengths = hist.values(), hist.lengths()
        n = len(lengths)
        seg = torch.repeat_interleave(torch.arange(n, device=values.device), lengths)
        logit = self.history_logit[values]  # (total, heads)
        m = torch.full((n, logit.shape[1]), -1e9, dtype=logit.dtype, device=logit.device).scatter_reduce(
            0, seg[:, None].expand_as(logit), logit, "amax", include_self=True)
        w = (logit - m[seg]).exp()
        w = w / torch.zeros_like(m).index_add(0, seg, w)[seg]
        out = []
        for h in range(w.shape[1]):
            kjt = KeyedJaggedTensor(keys=[HISTORY], values=values, lengths=lengths, weights=w[:, h].contiguous())
            out.append(self.history_ebc(kjt)[HISTORY])
        return out

    def item_deep(self, kjt: KeyedJaggedTensor, text: torch.Tensor | None = None) -> torch.Tensor:
        kt = self.item_ebc(kjt)
        parts = [kt[k] for k in ITEM_FEATURES]
        if self.text_proj is not None:
            if text is None:
                raise ValueError("this model uses item text: pass the (N, 384) text embeddings")
            parts.append(self.text_proj(text))
        out = self.item_mlp(torch.cat(parts, 1))
        return nn.functional.normalize(out, dim=-1) if self.cfg.normalize else out

    def forward(self, user_kjt: KeyedJaggedTensor, item_kjt: KeyedJaggedTensor, text: torch.Tensor | None = None):
        """The towers' (deep) vectors, as training uses them; the wide part enters the loss through :meth:`wide_scores`."""
        return self.user_deep(user_kjt), self.item_deep(item_kjt, text)


def sampling_log_q(train_items: np.ndarray, n_items: int) -> torch.Tensor:
    """log Q(j): each item's share of the training interactions (its chance of being an in-batch
    negative), floored at one interaction; the log-Q correction of :func:`sampled_softmax_loss`."""
    counts = np.bincount(train_items, minlength=n_items).astype(np.float64)
    q = np.maximum(counts, 1.0) / counts.sum()
    return torch.as_tensor(np.log(q), dtype=torch.float32)


def sampled_softmax_loss(u: torch.Tensor, v: torch.Tensor, item_idx: torch.Tensor, log_q: torch.Tensor,
                         temperature: float, logq_weight: float = 1.0, extra_logits: torch.Tensor | None = None) -> torch.Tensor:
    """In-batch softmax with log-Q correction; row i's positive is column i. ``extra_logits`` (n, n): added
    to the towers' logits (the wide part's scores)."""
    logits = (u @ v.T) / temperature
    if extra_logits is not None:
        logits = logits + extra_logits
    if logq_weight:
        logits = logits - logq_weight * log_q[None, :]
    same = item_idx[None, :] == item_idx[:, None]
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(len(u), device=u.device)
    return nn.functional.cross_entropy(logits, target)


def full_softmax_loss(u: torch.Tensor, v_all: torch.Tensor, item_idx: torch.Tensor, temperature: float,
                      extra_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the whole catalogue (``v_all``: every item's vector); row i's positive is item ``item_idx[i]``.
    No sampling, so no log-Q correction; the cost grows with the catalogue (ML-100K: 1,682 items)."""
    logits = (u @ v_all.T) / temperature
    return nn.functional.cross_entropy(logits if extra_logits is None else logits + extra_logits, item_idx)


# ---------------------------------------------------------------------------------------------
# batching: index arrays -> KeyedJaggedTensor
# ---------------------------------------------------------------------------------------------
class Batcher:
    """Turns user / item row indices into the KJTs of the two towers (vectorised gathers)."""

    def __init__(self, user_table: np.ndarray, item_arrays: dict[str, np.ndarray], text: torch.Tensor | None,
                 history: list[np.ndarray] | None = None):
        self.user_table = torch.as_tensor(user_table, dtype=torch.long)
        self.set_history(history)
        self.item_id = torch.as_tensor(item_arrays["item_id"], dtype=torch.long)
        self.item_year = torch.as_tensor(item_arrays["year"], dtype=torch.long)
        self.g_off = torch.as_tensor(item_arrays["genre_offsets"], dtype=torch.long)
        self.g_val = torch.as_tensor(item_arrays["genre_values"], dtype=torch.long)
        self.text = text

    def set_history(self, history: list[np.ndarray] | None) -> None:
        """Per user row, the item rows of the training history (None: the model has no history feature)."""
        self.history = history is not None
        if history is None:
            return
        self.h_off = torch.zeros(len(history) + 1, dtype=torch.long)
        self.h_off[1:] = torch.cumsum(torch.tensor([len(h) for h in history], dtype=torch.long), 0)
        self.h_val = torch.as_tensor(np.concatenate(history).astype(np.int64) + 1 if len(history) else np.empty(0, np.int64))

    def history_matrix(self, rows: torch.Tensor, n_items: int) -> torch.Tensor:
        """The users' full history (no dropout, nothing excluded) as an (len(rows), n_items) 0/1 matrix."""
        hv, hl = self._gather(self.h_off, self.h_val, rows)
        x = torch.zeros(len(rows), n_items + 1)
        x[torch.repeat_interleave(torch.arange(len(rows)), hl), hv] = 1.0
        return x[:, 1:]

    @staticmethod
    def _gather(off: torch.Tensor, val: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        starts = off[rows]
        lens = off[rows + 1] - starts
        total = int(lens.sum())
        if not total:
            return torch.empty(0, dtype=torch.long), lens
        base = torch.repeat_interleave(starts - (torch.cumsum(lens, 0) - lens), lens)
        return val[base + torch.arange(total)], lens

    def _gather_history(self, rows: torch.Tensor, history_max: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The history bags of ``rows``; a bag longer than ``history_max`` (> 0) is replaced by ``history_max`` of its
        items drawn uniformly (with replacement) — a user with n items would otherwise cost n ids in each of the
        user's n training examples (n² per epoch: 50,000 items are 2.5e9 ids). No draw when no bag is that long."""
        starts = self.h_off[rows]
        lens = self.h_off[rows + 1] - starts
        over = lens > history_max if history_max > 0 else torch.zeros_like(lens, dtype=torch.bool)
        if not over.any():
            return self._gather(self.h_off, self.h_val, rows)
        take = torch.where(over, torch.full_like(lens, history_max), lens)
        seg = torch.repeat_interleave(torch.arange(len(rows)), take)
        pos = torch.arange(int(take.sum())) - torch.repeat_interleave(torch.cumsum(take, 0) - take, take)  # 0..take-1 within each bag
        drawn = over[seg]  # the entries of the long bags, row by row, history_max each
        pos[drawn] = (torch.rand(int(drawn.sum()), generator=generator, dtype=torch.float64) * lens[seg[drawn]]).long()
        return self.h_val[starts[seg] + pos], take

    def user_kjt(self, rows: torch.Tensor, id_dropout: float = 0.0, generator: torch.Generator | None = None,
                 exclude_items: torch.Tensor | None = None, history_dropout: float = 0.0, history_max: int = 0) -> KeyedJaggedTensor:
        """``exclude_items`` (item rows, one per user row) are removed from each history: the
        training target must not be in its own input. ``history_dropout`` drops history entries at random.
        ``history_max`` > 0: a longer bag is a random subset of that many of its items (:meth:`_gather_history`)."""
        feats = self.user_table[rows].clone()
        if id_dropout:
            drop = torch.rand(len(rows), generator=generator) < id_dropout
            feats[drop, 0] = 0
        n = len(rows)
        values = [feats.T.reshape(-1)]
        lengths = [torch.ones(4 * n, dtype=torch.int32)]
        keys = list(USER_FEATURES)
        if self.history:
            hv, hl = self._gather_history(rows, history_max, generator)
            keep = torch.ones(len(hv), dtype=torch.bool)
            if exclude_items is not None and len(hv):
                keep &= hv != torch.repeat_interleave(exclude_items + 1, hl)
            if history_dropout and len(hv):
                keep &= torch.rand(len(hv), generator=generator) >= history_dropout
            seg = torch.repeat_interleave(torch.arange(n), hl)
            hl = torch.bincount(seg[keep], minlength=n) if len(hv) else hl
            values.append(hv[keep])
            lengths.append(hl.to(torch.int32))
            keys.append(HISTORY)
        return KeyedJaggedTensor(keys=keys, values=torch.cat(values), lengths=torch.cat(lengths))

    def item_kjt(self, rows: torch.Tensor, id_dropout: float = 0.0, generator: torch.Generator | None = None,
                 unknown_id: torch.Tensor | None = None) -> KeyedJaggedTensor:
        """``unknown_id``: a mask over every item row (:func:`untrained_id_mask`); the masked items' id is "unknown"."""
        ids = self.item_id[rows].clone()
        if unknown_id is not None:
            ids[unknown_id[rows]] = 0
        if id_dropout:
            drop = torch.rand(len(rows), generator=generator) < id_dropout
            ids[drop] = 0
        gvals, glen = self._gather(self.g_off, self.g_val, rows)
        n = len(rows)
        values = torch.cat([ids, gvals, self.item_year[rows]])
        lengths = torch.cat([torch.ones(n, dtype=torch.int32), glen.to(torch.int32), torch.ones(n, dtype=torch.int32)])
        return KeyedJaggedTensor(keys=ITEM_FEATURES, values=values, lengths=lengths)

    def item_text(self, rows: torch.Tensor) -> torch.Tensor | None:
        return None if self.text is None else self.text[rows]


# model.json's key saying that the run leaves the items without a training interaction out of every ranked list (and gives
# them the id "unknown" where a vector of theirs is needed), as train's evaluation did; a run recorded before it is served as
# it was evaluated: every item ranked, by its own id
UNTRAINED_NOT_RANKED = "untrained_items_not_ranked"
# model.json's key naming the file (safetensors, {"rows": int64}) of the item rows the saved weights were trained on — with
# --no-refit and a validation part that is the fit part, not all of train.parquet; a run recorded before the file takes the
# items of train.parquet, as it was evaluated
TRAINED_ITEMS = "trained_items"
TRAINED_ITEMS_FILE = "trained_items.safetensors"


def untrained_id_mask(n_items: int, trained_rows: np.ndarray | None) -> torch.Tensor | None:
    """Which item rows have an id embedding training never updated: every row not in ``trained_rows`` (the item rows of
    the interactions the model was trained on); None when ``trained_rows`` is None (every id trained).

    With the in-batch sampled softmax an item is only ever in a batch as some row's positive, so the id embedding of an
    item without a training interaction keeps its random initial value. Scored with it, such items — the catalogue
    items nobody bought yet, most of an online shop's catalogue — filled 73 percent of the top-10 lists on a
    5,000-item catalogue with 500 items sold (78 percent of the first places). Their id "unknown" (trained by
    ``id_dropout``) is no better a ranking signal: on a small run it scored every such item as a generic popular one.
    So they are not ranked (:func:`rank_mask`); their vector (a ``similar_items`` query) comes from their features,
    with the id "unknown"."""
    if trained_rows is None:
        return None
    mask = torch.ones(n_items, dtype=torch.bool)
    mask[torch.as_tensor(np.asarray(trained_rows, dtype=np.int64))] = False
    return mask


def rank_mask(scores: torch.Tensor, untrained: torch.Tensor | None) -> torch.Tensor:
    """``scores`` (…, n_items) with the columns of the ``untrained`` items (:func:`untrained_id_mask`) at -inf, in place:
    they are in no ranked list."""
    if untrained is not None:
        scores[..., untrained] = float("-inf")
    return scores


@torch.no_grad()
def all_embeddings(model: TwoTower, batcher: Batcher, n_users: int, n_items: int, batch: int = 4096,
                   trained_items: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every user's and item's serving vector; ``trained_items``: the item rows the model was trained on, the others
    given the id "unknown" (:func:`untrained_id_mask`; None: every item by its own id)."""
    was = model.training
    model.eval()
    unknown = untrained_id_mask(n_items, trained_items)
    U = torch.cat([model.user_embedding(batcher.user_kjt(torch.arange(s, min(s + batch, n_users)))) for s in range(0, n_users, batch)])
    V = torch.cat([model.item_embedding(batcher.item_kjt(r := torch.arange(s, min(s + batch, n_items)), unknown_id=unknown), batcher.item_text(r))
                   for s in range(0, n_items, batch)])
    model.train(was)
    return U, V


# ---------------------------------------------------------------------------------------------
# the model registry: one way to build any recommendation model from a stored {name, kwargs}
# ---------------------------------------------------------------------------------------------
class UnknownModelError(UserInputError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


TWO_TOWER = "two-tower"
# models defined in other modules are imported on first use (those modules import this one, so a
# plain import here would be a cycle); a module registers itself with @register_model on import
_BUILDERS: Registry = Registry("recommendation model", error=UnknownModelError, lazy={"sasrec": "domains.recommendation.sequential"})


def register_model(name: str):
    """Decorator: ``builder(space: FeatureSpace, **kwargs) -> nn.Module`` becomes ``create_model({"name": name, ...})``
    (timm's ``register_model`` pattern). The built module should offer ``model_kwargs()`` (what to store)."""
    def deco(builder):
        return _BUILDERS.register(name, builder)
    return deco


def registered_models() -> list[str]:
    return _BUILDERS.names()


def create_model(spec: dict, space: FeatureSpace, device: torch.device | str = "cpu") -> nn.Module:
    """Build a model from ``{"name": ..., "kwargs": {...}}`` (as saved in a run's ``model.json``)."""
    return _BUILDERS.lookup(spec.get("name"))(space, device=device, **dict(spec.get("kwargs", {})))


def model_spec(name: str, kwargs: dict) -> dict:
    """The stored form of a model: ``{"name", "kwargs"}`` with JSON-plain values."""
    return {"name": name, "kwargs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}}


@register_model(TWO_TOWER)
def _two_tower(space: FeatureSpace, device: torch.device | str = "cpu", **kwargs) -> TwoTower:
    return TwoTower(space, TwoTowerConfig(**kwargs), device=device)
