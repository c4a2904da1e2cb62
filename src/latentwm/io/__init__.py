"""Files and folders every stage shares: atomic writes, JSON with named errors, the out-dir lock."""

from latentwm.io.files import atomic_path, atomic_write, fsync_dir, read_json, write_json
from latentwm.io.lock import OutDirError, RunLock, RunLockedError, writable_out_dir

__all__ = [
    "OutDirError",
    "RunLock",
    "RunLockedError",
    "atomic_path",
    "atomic_write",
    "fsync_dir",
    "read_json",
    "writable_out_dir",
    "write_json",
]
