"""``transfer`` when it cannot work: data it cannot use is refused in one line before a run folder exists, and
a run that fails after it started holds no ``model/`` (it is marked failed; forecast/score/the dashboard skip it).
Real bundled prices; no training (the one run that starts has its training replaced by a tiny untrained model)."""

from __future__ import annotations

import errno
import json

import pandas as pd
import pytest

from tests.finance_support import panel_slice

SMALL = ["--no-track", "--encoder-length", "20", "--horizon", "3", "--hidden-size", "8", "--attention-heads", "1",
         "--hidden-continuous-size", "4", "--epochs", "1", "--max-batches", "3", "--batch-size", "64", "--finetune-epochs", "1"]


def _transfer(tmp_path, *argv: str) -> int:
    from domains.finance.transfer import main

    return main(["--runs-dir", str(tmp_path / "runs"), *SMALL, *argv])


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def _run_folders(tmp_path) -> list:
    return sorted(p.name for p in (tmp_path / "runs" / "finance").glob("*")) if (tmp_path / "runs" / "finance").is_dir() else []


def _write(tmp_path, *parts: pd.DataFrame):
    path = tmp_path / "prices.csv"
    pd.concat(parts)[["date", "ticker", "close"]].to_csv(path, index=False)
    return str(path)


def test_a_holdout_ticker_whose_prices_do_not_overlap_the_others_is_refused_before_a_run_folder(tmp_path, capsys):
    # XOM's prices end in 2012, the others' run 2015-2022: it has no short history before the cutoff nor test days
    # (a KeyError traceback from set_unknown_rows after pre-training, and a failed run folder)
    data = _write(tmp_path, panel_slice(["AAPL", "JPM", "KO"], "2015-01-01", "2022-12-31"), panel_slice(["XOM"], "2005-01-01", "2012-12-31"))
    assert _transfer(tmp_path, "--data", data, "--holdout", "XOM", "--short-days", "120", "--test-days", "30") == 2
    err = _errors(capsys)
    assert len(err) == 1 and "--holdout XOM" in err[0] and "to 2012-12-31)" in err[0] and "0 test origin(s)" in err[0]
    assert _run_folders(tmp_path) == []


def test_tickers_with_nothing_to_pre_train_on_are_refused_before_a_run_folder(tmp_path, capsys):
    # the other tickers start after the cutoff: no window of theirs ends by it
    data = _write(tmp_path, panel_slice(["AAPL", "JPM"], "2022-06-01", "2022-12-31"), panel_slice(["XOM"], "2015-01-01", "2022-12-31"))
    assert _transfer(tmp_path, "--data", data, "--holdout", "XOM", "--short-days", "120", "--test-days", "130") == 2
    err = _errors(capsys)
    assert len(err) == 1 and "the other tickers (AAPL, JPM)" in err[0] and "to pre-train on" in err[0]
    assert _run_folders(tmp_path) == []


@pytest.mark.parametrize("argv, expected", [
    (["--short-days", "45"], "the short history has 24 origin dates, too few to hold out 10 validation days"),  # found after pre-training before
    (["--val-days", "5"], "--save auto with --val-days 5"),  # 'too few to hold out' although 250 days were there
    (["--val-days", "0"], "--save auto with --val-days 0"),
])
def test_save_auto_without_enough_validation_days_is_refused_before_a_run_folder(tmp_path, capsys, argv, expected):
    assert _transfer(tmp_path, "--tickers", "AAPL", "JPM", "KO", "--holdout", "JPM", "--test-days", "30", *argv) == 2
    err = _errors(capsys)
    assert len(err) == 1 and expected in err[0] and "--save" in err[0]
    assert _run_folders(tmp_path) == []


def test_the_check_counts_the_windows_run_transfer_uses():
    """The pre-flight check passes what run_transfer can use: a named variant needs no validation days."""
    from domains.finance.config import TransferConfig
    from domains.finance.data import PriceDataError
    from domains.finance.features import base_features
    from domains.finance.finetuning import check_transfer_windows, short_history_panel

    panel = panel_slice(["AAPL", "JPM", "KO"], "2015-01-01", "2022-12-31")
    for save, ok in (("zero_shot", True), ("auto", False)):
        cfg = TransferConfig(track=False, holdout="JPM", short_days=45, test_days=30, encoder_length=20, horizon=3, save=save)
        short, cutoff = short_history_panel(panel, cfg, cfg.horizon)
        feat = base_features(short)
        if ok:
            check_transfer_windows(feat, cfg, cutoff)
        else:
            with pytest.raises(PriceDataError, match="24 origin dates"):
                check_transfer_windows(feat, cfg, cutoff)


@pytest.mark.parametrize("where", ["_plot", "print"])
def test_a_run_that_fails_after_it_started_holds_no_model(tmp_path, monkeypatch, capsys, where):
    """A failure after training — the plot, or printing the results table into a closed pipe (``transfer | head``),
    which used to come after the model was saved — leaves a failed run without model/."""
    import domains.finance.transfer as transfer_cmd
    from core.runs import RunNotFoundError, latest_run_dir, read_run, resolve_model_run
    from domains.finance.finetuning import TransferResult
    from domains.finance.training import build_forecaster

    def quick_transfer(cfg, panel, feat, cutoff):  # an untrained model in place of the minutes of training
        fc = build_forecaster(cfg, feat, cutoff, sorted(feat["ticker"].unique()), {})
        rows = [{"ticker": "JPM", "model": m, "ret_pinball_h1": 0.01, "vol_pinball": 0.02, "var99_breaches": 1} for m in ("zero_shot", "garch")]
        return TransferResult(pd.DataFrame(rows), fc, {"holdout": ["JPM"]}, saved="zero_shot")

    def broken(*a, **k):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(transfer_cmd, "run_transfer", quick_transfer)
    monkeypatch.setattr(transfer_cmd, where, broken, raising=False)  # a module-level print shadows the built-in
    runs = tmp_path / "runs"
    with pytest.raises(BrokenPipeError):
        transfer_cmd.main(["--runs-dir", str(runs), *SMALL, "--no-garch-informed", "--tickers", "AAPL", "JPM", "KO", "--holdout", "JPM",
                           "--test-days", "30", "--save", "zero_shot", "--name", "t1"])
    run = runs / "finance" / "t1"
    assert json.loads((run / "run.json").read_text())["status"] == "failed" and read_run(run)["status"] == "failed"
    assert not (run / "model").exists()
    with pytest.raises(RunNotFoundError, match="failed, not completed"):
        resolve_model_run("finance", "t1", runs)
    with pytest.raises(RunNotFoundError):
        latest_run_dir("finance", runs)
    # the same command without the failure completes and saves the model (the check did not stop a usable run)
    monkeypatch.undo()
    monkeypatch.setattr(transfer_cmd, "run_transfer", quick_transfer)
    assert transfer_cmd.main(["--runs-dir", str(runs), *SMALL, "--no-garch-informed", "--tickers", "AAPL", "JPM", "KO", "--holdout", "JPM",
                              "--test-days", "30", "--save", "zero_shot", "--name", "t1"]) == 0
    assert (run / "model" / "forecaster.json").is_file() and resolve_model_run("finance", "t1", runs) == run.resolve()
