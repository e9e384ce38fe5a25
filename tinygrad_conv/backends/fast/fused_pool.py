"""relu and max pooling fused: the formulas of the op ``relu_max_pool2d`` (ops/fused.py),
each run slice by slice of the batch on the threads, for windows that tile the input (the
reference CNN's 2x2 pools) and channels-last float memory:

    forward:  out, winner = max_pool(x); out, mask = relu(out)      per slice, out in cache
    backward: dx = max_pool_backward(dout * mask, winner)             per slice

Each step is one of ``compiled.py``'s numba passes, and the small (pooled-size) step runs on
a slice right after or before the big one, while that slice is still in cache, with no
pass over the whole batch in between. They return what the step-by-step formulas return (the
winner as ``max_pool``'s, the mask as ``relu``'s of the pooled result), so a forward run
here serves a backward on any backend. Without numba (``TINYGRAD_CONV_NUMBA=0``), for other
windows, dtypes or memory layouts, they run those formulas on this backend's kernels.
"""

from __future__ import annotations

import math

import numpy as np

from ...geometry import Window
from . import compiled, kernels, parallel


def relu_max_pool_forward(x: np.ndarray,
                          geo: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (N, C, H, W) -> (relu of each window's max, its winner, the mask max > 0), each
    (N, C, H', W'), channels-last memory."""
    xl = kernels.channels_last(x)
    if not _compiles(geo, x, xl):
        from . import max_pool, relu  # this package's kernels (loaded by now)

        pooled, winner = max_pool(x, geo)
        out, mask = relu(pooled, want_mask=True)
        return out, winner, mask
    (n, c), (ho, wo), (kh, kw) = x.shape[:2], geo.out_hw, geo.kernel
    out = np.empty((n, ho, wo, c), x.dtype)
    won = np.empty((n, ho, wo, c), np.uint8 if kh * kw <= 256 else np.int32)
    mask = np.empty((n, ho, wo, c), bool)

    def work(s: slice) -> None:
        compiled.max_pool_tiled(xl[s], kh, kw, out[s], won[s])
        rows = _rows(out[s])
        compiled.relu_rows(rows, rows, _rows(mask[s]), True)  # in place, on the pooled

    parallel.over_batch(work, n, x.size)
    return tuple(kernels.channels_first(a) for a in (out, won, mask))


def relu_max_pool_backward(dout: np.ndarray, winner: np.ndarray, mask: np.ndarray,
                           geo: Window) -> np.ndarray:
    """dx (N, C, H, W): each window's dout (N, C, H', W') at its winner where mask is set."""
    won, kept = kernels.channels_last(winner), kernels.channels_last(mask)
    if not _compiles(geo, dout, won, kept):
        from . import max_pool_backward, relu_backward

        return max_pool_backward(relu_backward(dout, mask), winner, geo)
    (n, c), (h, w), (kh, kw) = geo.x_shape[:2], geo.x_shape[2:], geo.kernel
    gl = kernels.channels_last(dout)
    dx = np.empty((n, h, w, c), dout.dtype)

    def work(s: slice) -> None:
        masked = np.empty(gl[s].shape, dout.dtype)
        compiled.masked_rows(_rows(gl[s]), _rows(kept[s]), _rows(masked))  # dout * mask
        compiled.max_pool_scatter_tiled(masked, won[s], kh, kw, dx[s])

    parallel.over_batch(work, n, dx.size)
    return kernels.channels_first(dx)


def _rows(a: np.ndarray) -> np.ndarray:
    """An (N, H, W, C) slice as (N, H*W*C) rows (a view when contiguous)."""
    return a.reshape(len(a), math.prod(a.shape[1:]))  # not -1: a slice may hold no image


def _compiles(geo: Window, values: np.ndarray, *saved: np.ndarray) -> bool:
    """Whether the compiled passes apply: numba on, windows that tile, float32 or float64
    ``values``, and channels-last contiguous memory for what the forward saved."""
    return (compiled.AVAILABLE and values.dtype in (np.float32, np.float64)
            and all(a.flags.c_contiguous for a in saved)
            and kernels.windows_tile(geo.x_shape, geo.kernel, geo.stride, geo.padding))
