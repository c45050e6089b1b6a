"""Time and memory of the training path from 100K to 1M interactions (issue 16.6).

    python -m domains.recommendation.scale                          # 100K, 300K, 1M interactions
    python -m domains.recommendation.scale --sizes 100000 1000000

**Synthetic scale-up of real data**: MovieLens-100K's 100,000 interactions are replicated with new
user ids (copy c of user u is ``u + c·10000``; every copy drops a seeded 10 % of the user's rows and
shifts its timestamps, so copies are not identical) until the size is reached; the 1,682-item
catalogue stays the same. Each size is one ``python -m domains.recommendation.train`` process
(split msr-stratified-75, one select epoch on the fit part + validation ranking, ``--no-refit
--no-baselines --text none``, 1 torch thread) whose wall time, training seconds and peak RSS
(``os.wait4``) are recorded. Writes ``scale.json`` and ``scale.md`` into its own job run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.cli import run_cli
from core.config import RunConfig, SeedConfig
from core.io import atomic_write_json, atomic_write_text
from core.runs import Run
from domains.recommendation.data import load_ml100k

__all__ = ["ScaleConfig", "scaled_interactions", "scale", "main"]


@dataclass
class ScaleConfig(SeedConfig, RunConfig):
    sizes: list[int] = field(default_factory=lambda: [100_000, 300_000, 1_000_000], metadata={"help": "interaction counts to measure"})
    batch_size: int = field(default=1024, metadata={"help": "training batch size"})


def scaled_interactions(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` interactions: ML-100K replicated over new user ids (see the module docstring)."""
    base = load_ml100k().interactions.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    parts, total, c = [], 0, 0
    while total < n:
        part = base if c == 0 else base[rng.random(len(base)) >= 0.1]
        part = part.assign(user_id=part["user_id"] + 10_000 * c, timestamp=part["timestamp"] + 86_400 * c)
        parts.append(part)
        total += len(part)
        c += 1
    return pd.concat(parts, ignore_index=True).iloc[:n]


def _measure(data: Path, runs: Path, name: str, batch_size: int) -> dict:
    cmd = [sys.executable, "-m", "domains.recommendation.train", "--data", str(data), "--runs-dir", str(runs), "--name", name,
           "--epochs", "1", "--patience", "0", "--no-refit", "--no-baselines", "--no-track", "--text", "none", "--threads", "1",
           "--batch-size", str(batch_size)]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env={**os.environ, "SUITE_PROGRESS": "0", "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{name}: training failed: {err[-2000:]}")
    m = json.loads((runs / "recommendation" / name / "metrics.json").read_text())
    return {"wall_s": wall, "train_s": m["train_seconds"], "examples_per_s": m["train_examples_per_s"], "peak_rss_mb": usage.ru_maxrss / 1024}


def scale(cfg: ScaleConfig) -> list[dict]:
    rows = []
    with Run.start("recommendation", cfg, command="scale", kind="job") as run, tempfile.TemporaryDirectory() as tmp:
        for n in cfg.sizes:
            df = scaled_interactions(n, cfg.seed)
            path = Path(tmp) / f"inter-{n}.parquet"
            df.to_parquet(path, index=False)
            r = {"interactions": n, "users": int(df["user_id"].nunique()), "items": int(df["item_id"].nunique()),
                 **_measure(path, Path(tmp) / "runs", f"scale-{n}", cfg.batch_size)}
            rows.append(r)
            print(f"{n:>9,} interactions: {r['wall_s']:.0f} s wall, {r['train_s']:.0f} s training ({r['examples_per_s']:.0f} ex/s), peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        md = ["| interactions | users | items | wall s (process) | training s (1 epoch on the fit part) | examples/s | peak RSS MB |", "|---|---|---|---|---|---|---|"]
        md += [f"| {r['interactions']:,} | {r['users']:,} | {r['items']:,} | {r['wall_s']:.0f} | {r['train_s']:.0f} | {r['examples_per_s']:.0f} | {r['peak_rss_mb']:.0f} |" for r in rows]
        atomic_write_json(run.path("scale.json"), rows)
        atomic_write_text(run.path("scale.md"), "\n".join(md) + "\n")
        print("\n".join(md))
        run.finish({"sizes": len(rows)})
    return rows


def main(argv: list[str] | None = None) -> int:
    return run_cli(ScaleConfig, scale, argv, doc=__doc__, prog="python -m domains.recommendation.scale")


if __name__ == "__main__":
    sys.exit(main())
