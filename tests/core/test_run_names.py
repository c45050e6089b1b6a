"""--name values the earlier passes did not try: a control character (a newline split every line naming the run,
and the folder was created with it) and a name longer than a folder name can be (an OS error with advice about the
runs folder). Each is one RunNameError line naming the flag, exit 2, before anything is created."""

from dataclasses import dataclass

import pytest

from core.cli import run_cli
from core.config import ResumeConfig, RunConfig, TrackingConfig
from core.runs import Run, RunNameError, check_resumable


@dataclass
class ToyConfig(TrackingConfig, ResumeConfig, RunConfig):
    pass


def _train(cfg):
    with Run.start("unit", cfg, command="train") as run:
        run.finish({})


@pytest.mark.parametrize("name, why", [("a\nb", "control character"), ("tab\there", "control character"), ("x" * 256, "256 bytes long"),
                                       ("ü" * 128, "256 bytes long")])
@pytest.mark.parametrize("resume", [False, True])
def test_names_no_folder_can_hold_are_one_line_before_anything_is_created(tmp_path, capsys, name, why, resume):
    runs = tmp_path / "runs"
    try:
        code = run_cli(ToyConfig, _train, ["--runs-dir", str(runs), "--name", name, "--no-track"] + (["--resume"] if resume else []), prog="train")
    except SystemExit as e:  # refused while the flags are parsed (argparse's usage line + one error line)
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--name " in errors[0] and why in errors[0] and "Traceback" not in err, err
    assert not runs.exists()
    if resume:
        with pytest.raises(RunNameError, match=why):
            check_resumable("unit", ToyConfig(runs_dir=str(runs), name=name, resume=True), "train")


def test_the_longest_name_a_folder_holds_is_accepted(tmp_path):
    with Run.start("unit", ToyConfig(runs_dir=str(tmp_path), name="y" * 255, track=False), command="train") as run:
        run.finish({})
    assert run.dir.name == "y" * 255
