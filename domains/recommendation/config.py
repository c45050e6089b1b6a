"""Every recommendation config: the model, the data/split, the training loop, and one per command.

    ModelConfig     what a two-tower model is (stored with the run as {"name": "two-tower", "kwargs": ...})
    DataConfig      which interactions, which split (by name), the validation split, the cut-off k
    TrainingConfig  the optimisation loop (epochs, early stopping, batches, baselines, DMP)
    TrainConfig     = the three above + tracking, seed, device, resume          (python -m ...train)
    EvaluateConfig  --model-run (+ --data when the run's data moved) + tracking (python -m ...evaluate)
    ScoreConfig     --model-run + the core.scoring engine fields + k/index      (python -m ...score)
    RecommendConfig --model-run + one query (user, similar item or new title)  (python -m ...recommend)

A command's config holds only the fields that command reads (core mixins, combined by inheritance).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.config import RESUME_HELP, RESUME_SAME_DATA, DeviceConfig, ModelRunConfig, ResumeConfig, RunConfig, SeedConfig, TrackingConfig
from core.scoring import ScoringConfig
from domains.recommendation.data import COLUMN_FLAGS, DATE_ORDERS, LEAVE_LAST_OUT, ML100K, LEGACY_STRATIFIED, MSR_STRATIFIED, SPLIT_ALIASES, SplitError, split_name

__all__ = ["ModelConfig", "DataConfig", "TrainingConfig", "TrainConfig", "EvaluateConfig", "ScoreConfig", "RecommendConfig",
           "CPU_SHARDING", "INDEX_TYPES", "TEXT_MODES", "SOFTMAX_MODES", "SPLIT_CHOICES", "held_out_settings", "DataColumnsConfig", "data_columns", "side_tables", "with_absolute_tables"]

CPU_SHARDING = ("table_wise", "column_wise", "table_column_wise", "data_parallel")
INDEX_TYPES = ("hnsw", "ivf", "flat", "none")
TEXT_MODES = ("precomputed", "lora", "none")
SOFTMAX_MODES = ("sampled", "full")
SPLIT_CHOICES = [MSR_STRATIFIED, LEGACY_STRATIFIED, LEAVE_LAST_OUT, *SPLIT_ALIASES]


@dataclass
class ModelConfig:
    """The two-tower model (``model.TwoTowerConfig`` is built from these; see model.py)."""

    id_dim: int = field(default=64, metadata={"min": 1, "help": "user/item id embedding size"})
    feature_dim: int = field(default=16, metadata={"min": 1, "help": "embedding size of the other sparse features"})
    hidden: list[int] = field(default_factory=lambda: [128], metadata={"min": 1, "help": "hidden sizes of both tower MLPs"})
    out_dim: int = field(default=64, metadata={"min": 1, "help": "size of the user/item vectors"})
    temperature: float = field(default=0.03, metadata={"above": 0, "help": "softmax temperature on the cosine scores (0.03: the best validation NDCG@10 of the domain README's sweep)"})
    dropout: float = field(default=0.0, metadata={"min": 0, "below": 1, "help": "dropout after every hidden layer of both tower MLPs"})
    normalize: bool = field(default=True, metadata={"help": "L2-normalise user/item vectors (cosine / temperature); --no-normalize uses the raw dot product"})
    logq_weight: float = field(default=1.0, metadata={"help": "log-Q popularity correction strength (1 = Yi et al. 2019, 0 = off)"})
    history: bool = field(default=True, metadata={"help": "user tower also reads the user's training items as a mean-pooled bag (the target item is removed from its own input)"})
    history_pooling: str = field(default="mean", metadata={"help": "how the history bag becomes one vector: mean; sqrt (sum / sqrt(n)); weighted (a learned per-item weight, softmax within the bag)", "choices": ["mean", "sqrt", "weighted"]})
    history_heads: int = field(default=1, metadata={"min": 1, "help": "with --history-pooling weighted: this many learned weightings of the bag, concatenated"})
    wide: bool = field(default=True, metadata={"help": "wide and deep: add a fixed linear item-item part over the user's history (EASE's closed form, fitted on the "
                                                        "training rows of each phase only) with a gain (--wide-mode); serving stays a dot product (the vectors grow by "
                                                        "n_items columns); off above --wide-max-items. Chosen on validation (domain README); --no-wide = the plain towers"})
    wide_lambda: float = field(default=500.0, metadata={"help": "EASE's λ (L2) of the wide part"})
    wide_folds: int = field(default=5, metadata={"min": 0, "help": "with --wide-mode joint: the wide part's scores in the training loss are cross-fitted: a training row is scored by EASE fitted without its "
                                                          "fold (out of sample, as validation/test items are); 0 = the phase's full-data B (in sample)"})
    wide_mode: str = field(default="blend", metadata={"help": "blend: the towers train as without the wide part and its weight is chosen on validation with the epoch "
                                                               "(the default, chosen on validation); joint: the wide scores enter the training loss (learned gain), the towers "
                                                               "learn the residual", "choices": ["blend", "joint"]})
    wide_gate: bool = field(default=False, metadata={"help": "with --wide-mode joint: the towers' score × a learned scalar starting at 0 (training starts from the wide part alone)"})
    wide_max_items: int = field(default=5000, metadata={"help": "the wide part is turned off (logged) above this many items: its dense item-item matrix takes n_items² floats"})
    text: str = field(default="precomputed", metadata={"help": "item text from MiniLM: precomputed (cached), lora (fine-tuned), none", "choices": list(TEXT_MODES)})
    lora_r: int = field(default=8, metadata={"min": 1, "help": "LoRA rank with --text lora"})


def date_order_field():
    """``--date-order``, shared by train and train_sequential (both read --data's timestamps)."""
    return field(default="auto", metadata={"help": "how day/month dates in --data's timestamp column (01/02/2024, 01.02.2024, 01-02-2024) are read: auto = day-first when a first field "
                 "is above 12 in some row, month-first when a second one is (both: refused), month-first "
                 "with a warning when no row tells", "choices": list(DATE_ORDERS)})


@dataclass
class DataColumnsConfig:
    """``--user-col``/``--item-col``/``--rating-col``/``--time-col``: a --data file's own field names, and ``--items``/``--users``:
    its catalogue and user table (train, train_sequential; recorded in the run's config.json — the tables as absolute
    paths — which evaluate reads to re-read the data the same way)."""

    items: str | None = field(default=None, metadata={"help": "an item catalogue for a --data file: .csv/.parquet/.jsonl with item_id (or the field --item-col names), "
                                                             "title, year, genres (or categories; a list, or names separated by | or spaces) — the item tower's "
                                                             "features and what recommend --new-title places a new item by"})
    users: str | None = field(default=None, metadata={"help": "a user table for a --data file: user_id (or the field --user-col names), age (years or groups "
                                                             "such as 25-34), gender, occupation"})

    user_col: str | None = field(default=None, metadata={"help": "the field of --data holding the user ids, when it is not user_id (or userId, reviewerID, …); "
                                                                 "also a RecBole .inter file's (and its .user file's) field, e.g. session_id"})
    item_col: str | None = field(default=None, metadata={"help": "the field of --data holding the item ids, when it is not item_id (or movieId, parent_asin, asin, …); "
                                                                 "also a RecBole .inter file's (and its .item file's) field, e.g. business_id, artist_id, track_id"})
    rating_col: str | None = field(default=None, metadata={"help": "the field of --data holding the ratings, when it is not rating (e.g. stars, weight)"})
    time_col: str | None = field(default=None, metadata={"help": "the field of --data holding the times, when it is not timestamp (e.g. date)"})


def _setting(settings):
    """``get(name)`` of a config or of a run's ``config.json`` read as a dict (a setting it lacks: None)."""
    return settings.get if isinstance(settings, dict) else lambda name, default=None: getattr(settings, name, default)


# load_dataset's column name -> the config field (and config.json key) naming the file's own field: user_id -> user_col, ...
_COLUMN_FIELDS = {ours: flag[2:].replace("-", "_") for ours, flag in COLUMN_FLAGS.items()}


def side_tables(settings) -> dict[str, str | None]:
    """``{"items": …, "users": …}`` of :func:`domains.recommendation.data.load_dataset` from a config or a run's ``config.json``."""
    get = _setting(settings)
    return {"items": get("items"), "users": get("users")}


def with_absolute_tables(cfg):
    """``cfg`` with ``--items``/``--users`` as absolute paths (what config.json records: evaluate, run later from another
    folder, reads the same files)."""
    import dataclasses
    import os

    absolute = {k: os.path.abspath(os.path.expanduser(v)) for k, v in side_tables(cfg).items() if isinstance(v, str) and v.strip()}
    return dataclasses.replace(cfg, **absolute) if absolute else cfg


def data_columns(settings) -> dict[str, str | None]:
    """The ``columns=`` of :func:`domains.recommendation.data.load_dataset` from a config, or a run's ``config.json`` as a dict
    (a run recorded before the flags: none)."""
    get = _setting(settings)
    return {ours: get(name) for ours, name in _COLUMN_FIELDS.items()}


@dataclass
class DataConfig:
    data: str = field(default="ml-100k", metadata={"help": "ml-100k (bundled), a MovieLens folder (ml-100k: u.data/u.item/u.user; ml-1m: ratings.dat/users.dat/movies.dat; ml-20m), "
                                                           "a RecBole .inter file or folder, a .parquet/.csv/.jsonl interaction file or a folder of Parquet parts (Spark)",
                                                   # train --resume reads the same data, by content (core.runs; data_source.json)
                                                   "resume": RESUME_SAME_DATA, "data_names": (ML100K,),
                                                   "resume_why": "the checkpoint's users and items are that data's rows"})
    date_order: str = date_order_field()
    split: str = field(default=MSR_STRATIFIED, metadata={"help": f"{MSR_STRATIFIED} = Microsoft Recommenders' python_stratified_split (exact); "
                                                                 f"{LEGACY_STRATIFIED} = our earlier re-implementation (alias ms); "
                                                                 f"{LEAVE_LAST_OUT} = each user's last interaction (alias temporal)", "choices": SPLIT_CHOICES})
    split_seed: int = field(default=42, metadata={"min": 0, "max": 2**32 - 1, "why": "numpy's RandomState, which the exact Microsoft split uses", "help": "seed of the train/test split (Microsoft Recommenders uses 42)"})
    validation_ratio: float = field(default=0.2, metadata={"min": 0, "below": 1, "why": "0 = no validation part", "help": "share of each user's training rows held out (seeded by --seed) to choose the epoch; leave-last-out holds out each user's last training item instead; 0 = no validation part (train --epochs on the whole training split, the earlier procedure)"})
    k: int = field(default=10, metadata={"min": 1, "help": "cut-off of the ranking metrics"})


@dataclass
class TrainingConfig:
    epochs: int = field(default=20, metadata={"min": 1, "why": "0 would save an untrained model", "help": "most passes over the training interactions; early stopping on validation NDCG@k picks the epoch"})
    patience: int = field(default=3, metadata={"min": 0, "help": "stop after this many epochs without a better validation NDCG@k (0 = train all --epochs)"})
    refit: bool = field(default=True, metadata={"help": "after choosing the epoch on validation, retrain on the whole training part for that many epochs (else keep the model fitted without the validation rows)"})
    softmax: str = field(default="sampled", metadata={"help": "sampled: in-batch softmax with log-Q correction (the other positives of the batch are the negatives); "
                                                                "full: softmax over the whole catalogue (every item through the item tower at every step; small catalogues)",
                                                        "choices": list(SOFTMAX_MODES)})
    batch_size: int = field(default=1024, metadata={"min": 2, "why": "the other positives of a batch are the negatives", "help": "interactions per batch (= in-batch negatives + 1)"})
    lr: float = field(default=0.005, metadata={"above": 0, "help": "Adam learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay"})
    lr_decay: float = field(default=1.0, metadata={"help": "learning rate × this per epoch (1 = constant); applied to the dense optimizer"})
    ema_decay: float = field(default=0.995, metadata={"help": "validate, refit and save an exponential moving average of the weights (bias-corrected), updated every step with this decay; 0.995 was chosen on validation (domain README); 0 = the raw weights (the procedure before); ignored with --dmp"})
    history_dropout: float = field(default=0.2, metadata={"min": 0, "below": 1, "help": "fraction of history items dropped at random per training example (denoising)"})
    history_max: int = field(default=1000, metadata={"min": 0, "help": "a training example reads at most this many of its user's history items (a longer "
                                                                      "bag: that many drawn at random, with replacement; 0 = no limit). A user with n items costs "
                                                                      "n ids in each of its n examples; ML-100K's longest training bag is 736 (553 stratified), so the default "
                                                                      "changes nothing there. Serving and evaluation read the whole bag"})
    id_dropout: float = field(default=0.1, metadata={"min": 0, "below": 1, "help": "fraction of training ids replaced by 'unknown' (teaches the towers to use features: cold start)"})
    baselines: bool = field(default=True, metadata={"help": "also train/evaluate most-popular and BPR-MF on the same split (the tuned baselines: bench/recommendation.py)"})
    bpr_epochs: int = field(default=10, metadata={"help": "BPR-MF epochs"})
    bpr_dim: int = field(default=64, metadata={"help": "BPR-MF factors"})
    dmp: bool = field(default=False, metadata={"help": "train through TorchRec DistributedModelParallel (gloo on CPU; torchrun for >1 process)"})
    sharding: str = field(default="table_wise", metadata={"help": "sharding type of the embedding tables with --dmp (CPU: " + ", ".join(CPU_SHARDING) + ")"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads (0 = torch default). 1 was the fastest for this small model on the busy shared 2-core machine, in ad-hoc timings"})
    max_steps: int = field(default=0, metadata={"min": 0, "help": "stop each training phase after this many steps (0 = no limit); for smoke tests"})


@dataclass
class TrainConfig(ModelConfig, DataColumnsConfig, DataConfig, TrainingConfig, TrackingConfig, SeedConfig, DeviceConfig, ResumeConfig, RunConfig):
    """python -m domains.recommendation.train"""

    @classmethod
    def fixed_on_resume(cls, settings: dict) -> dict:
        """What ``--resume`` must not change (core.runs refuses it before the data is read): :func:`held_out_settings`."""
        return held_out_settings(settings)

    @classmethod
    def resume_help_notes(cls) -> dict[str, str]:
        """``--help``'s words for the flags :meth:`fixed_on_resume` names, with the conditions of
        :func:`held_out_settings`: the seeds draw only a stratified split's rows, leave-last-out counts only whether
        there is a validation part."""
        fixed = RESUME_HELP.strip("()")  # 'fixed on --resume'
        return {**super().resume_help_notes(),
                "split_seed": f"({fixed} with a stratified split)",
                "seed": f"({fixed} with a stratified split and --validation-ratio above 0)",
                "validation_ratio": f"({fixed}; with {LEAVE_LAST_OUT}, only whether it is 0)"}

    @classmethod
    def why_fixed_on_resume(cls, names) -> str:  # noqa: ANN001
        return ("these decide which interactions are held out, and the checkpoint has trained on the run's training rows, so it could be "
                "tested or validated on rows it has seen (test leakage)")


def held_out_settings(settings: dict) -> dict:
    """The settings (of a config or a run's ``config.json``) that decide which interactions are held out: the test
    split (``split``; ``split_seed`` for the stratified splits) and the validation carve (``validation_ratio``; ``seed``
    for the stratified splits, whose carve it draws); ``date_order`` too, as it decides the time order leave-last-out
    and the latest-duplicate rule read; the file's own field names (``--user-col`` …) and its ``--items``/``--users`` tables,
    which decide the rows themselves. Split aliases are resolved (``ms`` is ``stratified-75-legacy``)."""
    split = settings.get("split")
    try:
        split = split_name(split)
    except SplitError:
        pass
    held = {"split": split}
    if split == LEAVE_LAST_OUT:  # the last item tests, the one before validates: no draw, only on/off of the validation part
        held["validation_ratio"] = bool(settings.get("validation_ratio"))
    else:
        held["split_seed"] = settings.get("split_seed")
        if settings.get("validation_ratio"):
            held["seed"] = settings.get("seed")
        held["validation_ratio"] = settings.get("validation_ratio")
    held["date_order"] = settings.get("date_order", "auto")
    held.update({name: settings.get(name) for name in _COLUMN_FIELDS.values()})  # which fields of the file are the users, items, ratings and times
    held.update(side_tables(settings))  # the catalogue and user table: the checkpoint's items and users are theirs
    return held



@dataclass
class EvaluateConfig(ModelRunConfig, TrackingConfig, RunConfig):
    """python -m domains.recommendation.evaluate"""

    data: str | None = field(default=None, metadata={"help": "where the run's training data is now, when it has moved since training "
                                                              "(default: the absolute path train recorded; for older runs, its --data from this folder)"})
    items: str | None = field(default=None, metadata={"help": "where the run's --items table is now, when it has moved since training "
                                                               "(default: the path recorded in the run's config.json)"})
    users: str | None = field(default=None, metadata={"help": "where the run's --users table is now, when it has moved since training "
                                                               "(default: the path recorded in the run's config.json)"})


@dataclass
class ScoreConfig(ScoringConfig, ModelRunConfig, RunConfig):
    """python -m domains.recommendation.score"""

    k: int = field(default=10, metadata={"min": 1, "help": "items per user"})
    index: str = field(default="hnsw", metadata={"help": "approximate index next to the exact search: hnsw, ivf, flat (exact FAISS) or none", "choices": list(INDEX_TYPES)})
    users_per_item: int = field(default=256, metadata={"min": 1, "help": "users per work item"})


@dataclass
class RecommendConfig(ModelRunConfig, RunConfig):
    """python -m domains.recommendation.recommend"""

    # a user id identifies a person: the job's config.json says "<not recorded: private>" (core.config.recorded_config)
    user: str | None = field(default=None, metadata={"private": True, "help": "user id to recommend for (not recorded in the job's files)"})
    similar_to: str | None = field(default=None, metadata={"help": "item id: list the most similar items"})
    new_title: str | None = field(default=None, metadata={"help": "cold start: title of a new item"})
    new_genres: list[str] = field(default_factory=list, metadata={"help": "cold start: genres of the new item"})
    new_year: int = field(default=-1, metadata={"help": "cold start: release year of the new item"})
    k: int = field(default=10, metadata={"min": 1, "help": "how many items (or users for cold start)"})
