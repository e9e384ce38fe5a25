"""Split NumPy work across threads: the batch of memory-bound kernels, and the GEMMs.

Copies, adds and comparisons in NumPy run on one core, but NumPy releases the GIL inside
those loops, so handing each thread a contiguous slice of the batch runs them side by side.
Each slice writes a disjoint part of the output, so no locking is needed.

The GEMMs are split the same way, on the same threads, with the BLAS library held to one
thread while they run (``blas_single_threaded``). Left to itself, a multithreaded BLAS
(OpenBLAS) keeps its worker threads spinning for a while after every call, and those
spinning workers take the cores the next memory-bound kernel wanted.

The thread count is ``TINYGRAD_CONV_THREADS`` if set, else the number of cores this process
may use; 1 turns the splitting off and leaves the BLAS library's threads alone.

Hand-offs. A worker asleep on a lock takes 60 to 120 µs to start once woken in a VM, and a
training step makes 16 splits. So where libgomp (the OpenMP runtime oneDNN comes with) can
be loaded, the workers wait for their next slice in ``omp_set_lock``: libgomp spins on the
lock for a few milliseconds, with the GIL released (a ctypes call), before it sleeps, as
OpenMP's own threads do between parallel regions. ``rest()`` sends them to sleep at once;
the engine calls it when a backward pass returns, so they do not spin on after a training
step (after a forward alone they spin until libgomp gives up, about 7.6 ms here). With
more threads than cores, or
``TINYGRAD_CONV_SPIN=0``, a ``ThreadPoolExecutor`` hands out the slices instead.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_CORES = _cores()  # asked once: the affinity syscall would cost a few microseconds per call


def thread_count() -> int:
    """Threads used for batch-split kernels."""
    configured = os.environ.get("TINYGRAD_CONV_THREADS")
    return max(1, int(configured)) if configured else _CORES


def _executor(threads: int) -> ThreadPoolExecutor:
    if threads not in _pools:
        _pools[threads] = ThreadPoolExecutor(max_workers=threads - 1,
                                             thread_name_prefix="tinygrad_conv",
                                             initializer=gemm.own_thread)
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
    crew = _crew(threads)
    if crew is not None:
        crew.run(work, slices)
        return
    futures = [_executor(threads).submit(work, s) for s in slices[1:]]
    work(slices[0])
    for future in futures:
        future.result()


class _Signal:
    """A libgomp lock used as a binary semaphore: ``post`` frees it (from any thread),
    ``wait`` takes it, spinning a while and then sleeping, with the GIL released."""

    def __init__(self, omp: ctypes.CDLL) -> None:
        self._omp = omp
        self._lock = ctypes.create_string_buffer(64)  # omp_lock_t, on a cache line of its own
        self._address = ctypes.addressof(self._lock)
        omp.omp_init_lock(self._address)
        omp.omp_set_lock(self._address)  # starts taken: the first wait waits for a post

    def post(self) -> None:
        self._omp.omp_unset_lock(self._address)

    def wait(self) -> None:
        self._omp.omp_set_lock(self._address)


class _Worker:
    """A thread that runs the slices handed to it, waiting for each on a spinning signal.

    Only the calling thread writes ``task``, and only while the worker is not reading it:
    every ``go`` it posts is answered by one ``done`` (after a slice, or once the worker
    has taken a rest) before it posts again.
    """

    def __init__(self, omp: ctypes.CDLL) -> None:
        self.go, self.done = _Signal(omp), _Signal(omp)
        self.task: tuple[Callable[[slice], object], slice] | None = None
        self.error: BaseException | None = None
        self.awake = threading.Event()  # cleared while resting: the worker sleeps on it
        self.awake.set()
        threading.Thread(target=self._loop, name="tinygrad_conv", daemon=True).start()

    def _loop(self) -> None:
        gemm.own_thread()
        while True:
            self.go.wait()
            task, self.task = self.task, None
            if task is None:  # rest(): sleep without spinning until the next hand-off
                self.done.post()
                self.awake.wait()
                continue
            work, part = task
            try:
                work(part)
            except BaseException as error:  # handed back to the caller of over_batch
                self.error = error
            self.done.post()

    def start(self, work: Callable[[slice], object], part: slice) -> None:
        """Hand over a slice (the caller then waits for ``done``)."""
        if not self.awake.is_set():  # resting
            self.awake.set()
        self.task = (work, part)
        self.go.post()

    def rest(self) -> None:
        """Send the worker to sleep; returns once it has stopped spinning."""
        if self.awake.is_set():  # not resting already
            self.awake.clear()
            self.go.post()
            self.done.wait()


class _Crew:
    """``threads - 1`` spinning workers and the calling thread, one slice each."""

    def __init__(self, omp: ctypes.CDLL, threads: int) -> None:
        self.workers = [_Worker(omp) for _ in range(threads - 1)]
        self.busy = threading.Lock()  # one split at a time; others run on their own thread

    def run(self, work: Callable[[slice], object], slices: list[slice]) -> None:
        if not self.busy.acquire(blocking=False):  # a nested split, or another thread's
            work(slice(slices[0].start, slices[-1].stop))
            return
        try:
            for worker, part in zip(self.workers, slices[1:]):
                worker.start(work, part)
            try:
                work(slices[0])
            finally:
                for worker in self.workers:
                    worker.done.wait()
            errors = [w.error for w in self.workers if w.error is not None]
            for worker in self.workers:
                worker.error = None
            if errors:
                raise errors[0]
        finally:
            self.busy.release()

    def rest(self) -> None:
        if self.busy.acquire(blocking=False):
            try:
                for worker in self.workers:
                    worker.rest()
            finally:
                self.busy.release()


_crews: dict[int, _Crew] = {}  # by thread count


@functools.cache  # looked for once
def _libgomp() -> ctypes.CDLL | None:
    """libgomp with its lock functions typed, or None (absent, or TINYGRAD_CONV_SPIN=0)."""
    if os.environ.get("TINYGRAD_CONV_SPIN", "1") == "0":
        return None
    try:
        omp = ctypes.CDLL("libgomp.so.1")
        for name in ("omp_init_lock", "omp_set_lock", "omp_unset_lock"):
            function = getattr(omp, name)
            function.argtypes, function.restype = [ctypes.c_void_p], None
    except (OSError, AttributeError):  # no libgomp here: the executor hands out work
        return None
    return omp


def _crew(threads: int) -> _Crew | None:
    """The spinning workers for this thread count; None without libgomp, or with more
    threads than cores (a spinning worker would then hold a core another thread needs:
    a gradcheck over three threads on two cores ran 20 times slower)."""
    crew = _crews.get(threads)
    if crew is None:
        omp = _libgomp()
        if omp is None or threads > _CORES:
            return None
        crew = _crews[threads] = _Crew(omp, threads)
    return crew


def rest() -> None:
    """Send the spinning workers to sleep now instead of after libgomp's spin (the engine
    calls this when a backward pass returns)."""
    for crew in _crews.values():
        crew.rest()


def _forget_threads() -> None:
    """In a forked child the workers are gone: start new ones when first needed."""
    _crews.clear()
    _pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)


_blas_controllers: list | None = None  # threadpoolctl's handles on the loaded BLAS libraries


def _blas() -> list:
    global _blas_controllers
    if _blas_controllers is None:
        from threadpoolctl import ThreadpoolController

        _blas_controllers = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas_controllers


@contextmanager
def blas_single_threaded(dtype: np.dtype | None = None) -> Iterator[None]:
    """Hold the BLAS libraries to one thread inside the block (when we split work ourselves).

    ``dtype`` is that of the products the block runs, if known: when ``gemm`` sends them to
    oneDNN (float32), NumPy's BLAS is not called and nothing changes. So too with
    ``thread_count() == 1``. Nested use is fine: each level restores what it found. The
    setting is process-wide: BLAS calls that other threads make inside the block also run
    on one thread.
    """
    if thread_count() == 1 or (dtype is not None and not gemm.dtype_on_numpy(dtype)):
        yield
        return
    saved = [(lib, lib.get_num_threads()) for lib in _blas()]
    for lib, count in saved:
        if count != 1:
            lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, count in saved:
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
