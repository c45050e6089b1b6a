"""Issue 13.4: ``train --resume`` after a SIGKILL ends exactly where the uninterrupted run with the same
seed ends — same weights, same losses, same validation Dice (model, optimizer, scheduler, the global
RNGs and the random states that draw the patches — the MONAI transforms' or the synthesis sampler's —
are all restored), with either training augmentation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _rows(run: Path) -> dict[tuple[int, str], float]:
    out: dict[tuple[int, str], float] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        for k, v in r.items():
            if k not in ("step", "time"):
                key = (r["step"], k)
                assert out.get(key, v) == v, f"step {r['step']} {k}: a re-run epoch logged {v}, first {out[key]}"
                out[key] = v
    return out


@pytest.mark.slow
@pytest.mark.parametrize("augment", ["synth", "standard", "robust"])
def test_resume_after_sigkill_is_bit_exact(brain_task, tmp_path, tiny_args, augment):
    from safetensors.torch import load_file

    from core.checkpoint import safe_torch_load
    from core.config import parse_config
    from domains.medical.config import TrainConfig
    from domains.medical.train import train

    ARGS = [a if i == 0 or tiny_args[i - 1] != "--max-epochs" else "6" for i, a in enumerate(tiny_args)] + [
        "--no-track", "--no-evaluate-test", "--patience", "99", "--augment", augment]
    runs = tmp_path / "runs"
    env = {**os.environ, "SUITE_PROGRESS": "0", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "domains.medical.train", *ARGS, "--runs-dir", str(runs), "--name", "cut"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    ckpt = runs / "medical" / "cut" / "checkpoints" / "step_00000006.pt"  # the end of epoch 2 (of 6)
    deadline = time.time() + 600
    while not ckpt.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.is_file(), proc.stderr.read().decode()[-2000:]
    assert proc.returncode == -signal.SIGKILL  # killed mid-training, not finished
    assert json.loads((runs / "medical" / "cut" / "run.json").read_text())["status"] == "running"

    resumed = train(parse_config(TrainConfig, [*ARGS, "--runs-dir", str(runs), "--name", "cut", "--resume"]))
    full = train(parse_config(TrainConfig, [*ARGS, "--runs-dir", str(runs), "--name", "full"]))

    mr, mf = json.loads((resumed / "metrics.json").read_text()), json.loads((full / "metrics.json").read_text())
    assert mr["steps"] == mf["steps"] == 18
    assert mr["best_val_mean_dice"] == mf["best_val_mean_dice"]
    rows_r, rows_f = _rows(resumed), _rows(full)
    assert rows_r == rows_f  # every epoch's loss, lr and validation metrics, bit for bit
    wr, wf = load_file(str(resumed / "best.safetensors")), load_file(str(full / "best.safetensors"))
    assert wr.keys() == wf.keys() and all((wr[k] == wf[k]).all() for k in wr)
    last_r = safe_torch_load(resumed / "checkpoints" / "step_00000018.pt")["model"]
    last_f = safe_torch_load(full / "checkpoints" / "step_00000018.pt")["model"]
    assert all((last_r[k] == last_f[k]).all() for k in last_f)
