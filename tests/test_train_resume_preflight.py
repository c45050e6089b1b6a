"""`train --resume` refusals that the run folder alone decides (core.runs.check_resumable) come before the data is
read — in finance (the price panel) and medical (the MSD task; recommendation's own check_resume has its tests in
tests/recommendation): no such run, a run another command made, another value of a setting that decides the held-out
rows. The data load is replaced with a sentinel: reaching it means the refusal came too late (or, for a run that can
be continued, that the preflight let it through)."""

from __future__ import annotations

import importlib
import json
import re

import pytest

LOADER = {"finance": "load_panel_data", "medical": "load_training_task"}


class DataWasRead(Exception):
    pass


@pytest.fixture(params=sorted(LOADER))
def domain_runs(request, tmp_path, monkeypatch):
    """(domain, its train module, its TrainConfig, a runs folder holding an interrupted train run 'cut' and a
    finished score job 'job1'); the domain's data load raises DataWasRead."""
    from core.runs import Run

    domain = request.param
    train_cmd = importlib.import_module(f"domains.{domain}.train")
    TrainConfig = importlib.import_module(f"domains.{domain}.config").TrainConfig

    def sentinel(*args, **kwargs):
        raise DataWasRead(args)

    monkeypatch.setattr(train_cmd, LOADER[domain], sentinel)
    runs = tmp_path / "runs"
    cut = Run.start(domain, TrainConfig(runs_dir=str(runs), name="cut", track=False), command="train")
    cut._close("interrupted", error="killed")
    with Run.start(domain, TrainConfig(runs_dir=str(runs), name="job1", track=False), command="score", kind="job") as job:
        job.finish()
    return domain, train_cmd, TrainConfig, runs


@pytest.mark.parametrize("name,expected", [("nosuchrun", "--resume: no run .*nosuchrun to resume"),
                                           ("job1", "job1 is a score job run, not a train run")])
def test_refused_in_one_line_before_the_data_is_read(domain_runs, capsys, name, expected):
    _, train_cmd, _, runs = domain_runs
    rc = train_cmd.main(["--runs-dir", str(runs), "--name", name, "--resume", "--no-track"])
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and re.search(expected, errors[0]), errors


def test_a_run_that_can_be_continued_gets_to_the_data(domain_runs):
    _, train_cmd, TrainConfig, runs = domain_runs
    with pytest.raises(DataWasRead):
        train_cmd.train(TrainConfig(runs_dir=str(runs), name="cut", resume=True, track=False))


# what decides the held-out rows ("resume": "fixed" in the domain's TrainConfig): finance's validation days come from the
# panel (--ticker, --tickers, --min-history) and --val-days; medical's validation and test cases from --task, which, like
# finance's --data, is "resume": "same-data" (compared by content, a prepared task by name)
OTHER_HELD_OUT = {
    "finance": [(["--val-days", "30"], "it was started with --val-days 63, this command asks for --val-days 30; these decide the panel and its last "
                                       "--val-days trading days, held out for validation"),
                (["--tickers", "AAPL", "JPM"], "it was started with --tickers (none), this command asks for --tickers 'AAPL' 'JPM';"),
                (["--data", "prices.csv"], "it was trained on no --data (the default data), this command reads --data 'prices.csv' (")],
    "medical": [(["--task", "msd-headct-bone"], "it was trained on --task 'msd-brain-aal', this command reads --task 'msd-headct-bone'; expected the "
                                                "same data (it decides the validation case (the task's last training case) and the test cases")],
}


def test_another_setting_that_decides_the_held_out_rows_is_refused_in_one_line_before_the_data_is_read(domain_runs, capsys):
    domain, train_cmd, _, runs = domain_runs
    for flags, expected in OTHER_HELD_OUT[domain]:
        rc = train_cmd.main(["--runs-dir", str(runs), "--name", "cut", "--resume", "--no-track", *flags])
        errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
        assert rc == 2 and len(errors) == 1 and f"error: --resume of run cut: {expected}" in errors[0], errors
        assert re.search(r"(expected the run's .*, or a new run|expected the same data .*, or start a new run) without --resume$", errors[0])
    assert json.loads((runs / domain / "cut" / "run.json").read_text())["status"] == "interrupted"  # the run is left as it was


# the data flag of each domain's train ("resume": "same-data"): finance --data (a price file), medical --task (an MSD folder)
DATA_FLAG = {"finance": ("data", "prices.csv"), "medical": ("task", "Task09_Tiny")}


def _make_data(domain: str, where, content: str):
    """A stand-in for the domain's data at ``where`` (the data load is the sentinel: only its bytes matter here)."""
    if domain == "finance":
        where.write_text(content)
    else:
        where.mkdir(exist_ok=True)
        (where / "dataset.json").write_text('{"name": "tiny"}')
        (where / "imagesTr").mkdir(exist_ok=True)
        (where / "imagesTr" / "case_0.nii.gz").write_text(content)


def test_the_runs_data_under_another_path_continues_and_other_data_at_its_path_is_refused_before_the_data_is_read(domain_runs, tmp_path, monkeypatch, capsys):
    """The data a resume reads is the run's by content: typed absolute instead of relative (from another folder), or
    moved, it continues; another file written at the run's path is refused in one line, before the data is read. (As
    text, the first was refused and the second continued on data the checkpoint never saw.)"""
    from core.runs import Run

    domain, train_cmd, TrainConfig, runs = domain_runs
    name, rel = DATA_FLAG[domain]
    monkeypatch.chdir(tmp_path)
    _make_data(domain, tmp_path / rel, "date,ticker,close\n2024-01-02,AAPL,185.6\n")
    started = Run.start(domain, TrainConfig(runs_dir=str(runs), name="onfile", track=False, **{name: rel}), command="train")
    started._close("interrupted", error="killed")
    resume = ["--runs-dir", str(runs), "--name", "onfile", "--resume", "--no-track"]
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    for same in (str(tmp_path / rel), f"../{rel}"):  # absolute; relative from another folder
        with pytest.raises(DataWasRead):
            train_cmd.main([*resume, f"--{name}", same])
    (tmp_path / rel).rename(tmp_path / "moved")
    with pytest.raises(DataWasRead):
        train_cmd.main([*resume, f"--{name}", str(tmp_path / "moved")])
    (tmp_path / "moved").rename(tmp_path / rel)
    capsys.readouterr()
    _make_data(domain, tmp_path / rel, "date,ticker,close\n2024-01-02,AAPL,185.7\n")  # other data, same size, at the run's path
    rc = train_cmd.main([*resume, f"--{name}", f"../{rel}"])
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"error: --resume of run onfile: --{name} '../{rel}' ({tmp_path / rel}) holds other data than the run was trained on "), errors
    assert errors[0].endswith("or start a new run without --resume"), errors
    assert json.loads((runs / domain / "onfile" / "run.json").read_text())["status"] == "interrupted"


# recommendation's seeds decide the held-out rows only under a stratified split (--seed: only with a validation part),
# and leave-last-out counts only whether --validation-ratio is 0: --help words the condition instead of the plain mark
REC_CONDITIONAL = {"--split-seed": "(fixed on --resume with a stratified split)",
                   "--seed": "(fixed on --resume with a stratified split and --validation-ratio above 0)",
                   "--validation-ratio": "(fixed on --resume; with leave-last-out, only whether it is 0)"}


@pytest.mark.parametrize("domain,kept,conditional,not_kept", [
    ("finance", ["--data", "--val-days", "--tickers", "--min-history"], {}, ["--epochs", "--lr", "--max-gap-days"]),
    ("medical", ["--task"], {}, ["--max-epochs", "--lr", "--spacing"]),
    ("recommendation", ["--data", "--split", "--date-order"], REC_CONDITIONAL, ["--epochs", "--temperature"]),
])
def test_help_marks_the_flags_a_resume_must_keep(domain, kept, conditional, not_kept, capsys):
    from core.config import RESUME_HELP

    train_cmd = importlib.import_module(f"domains.{domain}.train")
    with pytest.raises(SystemExit):
        train_cmd.main(["--help"])
    text = " ".join(capsys.readouterr().out.split("options:", 1)[1].split())
    for flag in [*kept, *conditional, *not_kept]:  # a flag's help runs from its own '--flag METAVAR' to the next flag's
        block = re.search(rf"(?<![\w-]){flag} (?:\[[A-Z_]+ \.\.\.\]|[A-Z_]+|\{{[^}}]*\}}) (.*?)(?= --[a-z][a-z-]*(?:,| \[| \{{| [A-Z_])|$)", text)
        assert block, flag
        assert (RESUME_HELP in block.group(1)) == (flag in kept), (flag, block.group(1))
        assert block.group(1).endswith(conditional[flag]) if flag in conditional else "fixed on --resume" not in block.group(1).replace(RESUME_HELP, "")
