"""Allocator tuning: keep freed large arrays in the process instead of returning them.

A training step allocates and frees the same large arrays (X_col, activations, gradients)
every step. glibc serves blocks above its mmap threshold with fresh mmap'd pages and unmaps
them on free, so every step pays thousands of page faults touching new memory
(docs/performance.md). Raising the mmap threshold to glibc's
maximum (32 MiB on 64-bit) and the trim threshold lets freed blocks be reused.

Applied once, when the fast backend loads, on Linux with glibc; set
TINYGRAD_CONV_MALLOC_TUNING=0 to skip it.
Anywhere else it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit systems
_TRIM_THRESHOLD = 512 * 1024 * 1024


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds; True if both were applied."""
    if os.environ.get("TINYGRAD_CONV_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith(
        "linux"
    ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
