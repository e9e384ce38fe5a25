"""Writing a file atomically: to a temporary name beside it, then renamed over it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def file_mode(target: Path) -> int:
    """The mode the file would get from a plain open(): the old file's, else 0666 & ~umask."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``target``, flush it to disk, then move it over
    ``target``: a crash leaves the old file or the new one, never half of one. Returns the path."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, file_mode(target))  # mkstemp makes it private (0600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target
