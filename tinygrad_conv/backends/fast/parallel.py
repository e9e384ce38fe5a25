"""Split NumPy work across threads: the batch of memory-bound kernels, and the GEMMs.

Copies, adds and comparisons in NumPy run on one core, but NumPy releases the GIL inside
those loops, so handing each thread a contiguous slice of the batch runs them side by side.
Each slice writes a disjoint part of the output, so no locking is needed.

The GEMMs are split the same way, on the same threads, with the BLAS library held to one
thread (``blas_single_threaded``, from its first use on; ``release_blas`` undoes it). Left
to itself, a multithreaded BLAS (OpenBLAS) keeps its worker threads spinning for a while
after every call, and those spinning workers take the cores the next memory-bound kernel
wanted.

The thread count is ``TINYGRAD_CONV_THREADS`` if set, else the number of cores this process
may use; 1 turns the splitting off and leaves the BLAS library's threads alone.

Interrupts. A KeyboardInterrupt (or any error) in the calling thread's slice does not
return before every worker has finished its slice: no worker is left writing into arrays
after the split has returned. And no state outlives a split: each split waits on futures of
its own and every buffer it writes is made by that call, so even a slice orphaned by an
interrupt could not make a later computation wrong.

Why a plain pool: waiting workers that spin (an OpenMP-style hand-off) were measured here
against the pool; they win nothing on an idle machine and lose badly when another process
wants the cores (docs/performance.md, "Threads").

Off the caller's core. After the machine has idled a few milliseconds, Linux may wake a
worker on the very core the calling thread runs on (a virtual machine's sleeping vCPU looks
busy to the guest), and the two slices then run one after the other there. A worker that
finds itself on the caller's core moves itself to the caller's other allowed cores first.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager

import numpy as np

from . import gemm

MIN_ELEMENTS = 1 << 16  # below this a thread hand-off costs more than it saves
MIN_GEMM_WORK = 1 << 21  # M*K*N (multiply-adds) below which a GEMM is not split
# rows of a long inner axis per GEMM call when a product is summed in blocks, by GEMM
# backend: OpenBLAS ran a skinny product (a 32x9 weight gradient over 50,000 pixels) three
# times faster in blocks of 2048 than in one call; oneDNN runs it fastest in one call
INNER_BLOCK = {"numpy": 2048, "onednn": 1 << 40}

_pools: dict[int, ThreadPoolExecutor] = {}  # by thread count
_pools_lock = threading.Lock()
_local = threading.local()  # .worker: set in the pool's own threads


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_CORES = _cores()  # asked once: the affinity syscall would cost a few microseconds per call


def thread_count() -> int:
    """Threads used for batch-split kernels (TINYGRAD_CONV_THREADS, else the cores)."""
    configured = os.environ.get("TINYGRAD_CONV_THREADS")
    if not configured:
        return _CORES
    try:
        count = int(configured)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(
            f"TINYGRAD_CONV_THREADS must be a positive integer, got {configured!r}: set it to "
            f"the number of threads to use (1 turns threading off), or unset it to use all "
            f"{_CORES} cores"
        )
    return count


def _cpu_getter() -> Callable[[], int] | None:
    """libc's sched_getcpu (a vDSO read, no syscall), where there is one."""
    try:
        getcpu = ctypes.CDLL(None).sched_getcpu
    except (AttributeError, OSError, TypeError):
        return None
    getcpu.restype, getcpu.argtypes = ctypes.c_int, []
    return getcpu if hasattr(os, "sched_setaffinity") else None


_current_cpu = _cpu_getter()


def _off_callers_core(work: Callable[[slice], object], caller_cpu: int,
                      caller_tid: int) -> Callable[[slice], object]:
    """``work``, run by a worker after it has left the caller's core if it was woken there."""
    def run(s: slice) -> object:
        if _current_cpu is not None and _current_cpu() == caller_cpu:
            elsewhere = os.sched_getaffinity(caller_tid) - {caller_cpu}
            if elsewhere:
                os.sched_setaffinity(0, elsewhere)
        return work(s)

    return run


def _start_worker() -> None:
    _local.worker = True
    gemm.own_thread()


def _executor(threads: int) -> ThreadPoolExecutor:
    pool = _pools.get(threads)
    if pool is None:
        with _pools_lock:  # two threads splitting at once share one pool
            pool = _pools.get(threads)
            if pool is None:
                pool = _pools[threads] = ThreadPoolExecutor(
                    max_workers=threads - 1, thread_name_prefix="tinygrad_conv",
                    initializer=_start_worker)
    return pool


def over_batch(work: Callable[[slice], object], batch: int, elements: int) -> None:
    """Call ``work(s)`` for contiguous slices ``s`` covering range(batch), in parallel.

    ``elements`` is the size of the job (it decides whether splitting pays). ``work`` must
    only write the part of its outputs that its slice owns.
    """
    threads = min(thread_count(), batch)
    if threads == 1 or elements < MIN_ELEMENTS or getattr(_local, "worker", False):
        work(slice(0, batch))  # a split inside a worker's slice runs there (no deadlock)
        return
    bounds = [batch * k // threads for k in range(threads + 1)]
    slices = [slice(bounds[k], bounds[k + 1]) for k in range(threads)]
    executor, futures = _executor(threads), []
    worker_work = work
    if _current_cpu is not None:
        worker_work = _off_callers_core(work, _current_cpu(), threading.get_native_id())
    try:
        for s in slices[1:]:
            futures.append(executor.submit(worker_work, s))
        work(slices[0])
    finally:
        _wait_all(futures)
    for future in futures:
        future.result()  # a worker's error is raised here, in the caller


def _wait_all(futures: list[Future]) -> None:
    """Return only once every future is done, even if interrupted while waiting (the
    interrupt is raised again afterwards): no worker outlives the split that started it."""
    interrupted: BaseException | None = None
    while True:
        try:
            wait(futures)
            break
        except BaseException as error:  # KeyboardInterrupt: wait on, then raise it
            interrupted = error
    if interrupted is not None:
        raise interrupted


def _forget_threads() -> None:
    """In a forked child the pool's threads are gone: start new ones when first needed."""
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)


def _blas() -> list:
    """threadpoolctl's handles on the BLAS libraries loaded now (asked afresh: a library
    loaded later, such as SciPy's OpenBLAS, is seen at the next hold)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas").lib_controllers


_held_counts: list | None = None  # (BLAS library, its thread count before we held it)


@contextmanager
def blas_single_threaded(dtype: np.dtype | None = None) -> Iterator[None]:
    """Run the block with the BLAS libraries at one thread (when we split work ourselves).

    ``dtype`` is that of the products the block runs, if known: when ``gemm`` sends them to
    oneDNN (float32), NumPy's BLAS is not called and nothing changes. So too with
    ``thread_count() == 1``. The setting is process-wide, and it stays after the block:
    putting OpenBLAS back to two threads woke its idle threads, which then spin for about
    0.1 s (its thread timeout) on the cores our own threads use next. Winograd's forward on
    (32,64,56,56) took 41 ms instead of 22 so (docs/performance.md, "Threads").
    ``release_blas()`` gives the BLAS libraries their thread counts back.
    """
    if thread_count() > 1 and (dtype is None or gemm.dtype_on_numpy(dtype)):
        _hold_blas()
    yield


def _hold_blas() -> None:
    global _held_counts
    if _held_counts is not None:
        return
    with _pools_lock:
        if _held_counts is None:
            counts = [(lib, lib.get_num_threads()) for lib in _blas()]
            for lib, count in counts:
                if count != 1:
                    lib.set_num_threads(1)
            _held_counts = counts


def release_blas() -> None:
    """Give the BLAS libraries back the thread counts they had before the fast backend held
    them at one (NumPy's own products elsewhere in the program then use every core again)."""
    global _held_counts
    with _pools_lock:
        counts, _held_counts = _held_counts, None
    for lib, count in counts or []:
        if count != 1:
            lib.set_num_threads(count)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (M, K) @ b (K, N) -> (M, N), split across threads, each a one-thread BLAS call.

    A product with a long inner axis (a weight gradient summed over every pixel) is split
    along K and the partial products are added; otherwise the larger of M and N is split,
    each thread writing its own rows or columns of the result.
    """
    (m, k), n = a.shape, b.shape[1]
    threads, dtype = thread_count(), np.result_type(a, b)
    with blas_single_threaded(dtype):  # does nothing when oneDNN runs the product
        if threads == 1 or m * n * k < MIN_GEMM_WORK:
            return gemm.matmul(a, b)
        if k >= 4 * max(m, n):
            return _split_inner(a, b, threads)
        out = np.empty((m, n), dtype)
        if m >= n:
            over_batch(lambda s: gemm.matmul(a[s], b, out=out[s]), m, MIN_ELEMENTS)
        else:
            over_batch(lambda s: gemm.matmul(a, b[:, s], out=out[:, s]), n, MIN_ELEMENTS)
        return out


def inner_block() -> int:
    """Rows of the inner axis per GEMM call for the GEMM backend in use (INNER_BLOCK)."""
    return INNER_BLOCK[gemm.backend()]


def _split_inner(a: np.ndarray, b: np.ndarray, threads: int) -> np.ndarray:
    """a @ b as a sum of partial products over slices of the inner axis, one per thread.

    Each thread walks its slice ``inner_block()`` rows at a time (see INNER_BLOCK).
    """
    k = a.shape[1]
    bounds = [k * t // threads for t in range(threads + 1)]
    parts: list[np.ndarray] = [np.zeros((a.shape[0], b.shape[1]), np.result_type(a, b))
                               for _ in range(threads)]

    step = inner_block()

    def work(s: slice) -> None:
        for t in range(s.start, s.stop):
            for first in range(bounds[t], bounds[t + 1], step):
                inner = slice(first, min(first + step, bounds[t + 1]))
                gemm.matmul(a[:, inner], b[inner], out=parts[t], accumulate=True)

    over_batch(work, threads, MIN_ELEMENTS)
    total = parts[0]
    for part in parts[1:]:
        total += part
    return total
