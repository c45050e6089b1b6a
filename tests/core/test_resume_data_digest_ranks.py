"""Under torchrun every process calls check_resumable (before the process group exists); the --resume data check reads
the data for its content digest (up to 64 MiB). Only the first process of each machine (local rank 0) reads it now:
the others read the same files, and a refusal there ends the launch. Before, every rank read it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

import core.runs
from core.config import ResumeConfig, RunConfig, TrackingConfig
from core.runs import ResumeDataError, Run, check_resumable


@dataclass
class RankDataConfig(TrackingConfig, ResumeConfig, RunConfig):
    data: str = field(default="", metadata={"resume": "same-data", "resume_why": "the checkpoint has trained on that data"})


@pytest.fixture
def resumable(tmp_path, monkeypatch):
    """An interrupted run that recorded ``a.csv``'s content, the config that resumes it, and the paths digested since."""
    (tmp_path / "a.csv").write_text("user,item\n1,2\n")
    cfg = RankDataConfig(runs_dir=str(tmp_path / "runs"), name="r", track=False, data=str(tmp_path / "a.csv"))
    Run.start("unit", cfg, command="train")._close("interrupted", error="killed")
    reads: list[Path] = []
    real = core.runs.content_digest
    monkeypatch.setattr(core.runs, "content_digest", lambda path: reads.append(Path(path)) or real(path))
    return replace(cfg, resume=True), reads


def _launched_as(monkeypatch, rank: int, local_rank: int, world_size: int = 4) -> None:
    for name, value in (("RANK", rank), ("LOCAL_RANK", local_rank), ("WORLD_SIZE", world_size)):
        monkeypatch.setenv(name, str(value))


def test_only_each_machines_first_process_reads_the_data_for_the_resume_check(resumable, tmp_path, monkeypatch):
    cfg, reads = resumable
    run_dir = tmp_path / "runs" / "unit" / "r"
    _launched_as(monkeypatch, rank=1, local_rank=1)
    assert check_resumable("unit", cfg, "train") == run_dir
    assert reads == []  # the old code: [a.csv], on every rank
    _launched_as(monkeypatch, rank=0, local_rank=0)
    assert check_resumable("unit", cfg, "train") == run_dir
    assert reads == [tmp_path / "a.csv"]


def test_other_data_is_still_refused_by_the_first_process_of_every_machine(resumable, tmp_path, monkeypatch):
    cfg, reads = resumable
    (tmp_path / "a.csv").write_text("user,item\n1,3\n")  # other data at the run's path (same size)
    _launched_as(monkeypatch, rank=1, local_rank=1)
    assert check_resumable("unit", cfg, "train") is not None  # not read here: its machine's local rank 0 refuses
    for rank in (0, 2):  # rank 2: the first process of a second machine, whose copy of the data may differ
        _launched_as(monkeypatch, rank=rank, local_rank=0)
        with pytest.raises(ResumeDataError, match="holds other data than the run was trained on"):
            check_resumable("unit", cfg, "train")
    assert reads == [tmp_path / "a.csv"] * 2
