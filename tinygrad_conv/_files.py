"""Writing a file atomically: to a temporary name beside it, then renamed over it.

Every file the library writes for a user (checkpoints, ``tc.save``, safetensors, pictures)
goes through ``write_atomic``: a crash or a full disk leaves the old file or the new one,
never half of one. Through a symlink the file it points to is replaced and the link kept;
the replaced file's permission bits are kept; temporary files that killed saves left in the
folder are removed at the next save there.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

# .NAME.PID.RANDOM.tmp; before PIDs were in the name, .NAME.RANDOM.tmp
_TEMP = re.compile(r"^\..+?\.(?:(\d+)\.)?[0-9a-f]{12}\.tmp$")
_writing: set[str] = set()  # this process's temp files being written now (by any thread)
_writing_lock = threading.Lock()


def write_atomic(target: str | os.PathLike, data: bytes | Callable[[IO[bytes]], None]) -> Path:
    """Write ``data`` (bytes, or a function writing to a binary file) to ``target``
    atomically, creating its folder if needed. Returns ``target`` as a Path."""
    path = os.path.realpath(target)  # through a symlink: replace the file, keep the link
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    remove_stale_temps(folder)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    with _writing_lock:
        _writing.add(tmp)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)  # the umask applies, as for any new file
        _keep_mode(path, fd)
        with os.fdopen(fd, "wb") as f:
            data(f) if callable(data) else f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    finally:
        with _writing_lock:
            _writing.discard(tmp)
    _fsync_dir(folder)
    return Path(target)


def _keep_mode(path: str, fd: int) -> None:
    """Give the new file the permission bits of the file it replaces, if any."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)


def remove_stale_temps(folder: str) -> None:
    """Delete the temporary files of saves into ``folder`` whose writer no longer runs."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = _TEMP.match(name)
        if match and not _being_written(os.path.join(folder, name), match.group(1)):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))


def _being_written(path: str, pid: str | None) -> bool:
    """Whether the process that made this temp file may still be writing it."""
    if pid is None:
        return False  # an older save's temp file (no PID in its name): long finished
    if int(pid) == os.getpid():
        with _writing_lock:
            return path in _writing  # another thread of this process, writing it now
    if os.name != "posix":
        return True  # no safe liveness check: leave it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _fsync_dir(folder: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
