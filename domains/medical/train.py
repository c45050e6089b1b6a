"""Train a 3D segmentation network on an MSD-layout task: ``python -m domains.medical.train``.

Defaults run offline on the prepared ``msd-brain-aal`` task (Colin27 T1 + AAL, 4 classes) in a few
minutes on 2 CPU cores: 3 mm spacing, 48³ patches (144 mm of context — enough to tell left from right) drawn foreground-balanced from a cached volume,
MONAI UNet, DiceCE loss, AdamW + cosine schedule, mixed precision where the hardware has it (GPU;
bf16 on CPUs with AMX — ``--no-amp`` for fp32).

Every ``--val-every`` epochs: sliding-window inference on the validation volume with per-class Dice
and HD95; the best mean Dice is kept as ``best.safetensors``; training stops early after
``--patience`` validations without improvement. ``--resume`` continues from the last checkpoint.
At the end the best model is evaluated on the held-out test volume(s) on their native grid.

Validation volume: the tasks here have a single training subject, so there is no second subject to
select on without touching the test volume. Validation uses a fixed, deterministically deformed
(rotated, scaled, gamma-changed) copy of the training volume; the test volume is only used once,
after training. With a user MSD task holding ≥ 2 training cases, the last one is held out instead.

Also supported: ``--task /path/to/Task09_Spleen`` (any MSD folder), ``--model segresnet``.
Refused: 4D / multi-channel inputs (MSD BrainTumour-style), with a clear error.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai import transforms as mt
from monai.data import DataLoader, list_data_collate
from monai.losses import DiceCELoss

from core.checkpoint import save_weights
from core.cli import run_cli
from core.config import DeviceConfig, ResumeConfig, RunConfig, SeedConfig, TrackingConfig
from core.device import amp_dtype, autocast, set_cpu_threads
from core.distributed import DataParallel
from core.io import atomic_write_json
from core.logging import get_logger
from core.progress import progress
from core.runs import Run
from domains.medical.data import BRAIN_TASK, MsdTask, read_msd_task, task_dir
from domains.medical.evaluate import dice_per_class, evaluate_heldout, hd95_per_class
from domains.medical.infer import Segmenter, sliding_window_logits
from domains.medical.model import MODEL_NAMES, build_model
from domains.medical.transforms import PipelineConfig, cached_patch_dataset, preprocess
from domains.medical.validation import MedicalInputError

__all__ = ["TrainConfig", "train", "train_step", "train_memory_format", "main", "pipeline_config", "validation_volume"]

log = get_logger("medical.train")


@dataclass
class TrainConfig(TrackingConfig, SeedConfig, DeviceConfig, ResumeConfig, RunConfig):
    task: str = field(default=BRAIN_TASK, metadata={"help": "prepared task name (msd-brain-aal, msd-headct-bone) or an MSD folder with dataset.json"})
    model: str = field(default="unet", metadata={"help": "3D network", "choices": list(MODEL_NAMES)})
    channels: tuple[int, ...] = field(default=(16, 32, 64, 128), metadata={"help": "feature channels per level (UNet); first one for SegResNet"})
    spacing: float = field(default=3.0, metadata={"help": "isotropic resampling spacing in mm"})
    patch: int = field(default=48, metadata={"help": "cubic patch side in voxels (training and sliding window)"})
    num_samples: int = field(default=4, metadata={"help": "patches drawn per volume per step (the batch size)"})
    iters_per_epoch: int = field(default=20, metadata={"help": "optimizer steps per epoch"})
    max_epochs: int = field(default=15, metadata={"help": "upper bound on epochs"})
    val_every: int = field(default=3, metadata={"help": "validate every N epochs"})
    patience: int = field(default=3, metadata={"help": "early stopping: validations without improvement"})
    lr: float = field(default=3e-3, metadata={"help": "peak learning rate (AdamW, cosine decay)"})
    weight_decay: float = field(default=1e-5, metadata={"help": "AdamW weight decay"})
    sw_batch_size: int = field(default=4, metadata={"help": "sliding-window batch"})
    overlap: float = field(default=0.25, metadata={"help": "sliding-window overlap"})
    ct_level: float = field(default=400.0, metadata={"help": "CT window level (HU)"})
    ct_width: float = field(default=1800.0, metadata={"help": "CT window width (HU)"})
    amp: bool = field(default=True, metadata={"help": "mixed precision: fp16/bf16 on GPU, bf16 on CPUs with AMX bf16 units (about 2x there); fp32 on other CPUs"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 = auto (all cores, fewer when the machine is already busy — oversubscribed OpenMP threads are several times slower)"})
    evaluate_test: bool = field(default=True, metadata={"help": "evaluate the best model on the held-out test volume(s) at the end"})




def pipeline_config(cfg: TrainConfig, task: MsdTask) -> PipelineConfig:
    return PipelineConfig(modality=task.modality, num_classes=task.num_classes, spacing=cfg.spacing, patch=cfg.patch,
                          num_samples=cfg.num_samples, ct_level=cfg.ct_level, ct_width=cfg.ct_width,
                          allow_flip=not any(n.lower().endswith(("left", "right", "_l", "_r")) for n in task.class_names))


def validation_volume(d: dict, deform: bool) -> dict:
    """The validation case (an output of ``preprocess``); ``deform`` applies the fixed deformation
    described above (to a copy)."""
    if deform:
        d = mt.Compose([
            mt.Affined(keys=["image", "label"], rotate_params=(0.08, -0.06, 0.05), scale_params=(1.05, 0.96, 1.04),
                       mode=("bilinear", "nearest"), padding_mode="zeros"),
            mt.AdjustContrastd(keys="image", gamma=1.1, retain_stats=True),
        ])(d)
    return d


def _validate(model, val: dict, pipe: PipelineConfig, cfg: TrainConfig, class_names: list[str], device) -> dict:
    logits = sliding_window_logits(model, val["image"][None].as_tensor(), pipe.patch, cfg.sw_batch_size, cfg.overlap, device, amp=cfg.amp)
    pred = logits[0].argmax(0).numpy().astype(np.uint8)
    lab = val["label"][0].numpy().round().astype(np.uint8)
    dice = dice_per_class(pred, lab, class_names)
    hd = hd95_per_class(pred, lab, class_names, (pipe.spacing,) * 3)
    return {"val_mean_dice": float(np.nanmean(list(dice.values()))), **{f"val_dice/{k}": v for k, v in dice.items()},
            **{f"val_hd95/{k}": v for k, v in hd.items()}}


def train_memory_format(device: torch.device, amp: bool) -> torch.memory_format:
    """Memory format for training a 3D net: ``channels_last_3d`` for fp32 on the CPU, where oneDNN's
    3D convolutions ran a training step ~1.25x faster in it (ad-hoc timing; bench/medical.py measures
    the whole fp32 pipeline);
    contiguous under bf16 autocast (measured slightly slower in channels-last) and on GPUs (not
    measured here). Inference stays contiguous: MONAI's sliding window was slower in channels-last."""
    if device.type == "cpu" and not (amp and amp_dtype(device) is not None):
        return torch.channels_last_3d
    return torch.contiguous_format


def train_step(model: torch.nn.Module, batch: dict, loss_fn, opt: torch.optim.Optimizer, device: torch.device, amp: bool = True,
               scaler: torch.amp.GradScaler | None = None, memory_format: torch.memory_format = torch.contiguous_format) -> float:
    """One optimizer step on a patch batch (inputs in the model's ``memory_format``); the forward
    pass under :func:`core.device.autocast`, the loss on fp32 logits. Returns the loss."""
    x, y = batch["image"].to(device, non_blocking=True), batch["label"].to(device, non_blocking=True)
    if x.dim() == 5:
        x = x.contiguous(memory_format=memory_format)
    opt.zero_grad(set_to_none=True)
    with autocast(device, amp):
        logits = model(x)
    loss = loss_fn(logits.float(), y)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    return float(loss.detach())


def write_task_meta(run: Run, task_ref: str, task: MsdTask, pipe: PipelineConfig, model_meta: dict) -> dict:
    """``task.json``: what a trained run needs to be loaded back (``infer.read_task_meta``)."""
    meta = {"task": task_ref, "task_name": task.name, "modality": task.modality, "class_names": task.class_names,
            "pipeline": pipe.__dict__, "model": model_meta}
    atomic_write_json(run.path("task.json"), meta)
    return meta


def train(cfg: TrainConfig) -> Path:
    """Train, select, stop early, evaluate on the test volume; returns the run directory."""
    task = read_msd_task(task_dir(cfg.task))
    if not task.training:
        raise MedicalInputError(f"{task.root}: no training cases")
    pipe = pipeline_config(cfg, task)
    set_cpu_threads(cfg.threads)
    with DataParallel(cfg.device) as dp, Run.start("medical", cfg, data_parallel=dp) as run:
        device = run.device
        if run.is_main:
            write_task_meta(run, cfg.task, task, pipe, {"name": cfg.model, "channels": list(cfg.channels)})
        train_cases = task.training[:-1] if len(task.training) >= 2 else task.training
        val_case, deform = (task.training[-1], False) if len(task.training) >= 2 else (task.training[0], True)
        t0 = time.perf_counter()
        pre = preprocess(pipe)
        train_pre = [pre(dict(c)) for c in train_cases]  # each volume read and resampled once
        ds = cached_patch_dataset(train_pre, pipe, draws_per_epoch=cfg.iters_per_epoch, preprocessed=True)
        val = validation_volume(train_pre[0] if deform else pre(dict(val_case)), deform)
        log.info(f"cached {len(train_cases)} training volume(s) + validation in {time.perf_counter() - t0:.1f}s")
        loader = DataLoader(ds, batch_size=1, shuffle=True, num_workers=0, collate_fn=list_data_collate)

        fmt = train_memory_format(device, cfg.amp)
        model = build_model(cfg.model, task.num_classes, tuple(cfg.channels)).to(device, memory_format=fmt)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = cfg.max_epochs * cfg.iters_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        scaler = torch.amp.GradScaler("cuda") if cfg.amp and amp_dtype(device) == torch.float16 else None
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)

        state = run.resume(model, opt, sched, scaler)
        net = dp.wrap(model)  # DDP under torchrun (weights from rank 0, gradients averaged); the model itself otherwise
        step, extra = int(state["step"]), state.get("extra") or {}
        best, bad, history = float(extra.get("best", -1.0)), int(extra.get("bad", 0)), list(json.loads(extra.get("history", "[]")))
        epoch0 = step // cfg.iters_per_epoch
        stopped_early = False
        patches = 0
        t_train = time.perf_counter()
        for epoch in range(epoch0, cfg.max_epochs):
            net.train()
            losses = []
            for batch in progress(loader, desc=f"epoch {epoch + 1}/{cfg.max_epochs}", leave=False, disable=not run.is_main):
                loss = train_step(net, batch, loss_fn, opt, device, cfg.amp, scaler, memory_format=fmt)
                sched.step()
                step += 1
                patches += batch["image"].shape[0] * dp.world_size
                losses.append(loss)
            train_loss = dp.mean(float(np.mean(losses)))
            run.log_metrics({"train_loss": train_loss, "lr": sched.get_last_lr()[0]}, step)
            if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.max_epochs:
                if run.is_main:  # validation and the best checkpoint on rank 0; the decision is shared below
                    m = _validate(model, val, pipe, cfg, task.class_names, device)
                    run.log_metrics(m, step)
                    history.append({"epoch": epoch + 1, "step": step, "val_mean_dice": m["val_mean_dice"]})
                    log.info(f"epoch {epoch + 1}: loss {train_loss:.4f}, val mean Dice {m['val_mean_dice']:.4f}")
                    if m["val_mean_dice"] > best:
                        best, bad = m["val_mean_dice"], 0
                        save_weights(run.path("best.safetensors"), model, metadata={"step": str(step), "val_mean_dice": f"{best:.5f}"})
                    else:
                        bad += 1
                best, bad = dp.broadcast((best, bad))
                run.save_checkpoint(model, opt, sched, scaler=scaler, step=step, epoch=epoch + 1,
                                    extra={"best": best, "bad": bad, "history": json.dumps(history)})
                if bad >= cfg.patience:
                    log.info(f"early stopping after {bad} validations without improvement")
                    stopped_early = True
                    break
        train_seconds = time.perf_counter() - t_train
        summary = {"best_val_mean_dice": best, "steps": step, "stopped_early": stopped_early, "world_size": dp.world_size,
                   "train_patches_per_s": patches / train_seconds if patches else None, "train_seconds": train_seconds}
        if run.is_main and cfg.evaluate_test and any(c.get("label") for c in task.test):
            summary.update(evaluate_heldout(Segmenter.from_run(run.dir, device=str(device)), task.test, run))
        run.finish(summary)
    return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(TrainConfig, train, argv, doc=__doc__, prog="python -m domains.medical.train", user_errors=(MedicalInputError,))


if __name__ == "__main__":
    sys.exit(main())
