"""medical score of a model run retrained in place (same name, same path). Before, the job identified the model run by
its path only: a rerun into the same ``--out`` skipped every chunk and served the old model's volumes, and without
``--out`` the job's run name (and so its scores/) was the old one. Now the job carries the stamp of the run's weights
and config files (core.scoring.model_run_stamp): the ``--out`` is refused in one line, ``--overwrite`` re-scores, and
the default name is another."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from safetensors.torch import load_file, save_file


def _retrain_in_place(run: Path) -> None:
    """What training again under the same name leaves: other weights at the same path (here: the old ones scaled)."""
    weights = run / "best.safetensors"
    tensors = {k: v * 0.5 if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
    save_file(tensors, str(weights.with_name("new.safetensors")))
    weights.with_name("new.safetensors").replace(weights)


def test_a_model_run_retrained_in_place_is_another_job(tiny_run, tmp_path, capsys):
    from domains.medical.score import main

    run = tmp_path / "models" / "tiny"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints", ".lock"))  # the session's run stays as it is
    folder = tmp_path / "in"
    folder.mkdir()
    nib.save(nib.Nifti1Image(np.random.default_rng(1).random((24, 24, 24)).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), str(folder / "a.nii.gz"))
    runs, out = tmp_path / "runs", tmp_path / "scores"
    common = ["--input", str(folder), "--model-run", str(run), "--runs-dir", str(runs), "--no-progress", "--no-track"]

    assert main(common) == 0  # without --out: the job's run is named from its inputs, model and settings
    (named,) = sorted((runs / "medical").iterdir())
    assert main(common + ["--out", str(out)]) == 0
    _retrain_in_place(run)
    capsys.readouterr()

    assert main(common + ["--out", str(out)]) == 2  # was 0: every chunk skipped, the old model's volumes served
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "the model run changed since this output was written" in err[0] and "--overwrite re-scores" in err[0], err
    assert main(common + ["--out", str(out), "--overwrite"]) == 0
    m = json.loads(max((runs / "medical").iterdir(), key=lambda p: p.stat().st_mtime_ns).joinpath("metrics.json").read_text())
    assert m["summary"].startswith("scoring local×1: 1 chunks done, 0 skipped"), m

    before = {p.name for p in (runs / "medical").iterdir()}
    assert main(common) == 0  # without --out: a new name, not the old job's (whose completed rerun would be <name>-1)
    (new,) = {p.name for p in (runs / "medical").iterdir()} - before
    assert not new.startswith(named.name), (new, named.name)
