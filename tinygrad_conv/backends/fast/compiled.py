"""Compiled one-pass kernels for the memory-bound steps: relu with its mask, relu's backward,
and max pooling over windows that tile the input (forward: max and winner; backward: the
scatter), through numba where it is installed.

Each NumPy version of these takes several passes over memory (a maximum, then a comparison
for the mask; a copy, a compare, a maximum and a multiply per window offset); compiled, each
is one loop that reads its input once. They are compiled without numba's own threads
(``nogil=True``, no ``parallel``): the fast backend's thread pool splits the batch and runs
them side by side, so there is one thread mechanism, safe in threads, forks and interrupts.
Compiled code is cached on disk (``cache=True``), so only a first run pays the compile.

``AVAILABLE`` is False without numba, or with ``TINYGRAD_CONV_NUMBA=0``; the callers then use
their NumPy versions. benchmarks/bench_threads.py measured the candidates
(docs/performance.md, "Threads").
"""

from __future__ import annotations

import math
import os

import numpy as np


def _numba():
    if os.environ.get("TINYGRAD_CONV_NUMBA", "1") == "0":
        return None
    try:
        import numba
    except ImportError:  # an optional speed-up: the NumPy kernels do the same work
        return None
    return numba


numba = _numba()
AVAILABLE = numba is not None

if AVAILABLE:
    _jit = numba.njit(nogil=True, cache=True)

    @_jit
    def relu_rows(a, out, mask, want_mask):  # pragma: no cover - compiled
        """out = max(a, 0) and (if wanted) mask = a > 0, on (N, M) rows, in one pass."""
        zero = a.dtype.type(0)
        for n in range(a.shape[0]):
            for i in range(a.shape[1]):
                v = a[n, i]
                positive = v > zero
                out[n, i] = v if positive or v != v else zero  # NaN stays NaN, as np.maximum
                if want_mask:
                    mask[n, i] = positive

    @_jit
    def masked_rows(g, mask, out):  # pragma: no cover - compiled
        """out = g where mask, else 0, on (N, M) rows."""
        zero = g.dtype.type(0)
        for n in range(g.shape[0]):
            for i in range(g.shape[1]):
                out[n, i] = g[n, i] if mask[n, i] else zero

    @_jit
    def max_pool_tiled(x, kh, kw, out, won):  # pragma: no cover - compiled
        """Each window's max and winner (the first maximum's offset i*kw + j; a NaN wins, as
        np.argmax), for windows that tile x: x (N, H, W, C), out and won (N, H', W', C)."""
        batch, ho, wo, c = out.shape
        for n in range(batch):
            for y in range(ho):
                for xo in range(wo):
                    for ch in range(c):
                        out[n, y, xo, ch] = x[n, y * kh, xo * kw, ch]
                        won[n, y, xo, ch] = 0
                    for k in range(1, kh * kw):
                        row, col = y * kh + k // kw, xo * kw + k % kw
                        for ch in range(c):
                            v, best = x[n, row, col, ch], out[n, y, xo, ch]
                            if v > best or (v != v and best == best):
                                out[n, y, xo, ch] = v
                                won[n, y, xo, ch] = k

    @_jit
    def max_pool_scatter_tiled(dout, won, kh, kw, dx):  # pragma: no cover - compiled
        """dx = each window's dout at its winner, 0 elsewhere (windows tile dx):
        dout, won (N, H', W', C), dx (N, H, W, C), every pixel written once."""
        batch, ho, wo, c = dout.shape
        zero = dout.dtype.type(0)
        for n in range(batch):
            for y in range(ho):
                for xo in range(wo):
                    for k in range(kh * kw):
                        row, col = y * kh + k // kw, xo * kw + k % kw
                        for ch in range(c):
                            hit = won[n, y, xo, ch] == k
                            dx[n, row, col, ch] = dout[n, y, xo, ch] if hit else zero


def rows_in_memory(a: np.ndarray) -> np.ndarray | None:
    """a as (N, M) rows in memory order (a view) when a is contiguous as (N, C, H, W) or as
    channels-last memory; else None."""
    if a.ndim == 0 or a.dtype not in (np.float32, np.float64, np.bool_):
        return None
    row = math.prod(a.shape[1:])  # not -1: a reshape cannot infer it when a size is 0
    if a.flags.c_contiguous:
        return a.reshape(a.shape[0], row)
    if a.ndim == 4:
        nhwc = a.transpose(0, 2, 3, 1)
        if nhwc.flags.c_contiguous:
            return nhwc.reshape(a.shape[0], row)
    return None

