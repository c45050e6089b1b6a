"""Settings a ``--resume`` must not change (core.config ``"resume": "fixed"`` field metadata, or a config class's
``fixed_on_resume`` hook for a conditional rule): ``check_resumable`` and ``Run.start`` refuse another value in one
line naming each flag, the run's value, the asked one and why — reading only, nothing under runs/ changed. Other
settings still continue (with core's warning); a run whose config.json lacks the key (older than the flag) is not
refused for it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from core.config import ResumeConfig, RunConfig, TrackingConfig, fixed_settings_changed
from core.errors import UserInputError
from core.runs import ResumeSettingsError, Run, check_resumable

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
