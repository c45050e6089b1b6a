"""2.5D variant on the core: ImageNet EfficientNet-Lite0 encoder (``core.backbones``) + U-Net decoder,
trained on axial slices with one neighbour on each side as the 3 input channels (so the pretrained
RGB stem is used as is), fine-tuned fully or with LoRA (``core.finetune.apply_lora``; decoder
trainable, encoder frozen except the low-rank adapters): ``python -m domains.medical.slices --mode lora``.

The trained model is wrapped in :class:`~domains.medical.model.SliceStackSegmenter`, so it is
evaluated on the held-out 3D volume by exactly the same code as the 3D network (per-class Dice and
HD95 on the native grid). LoRA weights are merged before saving, so the run loads like any other.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss

from core.checkpoint import save_weights
from core.cli import run_cli
from core.config import DeviceConfig, ResumeConfig, RunConfig, SeedConfig, TrackingConfig
from core.logging import get_logger
from core.progress import progress
from core.runs import Run
from domains.medical.data import BRAIN_TASK, read_msd_task, task_dir
from domains.medical.evaluate import evaluate_heldout
from domains.medical.infer import Segmenter
from domains.medical.train import train_step, write_task_meta
from domains.medical.model import EfficientUNet2D, SliceStackSegmenter
from domains.medical.transforms import PipelineConfig, preprocess
from domains.medical.validation import MedicalInputError

__all__ = ["SliceConfig", "train_slices", "main"]

log = get_logger("medical.slices")


@dataclass
class SliceConfig(TrackingConfig, SeedConfig, DeviceConfig, ResumeConfig, RunConfig):
    task: str = field(default=BRAIN_TASK, metadata={"help": "prepared task name or MSD folder"})
    mode: str = field(default="full", metadata={"help": "full fine-tuning or LoRA on the encoder", "choices": ["full", "lora"]})
    spacing: float = field(default=3.0, metadata={"help": "isotropic spacing (mm) of the slices"})
    context: int = field(default=1, metadata={"help": "neighbouring slices on each side (channels = 2*context+1; 1 → 3, the RGB stem)"})
    steps: int = field(default=600, metadata={"help": "optimizer steps"})
    batch: int = field(default=8, metadata={"help": "slices per step"})
    lr: float = field(default=2e-3, metadata={"help": "learning rate (AdamW, cosine)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    pretrained: bool = field(default=True, metadata={"help": "ImageNet weights for the encoder (packaged, offline)"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 = auto"})
    amp: bool = field(default=True, metadata={"help": "mixed precision where the hardware has it (GPU; bf16 on CPUs with AMX)"})
    track: bool = field(default=True, metadata={"help": "log to MLflow"})


def _slice_batches(img: torch.Tensor, lab: torch.Tensor, num_classes: int, k: int, batch: int, rng: np.random.Generator):
    """Foreground-balanced axial slices: pick a class uniformly, then a slice containing it."""
    z_with = [np.flatnonzero((lab == c).any(dim=(0, 1)).numpy()) for c in range(num_classes)]
    z_with = [z for z in z_with if len(z)]
    padded = F.pad(img[None, None], (k, k, 0, 0, 0, 0), mode="replicate")[0, 0]
    while True:
        zs = [int(rng.choice(z_with[rng.integers(len(z_with))])) for _ in range(batch)]
        x = torch.stack([padded[:, :, z:z + 2 * k + 1].permute(2, 0, 1) for z in zs])
        y = torch.stack([lab[:, :, z] for z in zs])[:, None]
        x = x * float(rng.uniform(0.9, 1.1)) + float(rng.uniform(-0.1, 0.1))
        yield x, y


def train_slices(cfg: SliceConfig) -> Path:
    from core.finetune import apply_lora, merge_lora, trainable_parameter_report
    from core.device import set_cpu_threads

    task = read_msd_task(task_dir(cfg.task))
    if not task.training:
        raise MedicalInputError(f"{task.root}: no training cases")
    set_cpu_threads(cfg.threads)
    pipe = PipelineConfig(modality=task.modality, num_classes=task.num_classes, spacing=cfg.spacing, patch=128)
    with Run.start("medical", cfg) as run:
        d = preprocess(pipe)(dict(task.training[0]))
        img, lab = d["image"][0].as_tensor().float(), d["label"][0].as_tensor().round().long()
        net = EfficientUNet2D(task.num_classes, in_chans=2 * cfg.context + 1, pretrained=cfg.pretrained).to(run.device)
        if cfg.mode == "lora":
            apply_lora(net, target_modules=r".*encoder\..*conv_(pw|pwl)", r=cfg.lora_r, alpha=2 * cfg.lora_r, trainable=["lateral", "fuse", "head"])
        params = trainable_parameter_report(net)
        opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=1e-5)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
        batches = _slice_batches(img, lab, task.num_classes, cfg.context, cfg.batch, np.random.default_rng(cfg.seed))
        net.train()
        t0 = time.perf_counter()
        for step in progress(range(1, cfg.steps + 1), desc=f"2.5D {cfg.mode}"):
            x, y = next(batches)
            loss = train_step(net, {"image": x, "label": y}, loss_fn, opt, run.device, cfg.amp)
            sched.step()
            if step % 10 == 0 or step == cfg.steps:
                run.log_metrics({"train_loss": loss}, step)
        train_seconds = time.perf_counter() - t0
        if cfg.mode == "lora":
            merge_lora(net)
        model = SliceStackSegmenter(net.eval(), context=cfg.context)
        save_weights(run.path("best.safetensors"), model)
        write_task_meta(run, cfg.task, task, pipe, {"name": "effnet2d", "context": cfg.context, "mode": cfg.mode})
        summary = {"mode": cfg.mode, "steps": cfg.steps, "train_seconds": train_seconds, "trainable_params": params.get("trainable"),
                   "total_params": params.get("total"), "train_slices_per_s": cfg.steps * cfg.batch / train_seconds}
        seg = Segmenter(model, pipe, task.class_names, device=run.device, sw_batch_size=1, overlap=0.0, amp=cfg.amp)
        summary.update(evaluate_heldout(seg, task.test, run, label=f"2.5D EfficientNet-Lite0 ({cfg.mode})"))
        run.finish(summary)
    return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(SliceConfig, train_slices, argv, doc=__doc__, prog="python -m domains.medical.slices", user_errors=(MedicalInputError,))


if __name__ == "__main__":
    sys.exit(main())
