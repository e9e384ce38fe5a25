"""Split memory-bound NumPy work over the batch axis across threads.

NumPy's BLAS already uses every core for the GEMMs, but copies, adds and comparisons run on
one core. NumPy releases the GIL inside those loops, so handing each thread a contiguous
slice of the batch runs them side by side. Each slice writes a disjoint part of the output,
so no locking is needed.

The thread count is ``TINYGRAD_CONV_THREADS`` if set, else the number of cores this process
may use; 1 turns the splitting off.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

MIN_ELEMENTS = 1 << 16  # below this a thread hand-off costs more than it saves

_pools: dict[int, ThreadPoolExecutor] = {}  # by thread count


def thread_count() -> int:
    """Threads used for batch-split kernels."""
    configured = os.environ.get("TINYGRAD_CONV_THREADS")
    if configured:
        return max(1, int(configured))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _executor(threads: int) -> ThreadPoolExecutor:
    if threads not in _pools:
        _pools[threads] = ThreadPoolExecutor(max_workers=threads - 1,
                                             thread_name_prefix="tinygrad_conv")
    return _pools[threads]


def over_batch(work: Callable[[slice], object], batch: int, elements: int) -> None:
    """Call ``work(s)`` for contiguous slices ``s`` covering range(batch), in parallel.

    ``elements`` is the size of the job (it decides whether splitting pays). ``work`` must
    only write the part of its outputs that its slice owns.
    """
    threads = min(thread_count(), batch)
    if threads == 1 or elements < MIN_ELEMENTS:
        work(slice(0, batch))
        return
    bounds = [batch * k // threads for k in range(threads + 1)]
    slices = [slice(bounds[k], bounds[k + 1]) for k in range(threads)]
    futures = [_executor(threads).submit(work, s) for s in slices[1:]]
    work(slices[0])
    for future in futures:
        future.result()
