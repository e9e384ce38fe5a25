"""The fast backend: the kernels of ``tinygrad_conv.backends`` for speed on a CPU.

Each kernel here computes what its namesake in ``backends/reference.py`` computes (the
tests hold them equal), by other means:

- ``kernels.py``: channels-last layouts, X_col made a few images at a time in cache-sized
  blocks and multiplied there, col2im fused with the product it scatters, pool windows
  compared in place;
- ``parallel.py``: the batch split over a thread pool, GEMMs split the same way;
- ``gemm.py``: float32 products on oneDNN's sgemm where installed, else NumPy's BLAS;
- ``memory.py``: glibc's allocator told to keep freed large blocks (applied when this
  backend loads; ``TINYGRAD_CONV_MALLOC_TUNING=0`` turns it off);
- ``compiled.py``: relu, its backward and tiled max pooling as one compiled pass each,
  where numba is installed (``TINYGRAD_CONV_NUMBA=0`` turns it off).

It fuses conv2d's three formulas (``fused``) for ungrouped convolutions; grouped ones run
the op's formula on the kernels below.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...geometry import Window
from . import autotune, compiled, conv, fused_pool, gemm, kernels, parallel, winograd
from .memory import tune_allocator

NAME = "fast"

tune_allocator()  # before this backend allocates its first large array


def im2col(x: np.ndarray, geo: Window) -> np.ndarray:
    """As reference.im2col: x (N, C, H, W) -> X_col (G, C/G*HH*WW, N*H'*W'), (c, i, j) rows.

    The copy runs over the batch on the threads; its (g, i, j, c) rows are then reordered.
    """
    (kh, kw), g = geo.kernel, geo.groups
    # (G*HH*WW*C/G, P), rows (g, i, j, c)
    cols = kernels.im2col(x, **conv.kernel_settings(geo), groups=g)
    by_offset = cols.reshape(g, kh, kw, -1, cols.shape[1])
    return np.ascontiguousarray(by_offset.transpose(0, 3, 1, 2, 4)).reshape(g, -1, cols.shape[1])


def col2im(x_col: np.ndarray, geo: Window) -> np.ndarray:
    """As reference.col2im: (G, C/G*HH*WW, N*H'*W') -> (N, C, H, W), adds on the threads."""
    (kh, kw), g = geo.kernel, geo.groups
    by_channel = x_col.reshape(g, -1, kh, kw, x_col.shape[-1])
    ordered = by_channel.transpose(0, 2, 3, 1, 4).reshape(-1, x_col.shape[-1])
    return kernels.col2im(ordered, geo.x_shape, **conv.kernel_settings(geo), groups=g)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b, 2-D or batched over a leading axis, split over the threads."""
    if a.ndim == 2 and b.ndim == 2:
        return parallel.matmul(a, b)
    if a.ndim == 3 and b.ndim == 3 and len(a) == len(b):
        return np.stack([parallel.matmul(x, y) for x, y in zip(a, b)])
    with parallel.blas_single_threaded():  # no BLAS threads left spinning
        return np.matmul(a, b)


def sum_axes(a: np.ndarray, axes: tuple[int, ...], keepdims: bool = False) -> np.ndarray:
    """np.sum(a, axes), as one GEMV (ones @ rows) when the kept axes are innermost in memory.

    That is conv2d's db = dout.sum((0, 2, 3)) on channels-last memory: NumPy adds such rows
    one short row at a time, a GEMV streams them (docs/performance.md).
    """
    fast = kernels.sum_outer_axes(a, axes)
    if fast is None:
        return np.sum(a, axis=axes, keepdims=keepdims)
    if keepdims:
        fast = fast.reshape([1 if i in axes else n for i, n in enumerate(a.shape)])
    return fast


def relu(a: np.ndarray, want_mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """As reference.relu, the batch split over the threads; out keeps a's memory layout."""
    out = np.empty_like(a)
    mask = np.empty_like(a, dtype=bool) if want_mask else None
    rows = compiled.rows_in_memory(a) if compiled.AVAILABLE else None
    if rows is not None:  # one compiled pass: the value and the mask
        out_rows = compiled.rows_in_memory(out)
        mask_rows = compiled.rows_in_memory(mask) if want_mask else out_rows
        if out_rows is not None and mask_rows is not None:
            parallel.over_batch(lambda s: compiled.relu_rows(rows[s], out_rows[s],
                                                             mask_rows[s], want_mask),
                                len(rows), a.size)
            return out, mask

    def work(s: slice) -> None:
        np.maximum(a[s], 0, out=out[s])
        if mask is not None:
            np.greater(out[s], 0, out=mask[s])

    parallel.over_batch(work, a.shape[0], a.size) if a.ndim else work(...)  # 0-d: a[...]
    return out, mask


def relu_backward(g: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """As reference.relu_backward, the batch split over the threads."""
    out = np.empty_like(g)  # keeps g's memory layout
    rows, mask_rows = ((compiled.rows_in_memory(g), compiled.rows_in_memory(mask))
                       if compiled.AVAILABLE and g.strides == _strides_like(mask, g)
                       else (None, None))
    if rows is not None and mask_rows is not None:  # same layout: one compiled pass
        out_rows = compiled.rows_in_memory(out)
        parallel.over_batch(lambda s: compiled.masked_rows(rows[s], mask_rows[s], out_rows[s]),
                            len(rows), g.size)
        return out

    def work(s: slice) -> None:
        np.multiply(g[s], mask[s], out=out[s])

    parallel.over_batch(work, g.shape[0], g.size) if g.ndim else work(...)  # 0-d: g[...]
    return out


def _strides_like(mask: np.ndarray, g: np.ndarray) -> tuple[int, ...]:
    """mask's strides scaled to g's item size (equal to g's when both share one layout)."""
    return tuple(s * g.itemsize // mask.itemsize for s in mask.strides)


def max_pool(x: np.ndarray, geo: Window) -> tuple[np.ndarray, np.ndarray]:
    """As reference.max_pool; the winner is a channels-first view of channels-last memory."""
    xl = kernels.channels_last(x)
    if compiled.AVAILABLE and xl.flags.c_contiguous and _tiles(geo):  # one compiled pass
        (n, c), (ho, wo), (kh, kw) = x.shape[:2], geo.out_hw, geo.kernel
        out = np.empty((n, ho, wo, c), x.dtype)
        won = np.empty((n, ho, wo, c), np.uint8 if kh * kw <= 256 else np.int32)
        parallel.over_batch(lambda s: compiled.max_pool_tiled(xl[s], kh, kw, out[s], won[s]),
                            n, x.size)
        return kernels.channels_first(out), kernels.channels_first(won)
    out, winner = kernels.max_pool_forward(x, geo.kernel, geo.stride, geo.padding)
    return out, kernels.channels_first(winner)


def max_pool_backward(dout: np.ndarray, winner: np.ndarray, geo: Window) -> np.ndarray:
    """As reference.max_pool_backward."""
    won = kernels.channels_last(winner)
    if compiled.AVAILABLE and won.flags.c_contiguous and _tiles(geo):  # one compiled pass
        (n, c), (h, w), (kh, kw) = geo.x_shape[:2], geo.x_shape[2:], geo.kernel
        gl = kernels.channels_last(dout)
        dx = np.empty((n, h, w, c), dout.dtype)

        def work(s: slice) -> None:
            part = gl[s] if gl.flags.c_contiguous else np.ascontiguousarray(gl[s])
            compiled.max_pool_scatter_tiled(part, won[s], kh, kw, dx[s])

        parallel.over_batch(work, n, dx.size)
        return kernels.channels_first(dx)
    return kernels.window_scatter(dout, geo.x_shape, geo.kernel, geo.stride, geo.padding,
                                  winner=won)


def _tiles(geo: Window) -> bool:
    return kernels.windows_tile(geo.x_shape, geo.kernel, geo.stride, geo.padding)


def max_pool_gather(x: np.ndarray, winner: np.ndarray, geo: Window) -> np.ndarray:
    """As reference.max_pool_gather."""
    return kernels.max_pool_gather(x, kernels.channels_last(winner), geo.kernel, geo.stride,
                                   geo.padding)


def avg_pool(x: np.ndarray, geo: Window) -> np.ndarray:
    """As reference.avg_pool."""
    return kernels.avg_pool_forward(x, geo.kernel, geo.stride, geo.padding)


def avg_pool_backward(dout: np.ndarray, geo: Window) -> np.ndarray:
    """As reference.avg_pool_backward."""
    share = dout * dout.dtype.type(1.0 / (geo.kernel[0] * geo.kernel[1]))
    return kernels.window_scatter(share, geo.x_shape, geo.kernel, geo.stride, geo.padding,
                                  winner=None)


_POOL_FUSED: dict[str, Callable] = {
    "relu_max_pool2d": fused_pool.relu_max_pool_forward,
    "relu_max_pool2d_backward": fused_pool.relu_max_pool_backward,
}


def fused(name: str, geo: Window, dtype: np.dtype | None = None) -> Callable | None:
    """conv2d's passes for ungrouped convolutions (grouped ones: None), by the algorithm
    chosen for this shape (``autotune.choose``; ``.algorithm`` names it), and relu followed
    by max pooling in one pass per thread."""
    if name in conv.PASSES:
        if geo.groups != 1:
            return None
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        return autotune.choose(name, geo, dtype).passes[name]
    return _POOL_FUSED.get(name)


__all__ = ["autotune", "compiled", "conv", "fused_pool", "gemm", "kernels", "parallel",
           "winograd"]
