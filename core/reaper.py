"""Reap a private Ray cluster when the process that started it is gone — even after a SIGKILL.

``ray.init()`` without an address starts a whole local cluster (GCS, raylet, dashboard and
runtime-env agents, workers). Killing the driver with SIGKILL leaves the agents running for
minutes. So the driver starts this reaper first, in its own session, with a pipe on its stdin:

    reaper = start_reaper(temp_dir)     # the cluster is started with ray.init(_temp_dir=temp_dir)
    ...
    stop_reaper(reaper)                 # normal end: the same clean-up, then the reaper exits

The reaper blocks on the pipe; end-of-file means the driver closed it or died (the kernel closes a
dead process's descriptors, so there is no PID to poll and no PID reuse to fear). Until then it
records, twice a second, the cluster's process tree with start times: the driver's children whose
command line names the cluster's private temp folder (GCS, raylet, monitors — ``ray.init`` passes
them the folder) and all their descendants (what the raylet starts: dashboard and runtime-env
agents, workers). Other children of the driver are not touched. At the end it SIGKILLs those that
still run — and their children — and removes the cluster's temp folder. Recording the tree while
the driver lives matters: once the driver is gone its descendants are re-parented and can no longer
be told apart from other users' processes (their command lines are titles such as
``ray::DashboardAgent``). It imports nothing heavy, so it starts in a few milliseconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["start_reaper", "stop_reaper", "process_table", "descendants", "cluster_tree", "kill_tree"]


def process_table() -> dict[int, tuple[int, int]]:
    """``{pid: (parent pid, start time in clock ticks)}`` of every live process (Linux ``/proc``)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), int(fields[19]))
    return table


def descendants(root: int, table: dict[int, tuple[int, int]] | None = None) -> dict[int, int]:
    """``{pid: start time}`` of every live descendant of ``root``."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = table[child][1]
                todo.append(child)
    return found


def kill_tree(known: dict[int, int], timeout: float = 10.0) -> int:
    """SIGKILL the processes in ``known`` (pid -> start time; a pid now used by another process is
    left alone) and all their descendants, until none is left. Returns how many were killed."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    me = os.getpid()
    while time.monotonic() < deadline:
        table = process_table()
        alive = {pid for pid, start in known.items() if table.get(pid, (0, None))[1] == start}
        for pid in list(alive):
            alive |= set(descendants(pid, table))
        alive.discard(me)
        if not alive:
            break
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    return len(killed)


def start_reaper(temp_dir: str | os.PathLike) -> subprocess.Popen | None:
    """Start the reaper of this process's private cluster (temp folder ``temp_dir``); ``None`` without ``/proc``."""
    if not Path("/proc/self/cmdline").exists():
        return None
    # -I -S: no script folder on sys.path (core/ holds io.py, logging.py) and nothing from site-packages
    return subprocess.Popen([sys.executable, "-I", "-S", __file__, str(os.getpid()), str(temp_dir)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def stop_reaper(reaper: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """Normal end of the driver: close the pipe, let the reaper clean up, wait for it."""
    if reaper is None:
        return
    try:
        if reaper.stdin is not None:
            reaper.stdin.close()
        reaper.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        reaper.kill()


def cluster_tree(driver: int, temp_dir: str, table: dict[int, tuple[int, int]] | None = None) -> dict[int, int]:
    """``{pid: start time}`` of the private cluster of ``driver``: its children naming ``temp_dir``
    on their command line, and every descendant of those."""
    table = process_table() if table is None else table
    marker = temp_dir.encode()
    found: dict[int, int] = {}
    for pid, (ppid, start) in table.items():
        if ppid == driver and pid != os.getpid():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline:
                found[pid] = start
                found.update(descendants(pid, table))
    return found


def _main(driver: int, temp_dir: str) -> int:
    import selectors

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the driver's terminal is the driver's business
    known: dict[int, int] = {}
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin.buffer, selectors.EVENT_READ)
    while True:
        known.update(cluster_tree(driver, temp_dir))
        if sel.select(timeout=0.5) and not os.read(sys.stdin.fileno(), 65536):
            break  # end of file: the driver closed the pipe or died
    kill_tree(known)
    shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(int(sys.argv[1]), sys.argv[2]))
