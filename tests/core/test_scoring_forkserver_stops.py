"""A long-lived process (the Streamlit dashboard, a notebook) that runs scoring jobs with ``Scorer.preload`` does not
keep their fork server: the job that started it stops it when it ends. Before, the fork server (holding the preloaded
modules, pytorch-forecasting for finance) lived as long as the process, and a later job reused it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# one interpreter standing for the long-lived process: two jobs in a row; after each, while the process lives on,
# is the fork server its workers were forked from (the pid that imported the probe module for them) still there?
DRIVER = """
import sys
from core.scoring import WorkItem, run_job
from tests.scoring_preload_probe import ProbeScorer

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False

seen = []
for out in sys.argv[1:]:
    s = run_job([WorkItem(id=str(i)) for i in range(4)], ProbeScorer(), out, workers=2, items_per_chunk=1, progress=False)
    servers = sorted({v["imported_in"] for v in s.worker_load_info.values()})
    seen.append((servers, [alive(p) for p in servers]))
print(seen)
"""


def test_a_jobs_fork_server_is_gone_when_the_job_ends_and_the_next_job_starts_its_own(tmp_path):
    res = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "a"), str(tmp_path / "b")], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "SCORING_PRELOAD_PROBE": str(tmp_path / "probe.txt")}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    (first, first_alive), (second, second_alive) = ast.literal_eval(res.stdout.strip().splitlines()[-1])
    assert len(first) == 1 and len(second) == 1  # each job's 2 workers forked from one fork server
    assert first_alive == [False] and second_alive == [False]  # the old code: [True], [True] (one server, kept)
    assert first != second  # the second job started its own (with its own preload), not the first one's


# a job that fails mid-way in the driver (its first chunk commits, the second's write fails: a full disk) still stops
# the fork server it started: the stop is in the context's `finally`, not after the last chunk
FAILING_DRIVER = """
import os, sys
import core.scoring.engine as engine
from core.scoring import WorkItem, run_job
from tests.scoring_preload_probe import ProbeScorer

commit, calls = engine.commit_chunk, []
def failing_commit(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        raise OSError(28, "No space left on device")
    return commit(*args, **kwargs)
engine.commit_chunk = failing_commit
try:
    run_job([WorkItem(id=str(i)) for i in range(4)], ProbeScorer(), sys.argv[1], workers=2, items_per_chunk=1, progress=False)
except OSError as e:
    failed = e.errno == 28
servers = [int(p) for p in open(os.environ["SCORING_PRELOAD_PROBE"]).read().split() if int(p) != os.getpid()]
print([failed, servers, [os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split(") ", 1)[1][0] != "Z" for p in servers]])
"""


def test_a_job_that_fails_mid_way_stops_its_fork_server_too(tmp_path):
    res = subprocess.run([sys.executable, "-c", FAILING_DRIVER, str(tmp_path / "a")], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "SCORING_PRELOAD_PROBE": str(tmp_path / "probe.txt")}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    failed, servers, alive = ast.literal_eval(res.stdout.strip().splitlines()[-1])
    assert failed and len(servers) == 1  # the job failed with the commit's error, after its fork server imported the probe
    assert alive == [False]  # the code before 826cd20: [True] (kept for the life of the process)
