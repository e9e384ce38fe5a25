"""Backends, and the seam between the ops and the array work: which backend runs the kernels.

The ops in ``ops/`` say *what* to compute (the formulas); the array work they call is a
small set of named kernels, listed in ``KERNELS``. A backend is a module that defines every
one of them:

- ``reference`` (``backends/reference.py``): plain NumPy that reads as the math.
- ``fast`` (``backends/fast/``): threads, a faster GEMM, blocked and fused kernels.

A backend may also offer fused versions of a whole formula of an op (``FUSED``), through
its ``fused(name, window)`` function; the op then calls that instead of running its formula
step by step. The reference backend fuses nothing, so under it the ops' formulas are the
code that runs. Both give the same results within float32 rounding, and the graph and the
op names are the same under both.

The engine and the ops import this package's ``__init__`` only, never a backend module: a
new backend (CuPy on a GPU, a compiled one) is a new module named in ``BACKENDS``
(docs/architecture.md).

Which backend runs: ``TINYGRAD_CONV_BACKEND=reference|fast``, or ``set_backend(name)``
(``use_backend(name)`` for a block); by default ``fast`` where it loads. The choice is the
process's, shared by its threads.

Which algorithm a backend's convolutions use: ``TINYGRAD_CONV_ALGO`` (one of
``CONV_ALGORITHMS``), or ``set_conv_algorithm(name)`` (``use_conv_algorithm(name)`` for a
block). ``auto`` (the default) lets the backend choose per shape by a fixed rule, so that a
run gives the same numbers every time; ``benchmark`` times the candidates on first use of
each shape instead (PyTorch's ``cudnn.benchmark``); a named algorithm runs wherever it
applies, and im2col elsewhere. The reference backend always runs the im2col formulas. The
chosen algorithm shows on the conv ops in graph drawings.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from types import ModuleType

BACKENDS = {
    "reference": "tinygrad_conv.backends.reference",
    "fast": "tinygrad_conv.backends.fast",
}
DEFAULT = "fast"

KERNELS = (
    "im2col",             # x (N, C, H, W) -> X_col (G, C/G*HH*WW, N*H'*W')
    "col2im",             # its adjoint: X_col-shaped -> (N, C, H, W)
    "matmul",             # (M, K) @ (K, N), or batched over a leading group axis
    "sum_axes",           # a.sum(axes): the row sums (conv2d's db among them)
    "relu",               # a -> (max(a, 0), mask a > 0 or None)
    "relu_backward",      # (g, mask) -> g * mask
    "max_pool",           # x -> (out, winner)
    "max_pool_backward",  # (dout, winner) -> dx
    "max_pool_gather",    # (x, winner) -> the winners' entries
    "avg_pool",           # x -> out
    "avg_pool_backward",  # dout -> dx
    "fused",              # (name, window, dtype) -> a fused formula of FUSED, or None
)
FUSED = (
    "conv2d_forward",      # (x, w, b, window) -> (out, saved X_col): W_row @ X_col + b
    "conv2d_grad_weight",  # (dout, x, saved X_col, window) -> dW = dout_flat @ X_col.T
    "conv2d_grad_input",   # (dout, w, window) -> dX = col2im(W_row.T @ dout_flat)
    "relu_max_pool2d",     # (x, window) -> (relu(max_pool out), winner, mask out > 0)
    "relu_max_pool2d_backward",  # (dout, winner, mask, window) -> max_pool_backward(dout*mask)
)

CONV_ALGORITHMS = (
    "auto",       # the backend chooses per shape and pass, by a fixed (measured) rule
    "benchmark",  # ... by timing each candidate on first use of a shape (cached)
    "im2col",     # X_col and one GEMM: the formulas of ops/conv.py
    "winograd",   # Winograd's minimal filtering for 3x3 stride-1 convs, tile size by the rule
    "winograd2",  # ... with 2x2 output tiles, F(2x2, 3x3)
    "winograd4",  # ... with 4x4 output tiles, F(4x4, 3x3)
    "onednn",     # oneDNN's own direct convolutions (JIT-compiled), where oneDNN is installed
)

_lock = threading.Lock()
_active: ModuleType | None = None  # loaded on first use: importing the package loads none


def kernels() -> ModuleType:
    """The backend module whose kernels the ops call now."""
    active = _active
    return active if active is not None else _load_default()


def backend() -> str:
    """The name of the backend in use (``"reference"`` or ``"fast"``)."""
    return kernels().NAME


def set_backend(name: str) -> None:
    """Run every op from now on with backend ``name`` (``"reference"`` or ``"fast"``)."""
    global _active
    module = _load(name)
    with _lock:
        _active = module


class use_backend:
    """``with use_backend("reference"):`` runs the block on that backend, then restores the
    one before (for the whole process: the choice is not per thread)."""

    def __init__(self, name: str) -> None:
        self._module = _load(name)

    def __enter__(self) -> ModuleType:
        global _active
        self._previous = kernels()
        _active = self._module
        return self._module

    def __exit__(self, *exc: object) -> None:
        global _active
        _active = self._previous


def _load(name: str) -> ModuleType:
    """Import backend ``name`` and check that it defines every kernel."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    module = importlib.import_module(BACKENDS[name])
    missing = [k for k in KERNELS if not callable(getattr(module, k, None))]
    if missing:
        raise TypeError(f"backend {name!r} ({module.__name__}) lacks kernels: {missing}")
    return module


def _load_default() -> ModuleType:
    global _active
    with _lock:
        if _active is None:
            _active = _load(_chosen())
    return _active


def _chosen() -> str:
    """The backend named by TINYGRAD_CONV_BACKEND, else the fast one where it loads."""
    name = os.environ.get("TINYGRAD_CONV_BACKEND", "").strip().lower()
    if name:
        if name not in BACKENDS:
            raise ValueError(
                f"TINYGRAD_CONV_BACKEND={name!r} is not a backend: use one of "
                f"{', '.join(BACKENDS)}, or unset it for the default ({DEFAULT})"
            )
        return name
    try:
        _load(DEFAULT)
    except ImportError as error:  # a platform where the fast backend cannot load
        warnings.warn(f"the {DEFAULT} backend does not load ({error}); using the reference "
                      "backend", RuntimeWarning, stacklevel=3)
        return "reference"
    return DEFAULT


def _algorithm_from_env() -> str:
    name = os.environ.get("TINYGRAD_CONV_ALGO", "").strip().lower() or "auto"
    if name not in CONV_ALGORITHMS:
        raise ValueError(
            f"TINYGRAD_CONV_ALGO={name!r} is not a convolution algorithm: use one of "
            f"{', '.join(CONV_ALGORITHMS)}, or unset it for auto"
        )
    return name


_conv_algorithm: str | None = None  # read from the environment on first use


def conv_algorithm() -> str:
    """The convolution algorithm asked for: one of ``CONV_ALGORITHMS`` (default ``auto``)."""
    global _conv_algorithm
    if _conv_algorithm is None:
        _conv_algorithm = _algorithm_from_env()
    return _conv_algorithm


def set_conv_algorithm(name: str) -> None:
    """Run convolutions from now on with algorithm ``name`` where it applies (im2col where
    it does not); ``"auto"`` lets the backend choose per shape."""
    global _conv_algorithm
    if name not in CONV_ALGORITHMS:
        raise ValueError(f"unknown convolution algorithm {name!r}: choose one of "
                         f"{', '.join(CONV_ALGORITHMS)}")
    _conv_algorithm = name


class use_conv_algorithm:
    """``with use_conv_algorithm("im2col"):`` runs the block's convolutions with that
    algorithm, then restores the setting before (for the whole process, as set_backend)."""

    def __init__(self, name: str) -> None:
        if name not in CONV_ALGORITHMS:
            set_conv_algorithm(name)  # raises the error naming the choices
        self._name = name

    def __enter__(self) -> str:
        self._previous = conv_algorithm()
        set_conv_algorithm(self._name)
        return self._name

    def __exit__(self, *exc: object) -> None:
        set_conv_algorithm(self._previous)


def save_conv_plans(path: str | os.PathLike) -> object:
    """Write the fast backend's timed algorithm choices (``benchmark`` mode) to ``path`` as
    JSON, atomically; returns the path. ``TINYGRAD_CONV_ALGO_CACHE=path`` does it as it goes."""
    return _load("fast").autotune.save_plans(path)


def load_conv_plans(path: str | os.PathLike) -> int:
    """Read choices written by ``save_conv_plans`` (the next run repeats them instead of
    timing again); returns how many were read."""
    return _load("fast").autotune.load_plans(path)
