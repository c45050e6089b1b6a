"""``Scorer.preload``: the local engine's worker processes (``--workers N``) are forked from one fork server
that imported the scorer's heavy modules once, instead of each spawned worker importing them again (finance:
pytorch-forecasting, ~15 s of CPU per worker on this machine). A fresh interpreter per case, so the fork server
is this job's own."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(tmp_path, mode):
    probe = tmp_path / f"{mode}.txt"
    res = subprocess.run([sys.executable, "-c", "from tests.scoring_preload_probe import main; main()", str(tmp_path / mode), mode], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "SCORING_PRELOAD_PROBE": str(probe)}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return [int(x) for x in probe.read_text().split()], ast.literal_eval(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["preload", pytest.param("spawn", marks=pytest.mark.slow)])  # spawn: the reference, without preload
def test_preloaded_modules_are_imported_once_for_all_workers(tmp_path, mode):
    pids, workers = _imports(tmp_path, mode)
    driver = pids[0]  # the driver imports it first
    if mode == "preload":
        assert len(pids) == 2 and pids[1] != driver  # and once more in the fork server, for every worker
        assert {imported for imported, _ in workers} == {pids[1]} and all(w != pids[1] for _, w in workers)
    else:
        assert len(pids) == 1 + len(workers) and {imported for imported, _ in workers} == {w for _, w in workers}  # each worker its own
