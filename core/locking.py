"""One writer per folder: an exclusive ``flock`` on a lock file inside it, plus the writer's PID.

The kernel releases a ``flock`` when its process dies (SIGKILL included), so a crashed writer never
blocks the rerun and there is nothing stale to clean up. The PID written into the lock file is only
for messages ("being written by PID 1234") and for lock files on filesystems without ``flock``.

    held = FolderLock.acquire(run_dir / ".lock")      # None when another live process holds it
    if held is None:
        raise RunLockedError(f"{run_dir} is being written by PID {lock_holder(run_dir / '.lock')}")
    ...
    held.release()

Shared caches (a prepared data set, the MLflow store, a downloaded archive) are built by whoever needs them
first; a second process *waits* for the builder instead of building beside it, then finds the cache ready:

    with FolderLock.wait(root / ".ml-100k.lock", on_wait=lambda pid: log.info(f"waiting for PID {pid}")):
        if not ready(): build()
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import Callable

__all__ = ["FolderLock", "lock_holder", "is_locked", "pid_alive"]


class FolderLock:
    """An acquired lock; :meth:`release` (or process exit) frees it."""

    def __init__(self, path: Path, fh) -> None:  # noqa: ANN001 - an open file object
        self.path = path
        self._fh = fh

    @classmethod
    def acquire(cls, path: str | os.PathLike) -> "FolderLock | None":
        """Take the lock at ``path`` (created if missing, its folder must exist) without waiting;
        ``None`` when another process (or another open handle of this one) holds it."""
        path = Path(path)
        fh = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return None
        return cls._record_holder(path, fh)

    @classmethod
    def wait(cls, path: str | os.PathLike, on_wait: Callable[[int | None], None] | None = None) -> "FolderLock":
        """Take the lock at ``path``, waiting as long as another process holds it; ``on_wait(pid of the
        holder)`` is called once before waiting. The holder's exit or death (SIGKILL included) ends the wait;
        Ctrl-C interrupts it. Use as a context manager to release on leaving the block."""
        held = cls.acquire(path)
        if held is not None:
            return held
        if on_wait is not None:
            on_wait(lock_holder(path))
        fh = open(Path(path), "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except BaseException:
            fh.close()
            raise
        return cls._record_holder(Path(path), fh)

    @classmethod
    def _record_holder(cls, path: Path, fh) -> "FolderLock":  # noqa: ANN001 - an open file object
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()} {socket.gethostname()}\n")
        fh.flush()
        return cls(path, fh)

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fh is not None

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the descriptor releases the flock
            self._fh = None


def lock_holder(path: str | os.PathLike) -> int | None:
    """The PID recorded in the lock file (the last process that took it), if readable."""
    try:
        first = Path(path).read_text(encoding="utf-8").split()
        return int(first[0]) if first else None
    except (OSError, ValueError):
        return None


def pid_alive(pid: int | None, host: str | None = None) -> bool | None:
    """Whether ``pid`` runs on this machine; ``None`` when unknowable (another host, no pid)."""
    if not pid or (host and host != socket.gethostname()):
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except (OSError, ValueError, TypeError, OverflowError):  # a pid from a hand-edited run.json: unknowable
        return None
    return True


def is_locked(path: str | os.PathLike) -> bool | None:
    """Whether a live process holds the lock at ``path``; ``None`` when there is no lock file.
    Probing takes the lock for an instant and never changes the file."""
    path = Path(path)
    try:
        fh = open(path, "r", encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        fh.close()
    return False
