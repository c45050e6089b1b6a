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
