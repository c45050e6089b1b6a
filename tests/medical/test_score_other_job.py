"""medical score into an ``--out`` that already holds a job.

* Another job (here: other settings, ``--no-lcc``) is refused in one line before its run folder exists; the other
  job's folder is left byte for byte as it was.
* The identical command rerun after the job completed is the same job: a completed run is never written again, so the
  rerun is ``score-<hash>-1`` — its mask folder is another, but the mask folder is not part of the job's identity. It
  skips every chunk (no volume is segmented again) and ends completed, like finance and recommendation score.
* A job folder written before that change (its identity recorded ``<run>/masks``) is still the same job."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.scoring_support import folder_snapshot


@pytest.fixture
def job(tiny_run, tmp_path):
    """(arguments of one score command into ``tmp_path/scores``, the runs root) for one small volume."""
    folder = tmp_path / "in"
    folder.mkdir()
    nib.save(nib.Nifti1Image(np.random.default_rng(1).random((24, 24, 24)).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), str(folder / "a.nii.gz"))
    runs = tmp_path / "runs"
    return ["--input", str(folder), "--model-run", str(tiny_run), "--runs-dir", str(runs), "--out", str(tmp_path / "scores"), "--no-progress", "--no-track"], runs


def _score_runs(runs: Path) -> list[Path]:
    return sorted((runs / "medical").iterdir())


def _job_outputs(out: Path) -> dict[str, tuple[bytes | None, int]]:
    """The job's identity, items, parts and commit markers (not the lock file or the last run's _SUCCESS summary)."""
    return {k: v for k, v in folder_snapshot(out).items() if k not in ("_job.lock", "_SUCCESS.json")}


def test_score_into_an_out_of_another_job_is_refused_before_its_run_folder(job, tmp_path, capsys):
    from domains.medical.score import main

    common, runs = job
    out = tmp_path / "scores"
    assert main(common) == 0
    first_runs = _score_runs(runs)
    before = folder_snapshot(out)
    capsys.readouterr()
    assert main(common + ["--no-lcc"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    # only the setting that differs is named (the mask folder, inside each run's own folder, is not the job's identity)
    assert len(err) == 1 and err[0].startswith(f"error: {out} holds another scoring job: the scorer or its config differs (lcc: true before, false now). "), err
    assert folder_snapshot(out) == before  # its lock file used to be rewritten
    assert _score_runs(runs) == first_runs  # no failed score-… run of the refused job


def test_the_identical_command_rerun_after_it_completed_reuses_the_finished_job(job, tmp_path, capsys):
    from core.runs import read_run
    from domains.medical.score import main

    common, runs = job
    out = tmp_path / "scores"
    assert main(common) == 0
    (first,) = _score_runs(runs)
    before = _job_outputs(out)
    capsys.readouterr()

    assert main(common) == 0  # was: "holds another scoring job … (mask_dir: …/score-<hash>/masks before, …/score-<hash>-1/masks now)"
    assert [p.name for p in _score_runs(runs)] == [first.name, f"{first.name}-1"]  # the completed run is left as it was
    second = runs / "medical" / f"{first.name}-1"
    assert read_run(second)["status"] == "completed" and read_run(first)["status"] == "completed"
    m = json.loads((second / "metrics.json").read_text())
    assert m["scored"] == 1 and m["summary"].startswith("scoring local×1: 0 chunks done, 1 skipped (of 1); 0 items scored"), m
    assert _job_outputs(out) == before  # no part or marker rewritten
    assert not list(second.glob("masks/*")) and len(list(first.glob("masks/*_mask.nii.gz"))) == 1  # nothing segmented again
    rows = pd.read_csv(second / "volumes.csv")
    assert len(rows) == 1 and Path(rows["mask_path"][0]).parent == first / "masks" and Path(rows["mask_path"][0]).is_file()

    capsys.readouterr()
    assert main(common + ["--no-lcc"]) == 2  # another job into the same --out is still refused
    assert "holds another scoring job" in capsys.readouterr().err
    assert len(_score_runs(runs)) == 2


def test_a_job_folder_whose_identity_holds_the_mask_folder_is_still_the_same_job(job, tmp_path):
    """Job folders written before the mask folder left the job's identity recorded it in ``_job.json`` (the scorer's
    config had ``mask_dir``: ``<run>/masks``); the identical command reuses such a finished job as well."""
    from domains.medical.score import main

    common, runs = job
    out = tmp_path / "scores"
    assert main(common) == 0
    (first,) = _score_runs(runs)
    job_file = out / "_job.json"
    old = json.loads(job_file.read_text())
    desc = old["description"]
    assert "mask_dir" not in desc["scorer"]["config"]
    desc["scorer"]["config"]["mask_dir"] = str(first / "masks")  # as the earlier version wrote it
    job_file.write_text(json.dumps({**old, "fingerprint": hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest(), "description": desc}))

    assert main(common) == 0
    m = json.loads((runs / "medical" / f"{first.name}-1" / "metrics.json").read_text())
    assert m["summary"].startswith("scoring local×1: 0 chunks done, 1 skipped (of 1)"), m
    assert main(common + ["--no-lcc"]) == 2
