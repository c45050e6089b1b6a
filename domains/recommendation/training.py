"""Training the two-tower model: prepared inputs, the epoch loop with validation early stopping,
checkpoints/resume, and the run's artifacts. The ``train`` command is a thin wrapper over :func:`train`.

Procedure (the test split is used once, at the end):

1. ``select`` phase — the model is fitted on the *fit* part of the training split (the training split
   minus a per-user seeded validation split, :func:`domains.recommendation.data.validation_split`)
   and, after every epoch, ranked against the validation items (NDCG@k, fit items excluded). The
   best epoch is kept; training stops after ``patience`` epochs without improvement.
2. ``refit`` phase (``--refit``, default) — a fresh model (same seed stream) is trained on the whole
   training split for the chosen number of epochs. Without ``--refit`` the best ``select`` model is used.
3. The final model and the same-run baselines are evaluated on the test split; artifacts are written.

Wide and deep (``--wide``, model.py): at the start of each phase the wide part's EASE weights are fitted on that phase's
training rows only (select: the fit part; refit: the training split), :func:`install_wide`. ``--wide-mode blend``: the towers
train as without it, and after every select epoch the wide weight is chosen on validation from :data:`WIDE_BLEND_GRID`
(epoch and weight together); the refit keeps that weight. ``--wide-mode joint``: the wide scores enter the loss (cross-fitted
over ``--wide-folds``, :class:`WideFolds`) and the gain is learned.

A checkpoint is written after every epoch (model, optimizer, the data-order/dropout generator, the
phase, the best-so-far state and the validation curve; core adds the global RNG states). ``--resume``
restores it, drops rows of ``metrics.jsonl`` logged after it, and continues; the result is bit-exact
with an uninterrupted run of the same seed (``tests/recommendation/test_resume.py``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from core.checkpoint import save_weights
from core.errors import UserInputError
from core.io import atomic_write_json, atomic_write_parquet
from core.logging import get_logger
from core.progress import progress
from core.runs import Run, check_resumable
from domains.recommendation.config import TrainConfig, data_columns, side_tables
from domains.recommendation.data import (check_split_sizes, data_source_record, group_by_user, load_dataset,
                                         require_timestamps, split_interactions, split_name, validation_split)
from domains.recommendation.evaluation import evaluate_scores, model_scores
from domains.recommendation.model import (TRAINED_ITEMS, TRAINED_ITEMS_FILE, TWO_TOWER, UNTRAINED_NOT_RANKED, Batcher, FeatureSpace, TwoTower, TwoTowerConfig, all_embeddings, create_model, item_text_embeddings,
                                          full_softmax_loss, item_texts, model_spec, rank_mask, sampled_softmax_loss, sampling_log_q, untrained_id_mask)

__all__ = ["DOMAIN", "Prepared", "prepare_inputs", "two_tower_kwargs", "build_model", "LoraText", "train_epochs", "fit_two_tower",
           "train", "finish_run", "TrainingError", "check_resume", "wide_weights", "install_wide", "WideFolds", "WIDE_BLEND_GRID", "Phase", "WeightAverage", "Trainer", "local_trainer"]

log = get_logger("recommendation.training")
DOMAIN = "recommendation"


class TrainingError(UserInputError, ValueError):
    """A training setting that cannot work (e.g. an unsupported sharding type, --dmp with --text lora)."""


# ---------------------------------------------------------------------------------------------
# prepared inputs shared by training, evaluation and serving
# ---------------------------------------------------------------------------------------------
@dataclass
class Phase:
    """The training rows of one phase (row indices into the feature space) and what it is judged on."""

    name: str  # "select" (fit part, judged on validation) or "refit" / "final" (whole training split)
    train_u: np.ndarray
    train_i: np.ndarray
    eval_u: np.ndarray  # validation rows for "select"; test rows otherwise
    eval_i: np.ndarray


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
    fit_u: np.ndarray | None = None  # the training split minus the validation rows
    fit_i: np.ndarray | None = None
    valid_u: np.ndarray | None = None
    valid_i: np.ndarray | None = None
    train_df: pd.DataFrame | None = None
    # under DMP: this rank's share of the fit / training rows (None: all of them)
    rank_fit: tuple[np.ndarray, np.ndarray] | None = None
    rank_train: tuple[np.ndarray, np.ndarray] | None = None

    def seen(self) -> list[np.ndarray]:
        return group_by_user(self.train_u, self.train_i, self.space.n_users)

    def truth(self) -> list[np.ndarray]:
        return group_by_user(self.test_u, self.test_i, self.space.n_users)

    def popularity(self) -> np.ndarray:
        """Share of training users that interacted with each item."""
        return np.bincount(self.train_i, minlength=self.space.n_items) / max(self.space.n_users, 1)

    def select_phase(self) -> Phase:
        return Phase("select", self.fit_u, self.fit_i, self.valid_u, self.valid_i)

    def final_phase(self) -> Phase:
        return Phase("refit", self.train_u, self.train_i, self.test_u, self.test_i)


def prepare_inputs(cfg: TrainConfig) -> Prepared:
    """Load the data, make the named split and the validation split, build the feature space and batcher."""
    data = load_dataset(cfg.data, date_order=getattr(cfg, "date_order", "auto"), columns=data_columns(cfg), **side_tables(cfg))
    name = split_name(cfg.split)
    require_timestamps(data, name, f"--data {cfg.data}")  # a file without a timestamp column: only the splits that need no time
    split = split_interactions(data.interactions, name, cfg.split_seed)
    # --validation-ratio 0: no validation part (the pre-validation procedure: train --epochs on the whole training split)
    valid = validation_split(split.train, name, seed=cfg.seed, ratio=cfg.validation_ratio) if cfg.validation_ratio > 0 else None
    check_split_sizes(split, valid, f"--data {cfg.data}", hint=", or pass --validation-ratio 0 to train --epochs without choosing the epoch on validation")
    space = FeatureSpace.build(data.users, data.items)
    uidx, iidx = space.user_index(), space.item_index()

    def rows(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return df["user_id"].map(uidx).to_numpy(np.int64), df["item_id"].map(iidx).to_numpy(np.int64)

    # frozen MiniLM vectors only for --text precomputed: with --text lora the LoRA encoder produces
    # them in the graph, and train() stores its fine-tuned vectors here after training
    text = item_text_embeddings(item_texts(data.items)) if cfg.text == "precomputed" else None
    batcher = Batcher(space.user_feature_table(data.users), space.item_feature_arrays(data.items), text)
    (tu, ti), (su, si) = rows(split.train), rows(split.test)
    (fu, fi), (vu, vi) = (rows(valid.train), rows(valid.test)) if valid is not None else ((tu, ti), (None, None))
    prep = Prepared(space=space, users=data.users, items=data.items, train_u=tu, train_i=ti, test_u=su, test_i=si, text=text,
                    batcher=batcher, split_info={"protocol": split.protocol, "seed": cfg.split_seed, **split.info,
                                                 "validation": valid.info if valid is not None else None,
                                                 **data_source_record(cfg.data)},  # evaluate, run from another folder, reads the same file
                    data_report=data.report.to_dict() if data.report else {}, fit_u=fu, fit_i=fi, valid_u=vu, valid_i=vi,
                    train_df=split.train)
    if cfg.history:  # the whole training split (the select phase swaps in the fit part while it runs)
        batcher.set_history(prep.seen())
    return prep


# ---------------------------------------------------------------------------------------------
# --resume: what can be refused before the data is read
# ---------------------------------------------------------------------------------------------
def check_resume(cfg: TrainConfig, command: str = "train") -> Path | None:
    """With ``--resume``: refuse, before the data is read (which can take minutes), what the run folder alone
    tells — no run of that name (or no ``train`` run at all), a run another command made (a recommend job, a
    ``train_sequential`` run), a damaged record, a run another process is writing, ``--text lora`` (its adapters
    are not checkpointed), data other than the run's (``--data`` is ``"resume": "same-data"``: core compares the
    run's ``data_source.json`` by content, :class:`core.runs.ResumeDataError`) and settings that hold out other
    interactions than the run's ``config.json`` (core's refusal of a setting fixed on a resume:
    ``TrainConfig.fixed_on_resume``, test leakage). Returns the run folder (None without ``--resume``); ``Run.start``
    chooses the same one. A checkpoint that does not fit for another reason is still refused by ``Run.resume`` after
    loading. The generic refusals are :func:`core.runs.check_resumable`'s."""
    if not getattr(cfg, "resume", False):
        return None
    if cfg.text == "lora":
        raise TrainingError("--resume with --text lora is not supported (the LoRA adapters are not checkpointed); rerun without --resume")
    return check_resumable(DOMAIN, cfg, command)


def two_tower_kwargs(cfg: TrainConfig, space: FeatureSpace | None = None) -> dict:
    """The model part of the training config, as stored in ``model.json`` (``{"name": "two-tower", "kwargs": ...}``).
    The wide part (``--wide``) is turned off when ``space``'s catalogue exceeds ``--wide-max-items`` (dense n_items² weights)."""
    wide = bool(getattr(cfg, "wide", False))
    if wide and space is not None and space.n_items > cfg.wide_max_items:
        log.warning(f"wide part OFF: {space.n_items} items > --wide-max-items {cfg.wide_max_items} (its dense item-item weights would "
                    f"take {space.n_items ** 2 * 4 / 1e9:.1f} GB); training the plain two-tower")
        wide = False
    if wide and getattr(cfg, "wide_mode", "joint") == "blend" and getattr(cfg, "validation_ratio", 0.2) <= 0:
        log.warning("wide part OFF: --wide-mode blend chooses its weight on the validation split, and --validation-ratio 0 has none; "
                    "training the plain two-tower")
        wide = False
    if wide and getattr(cfg, "dmp", False):
        log.warning("wide part OFF under --dmp (its dense item-item matrix is not sharded); training the plain two-tower")
        wide = False
    return asdict(TwoTowerConfig(wide=wide, wide_lambda=float(getattr(cfg, "wide_lambda", 500.0)), wide_gate=bool(getattr(cfg, "wide_gate", False)) and wide, id_dim=cfg.id_dim, feature_dim=cfg.feature_dim, hidden=list(cfg.hidden), out_dim=cfg.out_dim,
                                 text_dim=384 if cfg.text != "none" else 0, temperature=cfg.temperature, logq_weight=cfg.logq_weight,
                                 history=cfg.history, history_pooling=cfg.history_pooling, history_heads=cfg.history_heads,
                                 normalize=cfg.normalize, dropout=cfg.dropout))


def build_model(cfg: TrainConfig, space: FeatureSpace, device="cpu") -> TwoTower:
    return create_model(model_spec(TWO_TOWER, two_tower_kwargs(cfg, space)), space, device=device)


def wide_weights(train_u: np.ndarray, train_i: np.ndarray, space: FeatureSpace, lam: float) -> np.ndarray:
    """EASE's item-item weights (n_items, n_items) fitted on exactly these training rows (the wide part of ``--wide``)."""
    from domains.recommendation.baselines import EASE, interaction_matrix

    return EASE(lam).fit(interaction_matrix(train_u, train_i, space.n_users, space.n_items)).B


@dataclass
class WideFolds:
    """Cross-fitted wide weights for the training loss (``--wide-folds``): the phase's rows are split into
    folds; a training row of fold k is scored with ``B[k]``, EASE fitted WITHOUT fold k, so its wide score is
    out of sample, as a validation or test item's is (the full-data B scores its own training rows too well,
    and the towers would learn a residual that does not hold out of sample)."""

    row_fold: torch.Tensor  # (n_rows,) fold of each training row of the phase
    B: torch.Tensor  # (folds, n_items, n_items)


def install_wide(model: torch.nn.Module, train_u: np.ndarray, train_i: np.ndarray, space: FeatureSpace, folds: int = 0,
                 seed: int = 0, mode: str = "joint") -> WideFolds | None:
    """Fit the wide part on the phase's training rows (select: the fit part; refit: the training split) into
    ``model``; with ``folds`` >= 2 also the cross-fitted weights the training loss uses (None otherwise)."""
    plain = model if isinstance(model, TwoTower) else getattr(model, "module", None)
    if not getattr(getattr(plain, "cfg", None), "wide", False):
        return None
    if plain is not model:
        raise TrainingError("--wide is not supported with --dmp (the wide part is a dense item-item matrix); drop one of them")
    lam = model.cfg.wide_lambda
    model.set_wide(wide_weights(train_u, train_i, space, lam))
    if folds < 2 or mode != "joint":  # blend: no wide term in the loss, nothing to cross-fit
        return None
    row_fold = np.random.default_rng(seed).integers(0, folds, len(train_u))
    Bs = [torch.as_tensor(wide_weights(train_u[row_fold != k], train_i[row_fold != k], space, lam)) for k in range(folds)]
    return WideFolds(torch.as_tensor(row_fold), torch.stack(Bs))


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
        uniq, inv = torch.unique(rows, return_inverse=True)
        enc = self.encoder if hasattr(self.encoder, "pool") else self.encoder.base_model.model
        e = enc.pool(self.ids[uniq], self.mask[uniq])
        return torch.nn.functional.normalize(e, dim=-1)[inv]

    @torch.no_grad()
    def all_vectors(self, n_items: int) -> torch.Tensor:
        return torch.cat([self(torch.arange(s, min(s + 256, n_items))) for s in range(0, n_items, 256)])


# ---------------------------------------------------------------------------------------------
# the epoch loop
# ---------------------------------------------------------------------------------------------
@dataclass
class LoopState:
    """Everything the loop carries from epoch to epoch (and through a checkpoint)."""

    step: int = 0
    examples: int = 0
    seconds: float = 0.0
    loss: float = float("nan")


def train_epochs(model, prep: Prepared, cfg: TrainConfig, optimizer, train_u: np.ndarray, train_i: np.ndarray, log_q: torch.Tensor,
                 run: Run | None = None, lora_text: LoraText | None = None, rank: int = 0, *, epochs: int | None = None,
                 generator: torch.Generator | None = None, state: LoopState | None = None, start_epoch: int = 0,
                 on_epoch_end: Callable[[int, LoopState], bool] | None = None, desc: str = "two-tower",
                 after_step: Callable[[], None] | None = None, wide_folds: WideFolds | None = None) -> dict:
    """Train for ``epochs`` (default ``cfg.epochs``) from ``start_epoch``; ``on_epoch_end(epoch, state)``
    runs after every epoch (validation, checkpoint) and returns True to stop; ``after_step()`` after every
    optimizer step (the weight average); ``wide_folds``: cross-fitted wide weights (rows = ``train_u``'s). Returns throughput stats."""
    epochs = cfg.epochs if epochs is None else epochs
    g = generator if generator is not None else torch.Generator().manual_seed(cfg.seed + 1000 * rank)
    st = state or LoopState()
    u_all = torch.as_tensor(np.array(train_u, dtype=np.int64))  # a copy: the caller's arrays may be read-only
    i_all = torch.as_tensor(np.array(train_i, dtype=np.int64))
    n = len(u_all)
    steps_per_epoch = max(1, n // cfg.batch_size)  # drop the ragged last batch: equal steps on every rank (DMP)
    bar = progress(total=(epochs - start_epoch) * steps_per_epoch, desc=desc + (f" rank{rank}" if rank else ""), unit="step") if rank == 0 else None
    phase_steps = 0
    full = getattr(cfg, "softmax", "sampled") == "full"
    all_items = torch.arange(prep.space.n_items)
    wide = bool(getattr(model, "wide_dim", 0)) and getattr(cfg, "wide_mode", "joint") == "joint"  # blend: the towers train alone
    model.train()
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        decay = getattr(cfg, "lr_decay", 1.0)
        if decay != 1.0:  # a pure function of the epoch (resume needs no scheduler state); DMP's fused table optimizer keeps its lr
            for group in getattr(optimizer, "param_groups", []):
                group["lr"] = cfg.lr * decay ** epoch
        perm = torch.randperm(n, generator=g)
        for s in range(steps_per_epoch):
            b = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            u, i = u_all[b], i_all[b]
            ukjt = prep.batcher.user_kjt(u, cfg.id_dropout, g, exclude_items=i, history_dropout=cfg.history_dropout,
                                         history_max=cfg.history_max)
            x = None
            if wide:  # the user's phase history minus the target (as for the deep tower's bag), no dropout
                x = prep.batcher.history_matrix(u, prep.space.n_items)
                x[torch.arange(len(i)), i] = 0.0
                cols = all_items if full else i
                if wide_folds is None:
                    wide_logits = model.wide_scores(x, cols)
                else:  # each row scored by the weights fitted without its fold
                    f = wide_folds.row_fold[b]
                    wide_logits = torch.zeros(len(b), len(cols))
                    for k in torch.unique(f).tolist():
                        m = f == k
                        wide_logits[m] = model.wide_scores(x[m], cols, wide_folds.B[k])
            if full:  # every item through the item tower; the softmax runs over the catalogue
                ikjt = prep.batcher.item_kjt(all_items, cfg.id_dropout, g)
                text = lora_text(all_items) if lora_text is not None else prep.batcher.item_text(all_items)
                uv, v_all = model(ukjt, ikjt, text)
                if wide and model.cfg.wide_gate:
                    uv = uv * model.deep_gate
                loss = full_softmax_loss(uv, v_all, i, cfg.temperature, wide_logits if wide else None)
            else:
                ikjt = prep.batcher.item_kjt(i, cfg.id_dropout, g)
                text = lora_text(i) if lora_text is not None else prep.batcher.item_text(i)
                uv, iv = model(ukjt, ikjt, text)
                if wide and model.cfg.wide_gate:  # the towers' share of the logit, learned from 0 (starts as the wide part alone)
                    uv = uv * model.deep_gate
                loss = sampled_softmax_loss(uv, iv, i, log_q[i], cfg.temperature, cfg.logq_weight, wide_logits if wide else None)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
            st.step += 1
            phase_steps += 1
            st.examples += len(b)
            st.loss = float(loss.detach())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{st.loss:.3f}", epoch=epoch)
            last = s == steps_per_epoch - 1 or (cfg.max_steps and phase_steps >= cfg.max_steps)
            if run is not None and st.step % 50 == 0 and not last:  # the epoch's last step is logged with its validation row
                run.log_metrics({"loss": st.loss, "epoch": epoch}, st.step)
            if cfg.max_steps and phase_steps >= cfg.max_steps:
                break
        st.seconds += time.perf_counter() - t0
        stop = on_epoch_end(epoch, st) if on_epoch_end is not None else False
        model.train()
        if stop or (cfg.max_steps and phase_steps >= cfg.max_steps):
            break
    if bar is not None:
        bar.close()
    return {"steps": st.step, "train_seconds": st.seconds, "train_examples_per_s": st.examples / max(st.seconds, 1e-9), "final_loss": st.loss}


# ---------------------------------------------------------------------------------------------
# select (validation early stopping) + refit, with checkpoints
# ---------------------------------------------------------------------------------------------
class WeightAverage:
    """Exponential moving average of a module's weights, updated after every optimizer step
    (``--ema-decay``; Polyak averaging), bias-corrected as Adam's moments are (the accumulator starts at
    zero and is divided by ``1 - decay**t``, so the random initial weights carry no weight). The
    averaged weights are what is validated, refitted and saved: on ML-100K the raw weights' validation
    NDCG@10 jumps by ±0.01 from epoch to epoch, the average's by a few thousandths, so the epoch chosen
    on validation also holds when the model is refitted."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise TrainingError(f"--ema-decay {decay}: must be in (0, 1) (0 turns the average off)")
        self.model, self.decay, self.t = model, decay, 0
        self.acc = {k: torch.zeros_like(v) if v.dtype.is_floating_point else v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self) -> None:
        self.t += 1
        for k, v in self.model.state_dict().items():
            a = self.acc[k]
            if a.dtype.is_floating_point:
                a.mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)
            else:
                a.copy_(v)

    def state(self) -> dict[str, torch.Tensor]:
        """The averaged weights (a copy); the raw weights before the first update."""
        if self.t == 0:
            return _state_copy(self.model)
        c = 1.0 - self.decay ** self.t
        return {k: v / c if v.dtype.is_floating_point else v.clone() for k, v in self.acc.items()}

    def checkpoint(self) -> dict:
        return {"t": self.t, "acc": {k: v.clone() for k, v in self.acc.items()}}

    def load(self, ckpt: dict) -> None:
        self.t = int(ckpt["t"])
        self.acc = {k: v.detach().clone() for k, v in ckpt["acc"].items()}


@dataclass
class Trainer:
    """How one process trains: the (possibly sharded) module, its optimizer, and how to read the
    plain model's weights (a collective under DMP: every rank calls it; rank 0 gets the dict)."""

    model: torch.nn.Module
    optimizer: object
    full_state: Callable[[], dict | None]
    rank: int = 0
    broadcast: Callable[[object], object] = lambda x: x  # rank 0's value on every rank (DataParallel.broadcast under DMP)
    lora_text: LoraText | None = None
    optimizer_state: Callable[[], dict | None] | None = None  # a collective under DMP (rank 0 gets the dict)
    load_optimizer_state: Callable[[dict], None] | None = None
    load_full_state: Callable[[dict], None] | None = None  # plain (unsharded) weights into this trainer's model
    average: WeightAverage | None = None  # with --ema-decay: full_state() returns the averaged weights


def local_trainer(cfg: TrainConfig, model: torch.nn.Module, optimizer, lora_text: LoraText | None = None) -> Trainer:
    """A single-process trainer; with ``cfg.ema_decay`` its weights are averaged (:class:`WeightAverage`)
    and ``full_state()`` returns the average (the raw weights stay in ``model``)."""
    decay = getattr(cfg, "ema_decay", 0.0)
    avg = WeightAverage(model, decay) if decay else None
    return Trainer(model=model, optimizer=optimizer, full_state=avg.state if avg else (lambda: _state_copy(model)), lora_text=lora_text,
                   optimizer_state=optimizer.state_dict, load_optimizer_state=optimizer.load_state_dict,
                   load_full_state=model.load_state_dict, average=avg)


def _state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _valid_ndcg(prep: Prepared, cfg: TrainConfig, state: dict, lora_text: LoraText | None) -> dict[str, float]:
    """Validation metrics of the plain model with ``state`` (fit items excluded, validation items as truth)."""
    plain = build_model(cfg, prep.space)
    plain.load_state_dict(state)
    if lora_text is not None:
        prep.batcher.text = lora_text.all_vectors(prep.space.n_items)
    seen = group_by_user(prep.fit_u, prep.fit_i, prep.space.n_users)
    truth = group_by_user(prep.valid_u, prep.valid_i, prep.space.n_users)
    trained = id_trained_items(prep.fit_i, cfg)  # the select phase trains on the fit part
    if getattr(plain, "wide_dim", 0) and getattr(cfg, "wide_mode", "joint") == "blend":
        return _blend_on_validation(plain, prep, cfg, state, seen, truth, trained)
    return evaluate_scores(model_scores(plain, prep, trained), seen, truth, prep.space.n_items, cfg.k, prep.popularity())


def refits(prep: Prepared, cfg: TrainConfig) -> bool:
    """Whether :func:`fit_two_tower` retrains on the whole training split after choosing the epoch (``--refit`` and a
    validation part); else the saved weights are the selected epoch's, trained on the fit part only."""
    return bool(cfg.refit) and prep.valid_u is not None


def saved_model_item_rows(prep: Prepared, cfg: TrainConfig) -> np.ndarray:
    """The item rows of the interactions the saved model's weights were trained on: the whole training split when it
    refits (or has no validation part), else the fit part — with ``--no-refit`` the items only in validation rows were
    never trained on, although train.parquet (the training split) holds them."""
    return prep.train_i if refits(prep, cfg) else prep.fit_i


def id_trained_items(item_rows: np.ndarray, cfg: TrainConfig) -> np.ndarray | None:
    """The item rows whose id embedding training updates, given the item rows of the interactions trained on: with the
    sampled softmax an item is in a batch only as a positive, so those items; with ``--softmax full`` every item is in
    every step's softmax (None: every id). The others are in no ranked list (model.untrained_id_mask)."""
    return None if getattr(cfg, "softmax", "sampled") == "full" else np.unique(item_rows)


# --wide-mode blend: the weight of the wide part relative to the towers' cosine (c = temperature · gain), chosen on validation
# (0.0625 and 0.125 added in session 6: seed 1 of the bench had chosen the old lowest value 0.25 — two more halvings below it)
WIDE_BLEND_GRID = (0.0625, 0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0)


def _blend_on_validation(plain: TwoTower, prep: Prepared, cfg: TrainConfig, state: dict, seen, truth,
                         trained: np.ndarray | None = None) -> dict[str, float]:
    """The wide part's gain with the best validation NDCG@k over :data:`WIDE_BLEND_GRID`; written into ``state``."""
    U, V = all_embeddings(plain, prep.batcher, prep.space.n_users, prep.space.n_items, trained_items=trained)
    d = U.shape[1] - plain.wide_dim
    deep = U[:, :d] @ V[:, :d].T
    wide = (U[:, d:] @ V[:, d:].T) / float(plain.cfg.temperature * plain.wide_gain().detach())  # x_u · B
    best = None
    untrained = untrained_id_mask(prep.space.n_items, trained)
    for c in WIDE_BLEND_GRID:
        m = evaluate_scores(rank_mask(deep + c * wide, untrained), seen, truth, prep.space.n_items, cfg.k, prep.popularity())
        if best is None or m[f"ndcg@{cfg.k}"] > best[f"ndcg@{cfg.k}"]:
            best = {**m, "wide_gain": c / plain.cfg.temperature}
    set_wide_gain(state, best["wide_gain"])
    return best


def set_wide_gain(state: dict, gain: float) -> None:
    """Write the wide part's gain (``--wide-mode blend``, chosen on validation) into a plain state dict."""
    state["wide_log_gain"] = torch.tensor(math.log(gain), dtype=state["wide_log_gain"].dtype)


def fit_two_tower(prep: Prepared, cfg: TrainConfig, run: Run | None, make_trainer: Callable[[], Trainer]) -> tuple[dict, dict, dict]:
    """Select the epoch on validation (early stopping), then refit on the whole training split.
    Returns (final plain state dict on rank 0 — None elsewhere, stats, selection summary)."""
    k = cfg.k
    tr = make_trainer()
    extra: dict = {}
    if getattr(cfg, "resume", False):
        payload = None
        if tr.rank == 0 and run is not None:
            plain = build_model(cfg, prep.space)  # the checkpoint holds the plain (unsharded) weights
            ckpt = run.resume(plain, None)  # restores the RNG states and drops metrics rows logged after the checkpoint
            if ckpt["extra"]:
                payload = {"model": plain.state_dict(), "extra": ckpt["extra"]}
                log.info(f"resumed at phase {ckpt['extra']['phase']} epoch {ckpt['extra']['epoch'] + 1} (step {ckpt['step']})")
        payload = tr.broadcast(payload)
        if payload:
            tr.load_optimizer_state(payload["extra"]["optimizer"])
            raw = payload["extra"].get("raw")  # a weight-averaged run checkpoints the average as its model, the raw weights here
            tr.load_full_state(raw if raw is not None else payload["model"])
            if (tr.average is not None) != ("average" in payload["extra"]):
                raise TrainingError("--resume: the checkpoint and this command differ in --ema-decay (on/off); resume with the original flags")
            if tr.average is not None:
                tr.average.load(payload["extra"]["average"])
            extra = payload["extra"]
    sel = extra.get("selection") or {"curve": [], "best_epoch": 0, "best": -1.0, "best_state": None, "done": False}
    loop = LoopState(step=int(extra.get("step", 0)), examples=int(extra.get("examples", 0)), seconds=float(extra.get("seconds", 0.0)))
    phase_name = extra.get("phase", "select")
    start_epoch = int(extra["epoch"]) + 1 if extra else 0
    gen_seed = {"select": cfg.seed + 1000 * tr.rank, "refit": cfg.seed + 1 + 1000 * tr.rank}

    def generator(name: str) -> torch.Generator:
        g = torch.Generator().manual_seed(gen_seed[name])
        if extra.get("phase") == name and "generator" in extra:
            g.set_state(extra["generator"] if tr.rank == 0 else extra["generators"][tr.rank])
        return g

    def checkpoint(name: str, epoch: int, g: torch.Generator, done: bool = False) -> None:
        if run is None and tr.rank == 0:  # no run to write to (library use); under DMP the other ranks still join the collectives
            return
        state = tr.full_state()
        opt_state = tr.optimizer_state()  # a collective under DMP
        gens = gather_generators(g)
        if tr.rank != 0:
            return
        plain = build_model(cfg, prep.space)
        plain.load_state_dict(state)
        run.save_checkpoint(plain, None, step=loop.step, epoch=epoch, extra={
            "phase": name, "epoch": epoch, "step": loop.step, "examples": loop.examples, "seconds": loop.seconds,
            "generator": g.get_state(), "generators": gens, "optimizer": opt_state, "selection": {**sel, "done": done},
            **({"raw": _state_copy(tr.model), "average": tr.average.checkpoint()} if tr.average is not None else {})})

    def gather_generators(g: torch.Generator) -> list:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            out = [None] * dist.get_world_size()
            dist.all_gather_object(out, g.get_state())
            return out
        return [g.get_state()]

    # ---- phase 1: select the epoch on validation -----------------------------------------------
    if phase_name == "select" and not sel["done"]:
        folds = install_wide(tr.model, prep.fit_u, prep.fit_i, prep.space, cfg.wide_folds, cfg.seed, cfg.wide_mode)  # the fit part only: never a validation or test row
        g = generator("select")
        log_q = sampling_log_q(prep.fit_i, prep.space.n_items)
        if cfg.history:
            prep.batcher.set_history(group_by_user(prep.fit_u, prep.fit_i, prep.space.n_users))

        def end_select(epoch: int, st: LoopState) -> bool:
            state = tr.full_state()
            stop = False
            if tr.rank == 0 and prep.valid_u is None:  # no validation part: the last epoch is the model
                sel.update(best=float("nan"), best_epoch=epoch + 1, best_state=state)
                if run is not None:
                    run.log_metrics({"loss": st.loss, "epoch": epoch, "phase": "train"}, st.step)
            elif tr.rank == 0:
                m = _valid_ndcg(prep, cfg, state, tr.lora_text)
                v = m[f"ndcg@{k}"]
                sel["curve"].append({"epoch": epoch + 1, f"valid_ndcg@{k}": v, f"valid_recall@{k}": m[f"recall@{k}"], "loss": st.loss})
                if v > sel["best"]:
                    sel.update(best=v, best_epoch=epoch + 1, best_state=state)
                    if "wide_gain" in m:  # --wide-mode blend: the gain chosen on validation with this epoch
                        sel["wide_gain"] = m["wide_gain"]
                if run is not None:
                    run.log_metrics({"loss": st.loss, "epoch": epoch, "phase": "select", f"valid_ndcg@{k}": v, f"valid_recall@{k}": m[f"recall@{k}"]}, st.step)
                stop = cfg.patience > 0 and epoch + 1 - sel["best_epoch"] >= cfg.patience
                log.info(f"select epoch {epoch + 1}: valid NDCG@{k} {v:.4f} (best {sel['best']:.4f} at {sel['best_epoch']})")
            stop = bool(tr.broadcast(stop))
            checkpoint("select", epoch, g, done=stop or epoch + 1 >= cfg.epochs)
            return stop

        fu, fi = prep.rank_fit or (prep.fit_u, prep.fit_i)
        stats = train_epochs(tr.model, prep, cfg, tr.optimizer, fu, fi, log_q, run, tr.lora_text, tr.rank,
                             generator=g, state=loop, start_epoch=start_epoch, on_epoch_end=end_select, desc="two-tower select",
                             after_step=tr.average.update if tr.average is not None else None, wide_folds=folds)
        sel["done"] = True
        start_epoch = 0
    sel = tr.broadcast(sel if tr.rank == 0 else None)
    selection = {"best_epoch": sel["best_epoch"], f"valid_ndcg@{k}": sel["best"], "curve": sel["curve"]}
    if not refits(prep, cfg):  # without a validation part the selected model already saw the whole training split
        return (sel["best_state"] if tr.rank == 0 else None), {"steps": loop.step, "train_seconds": loop.seconds,
                                                               "train_examples_per_s": loop.examples / max(loop.seconds, 1e-9),
                                                               "final_loss": loop.loss}, selection

    # ---- phase 2: refit on the whole training split for the chosen number of epochs -----------
    if phase_name != "refit":
        tr = make_trainer()  # fresh weights and optimizer (the global RNG continues: same stream as an uninterrupted run)
    folds = install_wide(tr.model, prep.train_u, prep.train_i, prep.space, cfg.wide_folds, cfg.seed + 1, cfg.wide_mode)  # the training split: never a test row
    g = generator("refit")
    log_q = sampling_log_q(prep.train_i, prep.space.n_items)
    if cfg.history:
        prep.batcher.set_history(prep.seen())

    def end_refit(epoch: int, st: LoopState) -> bool:
        if run is not None and tr.rank == 0:
            run.log_metrics({"loss": st.loss, "epoch": epoch, "phase": "refit"}, st.step)
        checkpoint("refit", epoch, g)
        return False

    tu, ti = prep.rank_train or (prep.train_u, prep.train_i)
    stats = train_epochs(tr.model, prep, cfg, tr.optimizer, tu, ti, log_q, run, tr.lora_text, tr.rank,
                         epochs=max(1, sel["best_epoch"]), generator=g, state=loop, start_epoch=start_epoch if phase_name == "refit" else 0,
                         on_epoch_end=end_refit, desc="two-tower refit", after_step=tr.average.update if tr.average is not None else None,
                         wide_folds=folds)
    state = tr.full_state()
    if tr.rank == 0 and sel.get("wide_gain"):  # --wide-mode blend: the refitted model keeps the gain chosen on validation
        set_wide_gain(state, sel["wide_gain"])
        selection["wide_gain"] = sel["wide_gain"]
    return state, stats, selection


# ---------------------------------------------------------------------------------------------
# single-process training and the run's artifacts
# ---------------------------------------------------------------------------------------------
def train(cfg: TrainConfig, run: Run, prep: Prepared | None = None) -> Path:
    """Train (select + refit) in this process, evaluate model + baselines, save everything. ``prep``: the
    inputs :func:`prepare_inputs` made before the run started (the command checks the data before a run folder exists)."""
    prep = prepare_inputs(cfg) if prep is None else prep

    def make_trainer() -> Trainer:
        model = build_model(cfg, prep.space)
        lora_text = LoraText(item_texts(prep.items), cfg.lora_r) if cfg.text == "lora" else None
        params = list(model.parameters()) + ([p for p in lora_text.parameters() if p.requires_grad] if lora_text else [])
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if lora_text is not None and cfg.resume:
            raise TrainingError("--resume with --text lora is not supported (the LoRA adapters are not checkpointed); rerun without --resume")
        return local_trainer(cfg, model, opt, lora_text)

    holder: dict = {}

    def make_and_keep() -> Trainer:
        holder["tr"] = make_trainer()
        return holder["tr"]

    state, stats, selection = fit_two_tower(prep, cfg, run, make_and_keep)
    model = build_model(cfg, prep.space)
    model.load_state_dict(state)
    lora_text = holder["tr"].lora_text
    if lora_text is not None:  # freeze the fine-tuned text vectors into the run (serving needs no encoder)
        prep.text = lora_text.all_vectors(prep.space.n_items)
        prep.batcher.text = prep.text
        from core.finetune import save_adapter

        save_adapter(lora_text.encoder, run.path("text_lora.safetensors"))
    return finish_run(run, cfg, prep, model, stats, selection)


def finish_run(run: Run, cfg: TrainConfig, prep: Prepared, model: TwoTower, stats: dict, selection: dict) -> Path:
    """Evaluate the model and the baselines on the test split (once); save artifacts; close the run."""
    from domains.recommendation.baselines import BPRConfig, MostPopular, train_bpr

    if cfg.history:
        prep.batcher.set_history(prep.seen())
    k = cfg.k
    seen, truth, pop = prep.seen(), prep.truth(), prep.popularity()
    rows = []
    trained = id_trained_items(saved_model_item_rows(prep, cfg), cfg)  # saved with the run (TRAINED_ITEMS_FILE): serving reads the same set
    model_m = evaluate_scores(model_scores(model, prep, trained), seen, truth, prep.space.n_items, k, pop)
    rows.append({"model": "two_tower", **model_m})
    if cfg.baselines:
        mp = MostPopular(prep.space.n_items).fit(prep.train_u, prep.train_i)
        rows.append({"model": "most_popular", **evaluate_scores(mp.scores(prep.space.n_users), seen, truth, prep.space.n_items, k, pop)})
        bpr = train_bpr(prep.train_u, prep.train_i, prep.space.n_users, prep.space.n_items, BPRConfig(dim=cfg.bpr_dim, epochs=cfg.bpr_epochs, seed=cfg.seed))
        rows.append({"model": "bpr_mf", **evaluate_scores(bpr.scores(), seen, truth, prep.space.n_items, k, pop)})
    table = pd.DataFrame(rows)
    atomic_write_parquet(table, run.path("eval_metrics.parquet"), index=False)
    save_weights(run.path("model.safetensors"), model, metadata={"format": "two-tower-v1"})
    if prep.text is not None:
        save_weights(run.path("item_text.safetensors"), {"emb": prep.text.contiguous()})
    atomic_write_json(run.path("feature_space.json"), prep.space.to_dict())
    if trained is not None:
        save_weights(run.path(TRAINED_ITEMS_FILE), {"rows": torch.from_numpy(np.ascontiguousarray(trained, dtype=np.int64))})
    atomic_write_json(run.path("model.json"), {**model.spec(), "k": k, UNTRAINED_NOT_RANKED: trained is not None,
                                               **({TRAINED_ITEMS: TRAINED_ITEMS_FILE} if trained is not None else {})})
    atomic_write_json(run.path("split.json"), prep.split_info)
    atomic_write_json(run.path("validation_curve.json"), selection)
    atomic_write_json(run.path("data_report.json"), prep.data_report)
    atomic_write_parquet(prep.train_df[["user_id", "item_id", "timestamp"]].reset_index(drop=True), run.path("train.parquet"), index=False)
    atomic_write_parquet(prep.users.reset_index(drop=True), run.path("users.parquet"), index=False)
    atomic_write_parquet(prep.items.reset_index(drop=True), run.path("items.parquet"), index=False)
    summary = {f"{r['model']}/{m}": v for r in rows for m, v in r.items() if m != "model"}
    summary.update({f"ndcg@{k}": model_m[f"ndcg@{k}"], "protocol": prep.split_info["protocol"], "split": prep.split_info["split"],
                    "best_epoch": selection["best_epoch"], f"valid_ndcg@{k}": selection[f"valid_ndcg@{k}"], **stats})
    if selection.get("wide_gain"):  # --wide-mode blend: the wide part's gain chosen on validation
        summary["wide_gain"] = selection["wide_gain"]
    lines = [f"{r['model']:>13s}: " + "  ".join(f"{m}={r[m]:.4f}" for m in (f"ndcg@{k}", f"recall@{k}", f"precision@{k}", f"map@{k}", f"coverage@{k}")) for r in rows]
    print(f"epoch chosen on validation: {selection['best_epoch']} (valid NDCG@{k} {selection[f'valid_ndcg@{k}']:.4f}); test split {prep.split_info['split']}:")
    print("\n".join(lines), flush=True)
    return run.finish(summary)
