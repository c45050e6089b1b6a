"""Flags of ``train_private`` (and a one-level ``--channels`` of ``train``) outside what can work are one line, exit 2,
before a run folder exists. They used to fail deep inside the run with a traceback and leave a failed run folder:
--steps 0 (ZeroDivisionError in the accountant), --patches 0 (torch.stack of nothing), --lr -1 (Adam), --threads 0
(torch.set_num_threads), --channels 16 (MONAI UNet: 'the length of `channels` should be no less than 2'); --spacing 0
and --public-steps -5 even ran."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("argv, expected", [
    (["--steps", "0"], "--steps 0: expected >= 1"),
    (["--patches", "0"], "--patches 0: expected >= 1"),
    (["--batch-size", "0"], "--batch-size 0: expected >= 1"),
    (["--spacing", "0"], "--spacing 0.0: expected > 0"),
    (["--patch", "0"], "--patch 0: expected >= 1"),
    (["--lr", "-1"], "--lr -1.0: expected > 0"),
    (["--threads", "0"], "--threads 0: expected >= 1"),
    (["--public-steps", "-5", "--init", "public"], "--public-steps -5: expected >= 0"),
    (["--public-lr", "0"], "--public-lr 0.0: expected > 0"),
    (["--channels", "8"], "--channels 8: the UNet needs 2 or more levels"),
])
def test_train_private_flags_outside_what_can_work_are_one_line_before_a_run(tmp_path, capsys, argv, expected):
    from domains.medical.train_private import main

    with pytest.raises(SystemExit) as e:
        main([*argv, "--runs-dir", str(tmp_path / "runs"), "--no-track"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_train_with_one_unet_level_is_one_line_before_a_run_and_segresnet_takes_one(tmp_path, capsys):
    from core.config import parse_config
    from domains.medical.config import TrainConfig

    with pytest.raises(SystemExit) as e:
        parse_config(TrainConfig, ["--channels", "16", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "--channels 16: the UNet needs 2 or more levels" in err and len(err.splitlines()) == 1, err
    assert parse_config(TrainConfig, ["--channels", "16", "--model", "segresnet"]).channels == (16,)  # SegResNet reads only the first
    assert not (tmp_path / "runs").exists()
