"""medical score with an ``--out`` that holds another scoring job (here: other settings, ``--no-lcc``) is refused
in one line before its run folder exists; the other job's folder is left byte for byte as it was. The job's
identity includes its mask folder ``<run>/masks``, so the command compares it with the folder Run.start
will take (core.runs.Run.planned_dir) — before creating it."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np


def _snapshot(folder: Path) -> dict[str, tuple[bytes | None, int]]:
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            out[str(p.relative_to(folder))] = (None if p.is_dir() else p.read_bytes(), p.stat().st_mtime_ns)
    return out


def test_score_into_an_out_of_another_job_is_refused_before_its_run_folder(tiny_run, tmp_path, capsys):
    from domains.medical.score import main

    folder = tmp_path / "in"
    folder.mkdir()
    nib.save(nib.Nifti1Image(np.random.default_rng(1).random((24, 24, 24)).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), str(folder / "a.nii.gz"))
    runs, out = tmp_path / "runs", tmp_path / "scores"
    common = ["--input", str(folder), "--model-run", str(tiny_run), "--runs-dir", str(runs), "--out", str(out), "--no-progress", "--no-track"]
    assert main(common) == 0
    first_runs = sorted(p.name for p in (runs / "medical").iterdir())
    before = _snapshot(out)
    capsys.readouterr()
    assert main(common + ["--no-lcc"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    # the other settings name another run folder too (the run's name derives from the job): both are named
    assert len(err) == 1 and err[0].startswith(f"error: {out} holds another scoring job: the scorer or its config differs (lcc: true before, false now, "
                                               "mask_dir: "), err
    assert _snapshot(out) == before  # its lock file used to be rewritten
    assert sorted(p.name for p in (runs / "medical").iterdir()) == first_runs  # no failed score-… run of the refused job
