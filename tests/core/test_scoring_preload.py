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
        assert len(pids) == 3 and all(imported == w for imported, w in workers)  # each of the 2 workers its own


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie is dead, only not reaped yet
    except FileNotFoundError:
        return False


def test_killing_the_driver_kills_its_forked_workers_and_fork_server(tmp_path):
    """PR_SET_PDEATHSIG ties a worker to its parent, which for a forked worker is the fork server; the fork server
    stays up while a worker holds its pipe, so a SIGKILLed driver used to leave both running."""
    import signal
    import time

    probe = tmp_path / "probe.txt"
    proc = subprocess.Popen([sys.executable, "-c", "from tests.scoring_preload_probe import main; main()", str(tmp_path / "out"), "preload"], cwd=ROOT,
                            env={**os.environ, "SCORING_PRELOAD_PROBE": str(probe), "SCORING_PROBE_SECONDS_PER_ITEM": "60"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers = Path(f"{probe}.workers")
        deadline = time.monotonic() + 60
        while not (workers.exists() and len(workers.read_text().split()) == 2) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        pids = [int(x) for x in workers.read_text().split()]
        fork_server = [int(x) for x in probe.read_text().split()][1]
        assert len(pids) == 2 and all(map(_alive, pids + [fork_server]))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 20
    while any(map(_alive, pids + [fork_server])) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in pids + [fork_server] if _alive(p)]
    for p in left:  # do not leave them to the next test
        os.kill(p, signal.SIGKILL)
    assert left == []
