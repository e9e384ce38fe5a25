"""Matrix products: the one place the library multiplies matrices.

``matmul(a, b, out=None, accumulate=False)`` computes ``a @ b`` for 2-D arrays. float32
products go to oneDNN's ``dnnl_sgemm`` when the ``onednn-cpu-gomp`` package (oneDNN's CPU
library, Apache 2.0) is installed; everything else, and every product when it is not, goes
to ``np.matmul`` (NumPy's BLAS, OpenBLAS in NumPy's wheels).

Why a second GEMM: conv2d's forward and both its backward formulas are GEMMs, most of a
training step, and oneDNN's sgemm runs them faster than NumPy's OpenBLAS, up to about twice
as fast with AVX-512 (docs/performance.md, "Measurements behind the fast kernels").

Threads. The library splits its products across threads itself (``parallel``), so each
call here runs on the calling thread only: oneDNN's OpenMP runtime (libgomp) is told to use
one thread (``omp_set_num_threads(1)``, which applies to the calling thread alone). The
library's own worker threads are set so once (``own_thread``); in any other thread the
caller's setting is put back after each call, because that libgomp may be shared: PyTorch
bundles a libgomp.so.1 of its own, and once it is loaded ours resolves to it, so leaving
the main thread at one OpenMP thread would make PyTorch single-threaded.
``TINYGRAD_CONV_GEMM=numpy`` turns oneDNN off; ``backend()`` says which one is in use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

_FLOAT32 = np.dtype(np.float32)
SKINNY = 16  # products with fewer output columns than this run transposed (see matmul)
_state: dict[str, object] = {}  # "sgemm", "omp_set", "omp_get": loaded functions, or None
_local = threading.local()  # .owned: one of the library's threads, its OpenMP size set to 1
_load_lock = threading.Lock()
GEMM_CHOICES = ("", "numpy", "onednn")  # TINYGRAD_CONV_GEMM's values ("": the default)


def _find_dnnl() -> str | None:
    """Path of libdnnl.so.3 from the onednn-cpu-gomp package, else a system copy, else None."""
    try:
        from importlib import metadata

        for file in metadata.files("onednn-cpu-gomp") or ():
            if file.name == "libdnnl.so.3":
                return str(file.locate())
    except metadata.PackageNotFoundError:
        pass
    return ctypes.util.find_library("dnnl")


def _load() -> None:
    """Load oneDNN's sgemm and libgomp's thread-count functions, once, under a lock: the
    first products may come from several threads at once, and none may see a half-made
    state (it would send that call to NumPy, with NumPy's rounding)."""
    with _load_lock:
        if "sgemm" not in _state:
            _state.update(_loaded())


def _loaded() -> dict[str, object]:
    """The functions _state holds: oneDNN's where it can be loaded, else None each."""
    none: dict[str, object] = {"sgemm": None, "omp_set": None, "omp_get": None}
    choice = os.environ.get("TINYGRAD_CONV_GEMM", "").lower()
    if choice not in GEMM_CHOICES:
        raise ValueError(
            f"TINYGRAD_CONV_GEMM must be 'numpy' (NumPy's BLAS) or 'onednn' (oneDNN's sgemm "
            f"where it is installed), or unset for the default, got "
            f"{os.environ['TINYGRAD_CONV_GEMM']!r}"
        )
    if choice == "numpy":
        return none
    path = _find_dnnl()
    if path is None:
        return none
    try:
        dnnl = ctypes.CDLL(path)
        omp = ctypes.CDLL("libgomp.so.1")  # the OpenMP runtime libdnnl is linked against
    except OSError:
        return none
    sgemm = dnnl.dnnl_sgemm
    # transposition flags as bytes (ord of "N"/"T"): converting a c_char costs ~1 µs a call
    sgemm.argtypes = [ctypes.c_byte, ctypes.c_byte, ctypes.c_int64, ctypes.c_int64,
                      ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int64,
                      ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p,
                      ctypes.c_int64]
    sgemm.restype = ctypes.c_int
    omp.omp_set_num_threads.argtypes, omp.omp_set_num_threads.restype = [ctypes.c_int], None
    omp.omp_get_max_threads.argtypes, omp.omp_get_max_threads.restype = [], ctypes.c_int
    return {"sgemm": sgemm, "omp_set": omp.omp_set_num_threads,
            "omp_get": omp.omp_get_max_threads}


def own_thread() -> None:
    """Mark the calling thread as the library's own: its GEMMs run on it alone from now on
    (the thread pool in ``parallel`` calls this when they start a worker)."""
    if backend() == "onednn":
        _state["omp_set"](1)
    _local.owned = True


def backend() -> str:
    """``"onednn"`` when float32 products go to oneDNN's sgemm, else ``"numpy"``."""
    if "sgemm" not in _state:
        _load()
    return "onednn" if _state["sgemm"] is not None else "numpy"


def dtype_on_numpy(dtype: np.dtype) -> bool:
    """Whether products of two ``dtype`` operands go to NumPy's BLAS (see on_numpy)."""
    return backend() == "numpy" or dtype != _FLOAT32


def on_numpy(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``matmul(a, b)`` goes to NumPy's BLAS (so its threads matter) or to oneDNN."""
    return a.dtype != b.dtype or dtype_on_numpy(a.dtype)


_N, _T = ord("N"), ord("T")


def _layout(m: np.ndarray) -> tuple[int, int] | None:
    """How sgemm reads 2-D ``m``: (N, row stride) if its rows are contiguous, (T, column
    stride) if its columns are; None if neither (then it is copied)."""
    rows, cols = m.shape
    s0, s1 = m.strides
    if cols == 1:
        s1 = 4
    if rows == 1:
        s0 = 4 * cols
    if s1 == 4 and s0 % 4 == 0 and s0 >= 4 * cols:
        return _N, s0 // 4
    if rows == 1 or cols == 1:
        return None
    if s0 == 4 and s1 % 4 == 0 and s1 >= 4 * rows:
        return _T, s1 // 4
    return None


def _operand(m: np.ndarray) -> tuple[np.ndarray, int, int]:
    layout = _layout(m)
    if layout is None:
        m = np.ascontiguousarray(m)
        layout = _N, max(m.shape[1], 1)
    return m, layout[0], layout[1]


def _writable_rows(out: np.ndarray) -> bool:
    s0, s1 = out.strides
    rows, cols = out.shape
    return (s1 == 4 or cols == 1) and (rows == 1 or (s0 % 4 == 0 and s0 >= 4 * cols))


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None,
           accumulate: bool = False) -> np.ndarray:
    """a (M, K) @ b (K, N) -> (M, N), on the calling thread.

    With ``out`` the product is written there (``accumulate``: added to what it holds) and
    ``out`` is returned. Operands may be any 2-D views; float32 ones whose rows or columns
    are contiguous are read in place.
    """
    (m, k), n = a.shape, b.shape[1]
    usable = (not on_numpy(a, b) and m and n and k
              and (out is None or (out.dtype == _FLOAT32 and out.shape == (m, n))))
    if not usable:
        return _numpy_matmul(a, b, out, accumulate)
    with one_openmp_thread():
        return _product(a, b, out, accumulate)


@contextmanager
def one_openmp_thread() -> Iterator[None]:
    """Run oneDNN calls in the block on the calling thread alone: its OpenMP team size at 1,
    the caller's setting (the user's, or PyTorch's) put back after. The library's own
    threads are at 1 already (``own_thread``). Needs oneDNN loaded (``backend()``)."""
    if getattr(_local, "owned", False):
        yield
        return
    saved = _state["omp_get"]()
    _state["omp_set"](1)
    try:
        yield
    finally:
        _state["omp_set"](saved)


def _product(a: np.ndarray, b: np.ndarray, out: np.ndarray | None,
             accumulate: bool) -> np.ndarray:
    """matmul for float32 operands on oneDNN, on a thread set to one OpenMP thread."""
    (m, _), n = a.shape, b.shape[1]
    if n < SKINNY and m >= 2 * n:
        # few output columns (a weight gradient over 9 kernel offsets): oneDNN runs the
        # transposed product b.T @ a.T three times faster, so compute that and transpose
        product_t = _sgemm(b.T, a.T, None, False)
        if out is None:
            return np.ascontiguousarray(product_t.T)
        if accumulate:
            out += product_t.T
        else:
            np.copyto(out, product_t.T)
        return out
    return _sgemm(a, b, out, accumulate)


def _sgemm(a: np.ndarray, b: np.ndarray, out: np.ndarray | None,
           accumulate: bool) -> np.ndarray:
    """a @ b through oneDNN's sgemm, for float32 operands of non-zero size."""
    (m, k), n = a.shape, b.shape[1]
    target = out if out is not None and _writable_rows(out) else None
    if target is None:
        target = (np.array(out, _FLOAT32, order="C") if accumulate
                  else np.empty((m, n), _FLOAT32))
    a, trans_a, lda = _operand(a)
    b, trans_b, ldb = _operand(b)
    ldc = target.strides[0] // 4 if m > 1 else max(n, 1)
    status = _state["sgemm"](trans_a, trans_b, m, n, k, 1.0, a.ctypes.data, lda,
                             b.ctypes.data, ldb, 1.0 if accumulate else 0.0,
                             target.ctypes.data, ldc)
    if status != 0:
        raise RuntimeError(f"oneDNN sgemm failed (status {status}) on {a.shape} @ {b.shape}")
    if out is not None and target is not out:
        np.copyto(out, target)
        return out
    return target


def _numpy_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None,
                  accumulate: bool) -> np.ndarray:
    if out is None:
        return np.matmul(a, b)
    if accumulate:
        out += a @ b
        return out
    return np.matmul(a, b, out=out)
