"""Train the 3D medical UNet with differential privacy (DP-SGD, Opacus) and save it as a model run.

    python -m domains.medical.train_private --epsilon 8            # (ε, δ=1e-5) per training patch
    python -m domains.medical.train_private --epsilon inf          # the same code without noise or clipping
    python -m domains.medical.train_private --epsilon 8 --init public --trainable last --lr 1e-3 --patch 24 --batch-size 8 --steps 60
        # public pretraining (images synthesised only from the label map, no privacy needed) + DP-SGD of the last block

The privacy unit is one training patch, not a subject (the bundled tasks hold one training subject);
see domains/medical/private.py. ε, δ, the noise multiplier and the accountant are written to
metrics.json (and into the weights file's metadata); the held-out mean Dice is the same volume and
metric as ``train``'s. Utility–privacy tables: ``bench/trust.py --part medical-privacy`` (from scratch) and
``--part medical-privacy-public`` (public pretraining + private fine-tuning; what counts as public: private.PUBLIC_DATA).
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.cli import run_cli
from core.runs import Run
from domains.medical.private import PrivateConfig, fit_private

__all__ = ["PrivateConfig", "train_private", "main"]


def train_private(cfg: PrivateConfig) -> Path:
    with Run.start("medical", cfg, command="train_private", kind="model") as run:
        metrics = fit_private(cfg, run)
        run.finish(metrics)
        print({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in metrics.items()})
    return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(PrivateConfig, train_private, argv, doc=__doc__.split("\n\n")[0], prog="python -m domains.medical.train_private")


if __name__ == "__main__":
    sys.exit(main())
