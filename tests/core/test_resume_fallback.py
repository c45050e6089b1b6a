"""--resume when the newest checkpoint is damaged, and when a checkpoint's optimizer does not fit.

A crash (or a full disk, a copy cut short) can leave the newest ``step_N.pt`` truncated or empty: the
run resumes from the newest checkpoint that loads, naming the damaged file in one warning, and only
when none loads is it one error line. A checkpoint whose optimizer state is of another type or shape
is refused in one line naming both optimizers and the flag that differs — never loaded half-way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

import core.runs
from core.checkpoint import (CheckpointDamagedError, CheckpointMismatchError, load_checkpoint, optimizer_mismatch, read_checkpoint,
                             save_checkpoint)
from core.config import DeviceConfig, ResumeConfig, RunConfig, SeedConfig, TrackingConfig
from core.runs import Run


@dataclass
class OptConfig(TrackingConfig, SeedConfig, DeviceConfig, ResumeConfig, RunConfig):
    steps: int = 6
    optimizer: str = "adamw"
    track: bool = False


def _optimizer(name: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if name == "sgd-plain":  # no momentum: SGD keeps no per-parameter state at all
        return torch.optim.SGD(model.parameters(), lr=0.05)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=0.01)
    if name == "adamw-2groups":
        return torch.optim.AdamW([{"params": list(model[0].parameters())}, {"params": list(model[2].parameters())}], lr=0.01)
    return torch.optim.AdamW(model.parameters(), lr=0.01)


def _train(cfg: OptConfig, stop_after: int | None = None) -> tuple[Run, torch.nn.Module, dict]:
    """A tiny real training loop with dropout (RNG) checkpointing every step (the Run keeps the last 2)."""
    run = Run.start("unit", cfg, command="train")
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
    opt = _optimizer(cfg.optimizer, model)
    with run:
        state = run.resume(model, opt)
        for step in range(state["step"], cfg.steps):
            x = torch.randn(8, 4)
            loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log_metrics({"loss": loss.item()}, step)
            run.save_checkpoint(model, opt, step=step + 1)
            if stop_after is not None and step + 1 == stop_after:
                run._close("interrupted")  # a crash: no finish()
                return run, model, state
        run.finish()
    return run, model, state


@pytest.fixture
def warnings(monkeypatch) -> list[str]:
    said: list[str] = []
    monkeypatch.setattr(core.runs.log, "warning", lambda msg, *a, **k: said.append(str(msg)))
    return said


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else data[: len(data) // 2])


@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_resume_falls_back_to_the_newest_checkpoint_that_loads(tmp_path, warnings, how):
    _, ref, _ = _train(OptConfig(runs_dir=str(tmp_path), name="ref", seed=5))
    crashed, _, _ = _train(OptConfig(runs_dir=str(tmp_path), name="crashy", seed=5), stop_after=4)
    ckdir = crashed.checkpoint_dir
    assert sorted(p.name for p in ckdir.iterdir()) == ["step_00000003.pt", "step_00000004.pt"]  # the previous one is kept
    _damage(ckdir / "step_00000004.pt", how)
    damaged_size = (ckdir / "step_00000004.pt").stat().st_size

    resumed, model, state = _train(OptConfig(runs_dir=str(tmp_path), name="crashy", seed=5, resume=True))
    assert state["step"] == 3
    lines = [m for m in warnings if "damaged checkpoint" in m]
    assert len(lines) == 1 and "step_00000004.pt" in lines[0] and "step_00000003.pt (step 3)" in lines[0] and "\n" not in lines[0]
    assert ("empty, 0 bytes" if how == "empty" else "unreadable") in lines[0]
    # resuming from step 3 redoes step 4 with the restored RNG: the same weights as a run never interrupted
    for a, b in zip(ref.state_dict().values(), model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the damaged file is kept beside the others under a name the next resume and the pruning ignore
    assert (ckdir / "step_00000004.pt.damaged").stat().st_size == damaged_size
    assert sorted(p.name for p in ckdir.glob("step_*.pt")) == ["step_00000005.pt", "step_00000006.pt"]
    steps = [json.loads(line)["step"] for line in (resumed.dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3, 4, 5]  # the row of the lost step 4 is logged once


def test_resume_when_no_checkpoint_loads_is_one_line_and_changes_nothing(tmp_path):
    crashed, _, _ = _train(OptConfig(runs_dir=str(tmp_path), name="crashy", seed=5), stop_after=4)
    ckdir = crashed.checkpoint_dir
    _damage(ckdir / "step_00000004.pt", "empty")
    _damage(ckdir / "step_00000003.pt", "truncated")
    before = {p.name: p.read_bytes() for p in ckdir.iterdir()}
    with pytest.raises(CheckpointDamagedError) as e:
        _train(OptConfig(runs_dir=str(tmp_path), name="crashy", seed=5, resume=True))
    msg = str(e.value)
    assert "\n" not in msg and "none of the 2 checkpoint(s)" in msg and str(ckdir) in msg and "step_00000004.pt, empty, 0 bytes" in msg
    assert {p.name: p.read_bytes() for p in ckdir.iterdir()} == before  # not renamed, not started over


def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_ones_intact(tmp_path, monkeypatch):
    """Checkpoints are written to a temp file and renamed; the older ones are pruned only afterwards."""
    crashed, model, _ = _train(OptConfig(runs_dir=str(tmp_path), name="crashy", seed=5), stop_after=4)
    real_save = torch.save

    def dies_half_way(obj, fh, *a, **k):
        real_save(obj, fh, *a, **k)
        fh.truncate(fh.tell() // 2)
        raise KeyboardInterrupt  # the process is stopped mid-write

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(crashed.checkpoint_dir / "step_00000005.pt", model=model, step=5, keep_last=1)
    monkeypatch.undo()
    assert sorted(p.name for p in crashed.checkpoint_dir.iterdir()) == ["step_00000003.pt", "step_00000004.pt"]
    assert read_checkpoint(crashed.checkpoint_dir / "step_00000004.pt")["step"] == 4


def test_resume_with_another_optimizer_type_names_both_and_the_flag(tmp_path, warnings):
    crashed, _, _ = _train(OptConfig(runs_dir=str(tmp_path), name="crashy", seed=5, optimizer="sgd"), stop_after=4)
    with pytest.raises(CheckpointMismatchError) as e:
        _train(OptConfig(runs_dir=str(tmp_path), name="crashy", seed=5, optimizer="adam", resume=True))
    msg = str(e.value)
    assert "\n" not in msg and "saved by SGD, this run uses Adam" in msg and "--optimizer 'sgd' -> 'adam'" in msg
    assert not [m for m in warnings if "damaged checkpoint" in m]  # not taken for damage: no fallback, nothing renamed
    assert sorted(p.name for p in crashed.checkpoint_dir.iterdir()) == ["step_00000003.pt", "step_00000004.pt"]


@pytest.mark.parametrize("saved,now,words", [
    ("sgd-plain", "adam", "saved by SGD, this run uses Adam"),  # used to load silently and fail at the first step (KeyError 'betas')
    ("adam", "adamw", "saved by Adam, this run uses AdamW"),  # used to load silently: AdamW then ran as Adam (coupled weight decay)
    ("adamw", "adamw-2groups", "1 parameter group(s), this run's AdamW has 2"),
])
def test_optimizer_state_that_does_not_fit_is_refused_before_training(tmp_path, saved, now, words):
    _train(OptConfig(runs_dir=str(tmp_path), name="r", seed=5, optimizer=saved), stop_after=2)
    with pytest.raises(CheckpointMismatchError, match="optimizer state does not fit") as e:
        _train(OptConfig(runs_dir=str(tmp_path), name="r", seed=5, optimizer=now, resume=True))
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_checkpoint_without_the_optimizer_type_is_told_by_its_settings(tmp_path):
    """Checkpoints written before the type was recorded: SGD's momentum/nesterov settings give it away."""
    model = torch.nn.Linear(3, 2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    sgd.step()
    p = save_checkpoint(tmp_path / "step_1.pt", model=model, optimizer=sgd, step=1)
    old = torch.load(p, weights_only=True)
    del old["optimizer_class"]
    torch.save(old, p)
    with pytest.raises(CheckpointMismatchError, match=r"settings dampening, momentum, nesterov that Adam does not have"):
        load_checkpoint(p, model=model, optimizer=torch.optim.Adam(model.parameters()))
    assert optimizer_mismatch(torch.optim.SGD(model.parameters(), lr=0.5), old["optimizer"]) is None  # the same type fits


@dataclass
class LrConfig(TrackingConfig, SeedConfig, DeviceConfig, ResumeConfig, RunConfig):
    lr: float = 0.01
    track: bool = False


def test_resume_with_another_lr_says_the_checkpoints_optimizer_continues(tmp_path, warnings):
    """torch restores the optimizer's learning rate with its state: the warning must not claim the new --lr applies."""
    model = torch.nn.Linear(2, 1)
    first = Run.start("unit", LrConfig(runs_dir=str(tmp_path), name="lr", lr=0.01), command="train")
    with first:
        opt = torch.optim.Adam(model.parameters(), lr=first.config.lr)
        model(torch.ones(1, 2)).sum().backward()
        opt.step()
        first.save_checkpoint(model, opt, step=1)
        first._close("interrupted")
    again = Run.start("unit", LrConfig(runs_dir=str(tmp_path), name="lr", lr=0.5, resume=True), command="train")
    with again:
        opt = torch.optim.Adam(model.parameters(), lr=again.config.lr)
        again.resume(model, opt)
        assert opt.param_groups[0]["lr"] == 0.01  # the checkpoint's, not the new flag's
        again.finish()
    said = [w for w in warnings if "--resume with settings that differ" in w]
    assert said and "lr: 0.01 -> 0.5" in said[0] and "learning rate" in said[0] and "as the checkpoint saved them" in said[0]
