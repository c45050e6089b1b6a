"""Two commands at once on the same files, with real processes (not threads): whoever needs a shared
cache first builds it, a second process waits for that builder and then uses the result.

What was probed and already fine (no test here, nothing to fix): reading a run folder (``list_runs``,
``read_run``, ``iter_metrics``, the newest checkpoint) while a training writes 70 kB metric rows and
checkpoints into it — every row read was whole, no reader error; two runs logging to an *existing*
``mlflow.db`` at once; the recommendation text-embedding cache (one atomic file per text hash).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _start_together(scripts: list[str], go: Path, env: dict | None = None, timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """Start one Python process per script; each imports what it needs, then waits for ``go`` to appear, so
    the interesting part of every script begins at the same moment. Returns their results in order."""
    procs = [subprocess.Popen([sys.executable, "-c", s], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}) for s in scripts]
    ready = [go.with_name(f"{go.name}.ready{i}") for i in range(len(scripts))]
    deadline = time.monotonic() + timeout
    while not all(r.exists() for r in ready):  # every process has imported what it needs
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    go.touch()
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


_WAIT = """
import sys, time
from pathlib import Path
go = Path({go!r})
go.with_name(go.name + ".ready{i}").touch()
while not go.exists():
    time.sleep(0.005)
"""

# a data set whose build takes a second and notes each build in a file (O_APPEND: one line per build)
_PREPARE = """
import os, time
from pathlib import Path
from core.data import DatasetSpec, ensure_dataset, prepare

src, root, builds = Path({src!r}), Path({root!r}), Path({builds!r})

def build(sources, out):
    with open(builds, "a") as fh:
        fh.write(f"{{os.getpid()}}\\n")
    time.sleep(1.0)
    (out / "rows.txt").write_text(sources["toy.csv"].read_text() + f"built by {{os.getpid()}}\\n")

spec = DatasetSpec(name="two-process-toy", domain="unit", description="toy", locate=lambda: {{"toy.csv": src}}, build=build)
""" + _WAIT + """
out = {call}(spec, root=root)
print("OK", out, (out / "rows.txt").read_text().splitlines()[-1])
"""


def test_two_processes_preparing_one_data_set_at_once_build_it_once_and_both_use_it(tmp_path):
    """``python -m core.data prepare`` beside a training that prepares the same data set on first use
    (``ensure_dataset``): both built it at once and each swapped its own folder into place — the folder
    disappeared for an instant under the other's reader, and when both found no folder, the second rename
    failed (OSError: directory not empty). Now the second waits for the first and uses its folder."""
    src = tmp_path / "toy.csv"
    src.write_text("a,b\n1,2\n")
    root, builds, go = tmp_path / "data", tmp_path / "builds.txt", tmp_path / "go"
    scripts = [_PREPARE.format(src=str(src), root=str(root), builds=str(builds), go=str(go), i=i, call=call)
               for i, call in enumerate(("prepare", "ensure_dataset"))]
    results = _start_together(scripts, go)
    for r in results:
        assert r.returncode == 0 and r.stdout.startswith("OK"), r.stderr[-2000:]
    assert len(builds.read_text().splitlines()) == 1, "the data set was built twice at once"
    assert len({r.stdout.split()[-1] for r in results}) == 1  # both read the same build
    from core.data import dataset_dir

    d = dataset_dir("two-process-toy", root)
    assert json.loads((d / "MANIFEST.json").read_text())["outputs"]
    assert sorted(p.name for p in root.iterdir()) == [".two-process-toy.lock", "two-process-toy"]  # no half-built folder left
    assert any("waiting for it to finish" in r.stderr for r in results)  # the second said why it waited


_TRACK = """
import os
os.environ["MLFLOW_TRACKING_URI"] = ""
from core.tracking import Tracker
import mlflow  # noqa: F401  (imported before the start signal: the race is in opening the store, not in importing)
""" + _WAIT + """
t = Tracker("probe", "run{i}", {runs!r}, enabled=True)
for step in range(5):
    t.log_metrics({{"loss": 1.0 / (step + 1)}}, step=step)
t.end()
print("ENABLED" if t.enabled else "DISABLED", t.run_id)
"""


@pytest.mark.slow  # ~10-25 s on 2 busy cores: importing MLflow and creating a store's tables take seconds
def test_two_runs_starting_on_a_fresh_mlflow_store_are_both_tracked(tmp_path):
    """Two trainings with tracking on, started together on a runs folder without ``mlflow.db``: MLflow
    created the store's tables from both processes at once and one of them failed ("duplicate column name")
    — that run went on untracked, with a multi-line warning. Now the second waits while the first sets
    the store up; both runs are in the store, finished, with their metrics."""
    runs, go = tmp_path / "runs", tmp_path / "go"
    results = _start_together([_TRACK.format(runs=str(runs), go=str(go), i=i) for i in range(2)], go, env={"MLFLOW_TRACKING_URI": ""}, timeout=240)
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
    assert [r.stdout.split()[0] for r in results] == ["ENABLED", "ENABLED"], [r.stderr[-1500:] for r in results]
    import sqlite3

    with sqlite3.connect(runs / "mlflow.db") as db:
        finished = db.execute("select name from runs where status = 'FINISHED'").fetchall()
        rows = db.execute("select count(*) from metrics").fetchone()[0]
    assert sorted(n for (n,) in finished) == ["run0", "run1"] and rows == 10


_FETCH = """
from core.data import debian_package_files
""" + _WAIT + """
files = debian_package_files("fakepkg", [f"/usr/share/fakepkg/f{{i}}.bin" for i in range(4)], system=False)
print("OK", sum(len(p.read_bytes()) for p in files.values()))
"""


def test_two_processes_fetching_one_debian_package_fetch_it_once(tmp_path):
    """The no-root Debian fetch (``apt-get download`` + ``dpkg-deb -x`` into ``<data root>/.debian``), as two
    preparations on a machine without the package run it: both fetched, and the second removed the first's
    cache folder while the first was reading it (FileNotFoundError). Now the second waits and uses the cache.
    ``apt-get`` and ``dpkg-deb`` are stand-ins on PATH (no network in tests); they note each call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text('#!/bin/sh\necho "$$" >> "$FAKE_APT_CALLS"\nsleep 1\necho deb > "$2_1.0_all.deb"\n')
    (bin_dir / "dpkg-deb").write_text('#!/bin/sh\nmkdir -p "$3/usr/share/fakepkg"\n'
                                      'for i in 0 1 2 3; do head -c 1000000 /dev/zero > "$3/usr/share/fakepkg/f$i.bin"; done\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    root, calls, go = tmp_path / "data", tmp_path / "apt-calls.txt", tmp_path / "go"
    env = {"SUITE_DATA_ROOT": str(root), "FAKE_APT_CALLS": str(calls), "PATH": f"{bin_dir}:{os.environ['PATH']}", "SUITE_DEBIAN_FETCH": "1"}
    results = _start_together([_FETCH.format(go=str(go), i=i) for i in range(2)], go, env=env)
    for r in results:
        assert r.returncode == 0 and r.stdout.split() == ["OK", "4000000"], r.stderr[-2000:]
    assert len(calls.read_text().splitlines()) == 1, "the package was fetched twice at once"
    assert sorted(p.name for p in (root / ".debian").iterdir()) == [".fakepkg.lock", "fakepkg"]  # no work folder left
