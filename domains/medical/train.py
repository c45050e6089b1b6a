"""Train a 3D segmentation network on an MSD-layout task: ``python -m domains.medical.train``.

Defaults run offline on the prepared ``msd-brain-aal`` task (Colin27 T1 + AAL, 4 classes) in a few
minutes on 2 CPU cores: 3 mm spacing, 48³ patches (144 mm of context — enough to tell left from right)
drawn foreground-balanced from a cached volume, MONAI UNet, DiceCE loss, AdamW + cosine schedule, mixed
precision where the hardware has it (GPU; bf16 on CPUs with AMX — ``--no-amp`` for fp32).

Every ``--val-every`` epochs: sliding-window inference on the validation volume with per-class Dice
and HD95; the best mean Dice is kept as ``best.safetensors``; training stops early after
``--patience`` validations without improvement. ``--resume`` continues from the last checkpoint and
ends exactly where the uninterrupted run with the same seed ends. At the end the best model is
evaluated on the held-out test volume(s) on their native grid. (Loop: ``domains.medical.training.fit``.)

Also supported: ``--task /path/to/Task09_Spleen`` (any MSD folder), ``--model segresnet``, torchrun.
Refused: 4D / multi-channel inputs (MSD BrainTumour-style), with a clear error.
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.cli import run_cli
from core.device import set_cpu_threads
from core.distributed import DataParallel
from core.runs import Run, check_resumable
from domains.medical.config import TrainConfig
from domains.medical.training import fit, init_source, load_training_task

__all__ = ["train", "main"]


def train(cfg: TrainConfig) -> Path:
    """Train, select, stop early, evaluate on the test volume; returns the run directory."""
    check_resumable("medical", cfg, "train")  # --resume of a run that cannot be continued: refused before the task is loaded
    task = load_training_task(cfg.task)
    init_source(cfg, task)  # an --init-from run whose network does not fit is refused before a run folder exists
    set_cpu_threads(cfg.threads)
    with DataParallel(cfg.device) as dp, Run.start("medical", cfg, command="train", data_parallel=dp) as run:
        run.finish(fit(cfg, run, dp, task))
    return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(TrainConfig, train, argv, doc=__doc__, prog="python -m domains.medical.train")


if __name__ == "__main__":
    sys.exit(main())
