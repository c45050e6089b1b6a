"""``training.prefetch_process`` (an alternative to the trainer's thread, measured by the speed bench): batches prepared in one forked worker process (as
``DataLoader(num_workers=1)``) are the plain loop's batches — same order, same augmentation draws — and
leave the transforms' random states and the global RNGs where the plain loop leaves them (checkpoints
and ``--resume`` stay bit-exact); the worker does not outlive its consumer."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from domains.medical.training import prefetch_process, transform_rng_state

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs the fork start method (elsewhere it is the thread prefetch)")


def _loader(recipe: str, seed: int = 5):
    """The trainer's loader (``fit``) over a small synthetic case, built after seeding the global RNG."""
    from monai.data import DataLoader, MetaTensor, list_data_collate

    from domains.medical.config import PipelineConfig
    from domains.medical.transforms import cached_patch_dataset

    g = np.random.default_rng(0)
    lab = np.zeros((1, 36, 40, 32), np.float32)
    lab[0, 6:30, 8:34, 5:27] = g.integers(1, 5, size=(24, 26, 22))
    img = MetaTensor(torch.from_numpy((lab * 0.2 + g.normal(0, 0.05, lab.shape)).astype(np.float32)), affine=torch.eye(4, dtype=torch.float64))
    case = {"image": img, "label": MetaTensor(torch.from_numpy(lab), affine=torch.eye(4, dtype=torch.float64))}
    pipe = PipelineConfig(modality="MRI", num_classes=5, patch=16, num_samples=2)
    torch.manual_seed(seed)
    ds = cached_patch_dataset([case], pipe, draws_per_epoch=5, preprocessed=True, recipe=recipe)
    return DataLoader(ds, batch_size=1, shuffle=True, num_workers=0, collate_fn=list_data_collate), ds.base.transform


@pytest.mark.parametrize("recipe", ["robust", "standard"])
def test_worker_batches_and_random_states_are_the_plain_loops(recipe):
    runs = {}
    for kind in ("plain", "worker"):
        loader, tf = _loader(recipe)
        torch.manual_seed(11)
        np.random.seed(11)
        batches = []
        for _ in range(2):  # two epochs: the second starts from the random states the first left
            batches += list(loader if kind == "plain" else prefetch_process(loader, tf))
        runs[kind] = (batches, transform_rng_state(tf), torch.get_rng_state(), np.random.rand())
    (bp, sp, tp, np_p), (bw, sw, tw, np_w) = runs["plain"], runs["worker"]
    assert len(bp) == len(bw) == 10
    for a, b in zip(bp, bw):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in ("image", "label"))
    assert not all(torch.equal(bp[0]["image"], b["image"]) for b in bp[1:])  # really random draws
    assert sp == sw and torch.equal(tp, tw) and np_p == np_w
    assert not mp.active_children()


class _Pids(torch.utils.data.Dataset):
    def __init__(self, n: int, fail_at: int | None = None):
        self.n, self.fail_at = n, fail_at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if i == self.fail_at:
            raise ValueError("broken volume")
        return {"image": torch.tensor([os.getpid(), i])}


def test_worker_is_another_process_raises_its_errors_and_stops_when_closed():
    from torch.utils.data import DataLoader

    got = list(prefetch_process(DataLoader(_Pids(4), batch_size=2, num_workers=0), transform=[]))
    assert [int(i) for b in got for i in b["image"][:, 1]] == [0, 1, 2, 3]
    assert all(int(p) != os.getpid() for b in got for p in b["image"][:, 0])
    with pytest.raises(ValueError, match="broken volume"):
        list(prefetch_process(DataLoader(_Pids(6, fail_at=3), batch_size=1, num_workers=0), transform=[]))
    gen = prefetch_process(DataLoader(_Pids(1000), batch_size=1, num_workers=0), transform=[])
    first = next(gen)
    worker = int(first["image"][0, 0])
    gen.close()
    assert not mp.active_children()
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)


@pytest.mark.slow
def test_worker_dies_with_a_killed_parent(tmp_path):
    """SIGKILL of the trainer (no cleanup runs) must not leave its batch worker behind."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time, torch\n"
        "from torch.utils.data import DataLoader\n"
        "sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])\n"
        "from test_prefetch_process import _Pids\n"
        "from domains.medical.training import prefetch_process\n"
        "gen = prefetch_process(DataLoader(_Pids(1000), batch_size=1, num_workers=0), transform=[])\n"
        "print(int(next(gen)['image'][0, 0]), flush=True)\n"
        "time.sleep(600)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(ROOT), str(Path(__file__).parent)], stdout=subprocess.PIPE, cwd=ROOT, env=env)
    try:
        worker = int(proc.stdout.readline())
        os.kill(worker, 0)  # alive while its parent is
        proc.kill()
        proc.wait()
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(worker, signal.SIGKILL)
            pytest.fail("the batch worker outlived its killed parent")
    finally:
        proc.kill()
