"""Fault injection on the out-dir lock: a second writer is refused by name; a killed holder leaves no lock."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from latentwm.io.lock import RunLock, RunLockedError

HOLD = textwrap.dedent("""
    import sys, time
    from latentwm.io.lock import RunLock
    with RunLock(sys.argv[1], "latentwm train"):
        print("locked", flush=True)
        time.sleep(120)
""")


def _holder(out_dir):
    """A real second process holding the lock (returns once it has it)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(out_dir)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_process_is_refused_with_the_holders_pid_until_it_dies(tmp_path):
    p = _holder(tmp_path)
    try:
        with pytest.raises(
            RunLockedError,
            match=rf"out dir {tmp_path} is in use by PID {p.pid} on .*"
            r"\(latentwm train, started .*\); wait for it or choose another",
        ):
            with RunLock(tmp_path, "latentwm plan"):
                pass
        with RunLock(tmp_path, "latentwm plan", enabled=False) as lock:  # ranks > 0: no lock taken
            assert not lock.held
    finally:
        p.send_signal(signal.SIGKILL)  # a crash: no cleanup code runs
        p.wait()
    with RunLock(tmp_path, "latentwm plan") as lock:  # the kernel dropped the dead holder's lock
        assert lock.held and f'"pid": {os.getpid()}' in (tmp_path / ".lock").read_text()


def test_released_on_exit_and_on_exception(tmp_path):
    with pytest.raises(KeyError):
        with RunLock(tmp_path, "a"):
            with pytest.raises(RunLockedError, match=f"PID {os.getpid()}"):  # even a second lock of this process
                RunLock(tmp_path, "b").acquire()
            raise KeyError("crash")
    with RunLock(tmp_path, "c") as lock:
        assert lock.held
    assert not lock.held


def test_no_fcntl_is_a_warned_no_op(tmp_path, monkeypatch):
    import latentwm.io.lock as lock_mod

    monkeypatch.setattr(lock_mod, "fcntl", None)
    with pytest.warns(UserWarning, match="not locked"):
        with RunLock(tmp_path, "x") as lock:
            assert not lock.held
