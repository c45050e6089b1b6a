"""Train the finance TFT with differential privacy (DP-SGD, Opacus) and save it as a model run.

    python -m domains.finance.train_private --epsilon 8            # (ε, δ=1e-5) per training window
    python -m domains.finance.train_private --epsilon inf          # the same code without noise or clipping

The privacy unit is one training window (one ticker's encoder_length + horizon consecutive days),
not a ticker and not a person; see domains/finance/private.py. ε, δ, the noise multiplier and the
accountant are written to metrics.json (and the target ε/δ to config.json); the held-out vol
pinball is the same period and metric as central and federated training.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.cli import run_cli
from core.device import set_cpu_threads
from core.runs import Run
from domains.finance.private import PrivateConfig, train_private_model
from domains.finance.trust import forecaster, new_model, prepare

__all__ = ["PrivateConfig", "train_private", "main"]


def train_private(cfg: PrivateConfig) -> Path:
    set_cpu_threads(cfg.threads)
    with Run.start("finance", cfg, new_name=f"private-{pd.Timestamp.now():%Y%m%d-%H%M%S}", command="train_private", kind="model") as run:
        p = prepare(cfg)
        model, metrics = train_private_model(cfg, p, new_model(p, cfg.lr), run)
        forecaster(model, p, {"privacy": {k: metrics[k] for k in ("epsilon", "delta", "noise_multiplier", "max_grad_norm", "accountant", "privacy_unit")}}).save(run.path("model"))
        run.finish(metrics)
        print({k: (round(v, 5) if isinstance(v, float) else v) for k, v in metrics.items()})
        return run.dir


def main(argv: list[str] | None = None) -> int:
    return run_cli(PrivateConfig, train_private, argv, doc=__doc__.split("\n\n")[0], prog="python -m domains.finance.train_private")


if __name__ == "__main__":
    raise SystemExit(main())
