"""One keeper per state file: an exclusive advisory lock on a sidecar `<state>.lock`.

Two daemons on one journal (and so on one key) would race each other's nonces and journal rows.
`keeper run` holds `fcntl.flock(LOCK_EX | LOCK_NB)` on `<state path>.lock` for its whole life; the
file records the holder's pid so a second keeper can say who holds it. The kernel drops the lock
when the holder exits, however it exits (crash, SIGKILL): a stale `.lock` file never blocks a
restart. The lock file is left in place on release (removing it would race a concurrent opener).
Only `keeper run` takes the lock; scan and check never create it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType


class StateLocked(Exception):
    """Another process holds the state file's lock."""

    def __init__(self, path: Path, pid: int | None):
        holder = f"pid {pid}" if pid is not None else "another process (pid unknown)"
        super().__init__(f"state file {path} is in use by {holder} (lock {lock_path(path)}); one keeper per state file")
        self.path = path
        self.pid = pid


def lock_path(state_path: str | os.PathLike[str]) -> Path:
    p = Path(state_path)
    return p.with_name(p.name + ".lock")


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() else None


class StateLock:
    """A held lock; `release()` (or leaving the `with` block) drops it."""

    def __init__(self, state_path: Path, fd: int):
        self.state_path = state_path
        self.path = lock_path(state_path)
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> StateLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def __del__(self) -> None:  # pragma: no cover - safety net; callers release explicitly
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass


def acquire_state_lock(state_path: str | os.PathLike[str]) -> StateLock:
    """Take the exclusive lock for `state_path` (creating `<state_path>.lock`, not the state file or its
    folder); raise StateLocked naming the holder's pid when another process has it."""
    path = Path(state_path)
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise StateLocked(path, pid) from None
    except BaseException:
        os.close(fd)
        raise
    try:
        data = f"{os.getpid()}\n".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    except BaseException:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        raise
    return StateLock(path, fd)
