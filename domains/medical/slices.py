"""2.5D variant on the core: ImageNet EfficientNet-Lite0 encoder (``core.backbones``) + U-Net decoder,
trained on axial slices with one neighbour on each side as the 3 input channels (so the pretrained
RGB stem is used as is), fine-tuned fully or with LoRA (``core.finetune.apply_lora``; decoder
trainable, encoder frozen except the low-rank adapters): ``python -m domains.medical.slices --mode lora``.

The trained model is the registry's ``effnet2d`` (a :class:`~domains.medical.model.SliceStackSegmenter`),
so it is evaluated on the held-out 3D volume by exactly the same code as the 3D network (per-class Dice
and HD95 on the native grid). LoRA weights are merged before saving, so the run loads like any other.
(Loop: ``domains.medical.training.fit_slices``.)
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.cli import run_cli
from core.device import set_cpu_threads
from core.runs import Run
from domains.medical.config import SliceConfig
from domains.medical.training import fit_slices, load_training_task

__all__ = ["train_slices", "main"]


def train_slices(cfg: SliceConfig) -> Path:
    task = load_training_task(cfg.task)
    set_cpu_threads(cfg.threads)
    with Run.start("medical", cfg, command="slices") as run:
        run.finish(fit_slices(cfg, run, task))
    return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(SliceConfig, train_slices, argv, doc=__doc__, prog="python -m domains.medical.slices")


if __name__ == "__main__":
    sys.exit(main())
