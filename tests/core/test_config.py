import json
from dataclasses import dataclass, field

import pytest

from core.config import DeviceConfig, ResumeConfig, RunConfig, SeedConfig, TrackingConfig, parse_config


@dataclass
class DemoConfig(TrackingConfig, SeedConfig, DeviceConfig, ResumeConfig, RunConfig):
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    epochs: int = 2
    amp: bool = True
    channels: tuple[int, ...] = (16, 32)
    mode: str = field(default="a", metadata={"choices": ["a", "b"]})


def test_defaults_and_overrides():
    cfg = parse_config(DemoConfig, ["--lr", "0.5", "--no-amp", "--channels", "8", "16", "32"])
    assert cfg.lr == 0.5 and cfg.amp is False and cfg.channels == (8, 16, 32) and cfg.epochs == 2


def test_config_file_then_flags(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"lr": 0.1, "epochs": 7}))
    cfg = parse_config(DemoConfig, ["--config", str(p), "--epochs", "3"])
    assert cfg.lr == 0.1 and cfg.epochs == 3


def test_unknown_key_and_bad_choice_are_errors(tmp_path, capsys):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"learning_rate": 0.1}))
    with pytest.raises(SystemExit):
        parse_config(DemoConfig, ["--config", str(p)])
    assert "learning_rate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(DemoConfig, ["--mode", "zzz"])


def test_help_lists_fields(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(DemoConfig, ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--lr" in out and "learning rate" in out and "--resume" in out


@dataclass
class RangedConfig(RunConfig):
    lr: float = field(default=1e-3, metadata={"above": 0, "help": "learning rate"})
    batch_size: int = field(default=8, metadata={"min": 2, "why": "in-batch negatives", "help": "batch"})
    dropout: float = field(default=0.1, metadata={"min": 0, "below": 1})
    sizes: list[int] = field(default_factory=lambda: [4], metadata={"min": 1})


def test_declared_ranges_are_checked_for_flags_and_files_and_shown_in_help(tmp_path, capsys):
    from core.config import ConfigError, check_ranges, config_from_dict

    assert parse_config(RangedConfig, ["--lr", "0.5", "--batch-size", "2", "--dropout", "0"]).batch_size == 2
    with pytest.raises(SystemExit) as e:  # every bad flag in one line, with the reason a field gives
        parse_config(RangedConfig, ["--lr", "0", "--batch-size", "1", "--dropout", "1", "--sizes", "3", "0"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert "--lr 0.0: expected > 0" in err and "--batch-size 1: expected >= 2 (in-batch negatives)" in err
    assert "--dropout 1.0: expected in [0, 1)" in err and "--sizes 0: expected >= 1" in err
    for bad in ("nan", "inf"):
        with pytest.raises(SystemExit):
            parse_config(RangedConfig, ["--lr", bad])
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"lr": -1}))
    with pytest.raises(SystemExit):
        parse_config(RangedConfig, ["--config", str(p)])
    assert "--lr -1.0: expected > 0" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--batch-size"):
        config_from_dict(RangedConfig, {"batch_size": 0})
    check_ranges(RangedConfig())  # the defaults are in range
    with pytest.raises(SystemExit):
        parse_config(RangedConfig, ["--help"])
    out = capsys.readouterr().out
    assert "[> 0]" in out and "[>= 2]" in out and "[in [0, 1)]" in out
