"""Settings a ``--resume`` must not change (core.config ``"resume": "fixed"`` field metadata, or a config class's
``fixed_on_resume`` hook for a conditional rule): ``check_resumable`` and ``Run.start`` refuse another value in one
line naming each flag, the run's value, the asked one and why — reading only, nothing under runs/ changed. Other
settings still continue (with core's warning); a run whose config.json lacks the key (older than the flag) is not
refused for it. A path to the data (``"resume": "same-data"``) is compared by content, not as text: the same data
under another path continues, other data at the run's path is refused; a bundled data set's name by name. ``--help``
marks every such flag."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from core.config import RESUME_HELP, ResumeConfig, RunConfig, TrackingConfig, build_parser, fixed_settings_changed
from core.errors import UserInputError
from core.runs import DATA_RECORD_FILE, ResumeDataError, ResumeSettingsError, Run, check_resumable, content_digest

WHY = "it decides the held-out days"


@dataclass
class FixedConfig(TrackingConfig, ResumeConfig, RunConfig):
    val_days: int = field(default=63, metadata={"resume": "fixed", "resume_why": WHY})
    tickers: list[str] = field(default_factory=list, metadata={"resume": "fixed"})
    lr: float = 1e-3


@dataclass
class ConditionalConfig(TrackingConfig, ResumeConfig, RunConfig):
    """The seed decides the held-out rows only when the split draws them."""

    split: str = "random"
    seed: int = 0

    @classmethod
    def fixed_on_resume(cls, settings):
        return {"split": settings.get("split"), **({"seed": settings.get("seed")} if settings.get("split") == "random" else {})}


@dataclass
class WordedConditionalConfig(ConditionalConfig):
    """The same rule, its condition worded in --help."""

    @classmethod
    def resume_help_notes(cls):
        return {**super().resume_help_notes(), "seed": "(fixed on --resume with a random split)"}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): ("dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()) for p in sorted(root.rglob("*"))}


def _interrupted(cfg) -> None:
    run = Run.start("unit", cfg, command="train")
    run._close("interrupted", error="killed")


def _refused(cfg, match: str) -> str:
    root = Path(cfg.runs_dir)
    before = _snapshot(root)
    with pytest.raises(ResumeSettingsError, match=match) as e:
        check_resumable("unit", cfg, "train")
    assert isinstance(e.value, UserInputError) and "\n" not in str(e.value)
    with pytest.raises(ResumeSettingsError, match=match):  # Run.start refuses the same, before it locks or writes anything
        Run.start("unit", cfg, command="train")
    assert _snapshot(root) == before
    return str(e.value)


def test_another_value_of_a_fixed_setting_is_refused_naming_both_values_and_why(tmp_path):
    cfg = FixedConfig(runs_dir=str(tmp_path / "runs"), name="r", track=False, tickers=["AAPL", "JPM"])
    _interrupted(cfg)
    msg = _refused(replace(cfg, resume=True, val_days=30), r"^--resume of run r: it was started with --val-days 63, this command asks for --val-days 30; ")
    assert WHY in msg and msg.endswith("expected the run's --val-days 63, or a new run without --resume")
    msg = _refused(replace(cfg, resume=True, val_days=30, tickers=["AAPL"]),
                   r"started with --val-days 63 --tickers 'AAPL' 'JPM', this command asks for --val-days 30 --tickers 'AAPL';")
    assert msg.count(WHY) == 1  # each reason once; the field without its own reason adds none
    # the same fixed values, another ordinary setting: continues (core's warning names lr)
    with Run.start("unit", replace(cfg, resume=True, lr=0.5), command="train") as run:
        assert run.dir == tmp_path / "runs" / "unit" / "r"
        run.finish()


def test_a_run_older_than_the_flag_is_not_refused_for_it(tmp_path):
    cfg = FixedConfig(runs_dir=str(tmp_path / "runs"), name="old", track=False)
    _interrupted(cfg)
    record = tmp_path / "runs" / "unit" / "old" / "config.json"
    record.write_text(json.dumps({k: v for k, v in json.loads(record.read_text()).items() if k != "val_days"}))
    assert check_resumable("unit", replace(cfg, resume=True, val_days=30), "train") == record.parent
    _refused(replace(cfg, resume=True, val_days=30, tickers=["AAPL"]), r"started with --tickers \(none\), this command asks for --tickers 'AAPL';")


def test_a_conditional_rule_refuses_only_where_the_setting_counts(tmp_path):
    cfg = ConditionalConfig(runs_dir=str(tmp_path / "runs"), name="drawn", track=False)
    _interrupted(cfg)
    _refused(replace(cfg, resume=True, seed=3), r"started with --seed 0, this command asks for --seed 3; ")
    # another split: only the split is named (the seed's value is the run's, whatever it now decides)
    assert fixed_settings_changed(replace(cfg, split="last"), {"split": "random", "seed": 0}) == ["split"]
    fixed = replace(cfg, name="last", split="last")
    _interrupted(fixed)
    assert check_resumable("unit", replace(fixed, resume=True, seed=3), "train") is not None  # the seed draws nothing there


@dataclass
class DataConfig(TrackingConfig, ResumeConfig, RunConfig):
    data: str = field(default="bundled-set", metadata={"resume": "same-data", "data_names": ("bundled-set", "other-set"),
                                                       "resume_why": "the checkpoint's rows are that data's"})
    lr: float = 1e-3


def _resumes(cfg) -> None:
    """``cfg`` gets past the resume checks and its attempt records the data it reads now."""
    assert check_resumable("unit", cfg, "train") is not None
    with Run.start("unit", cfg, command="train") as run:
        run._close("interrupted", error="killed")


def test_the_same_data_under_another_path_continues_and_other_data_is_refused_by_content(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.csv").write_text("user,item\n1,2\n")
    cfg = DataConfig(runs_dir=str(tmp_path / "runs"), name="r", track=False, data="a.csv")  # relative, as typed
    _interrupted(cfg)
    record_file = tmp_path / "runs" / "unit" / "r" / DATA_RECORD_FILE
    entry = json.loads(record_file.read_text())["data"]
    assert entry == {"value": "a.csv", "path": str(tmp_path / "a.csv"), "content": content_digest(tmp_path / "a.csv")}
    resume = replace(cfg, resume=True)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")  # the same file, typed absolute or relative from another folder
    for same in (str(tmp_path / "a.csv"), "../a.csv"):
        assert check_resumable("unit", replace(resume, data=same), "train") == record_file.parent
    shutil.copy(tmp_path / "a.csv", tmp_path / "copy.csv")  # a copy (another inode, another time): the same data
    (tmp_path / "b.csv").write_text("user,item\n1,3\n")  # other data, same size
    assert check_resumable("unit", replace(resume, data="../copy.csv"), "train") is not None
    msg = _refused(replace(resume, data="../b.csv"), r"^--resume of run r: it was trained on --data 'a\.csv' \(.*/a\.csv\), this command reads "
                                                     r"--data '\.\./b\.csv' \(.*/b\.csv\), which holds other data \(14 bytes in 1 file\(s\) then, 14 in 1 now\); "
                                                     r"expected the same data \(the checkpoint's rows are that data's\): ")
    assert msg.endswith(f"pass --data {str(tmp_path / 'a.csv')!r}, or start a new run without --resume")
    (tmp_path / "a.csv").rename(tmp_path / "moved.csv")  # moved: continues, and the attempt records where it is now
    _resumes(replace(resume, data=str(tmp_path / "moved.csv")))
    assert json.loads(record_file.read_text())["data"]["path"] == str(tmp_path / "moved.csv")
    (tmp_path / "moved.csv").write_text("user,item\n1,4\n")  # other data written at the run's path: the text is the same
    with pytest.raises(ResumeDataError):
        check_resumable("unit", replace(resume, data="../moved.csv"), "train")
    _refused(replace(resume, data=str(tmp_path / "moved.csv")),
             r"^--resume of run r: --data '.*/moved\.csv' holds other data than the run was trained on \(14 bytes in 1 file\(s\) then, 14 in 1 now\); "
             r"expected the same data .*: put the run's data back at that path, or pass --data where it is now, or start a new run without --resume$")


def test_a_resumed_attempt_reads_its_data_for_the_digest_once(tmp_path, monkeypatch):
    """Run.start --resume compares the data and records it in data_source.json: one read of the data, not one each
    (a folder of thousands of files costs seconds cold). check_resumable, before the command's data load, reads it too."""
    import core.runs

    (tmp_path / "a.csv").write_text("user,item\n1,2\n")
    cfg = DataConfig(runs_dir=str(tmp_path / "runs"), name="once", track=False, data=str(tmp_path / "a.csv"))
    _interrupted(cfg)
    reads: list[Path] = []
    real = core.runs.content_digest
    monkeypatch.setattr(core.runs, "content_digest", lambda path: reads.append(Path(path)) or real(path))
    with Run.start("unit", replace(cfg, resume=True), command="train") as run:
        run._close("interrupted", error="killed")
    assert reads == [tmp_path / "a.csv"]
    assert json.loads((run.dir / DATA_RECORD_FILE).read_text())["data"]["content"] == real(tmp_path / "a.csv")
    reads.clear()  # each attempt reads the data as it is then
    with Run.start("unit", replace(cfg, resume=True), command="train") as run:
        run._close("interrupted", error="killed")
    assert reads == [tmp_path / "a.csv"]


def test_a_bundled_data_set_compares_by_name(tmp_path):
    (tmp_path / "a.csv").write_text("user,item\n1,2\n")
    cfg = DataConfig(runs_dir=str(tmp_path / "runs"), name="b", track=False)
    _interrupted(cfg)
    assert json.loads((tmp_path / "runs" / "unit" / "b" / DATA_RECORD_FILE).read_text()) == {"data": {"value": "bundled-set", "name": "bundled-set"}}
    assert check_resumable("unit", replace(cfg, resume=True, data=""), "train") is not None  # empty: the default, that same set
    _refused(replace(cfg, resume=True, data="other-set"), r"it was trained on --data 'bundled-set', this command reads --data 'other-set'; ")
    _refused(replace(cfg, resume=True, data=str(tmp_path / "a.csv")), r"this command reads --data '.*/a\.csv'; expected the same data")


def test_a_run_without_the_data_record_is_not_refused_for_its_data(tmp_path):
    (tmp_path / "a.csv").write_text("user,item\n1,2\n")
    cfg = DataConfig(runs_dir=str(tmp_path / "runs"), name="old", track=False, data=str(tmp_path / "a.csv"))
    _interrupted(cfg)
    (tmp_path / "runs" / "unit" / "old" / DATA_RECORD_FILE).unlink()
    (tmp_path / "a.csv").write_text("user,item\n9,9\n")
    assert check_resumable("unit", replace(cfg, resume=True), "train") is not None



def test_recommendations_earlier_record_compares_the_files_at_both_paths(tmp_path):
    """data_source.json as recommendation wrote it before core kept it ({data, data_path}, no content): the files at the
    recorded path and the asked one are compared as they are now; a bundled set by its name."""
    (tmp_path / "a.csv").write_text("user,item\n1,2\n")
    shutil.copy(tmp_path / "a.csv", tmp_path / "copy.csv")
    (tmp_path / "b.csv").write_text("user,item\n1,3\n")
    cfg = DataConfig(runs_dir=str(tmp_path / "runs"), name="legacy", track=False, data=str(tmp_path / "a.csv"))
    _interrupted(cfg)
    record = tmp_path / "runs" / "unit" / "legacy" / DATA_RECORD_FILE
    record.write_text(json.dumps({"data": "a.csv", "data_path": str(tmp_path / "a.csv")}))
    assert check_resumable("unit", replace(cfg, resume=True, data=str(tmp_path / "copy.csv")), "train") is not None
    _refused(replace(cfg, resume=True, data=str(tmp_path / "b.csv")), r"it was trained on --data 'a\.csv' \(.*/a\.csv\), this command reads --data '.*/b\.csv'; ")
    _refused(replace(cfg, resume=True, data="bundled-set"), r"this command reads --data 'bundled-set'; expected the same data")
    record.write_text(json.dumps({"data": "bundled-set", "data_path": None}))
    assert check_resumable("unit", replace(cfg, resume=True, data="bundled-set"), "train") is not None

def test_the_content_digest_reads_bytes_not_names_or_times(tmp_path, monkeypatch):
    import core.runs

    folder = tmp_path / "task"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "dataset.json").write_text("{}")
    (folder / "imagesTr" / "case.nii.gz").write_bytes(bytes(range(256)) * 40)
    digest = content_digest(folder)
    assert digest["files"] == 2 and digest["bytes"] == 2 + 10240
    shutil.copytree(folder, tmp_path / "copy")
    os.utime(tmp_path / "copy" / "dataset.json", (0, 0))
    (tmp_path / "copy" / ".DS_Store").write_text("finder")  # a hidden file is not the data
    assert content_digest(tmp_path / "copy") == digest
    changed = bytearray(bytes(range(256)) * 40)
    changed[5000] ^= 1  # one bit in the middle, same size
    (tmp_path / "copy" / "imagesTr" / "case.nii.gz").write_bytes(bytes(changed))
    assert content_digest(tmp_path / "copy") != digest
    # above FULL_DIGEST_BYTES, blocks spread over each file, the first and the last included
    monkeypatch.setattr(core.runs, "FULL_DIGEST_BYTES", 1024)
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(300_000))
    sampled = content_digest(big)
    for offset in (0, 299_999):
        data = bytearray(300_000)
        data[offset] = 1
        big.write_bytes(bytes(data))
        assert content_digest(big) != sampled


def test_help_marks_the_flags_a_resume_must_keep():
    def marked(cls) -> dict[str, bool]:
        return {a.dest: a.help.endswith(RESUME_HELP) for a in build_parser(cls)._actions if a.dest not in ("help", "config")}

    assert marked(FixedConfig) == {"name": False, "runs_dir": False, "resume": False, "track": False, "val_days": True, "tickers": True, "lr": False}
    assert {k for k, v in marked(DataConfig).items() if v} == {"data"}
    assert {k for k, v in marked(ConditionalConfig).items() if v} == {"split", "seed"}  # the seed counts under the default split
    # a conditional rule's words: the seed says when a resume refuses it, the always-fixed split keeps the plain mark
    helps = {a.dest: a.help for a in build_parser(WordedConditionalConfig)._actions}
    assert helps["seed"].endswith("(default: 0) (fixed on --resume with a random split)") and RESUME_HELP not in helps["seed"]
    assert helps["split"].endswith(RESUME_HELP) and RESUME_HELP not in helps["name"]
