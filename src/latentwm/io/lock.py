"""One writer per out dir: `with RunLock(out_dir, "latentwm train"):` around a command that writes there.

Two processes writing one run folder (a second `train --train.resume` started by mistake, a stale job resubmitted
while the first still runs) interleave checkpoints, logs and metrics with no error. The lock is an exclusive,
non-blocking `flock` on `OUT/.lock`; the file also records the holder's PID, host, command and start time, which
the refusal quotes. The kernel drops an flock when its process dies, however it dies (SIGKILL, OOM, power loss of a
local disk), so a crash never leaves a lock behind — the file stays but is not a lock by itself. On network file
systems flock is only as good as the server's lock support (Linux NFS clients map it to POSIX byte-range locks).

Under torchrun only rank 0 takes it (`enabled=rank == 0`). Where fcntl does not exist (Windows) the lock is a no-op
with a warning.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path

from latentwm.config.base import LatentwmError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]  # the lock then degrades to a warning

LOCK_FILE = ".lock"
_HELD: set[str] = set()  # out dirs this process holds (resolved paths)


def _key(path: Path) -> str:
    return str(path.resolve())


class RunLockedError(LatentwmError, RuntimeError):
    """The out dir is held by another live process; the message names it (PID, host, command, start time)."""


class RunLock:
    """Context manager holding an exclusive lock on `out_dir` for `command` (a label such as "latentwm train").

    enabled=False (every rank but 0, or a caller that opts out) makes it a no-op. Raises RunLockedError on entry
    when another process holds the lock. Re-entering in the same process through a second RunLock also refuses:
    flock locks belong to open files, not processes. A command that fails after creating its out dir and writing
    nothing into it leaves no folder behind (only the lock file was in it).
    """

    def __init__(self, out_dir: str | os.PathLike, command: str, enabled: bool = True, reuse: bool = False):
        self.out_dir, self.command, self.enabled, self.reuse = Path(out_dir), command, enabled, reuse
        self.path = self.out_dir / LOCK_FILE
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> RunLock:
        """Take the lock. reuse=True: a no-op when this process already holds it through an outer RunLock (a command
        that locked its out dir before building datasets, then a trainer loop inside it)."""
        if not self.enabled or self._fd is not None:
            return self
        if self.reuse and _key(self.out_dir) in _HELD:
            return self
        if fcntl is None:
            warnings.warn(
                f"no fcntl on this platform: {self.out_dir} is not locked against a second writer", stacklevel=2
            )
            return self
        self._created = not self.out_dir.exists()
        writable_out_dir(self.out_dir)  # a file in its place or a read-only folder: one line naming it
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:  # BlockingIOError (EWOULDBLOCK): held by someone else
            os.close(fd)
            raise RunLockedError(self._refusal()) from e
        holder = dict(
            pid=os.getpid(),
            host=socket.gethostname(),
            command=self.command,
            started=time.strftime("%Y-%m-%d %H:%M:%S %z"),
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self._fd = fd
        _HELD.add(_key(self.out_dir))
        return self

    def release(self) -> None:
        if self._fd is not None:
            _HELD.discard(_key(self.out_dir))
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def holder(self) -> dict:
        """What the lock file says about its holder ({} when unreadable, e.g. while it is being written)."""
        for _ in range(5):  # the holder writes right after locking: give it a moment
            try:
                return json.loads(self.path.read_text())
            except (OSError, ValueError):
                time.sleep(0.02)
        return {}

    def _refusal(self) -> str:
        h = self.holder()
        who = f"PID {h.get('pid', '?')}" + (f" on {h['host']}" if h.get("host") else "")
        return (
            f"out dir {self.out_dir} is in use by {who} ({h.get('command', 'unknown command')}, started "
            f"{h.get('started', 'at an unknown time')}); wait for it or choose another out dir"
        )

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type, *exc) -> None:
        held = self.held
        self.release()
        if exc_type is not None and held and self._created:
            try:
                if [p.name for p in self.out_dir.iterdir()] == [LOCK_FILE]:
                    self.path.unlink()
                    self.out_dir.rmdir()
            except OSError:
                pass  # another writer got in meanwhile, or the folder is not ours to tidy: leave it


class OutDirError(LatentwmError, OSError):
    """The out dir cannot be created or written; the message names it."""


def writable_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create `out_dir` and prove it writable (a probe file written and removed) before a command computes anything:
    a read-only folder or a file in its place fails at once, not after minutes of work. Raises OutDirError."""
    out = Path(out_dir)
    probe = out / f".write_test.{os.getpid()}"
    if out.exists() and not out.is_dir():
        raise OutDirError(f"out dir {out} is a file, not a folder; choose another out dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as fh:
            fh.write(b"ok")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as e:
        raise OutDirError(f"out dir {out} is not writable ({e.strerror or e}); choose another out dir") from e
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:  # nothing was created
            pass
    return out
