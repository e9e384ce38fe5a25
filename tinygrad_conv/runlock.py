"""One training run per output folder: ``OUT/.train.lock`` names the process that owns it.

    with RunLock(Path("runs/mnist")):      # TrainingError if a live run holds the folder
        ...

The lock is an advisory ``flock`` on that file: the kernel drops it when its process ends,
however it ends, so the lock left by a killed run (a file naming a dead PID) is simply taken
over, and a reused PID never blocks a run. Without ``fcntl`` (Windows) runs are not locked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from .checkpoint import TrainingError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".train.lock"


class FolderInUse(TrainingError):
    """Another live run holds the folder; ``.pid`` is its process id (None if unknown)."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class RunLock:
    """Hold ``folder``'s lock file while the ``with`` block runs; ``FolderInUse`` if a live
    process holds it already. The folder must exist."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._file: IO[str] | None = None

    def __enter__(self) -> RunLock:
        if fcntl is not None:
            self._file = _acquire_flock(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None


def _in_use(path: Path, pid: int | None) -> FolderInUse:
    who = f"process {pid}" if pid is not None else "another process"
    return FolderInUse(
        f"{path.parent} is in use by another training run ({who}, lock file {path}); wait "
        "for it to finish or stop it, or pass another --out", pid)


def _acquire_flock(path: Path) -> IO[str]:
    f = open(path, "a+")  # noqa: SIM115 - held open for the run
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(path)
        f.close()
        raise _in_use(path, pid) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None

