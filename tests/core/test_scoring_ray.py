"""Batch scoring engine on a real Ray cluster (``ray start --head`` on 127.0.0.1, 2 CPUs, started
by the ``ray_address`` fixture): same bytes as the local engine, one model load per actor,
an actor killed mid-chunk is replaced and the job completes exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.scoring import file_items, read_output, read_quarantine, run_job
from tests.scoring_support import PriceFileScorer, committed_markers, output_checksum

pytest.importorskip("ray")
pytestmark = [pytest.mark.timeout(180), pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]


def _pids(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_ray_engine_writes_the_same_bytes_as_local_loading_the_model_once_per_actor(ray_address, price_files, tmp_path):
    items = file_items(price_files)
    scorer = PriceFileScorer(fail_ids=(items[5].id,))
    run_job(items, scorer, tmp_path / "local", engine="local", items_per_chunk=2, progress=False)
    loads = tmp_path / "loads.txt"
    ray_scorer = PriceFileScorer(fail_ids=(items[5].id,), load_log=str(loads))
    summary = run_job(items, ray_scorer, tmp_path / "ray", engine="ray", workers=2, address=ray_address, items_per_chunk=2, progress=False)
    assert (summary.engine, summary.chunks_done, summary.items_quarantined) == ("ray", 10, 1)
    local_parts = sorted(p.name for p in (tmp_path / "local").glob("part-*.parquet"))
    assert local_parts == sorted(p.name for p in (tmp_path / "ray").glob("part-*.parquet")) and len(local_parts) == 10
    for name in local_parts:
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes(), name
    assert read_quarantine(tmp_path / "ray")["item_id"].tolist() == [items[5].id]
    # scored by Ray actor processes, each loading the model once for its many chunks
    workers = {m["worker"] for m in committed_markers(tmp_path / "ray")}
    pids = _pids(loads)
    assert 1 <= len(pids) <= 2 and len(pids) == len(set(pids))
    assert {w.split(":")[1] for w in workers} <= set(pids)


def test_assert_engines_agree_helper_for_domain_tests(ray_address, price_files, tmp_path):
    from tests.scoring_support import assert_engines_agree

    items = file_items(price_files[:6])
    df = assert_engines_agree(items, PriceFileScorer(fail_ids=(items[1].id,)), tmp_path, ray_address)
    assert len(df) == 5 * 400 and items[1].id not in set(df["work_item"])


def test_ray_actor_killed_mid_chunk_is_restarted_and_the_job_completes_exactly_once(ray_address, price_files, tmp_path):
    items = file_items(price_files)
    run_job(items, PriceFileScorer(), tmp_path / "ref", items_per_chunk=2, progress=False)
    loads = tmp_path / "loads.txt"
    scorer = PriceFileScorer(crash_id=items[7].id, crash_once_dir=str(tmp_path), load_log=str(loads))
    summary = run_job(items, scorer, tmp_path / "ray", engine="ray", workers=2, address=ray_address, items_per_chunk=2, progress=False)
    killed_pid = (tmp_path / "crashed").read_text()
    assert killed_pid in _pids(loads)  # an actor really died (SIGKILL) while scoring chunk 3 ...
    assert len(_pids(loads)) >= 2  # ... and a replacement actor loaded the model
    assert summary.chunks_done == 10 and summary.rows_total == 20 * 400
    out = read_output(tmp_path / "ray", verify=True)
    assert not out.duplicated(["work_item", "date"]).any()
    assert output_checksum(tmp_path / "ray") == output_checksum(tmp_path / "ref")
    # a rerun on Ray skips everything
    again = run_job(items, PriceFileScorer(), tmp_path / "ray", engine="ray", workers=2, address=ray_address, items_per_chunk=2, progress=False)
    assert (again.chunks_done, again.chunks_skipped) == (0, 10)


def test_a_failing_model_load_on_ray_stops_the_job_with_its_reason(ray_address, price_files, tmp_path):
    from core.scoring import ScorerLoadError

    with pytest.raises(ScorerLoadError, match=r"load\(\) failed: FileNotFoundError: work=-1: no such model"):
        run_job(file_items(price_files), PriceFileScorer(work=-1), tmp_path / "out", engine="ray", workers=2, address=ray_address, progress=False)


@pytest.mark.slow
def test_without_address_a_private_loopback_ray_is_started_and_shut_down(price_files, tmp_path):
    import ray

    items = file_items(price_files)
    run_job(items, PriceFileScorer(), tmp_path / "local", items_per_chunk=5, progress=False)
    summary = run_job(items, PriceFileScorer(), tmp_path / "ray", engine="ray", workers=2, items_per_chunk=5, progress=False)
    assert summary.chunks_done == 4 and not ray.is_initialized()  # the private cluster is gone again
    assert output_checksum(tmp_path / "ray") == output_checksum(tmp_path / "local")


@pytest.mark.slow
def test_sigkill_of_a_ray_driver_then_rerun_on_ray_gives_every_row_once(ray_address, price_files, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parents[2]
    items_dir, out = price_files[0].parent, tmp_path / "killed"
    run_job(file_items(sorted(items_dir.glob("*.csv"))), PriceFileScorer(), tmp_path / "ref", items_per_chunk=2, progress=False)
    cmd = [sys.executable, "-m", "tests.scoring_support", "--items-dir", str(items_dir), "--out", str(out), "--items-per-chunk", "2",
           "--engine", "ray", "--workers", "2", "--address", ray_address, "--no-progress"]
    proc = subprocess.Popen(cmd + ["--sleep", "0.5"], cwd=repo, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(committed_markers(out)) < 2:
            assert proc.poll() is None
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    committed = len(committed_markers(out))
    assert 2 <= committed < 10
    again = run_job(file_items(sorted(items_dir.glob("*.csv"))), PriceFileScorer(), out, engine="ray", workers=2, address=ray_address, items_per_chunk=2, progress=False)
    assert (again.chunks_skipped, again.chunks_done) == (committed, 10 - committed)
    assert output_checksum(out) == output_checksum(tmp_path / "ref")


@pytest.mark.slow
def test_a_private_ray_cluster_is_gone_when_its_driver_is_sigkilled(price_files, tmp_path):
    """The driver alone gets SIGKILL (not its process group): the Ray processes it started (GCS,
    raylet, dashboard and runtime-env agents, actors) must not outlive it — without the reaper the
    two agents stayed for about 40 s here — and the cluster's temp folder is removed."""
    from core.reaper import descendants, kill_tree, process_table

    cmd = [sys.executable, "-m", "tests.scoring_support", "--items-dir", str(price_files[0].parent), "--out", str(tmp_path / "out"),
           "--engine", "ray", "--workers", "1", "--items-per-chunk", "1", "--sleep", "0.5", "--no-progress"]
    driver = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cluster: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 150
        while not committed_markers(tmp_path / "out"):
            assert driver.poll() is None, driver.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the Ray job did not commit a chunk in time"
            time.sleep(0.1)
        agents = {"ray::DashboardAgent", "ray::RuntimeEnvAgent"}  # a real cluster, the agents that used to linger included
        deadline = time.monotonic() + 30
        while True:
            cluster = descendants(driver.pid)
            if agents <= {_title(p) for p in cluster} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert agents <= {_title(p) for p in cluster}
        (reaper,) = [p for p in cluster if b"core/reaper.py" in _cmdline(p)]
        temp_dir = _cmdline(reaper).split(b"\0")[-2].decode()
        assert Path(temp_dir).is_dir() and temp_dir.startswith("/tmp/ray-")
        os.kill(driver.pid, signal.SIGKILL)  # the driver only
        driver.wait(timeout=30)

        def survivors() -> list[str]:
            table = process_table()
            return [_title(p) for p, start in cluster.items() if table.get(p, (0, None))[1] == start]

        deadline = time.monotonic() + 10
        while (survivors() or Path(temp_dir).exists()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not survivors(), f"Ray processes outlived their driver: {survivors()}"
        assert not Path(temp_dir).exists()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
        kill_tree(cluster, timeout=5)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _title(pid: int) -> str:
    return _cmdline(pid).split(b"\0")[0].decode(errors="replace")
