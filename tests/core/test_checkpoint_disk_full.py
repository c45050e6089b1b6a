"""A checkpoint write the disk refuses (full, over quota): torch's zip writer turns the OSError into its own
RuntimeError ("unexpected pos …"); the user gets the one-line "No space left on device: <checkpoint>" (exit 2),
the run is recorded failed with that error, and no temporary file is left."""

import contextlib
import errno
import json
from dataclasses import dataclass

import torch

from core import checkpoint as ckpt_mod
from core.cli import run_cli
from core.config import RunConfig, TrackingConfig
from core.io import atomic_write
from core.runs import Run


@dataclass
class ToyConfig(TrackingConfig, RunConfig):
    pass


class _FillingDisk:
    """A file whose disk is full after ``room`` bytes: write raises ENOSPC, as on a full filesystem."""

    def __init__(self, fh, room: int):
        self._fh, self._room = fh, room

    def write(self, data) -> int:
        n = len(memoryview(data).cast("B"))
        if n > self._room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= n
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)


def test_disk_full_during_a_checkpoint_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    @contextlib.contextmanager
    def full_after_100k(path, mode="wb"):
        with atomic_write(path, mode) as fh:
            yield _FillingDisk(fh, 100_000)

    monkeypatch.setattr(ckpt_mod, "atomic_write", full_after_100k)

    def train(cfg):
        model = torch.nn.Linear(400, 400)  # 640 KB of weights: the write fails part-way
        with Run.start("unit", cfg, command="train") as run:
            run.save_checkpoint(model, step=1)

    code = run_cli(ToyConfig, train, ["--runs-dir", str(tmp_path / "runs"), "--name", "full", "--no-track"], prog="train")
    err = capsys.readouterr().err
    target = tmp_path / "runs" / "unit" / "full" / "checkpoints" / "step_00000001.pt"
    assert code == 2, err
    assert f"error: [Errno 28] No space left on device: '{target}'" in err and "Traceback" not in err
    record = json.loads((tmp_path / "runs" / "unit" / "full" / "run.json").read_text())
    assert record["status"] == "failed" and "No space left on device" in record["error"]
    assert list(target.parent.iterdir()) == []  # neither the checkpoint nor its temporary file
