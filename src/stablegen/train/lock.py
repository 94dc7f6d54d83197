"""One training process per run directory.

`run_lock(run_dir)` holds an exclusive `flock` on `run_dir/.lock` while a run trains; a second
process on the same directory gets a `RunLocked` error naming the holder's PID. The kernel
drops the lock when its process ends, however it ends (SIGKILL included), so the lock of a
dead process never blocks: there is no stale lock to clean up. Where `fcntl` is missing
(Windows) runs are not locked.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None


class RunLocked(RuntimeError):
    """Another live process is training in this run directory."""


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunLocked(f"{run_dir} is in use by another training process (pid {holder}); wait for it to "
                            "finish or stop it, or choose another --run-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
