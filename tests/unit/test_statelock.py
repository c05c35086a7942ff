"""The state-file lock: a second process gets StateLocked naming the holder's pid; the lock is freed
when the holder releases it or dies (even by SIGKILL), and taking it creates only `<state>.lock`."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from keeper.statelock import StateLocked, acquire_state_lock, lock_path

HOLDER = textwrap.dedent(
    """
    import sys
    from keeper.statelock import acquire_state_lock
    lock = acquire_state_lock(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()  # hold until the parent closes our stdin
    lock.release()
    print("released", flush=True)
    """
)


def _line(proc: subprocess.Popen, timeout: float = 60.0) -> str:
    """One line from the child's stdout, waiting at most `timeout` seconds."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "child did not answer in time"
    return proc.stdout.readline().strip()


@pytest.fixture
def holder(tmp_path: Path):
    state = tmp_path / "keeper.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(state)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert _line(proc) == "locked"
        yield state, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)


def test_second_process_gets_statelocked_naming_the_holders_pid(holder):
    state, proc = holder
    with pytest.raises(StateLocked) as info:
        acquire_state_lock(state)
    assert info.value.pid == proc.pid
    assert f"pid {proc.pid}" in str(info.value)
    assert str(state) in str(info.value)
    # released by the holder → ours
    proc.stdin.close()
    assert _line(proc) == "released"
    with acquire_state_lock(state) as lock:
        assert lock.held
        assert lock_path(state).read_text().strip() == str(os.getpid())
    assert not lock.held


def test_lock_of_a_killed_holder_is_free(holder):
    state, proc = holder
    assert lock_path(state).exists()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    lock = acquire_state_lock(state)  # the stale .lock file (with the dead pid) does not block
    try:
        assert lock_path(state).read_text().strip() == str(os.getpid())
    finally:
        lock.release()


def test_one_holder_per_process_too_and_only_the_lock_file_is_created(tmp_path):
    state = tmp_path / "keeper.sqlite"
    lock = acquire_state_lock(state)
    try:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["keeper.sqlite.lock"]  # not the state file
        with pytest.raises(StateLocked) as info:
            acquire_state_lock(state)
        assert info.value.pid == os.getpid()
    finally:
        lock.release()
    lock.release()  # idempotent
    acquire_state_lock(state).release()
