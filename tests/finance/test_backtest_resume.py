"""Fold-level resume of the walk-forward backtest (fast tier): a run folder whose committed folds were
computed with other settings or data is refused in one line naming the differing field, and a second
writer of the same run is refused while the first holds it. The killed-and-resumed end-to-end check
(real processes, SIGKILL) is the slow ``tests/finance/test_killed_runs.py``."""

from __future__ import annotations

import json

import pytest

from core.data import prepare
from domains.finance.data import DATASETS

ARGS = ["--tickers", "AAPL", "KO", "--encoder-length", "20", "--horizon", "3", "--hidden-size", "8", "--attention-heads", "1",
        "--hidden-continuous-size", "4", "--batch-size", "32", "--no-track", "--threads", "1", "--folds", "3", "--test-days", "20",
        "--epochs", "1", "--refit-epochs", "1", "--max-batches", "3", "--seeds", "1", "--baselines", "ewma", "--name", "bt"]


def _fingerprint(argv):
    from core.config import parse_config
    from domains.finance.backtest import BacktestConfig
    from domains.finance.data import load_panel_data
    from domains.finance.features import base_features
    from domains.finance.walkforward import backtest_fingerprint

    cfg = parse_config(BacktestConfig, argv)
    data = load_panel_data(cfg.data, cfg.tickers, **cfg.data_options())
    return backtest_fingerprint(data.panel, base_features(data.panel, data.covariates), cfg)


def test_fold_store_refuses_other_settings_or_data_in_one_line(tmp_path):
    from domains.finance.walkforward import FoldStore, ResumeMismatchError

    fp = {"format": 1, "qlike_weight": 0.1, "panel_sha256": "aa", "fold_cutoffs": [["2022-01-03", "2022-02-01"]]}
    assert FoldStore(tmp_path / "folds", fp).open() == 0  # a new store: nothing to reuse, fingerprint written
    assert FoldStore(tmp_path / "folds", dict(fp)).open() == 0  # the same fingerprint opens again
    for field, value in (("qlike_weight", 0.3), ("panel_sha256", "bb")):
        with pytest.raises(ResumeMismatchError) as e:
            FoldStore(tmp_path / "folds", {**fp, field: value}).open()
        msg = str(e.value)
        assert "\n" not in msg and f"computed with {field} = " in msg and "refusing to mix" in msg
    assert json.loads((tmp_path / "folds" / "fingerprint.json").read_text()) == fp  # a refusal changes nothing


def test_backtest_rerun_with_other_settings_is_refused_naming_the_field(tmp_path, capsys):
    """The CLI path: an interrupted run ``bt`` whose committed folds used --qlike-weight 0.3; rerunning
    ``--name bt`` with the default 0.1 exits 2 with one line naming qlike_weight, before any training."""
    from domains.finance.backtest import main
    from domains.finance.walkforward import FoldStore

    prepare(DATASETS[0])
    argv = ["--runs-dir", str(tmp_path), *ARGS]
    old = _fingerprint([*argv, "--qlike-weight", "0.3"])
    run = tmp_path / "finance" / "bt"
    FoldStore(run / "folds", old).open()
    (run / "run.json").write_text(json.dumps({"status": "running", "command": "backtest", "kind": "model", "pid": 0}))
    assert main(argv) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    assert len(err) == 1 and "computed with qlike_weight = 0.3, this run has 0.1" in err[0], err
    assert not (run / "folds" / "fold-000").exists()  # nothing was computed into the refused folder


def test_second_writer_of_the_same_backtest_run_is_refused(tmp_path, capsys):
    """Two processes with the same --name: core.runs.Run's folder lock (flock) refuses the second in one line."""
    from core.locking import FolderLock
    from domains.finance.backtest import main

    prepare(DATASETS[0])
    run = tmp_path / "finance" / "bt"
    run.mkdir(parents=True)
    held = FolderLock.acquire(run / ".lock")  # this process plays the first writer
    try:
        assert main(["--runs-dir", str(tmp_path), *ARGS]) == 2
    finally:
        held.release()
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    assert len(err) == 1 and "is being written by PID" in err[0], err
    assert not (run / "folds").exists()
