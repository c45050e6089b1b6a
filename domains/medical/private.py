"""Differentially private training of the 3D medical UNet (DP-SGD with Opacus): the library under
``python -m domains.medical.train_private``.

Privacy unit: ONE TRAINING PATCH (a ``patch``³ crop of a training volume with its label crop). The
training set of a private run is fixed before training: ``patches`` foreground-balanced crops drawn
once (seeded) from the task's training volume(s) with the standard mild augmentation. Every step
samples each patch independently with probability ``batch_size / patches`` (Poisson sampling, what
the accountant assumes); Opacus's hook-based grad sampler (``GradSampleModule``) computes each
patch's exact gradient — MONAI's UNet uses InstanceNorm (no cross-example statistics; BatchNorm
would break per-example privacy and is refused by Opacus's validator), and its transposed
convolutions and PReLUs go through Opacus's functorch fallback — Opacus's ``DPOptimizer`` clips each
to ``max_grad_norm`` and adds Gaussian noise, and the PRV (or RDP) accountant gives ε at ``delta``.

What the ε protects: one patch. The bundled brain tasks hold ONE training subject, so patches overlap
and all come from one person: a per-person guarantee would need group privacy over every patch of
that person (ε grows with the group size) or a data set with many subjects where the unit is the
subject (one example per subject per step). The code is the same; the unit is stated so that a
data-protection officer can judge what the number means. ε = ∞ runs the same code with noise 0 and
no clipping (the non-private reference of the utility–privacy table).

Public pretraining + private fine-tuning (``--init public --trainable last``), the recipe that gives DP
models their utility: the UNet is first trained WITHOUT privacy on public data — here images synthesised
only from the task's whole-head label map (``domains.medical.synth``, every draw synthetic, random
intensities per label; no real image is ever shown) — and then only a small parameter set (the last
up-sampling block) is trained with DP-SGD on the private patches. Fewer trained parameters means less
noise in total, and the public model already knows the anatomy. What counts as public must be stated:
in the bundled brain task the label map is Colin27's own (AAL regions, split into tissues by its T1
intensities), i.e. the "public" data derive from the same subject as the private patches — the code is
the recipe, the bundled data only simulate the split. The ε covers the private fine-tuning only (the
public pretraining needs none).
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from core.config import RunConfig, SeedConfig, TrackingConfig
from core.logging import get_logger
from core.privacy import DPConfig, epsilon_spent, make_dp_optimizer, poisson_batches
from domains.medical.config import check_unet_levels
from domains.medical.data import BRAIN_TASK, MsdTask

__all__ = ["PrivateConfig", "PRIVACY_UNIT", "PUBLIC_DATA", "TRAINABLE", "PatchSet", "pipeline", "draw_patches", "dp_model", "select_trainable",
           "public_sampler", "pretrain_public", "initial_model", "train_private_model", "heldout_dice", "step_cost", "utility_privacy", "fit_private"]

log = get_logger("medical.private")
PRIVACY_UNIT = "one training patch (a patch³ crop of a training volume with its labels), not a subject"
PUBLIC_DATA = ("images synthesised only from the task's whole-head label map (random intensities per label, no real image); "
               "in the bundled brain task that map is Colin27's own (AAL + a tissue split by its T1 intensities): "
               "derived from the same subject as the private patches")
# parameter sets DP-SGD may train: name -> parameter-name patterns (None = all)
TRAINABLE = {"all": None, "last": ["model.2"]}  # "last": MONAI UNet's last up-sampling block (transposed conv + output conv)


@dataclass
class PrivateConfig(DPConfig, TrackingConfig, SeedConfig, RunConfig):
    """``python -m domains.medical.train_private``: the 3D UNet trained with DP-SGD (small settings)."""

    task: str = field(default=BRAIN_TASK, metadata={"help": "prepared task name or MSD folder"})
    spacing: float = field(default=3.0, metadata={"above": 0, "help": "isotropic resampling spacing in mm"})
    patch: int = field(default=32, metadata={"min": 1, "help": "cubic patch side in voxels (training and sliding window)"})
    channels: tuple[int, ...] = field(default=(8, 16, 32, 64), metadata={"min": 1, "help": "UNet feature channels per level"})
    patches: int = field(default=256, metadata={"min": 1, "help": "training set size: patches drawn once from the training volume(s) (the privacy unit is one patch)"})
    steps: int = field(default=120, metadata={"min": 1, "help": "DP-SGD steps"})
    batch_size: int = field(default=16, metadata={"min": 1, "help": "expected patches per step (sampling rate = batch_size / patches)"})
    lr: float = field(default=3e-3, metadata={"above": 0, "help": "Adam learning rate"})
    threads: int = field(default=1, metadata={"min": 1, "help": "torch CPU threads"})
    init: str = field(default="scratch", metadata={"help": "scratch: random init; public: first train the UNet non-privately on images synthesised "
                                                           "only from the task's label map (see PUBLIC_DATA), then DP-fine-tune it", "choices": ["scratch", "public"]})
    trainable: str = field(default="all", metadata={"help": "parameters DP-SGD trains: all, or last (the UNet's last up-sampling block, ~1 %% of them)",
                                                    "choices": list(TRAINABLE)})
    public_steps: int = field(default=1000, metadata={"min": 0, "help": "with --init public: non-private pretraining steps on synthetic patches"})
    public_lr: float = field(default=3e-3, metadata={"above": 0, "help": "with --init public: Adam learning rate of the pretraining"})

    def __post_init__(self) -> None:
        check_unet_levels(self.channels)


@dataclass
class PatchSet:
    """The fixed training set of a private run: images (N, 1, P, P, P) and labels (N, 1, P, P, P)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)


def pipeline(cfg: PrivateConfig, task: MsdTask):
    from domains.medical.config import PipelineConfig

    return PipelineConfig(modality=task.modality, num_classes=task.num_classes, spacing=cfg.spacing, patch=cfg.patch, num_samples=4)


def draw_patches(task: MsdTask, pipe, n: int, seed: int = 0) -> PatchSet:
    """``n`` foreground-balanced patches (standard mild augmentation) drawn once, seeded, from the
    task's training volume(s) — the same sampler as central training (``transforms.cached_patch_dataset``)."""
    from domains.medical.transforms import cached_patch_dataset, preprocess

    cases = task.training[:-1] if len(task.training) >= 2 else task.training  # the last one is the validation case then
    pre = preprocess(pipe)
    ds = cached_patch_dataset([pre(dict(c)) for c in cases], pipe, draws_per_epoch=math.ceil(n / pipe.num_samples), preprocessed=True)
    ds.base.transform.set_random_state(seed=seed)
    imgs, labs = [], []
    i = 0
    while len(imgs) < n:
        for item in ds[i % len(ds)]:
            imgs.append(torch.as_tensor(item["image"]).float().clone())
            labs.append(torch.as_tensor(item["label"]).round().long())
        i += 1
    return PatchSet(torch.stack(imgs[:n]), torch.stack(labs[:n]))


def dp_model(model: torch.nn.Module) -> torch.nn.Module:
    """Opacus's ``GradSampleModule`` around ``model`` after its validator found nothing to fix (raises
    on BatchNorm and other layers that mix examples)."""
    from opacus import GradSampleModule
    from opacus.validators import ModuleValidator

    model.train()  # the validator (and per-example hooks) need training mode
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(f"model is not DP-compatible: {errors[:3]} (use InstanceNorm/GroupNorm, or opacus ModuleValidator.fix)")
    return GradSampleModule(model, loss_reduction="mean")


def select_trainable(model: torch.nn.Module, which: str) -> int:
    """Freeze every parameter of ``model`` outside the set ``which`` (:data:`TRAINABLE`); returns the
    number of trainable parameters. Opacus computes per-patch gradients only for those."""
    from core.finetune import freeze, unfreeze

    if which not in TRAINABLE:
        raise ValueError(f"unknown trainable set {which!r} (choose from {', '.join(TRAINABLE)})")
    if TRAINABLE[which] is not None:
        freeze(model)
        unfreeze(model, TRAINABLE[which])
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def public_sampler(task: MsdTask, pipe, seed: int = 0):
    """The public data: a synth sampler that draws ONLY images synthesised from the task's whole-head
    generation label map (``p_synth = 1``: no real-T1 draw, unlike central ``--augment synth``)."""
    import dataclasses

    from domains.medical.data import read_synthesis
    from domains.medical.validation import MedicalInputError
    from domains.medical.training import synth_sampler

    synthesis = read_synthesis(task.root)
    if synthesis is None:
        raise MedicalInputError(f"task {task.root} has no whole-head label map (no synthesis entry in dataset.json): no public data to pretrain on")
    sampler = synth_sampler(synthesis, pipe, seed=seed)
    sampler.cfg = dataclasses.replace(sampler.cfg, p_synth=1.0)
    return sampler


def pretrain_public(cfg: PrivateConfig, task: MsdTask, pipe) -> tuple[torch.nn.Module, dict]:
    """Non-private pretraining of the UNet on public synthetic patches (:func:`public_sampler`):
    ``public_steps`` Adam steps of ``batch_size`` patches; returns (model, info)."""
    from monai.losses import DiceCELoss

    from core.progress import progress
    from domains.medical.model import build_model
    from domains.medical.training import train_step

    torch.manual_seed(cfg.seed)
    model = build_model("unet", task.num_classes, channels=cfg.channels)
    sampler = public_sampler(task, pipe, seed=cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.public_lr)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    t0, losses = time.perf_counter(), []
    model.train()
    for _ in progress(range(cfg.public_steps), desc="public pretraining (synthetic patches)"):  # the central trainer's step, fp32 on the CPU
        losses.append(train_step(model, sampler.sample(cfg.batch_size), loss_fn, opt, torch.device("cpu"), amp=False))
    model.eval()
    return model, {"public_steps": cfg.public_steps, "public_lr": cfg.public_lr, "public_data": PUBLIC_DATA,
                   "public_seconds": round(time.perf_counter() - t0, 1), "public_final_loss": float(np.mean(losses[-20:])) if losses else float("nan")}


def initial_model(cfg: PrivateConfig, task: MsdTask, pipe) -> tuple[torch.nn.Module, dict]:
    """The model DP-SGD starts from: random (``init scratch``) or pretrained on public data."""
    from domains.medical.model import build_model

    if cfg.init == "public":
        return pretrain_public(cfg, task, pipe)
    torch.manual_seed(cfg.seed)
    return build_model("unet", task.num_classes, channels=cfg.channels), {}


def heldout_dice(model: torch.nn.Module, pipe, task: MsdTask) -> dict:
    """Mean foreground Dice (and per class) on the task's labelled test volume(s), by sliding window."""
    from domains.medical.metrics import evaluate_segmenter
    from domains.medical.predict import Segmenter

    seg = Segmenter(model, pipe, task.class_names, device="cpu", sw_batch_size=4, overlap=0.25, amp=False)
    ev = evaluate_segmenter(seg, task.test, hd95=False)
    nan = float("nan")  # the callers compute with these: an undefined (None) Dice stays NaN here, as before
    return {"test_mean_dice": nan if ev["mean_dice"] is None else float(ev["mean_dice"]),
            **{f"test_dice/{k}": nan if v is None else float(v) for k, v in ev["dice"].items()}}


def train_private_model(cfg: PrivateConfig, data: PatchSet, initial: torch.nn.Module, run=None) -> tuple[torch.nn.Module, dict]:
    """DP-SGD from ``initial`` (left unchanged) on ``data``; returns (the trained plain model, metrics
    with the accountant's ε at δ, the noise multiplier, the clipped fraction and per-step times)."""
    from monai.losses import DiceCELoss

    model = copy.deepcopy(initial)
    n_trainable = select_trainable(model, cfg.trainable)
    n = len(data)
    q, noise, clip = cfg.plan(cfg.batch_size, n, cfg.steps, unit="patches")
    private = not math.isinf(cfg.epsilon)
    gsm = dp_model(model)
    opt = make_dp_optimizer(torch.optim.Adam([p for p in gsm.parameters() if p.requires_grad], lr=cfg.lr), noise_multiplier=noise, max_grad_norm=clip,
                            expected_batch_size=cfg.batch_size, seed=cfg.seed)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)  # batch=False: a mean of per-patch losses
    params = [p for p in gsm.parameters() if p.requires_grad]
    t0 = time.perf_counter()
    step_times, losses, clipped, seen = [], [], 0, 0
    gsm.train()
    for step, idx in enumerate(poisson_batches(n, q, cfg.steps, seed=cfg.seed)):
        ts = time.process_time()
        opt.zero_grad(set_to_none=True)
        if len(idx):
            x, y = data.images[idx], data.labels[idx]
            loss = loss_fn(gsm(x), y)
            loss.backward()  # the hooks leave each patch's gradient in p.grad_sample
            norms = torch.stack([p.grad_sample.reshape(len(idx), -1).norm(dim=1) for p in params], 1).norm(dim=1)
            clipped += int((norms > clip).sum())
            seen += len(idx)
            losses.append(float(loss.detach()))
        else:  # an empty Poisson batch: noise only
            for p in params:
                p.grad_sample = torch.zeros((1, *p.shape))
        opt.step()
        step_times.append(time.process_time() - ts)
        if run is not None and (step + 1) % 10 == 0:
            run.log_metrics({"train_loss": float(np.mean(losses[-10:])) if losses else float("nan")}, step=step + 1)
    gsm.eval()
    plain = gsm._module
    for p in plain.parameters():  # every parameter trainable again (as a saved model is loaded)
        p.requires_grad_(True)
    eps = epsilon_spent(noise, q, cfg.steps, cfg.delta, cfg.accountant)
    metrics = {"epsilon": eps, "target_epsilon": cfg.epsilon, "delta": cfg.delta, "noise_multiplier": noise,
               "max_grad_norm": cfg.max_grad_norm if private else None, "sample_rate": q, "steps": cfg.steps, "training_patches": n,
               "clipped_fraction": clipped / max(1, seen), "accountant": cfg.accountant, "privacy_unit": PRIVACY_UNIT,
               "trainable": cfg.trainable, "trainable_params": n_trainable,
               "lr": cfg.lr, "step_cpu_s": float(np.median(step_times)), "seconds": round(time.perf_counter() - t0, 1),
               "final_train_loss": float(np.mean(losses[-10:])) if losses else float("nan")}
    log.info(f"DP-SGD: ε={eps:.3g} at δ={cfg.delta:g}, noise {noise:.3g}, clipped {metrics['clipped_fraction']:.2f}")
    return plain, metrics


def step_cost(model: torch.nn.Module, data: PatchSet, batch: int, repeats: int = 3, trainable: str = "all") -> dict:
    """Median CPU seconds and peak extra memory (MB, tracemalloc-free estimate from grad_sample sizes)
    of one training step with per-example gradients vs a plain step, same model, batch and trained
    parameter set (:data:`TRAINABLE`)."""
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    x, y = data.images[:batch], data.labels[:batch]
    plain = copy.deepcopy(model)
    select_trainable(plain, trainable)
    dp_copy = copy.deepcopy(model)
    select_trainable(dp_copy, trainable)
    gsm = dp_model(dp_copy)
    out = {}
    for name, m in (("plain", plain), ("per-sample", gsm)):
        times = []
        for _ in range(repeats):
            m.zero_grad(set_to_none=True)
            t = time.process_time()
            loss_fn(m(x), y).backward()
            times.append(time.process_time() - t)
        out[f"{name}_step_cpu_s"] = float(np.median(times))
    params = [p for p in gsm.parameters() if p.requires_grad]
    out["grad_sample_mb"] = sum(p.grad_sample.numel() for p in params) * 4 / 2**20
    out["grad_mb"] = sum(p.numel() for p in params) * 4 / 2**20
    return out


def utility_privacy(cfg: PrivateConfig, epsilons=(1.0, 3.0, 8.0, math.inf), also: tuple[str, ...] = (), scratch: tuple[float, ...] = (),
                    scratch_lr: float | None = None) -> dict:
    """The utility–privacy table at small settings: the same initial UNet (random, or pretrained on public
    data with ``cfg.init = "public"``) and the same fixed patch set, DP-SGD of ``cfg.trainable`` at each
    target ε (∞ = same code, no noise, no clipping), held-out Dice of each; plus the per-step cost of
    per-patch gradients vs a plain step. ``also``: other trainable sets run from the same initial model
    (``out["also"][name][eps]``); ``scratch``: target εs also run from random init, all parameters
    (``out["scratch"][eps]``, the from-scratch recipe beside the public one; Adam lr ``scratch_lr``, default
    ``cfg.lr``). Plain dicts (for bench/trust.py)."""
    from domains.medical.model import build_model
    from domains.medical.training import load_training_task

    torch.set_num_threads(cfg.threads)
    task = load_training_task(cfg.task)
    pipe = pipeline(cfg, task)
    data = draw_patches(task, pipe, cfg.patches, seed=cfg.seed)
    initial, info = initial_model(cfg, task, pipe)
    out = {"initial": heldout_dice(initial, pipe, task), "runs": {}, "also": {}, "scratch": {}, "public": info,
           "params": sum(p.numel() for p in initial.parameters()),
           "cost": step_cost(initial, data, cfg.batch_size, trainable=cfg.trainable), "test_cases": [c.get("image") for c in task.test]}
    log.info(f"initial model ({cfg.init}): held-out mean Dice {out['initial']['test_mean_dice']:.3f}")

    def one(run_cfg, start):
        model, m = train_private_model(run_cfg, data, start)
        m.update(heldout_dice(model, pipe, task))
        log.info(f"{run_cfg.init}/{run_cfg.trainable} target ε={run_cfg.epsilon}: ε spent {m['epsilon']:.3g}, "
                 f"held-out mean Dice {m['test_mean_dice']:.3f}, {m['seconds']} s")
        return m

    for eps in epsilons:
        out["runs"][eps] = one(_replace(cfg, epsilon=eps), initial)
    for name in also:
        out["also"][name] = {eps: one(_replace(cfg, epsilon=eps, trainable=name), initial) for eps in epsilons}
    if scratch:
        torch.manual_seed(cfg.seed)
        random_init = build_model("unet", task.num_classes, channels=cfg.channels)
        out["scratch_initial"] = heldout_dice(random_init, pipe, task)
        out["scratch"] = {eps: one(_replace(cfg, epsilon=eps, init="scratch", trainable="all", lr=scratch_lr or cfg.lr), random_init) for eps in scratch}
    return out


def _replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def fit_private(cfg: PrivateConfig, run) -> dict:
    """The ``train_private`` command's work inside ``run``: draw the patch set, DP-SGD the UNet, save it
    as a model run (``best.safetensors`` + ``task.json``, so ``evaluate`` / ``infer`` load it like any
    other; the privacy parameters go into metrics.json) and score it on the held-out volume(s)."""
    from core.checkpoint import save_weights
    from domains.medical.model import create_model, model_spec
    from domains.medical.training import load_training_task, write_task_meta

    torch.set_num_threads(cfg.threads)
    task = load_training_task(cfg.task)
    pipe = pipeline(cfg, task)
    data = draw_patches(task, pipe, cfg.patches, seed=cfg.seed)
    spec = model_spec("unet", num_classes=task.num_classes, channels=tuple(cfg.channels))
    if cfg.init == "public":
        initial, public = pretrain_public(cfg, task, pipe)
        public["public_test_mean_dice"] = heldout_dice(initial, pipe, task)["test_mean_dice"]
    else:
        torch.manual_seed(cfg.seed)
        initial, public = create_model(spec), {}
    model, metrics = train_private_model(cfg, data, initial, run)
    metrics.update(public)
    privacy = {k: metrics[k] for k in ("epsilon", "delta", "noise_multiplier", "max_grad_norm", "accountant", "privacy_unit", "sample_rate", "steps",
                                       "trainable")}
    if public:
        privacy["public_data"] = PUBLIC_DATA
    save_weights(run.path("best.safetensors"), model, metadata={"privacy": json.dumps(privacy, default=str)})
    write_task_meta(run, cfg.task, task, pipe, spec)
    metrics.update(heldout_dice(model, pipe, task))
    return metrics
