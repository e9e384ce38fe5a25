"""Array kernels for convolution and pooling: im2col, col2im, pooling windows.

Layout. Tensors are (N, C, H, W) to the user, but every kernel here works on arrays laid out
(N, H, W, C) in memory ("channels last") and hands its results back as transposed *views*.
A chain conv -> relu -> pool -> conv therefore never copies to change layout: the GEMM
output, one row per output pixel, already is the next layer's input, and each strided
window view keeps a contiguous innermost axis (the channels), which NumPy loops vectorise.

X_col is the (C*HH*WW, N*H'*W') matrix of the im2col formulas. Its K axis runs (g, i, j, c)
(group, kernel row, kernel column, channel within the group), and W_flat matches it. For
conv2d without groups it is never held whole: ``im2col_matmul`` (the forward) and
``im2col_grad_weight`` (dW = dout_flat @ X_col.T) each make it a few images at a time in a
per-thread, cache-sized buffer and multiply it there, the forward's copy and the backward's
copy being the same blocks. Many channels give pixel-major blocks (one window per row),
few channels (a network's 1- or 3-channel input) offset-major ones (one kernel offset per
row): whichever copy moves longer contiguous runs. ``im2col`` builds the whole matrix, for
grouped convs and for the docs' examples.

Nothing loops over output pixels: an X_col block is one copy of a strided view that holds
every window, and col2im and the pools loop over the HH x WW kernel offsets, each one
strided slice of the batch. The memory-bound loops and the GEMMs split the batch (or the
pixels) across threads (``parallel``).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import gemm
from .parallel import blas_single_threaded, inner_block, matmul, over_batch

Pair = tuple[int, int]


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """PyTorch's rule: 1 + (size + 2*pad - dilation*(kernel-1) - 1) // stride."""
    return 1 + (size + 2 * pad - dilation * (kernel - 1) - 1) // stride


def channels_last(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> an (N, H, W, C) view (no copy)."""
    return x.transpose(0, 2, 3, 1)


def channels_first(y: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> an (N, C, H, W) view (no copy)."""
    return y.transpose(0, 3, 1, 2)


def _fill_padded(out: np.ndarray, xl: np.ndarray, padding: Pair, value: float = 0.0) -> None:
    """out (N, H + 2ph, W + 2pw, C) = xl (N, H, W, C) with borders set to ``value``."""
    (ph, pw), h, w = padding, xl.shape[1], xl.shape[2]
    out[:, :ph] = value
    out[:, ph + h:] = value
    out[:, ph:ph + h, :pw] = value
    out[:, ph:ph + h, pw + w:] = value
    np.copyto(out[:, ph:ph + h, pw:pw + w], xl)


def pad_channels_last(x: np.ndarray, padding: Pair, value: float = 0.0) -> np.ndarray:
    """x (N, C, H, W) -> (N, H + 2ph, W + 2pw, C) with borders set to ``value``.

    Without padding this is a view; otherwise one copy into a fresh buffer.
    """
    xl = channels_last(x)
    ph, pw = padding
    if ph == 0 and pw == 0:
        return xl
    n, h, w, c = xl.shape
    out = np.empty((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype)
    out[:, :ph] = value
    out[:, ph + h:] = value
    out[:, ph:ph + h, :pw] = value
    out[:, ph:ph + h, pw + w:] = value
    inner = out[:, ph:ph + h, pw:pw + w]
    over_batch(lambda s: np.copyto(inner[s], xl[s]), n, xl.size)
    return out


def window(xp: np.ndarray, i: int, j: int, out_hw: Pair, stride: Pair,
           dilation: Pair = (1, 1)) -> np.ndarray:
    """The strided view of padded xp (N, Hp, Wp, ...) that kernel offset (i, j) sees:
    (N, H', W', ...) with [n, y, x] = xp[n, i*dh + y*sh, j*dw + x*sw]."""
    (ho, wo), (sh, sw), (dh, dw) = out_hw, stride, dilation
    top, left = i * dh, j * dw
    return xp[:, top:top + sh * (ho - 1) + 1:sh, left:left + sw * (wo - 1) + 1:sw]


def _out_hw(x_shape: tuple[int, ...], kernel: Pair, stride: Pair, padding: Pair,
            dilation: Pair) -> Pair:
    return (conv_output_size(x_shape[2], kernel[0], stride[0], padding[0], dilation[0]),
            conv_output_size(x_shape[3], kernel[1], stride[1], padding[1], dilation[1]))


def _all_windows(x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair,
                 groups: int) -> np.ndarray:
    """A read-only view (N, H', W', G, HH, WW, C/G) of x (N, C, H, W): entry [n, y, x, g, i,
    j, c] reads the padded xp[n, y*sh + i*dh, x*sw + j*dw, g, c]."""
    out_hw = _out_hw(x.shape, kernel, stride, padding, dilation)
    return _windows_of(pad_channels_last(x, padding), out_hw, kernel, stride, dilation, groups)


def _windows_of(xp: np.ndarray, out_hw: Pair, kernel: Pair, stride: Pair, dilation: Pair,
                groups: int) -> np.ndarray:
    """``_all_windows`` of an already padded channels-last xp (N, Hp, Wp, C)."""
    n, c = xp.shape[0], xp.shape[3]
    xp = xp.reshape(xp.shape[:3] + (groups, c // groups))
    sn, sy, sx, sg, sc = xp.strides
    return as_strided(
        xp, shape=(n,) + tuple(out_hw) + (groups,) + tuple(kernel) + (c // groups,),
        strides=(sn, sy * stride[0], sx * stride[1], sg, sy * dilation[0], sx * dilation[1], sc),
        writeable=False,
    )


def im2col(x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair,
           groups: int = 1) -> np.ndarray:
    """x (N, C, H, W) -> X_col (C*HH*WW, N*H'*W'), a transposed view of a pixel-major buffer.

    Column (n, y, x) is one output position; row (g, i, j, c) is channel c of group g seen at
    kernel offset (i, j). A strided view already holds every window; one copy makes it a
    matrix.
    """
    windows = _all_windows(x, kernel, stride, padding, dilation, groups)
    cols = np.empty(windows.shape, dtype=x.dtype)
    over_batch(lambda s: np.copyto(cols[s], windows[s]), len(cols), cols.size)
    return cols.reshape(-1, windows[0, 0, 0].size).T


class Columns:
    """X_col of x for one group, produced a few images at a time and never held whole.

    Layout: pixel-major (one window per row, C*WW contiguous values per kernel row) for many
    channels; offset-major (one kernel offset and channel per row, output rows contiguous)
    for few, such as a network's 1- or 3-channel input: whichever copy moves the longer
    contiguous runs. With ``ones_row`` a last column of ones is appended (the bias's).

    The pixel-major kind pads x (channels last) into a buffer of its own, each thread
    filling the images it works on (``fill``) rather than in a pass of its own: a thread
    hand-off costs more than the copy. conv2d's forward keeps the filled object for dW.
    """

    def __init__(self, x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair,
                 dilation: Pair, ones_row: bool = False) -> None:
        c, (kh, kw) = x.shape[1], kernel
        self.out_hw = _out_hw(x.shape, kernel, stride, padding, dilation)
        self.pixels = self.out_hw[0] * self.out_hw[1]
        self.k = kh * kw * c + ones_row
        self.ones_row, self.kernel, self.stride, self.dilation = ones_row, kernel, stride, dilation
        self.offset_major = ones_row or _offset_major(c, kernel, stride, self.out_hw[1])
        self.x, self.padding, self.filled = x, padding, padding == (0, 0)
        if self.offset_major:
            self.planes = _pad_channels_first(x, padding).transpose(0, 2, 3, 1)
            self.filled = True
        else:
            # padded by each thread for its own images (fill), not in a pass of its own
            xp = x.transpose(0, 2, 3, 1)
            if not self.filled:
                (n, _, h, w), (ph, pw) = x.shape, padding
                xp = np.empty((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype)
            self.padded = xp
            self.windows = _windows_of(xp, self.out_hw, kernel, stride, dilation, 1)

    def fill(self, part: slice) -> None:
        """Write the padded copy of the images in ``part`` (each thread fills its own)."""
        if not self.filled:
            _fill_padded(self.padded[part], channels_last(self.x[part]), self.padding)

    def done_filling(self) -> Columns:
        """Mark every image filled (after a pass whose threads filled them all)."""
        self.filled, self.x = True, None
        return self

    def images_per_block(self, itemsize: int) -> int:
        """Images whose columns fill about BLOCK_BYTES."""
        return max(1, BLOCK_BYTES // (self.pixels * self.k * itemsize))

    def rows_per_block(self, itemsize: int) -> int:
        """Output rows of one image per block: all H' of them, unless one image's columns
        alone exceed BLOCK_BYTES (pixel-major, large images: the product of a block that
        fits in cache runs faster; docs/performance.md)."""
        ho, wo = self.out_hw
        if self.offset_major or self.pixels * self.k * itemsize <= BLOCK_BYTES:
            return ho
        return max(1, BLOCK_BYTES // (wo * self.k * itemsize))

    def blocks(self, part: slice, itemsize: int) -> list[tuple[slice, slice]]:
        """The blocks of the images in ``part``, in order: (images, output rows) pairs,
        several whole images each or a run of rows of one image."""
        images = self.images_per_block(itemsize)
        rows, ho = self.rows_per_block(itemsize), self.out_hw[0]
        if rows == ho:
            return [(slice(first, min(first + images, part.stop)), slice(0, ho))
                    for first in range(part.start, part.stop, images)]
        return [(slice(n, n + 1), slice(y, min(y + rows, ho)))
                for n in range(part.start, part.stop) for y in range(0, ho, rows)]

    def pixel_range(self, images: slice, out_rows: slice) -> slice:
        """Where a block's rows sit among X_col.T's N*H'*W' rows (one run: see blocks)."""
        wo = self.out_hw[1]
        return slice(images.start * self.pixels + out_rows.start * wo,
                     (images.stop - 1) * self.pixels + out_rows.stop * wo)

    def scratch(self, part: slice, dtype: np.dtype) -> np.ndarray:
        """A buffer for the largest block of the images in ``part`` (one per thread, reused)."""
        images = min(self.images_per_block(dtype.itemsize), part.stop - part.start)
        if self.offset_major:
            return np.empty((self.k, images) + self.out_hw, dtype)
        rows = self.rows_per_block(dtype.itemsize)
        return np.empty((images, rows) + self.windows.shape[2:], dtype)

    def rows(self, part: slice, scratch: np.ndarray, out_rows: slice) -> np.ndarray:
        """The rows of X_col.T for output rows ``out_rows`` of the images in ``part`` (one
        block of ``blocks``): (pixels, K), in scratch."""
        m = part.stop - part.start
        if not self.offset_major:
            block = scratch[:m, :out_rows.stop - out_rows.start]
            np.copyto(block, self.windows[part, out_rows])
            return block.reshape(-1, self.k)
        kh, kw = self.kernel
        c = (self.k - self.ones_row) // (kh * kw)
        cols = scratch[:self.k - self.ones_row].reshape(kh, kw, c, -1, *self.out_hw)
        for i in range(kh):
            for j in range(kw):
                view = window(self.planes[part], i, j, self.out_hw, self.stride, self.dilation)
                np.copyto(cols[i, j, :, :m], view.transpose(3, 0, 1, 2))
        if self.ones_row:
            scratch[-1, :m] = 1
        return scratch[:, :m].reshape(self.k, -1).T


def _pad_channels_first(x: np.ndarray, padding: Pair) -> np.ndarray:
    """x (N, C, H, W) zero-padded as (N, C, H + 2ph, W + 2pw); x itself without padding."""
    (n, c, h, w), (ph, pw) = x.shape, padding
    if ph == 0 and pw == 0:
        return x
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    return xp


def im2col_matmul(x: np.ndarray, w_flat: np.ndarray, bias: np.ndarray | None, kernel: Pair,
                  stride: Pair, padding: Pair,
                  dilation: Pair) -> tuple[np.ndarray, Columns]:
    """conv2d's forward for one group: (X_col.T @ W_flat.T + b, columns).

    x (N, C, H, W), w_flat (F, K), bias (F,) or None; the product is (N*H'*W', F),
    pixel-major. Each thread pads its images, copies a few images' columns at a time into
    its own cache-sized buffer and multiplies them there: X_col is never written to memory
    whole (it would be 9 to 25 times x). With few channels the bias rides in the GEMM as a
    row of ones under X_col and b beside W_flat. ``columns`` holds x padded, for
    ``im2col_grad_weight`` to make the same blocks from (with the row of ones, if any: then
    its product with dout also gives the bias gradient).
    """
    fold_bias = bias is not None and _bias_rides_along(x.shape, kernel, stride, padding,
                                                       dilation)
    columns = Columns(x, kernel, stride, padding, dilation, ones_row=fold_bias)
    if fold_bias:
        w_flat, bias = np.concatenate([w_flat, bias[:, None].astype(w_flat.dtype)], axis=1), None
    n, pixels = len(x), columns.pixels
    out = np.empty((n * pixels, len(w_flat)), dtype=np.result_type(x, w_flat))
    w_cols = np.ascontiguousarray(w_flat.T)  # (K, F): a GEMM operand read faster contiguous

    def work(s: slice) -> None:
        columns.fill(s)
        scratch = columns.scratch(s, x.dtype)
        for part, out_rows in columns.blocks(s, x.dtype.itemsize):
            rows = columns.pixel_range(part, out_rows)
            gemm.matmul(columns.rows(part, scratch, out_rows), w_cols, out=out[rows])
            if bias is not None:
                out[rows] += bias

    with blas_single_threaded(np.result_type(x, w_flat)):
        over_batch(work, n, n * pixels * columns.k)
    return out, columns.done_filling()


def im2col_grad_weight(dout_flat: np.ndarray, x: np.ndarray, kernel: Pair, stride: Pair,
                       padding: Pair, dilation: Pair, columns: Columns | None = None,
                       bias: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """dW_flat = dout_flat @ X_col.T for one group: (F, P) and x (N, C, H, W) -> (F, K).

    The product is summed over blocks of a few images, each block's columns copied into a
    cache-sized buffer just before use; each thread sums its own images, then the threads'
    sums are added. ``columns`` is what ``im2col_matmul`` returned for the same x, if kept.
    Returns (dW_flat, db): with ``bias`` and offset-major columns (few channels), X_col
    carries a row of ones, so the product's last column is db = dout.sum((0, 2, 3)) at no
    extra pass over dout; otherwise db is None (a separate GEMV over dout was cheaper there
    than one per block).
    """
    if columns is None:
        ones_row = bias and _bias_rides_along(x.shape, kernel, stride, padding, dilation)
        columns = Columns(x, kernel, stride, padding, dilation, ones_row=ones_row)
    n, pixels = len(x), columns.pixels
    dtype = np.result_type(dout_flat, x)
    sums: dict[int, np.ndarray] = {}  # by first image: added in a fixed order
    step = inner_block()  # rows per GEMM call (see parallel.INNER_BLOCK)

    def work(s: slice) -> None:
        columns.fill(s)
        scratch = columns.scratch(s, x.dtype)
        total = np.zeros((len(dout_flat), columns.k), dtype)
        for part, out_rows in columns.blocks(s, x.dtype.itemsize):
            rows = columns.rows(part, scratch, out_rows)
            block = dout_flat[:, columns.pixel_range(part, out_rows)]
            for first_row in range(0, len(rows), step):
                inner = slice(first_row, first_row + step)
                gemm.matmul(block[:, inner], rows[inner], out=total, accumulate=True)
        sums[s.start] = total

    with blas_single_threaded(np.result_type(dout_flat, x)):
        over_batch(work, n, n * pixels * columns.k)
    ordered = [sums[first] for first in sorted(sums)]
    dw = sum(ordered[1:], ordered[0])
    if not columns.ones_row:
        return dw, None
    return dw[:, :-1], (dw[:, -1].copy() if bias else None)


def _bias_rides_along(x_shape: tuple[int, ...], kernel: Pair, stride: Pair, padding: Pair,
                      dilation: Pair) -> bool:
    """Whether X_col of x carries a row of ones for the bias (its offset-major kind)."""
    out_w = _out_hw(x_shape, kernel, stride, padding, dilation)[1]
    return _offset_major(x_shape[1], kernel, stride, out_w)


def _offset_major(channels: int, kernel: Pair, stride: Pair, out_w: int) -> bool:
    """Whether X_col (and dX_col) should be offset-major: whichever layout moves the longer
    contiguous runs, a window's C*WW values or an offset's output row (measured: offset-major
    wins for 1 and 3 channels and loses for 16 or more)."""
    return channels * kernel[1] < (out_w if stride[1] == 1 else 1)


def col2im(x_col: np.ndarray, x_shape: tuple[int, int, int, int], kernel: Pair, stride: Pair,
           padding: Pair, dilation: Pair, groups: int = 1) -> np.ndarray:
    """The adjoint of im2col: an X_col-shaped (C*HH*WW, N*H'*W') array -> (N, C, H, W).

    Each entry is added back to the input pixel it was copied from; pixels seen by several
    windows sum their contributions. One strided add per kernel offset.
    """
    n, c, _, _ = x_shape
    kh, kw = kernel
    ho, wo = _out_hw(x_shape, kernel, stride, padding, dilation)
    cols7 = x_col.T.reshape(n, ho, wo, groups, kh, kw, c // groups)
    dxp = _padded_zeros(x_shape, padding, groups, x_col.dtype)
    for i in range(kh):
        for j in range(kw):
            _add_into(window(dxp, i, j, (ho, wo), stride, dilation), cols7[:, :, :, :, i, j])
    return _unpad(dxp, x_shape, padding)


BLOCK_BYTES = 1 << 20  # col2im_of_product keeps each product block about this size (L2)


def col2im_of_product(w_flat: np.ndarray, dout_flat: np.ndarray,
                      x_shape: tuple[int, int, int, int], kernel: Pair, stride: Pair,
                      padding: Pair, dilation: Pair) -> np.ndarray:
    """col2im(W_flat.T @ dout_flat) for one group, without holding the whole product.

    Row block (i, j) of W_flat.T @ dout_flat (the C rows of kernel offset (i, j)) is
    computed on its own, as dout_flat.T @ W_flat[:, block], and added into its window at
    once. The batch is taken a few images at a time so that each block stays in cache.
    """
    n, c, _, _ = x_shape
    kh, kw = kernel
    ho, wo = _out_hw(x_shape, kernel, stride, padding, dilation)
    if _offset_major(c, kernel, stride, wo):
        return _col2im_of_product_offset_major(w_flat, dout_flat, x_shape, kernel, stride,
                                               padding, dilation)
    grid = (x_shape[2] + 2 * padding[0]) * (x_shape[3] + 2 * padding[1])
    if tuple(stride) == (1, 1) and grid <= MAX_GRID_GROWTH * ho * wo:
        return _col2im_of_product_stride1(w_flat, dout_flat, x_shape, kernel, padding,
                                          dilation)
    dtype = np.result_type(w_flat, dout_flat)
    dxp = _padded_zeros(x_shape, padding, 1, dtype)
    pixels = dout_flat.T.reshape(n, ho * wo, -1)  # (N, H'*W', F)
    images = max(1, BLOCK_BYTES // (ho * wo * c * dtype.itemsize))

    def work(s: slice) -> None:
        block = np.empty((min(images, s.stop - s.start) * ho * wo, c), dtype)
        for first_image in range(s.start, s.stop, images):
            part = slice(first_image, min(first_image + images, s.stop))
            rows = pixels[part].reshape(-1, pixels.shape[2])
            out = block[:len(rows)]
            for i in range(kh):
                for j in range(kw):
                    first = (i * kw + j) * c
                    gemm.matmul(rows, w_flat[:, first:first + c], out=out)
                    target = window(dxp[part], i, j, (ho, wo), stride, dilation)
                    np.add(target, out.reshape(target.shape), out=target)

    with blas_single_threaded(dtype):
        over_batch(work, n, n * ho * wo * c * kh * kw)
    return _unpad(dxp, x_shape, padding)


# _col2im_of_product_stride1 multiplies dout laid out on the padded input's grid: worth it
# while that grid is at most this much bigger than the output (docs/performance.md)
MAX_GRID_GROWTH = 1.2


def _col2im_of_product_stride1(w_flat: np.ndarray, dout_flat: np.ndarray,
                               x_shape: tuple[int, int, int, int], kernel: Pair, padding: Pair,
                               dilation: Pair) -> np.ndarray:
    """col2im_of_product for stride 1, with the adds done by the GEMMs themselves.

    With stride 1, kernel offset (i, j) sends output pixel (y, x) to padded input pixel
    (y + i*dh, x + j*dw). Lay dout out on the padded input's grid, (N, Hp, Wp, F) with zeros
    beyond (H', W'): then that is one shift by s = i*dh*Wp + j*dw of the flattened pixel
    index, and the offset's product block dout @ W_flat[:, block] can be accumulated (GEMM
    beta = 1) straight into rows s, s+1, ... of the padded dX. The zero rows add nothing;
    trimming each block's trailing zero rows keeps its writes inside its own images.
    """
    (n, c, h, w), (kh, kw), (ph, pw), (dh, dw) = x_shape, kernel, padding, dilation
    ho, wo = _out_hw(x_shape, kernel, (1, 1), padding, dilation)
    hp, wp = h + 2 * ph, w + 2 * pw
    per_image = hp * wp  # rows of one image on the padded grid
    dtype = np.result_type(w_flat, dout_flat)
    f = dout_flat.shape[0]
    dxp = np.zeros((n * per_image, c), dtype)
    pixels = dout_flat.T.reshape(n, ho, wo, f)  # a view of channels-last dout
    images = max(1, BLOCK_BYTES // (per_image * (f + c) * dtype.itemsize))
    shifts = [(i * dh * wp + j * dw, (i * kw + j) * c) for i in range(kh) for j in range(kw)]

    def work(s: slice) -> None:
        grid = np.zeros((min(images, s.stop - s.start), hp, wp, f), dtype)  # zero borders
        for first_image in range(s.start, s.stop, images):
            m = min(images, s.stop - first_image)
            np.copyto(grid[:m, :ho, :wo], pixels[first_image:first_image + m])
            used = (m - 1) * per_image + (ho - 1) * wp + wo  # up to the last real pixel
            rows = grid[:m].reshape(-1, f)[:used]
            start = first_image * per_image
            for shift, first in shifts:
                gemm.matmul(rows, w_flat[:, first:first + c],
                            out=dxp[start + shift:start + shift + used], accumulate=True)

    with blas_single_threaded(dtype):
        over_batch(work, n, n * ho * wo * c * kh * kw)
    return _unpad(dxp.reshape(n, hp, wp, c), x_shape, padding)


def _col2im_of_product_offset_major(w_flat: np.ndarray, dout_flat: np.ndarray,
                                    x_shape: tuple[int, int, int, int], kernel: Pair,
                                    stride: Pair, padding: Pair, dilation: Pair) -> np.ndarray:
    """col2im_of_product for few channels: a few images at a time, the whole (K, pixels)
    block of W_flat.T @ dout_flat in one GEMM, then each of its rows (one kernel offset and
    channel) added into a channels-first image plane. Returns a channels-first (N, C, H, W)."""
    (n, c, h, w), (kh, kw), (ph, pw) = x_shape, kernel, padding
    ho, wo = _out_hw(x_shape, kernel, stride, padding, dilation)
    dtype = np.result_type(w_flat, dout_flat)
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype)
    planes = dxp.transpose(0, 2, 3, 1)  # window() slices (N, H, W, ...) views
    images = max(1, BLOCK_BYTES // (ho * wo * w_flat.shape[1] * dtype.itemsize))

    def work(s: slice) -> None:
        for first_image in range(s.start, s.stop, images):
            part = slice(first_image, min(first_image + images, s.stop))
            columns = dout_flat[:, part.start * ho * wo:part.stop * ho * wo]
            block = gemm.matmul(w_flat.T, columns).reshape(kh, kw, c, -1, ho, wo)
            for i in range(kh):
                for j in range(kw):
                    target = window(planes[part], i, j, (ho, wo), stride, dilation)
                    target = target.transpose(3, 0, 1, 2)  # (C, images, H', W')
                    np.add(target, block[i, j], out=target)

    with blas_single_threaded(dtype):
        over_batch(work, n, n * ho * wo * c * kh * kw)
    return dxp[:, :, ph:ph + h, pw:pw + w]


def _add_into(target: np.ndarray, values: np.ndarray) -> None:
    """target += values, the batch (axis 0) split across threads."""
    over_batch(lambda s: np.add(target[s], values[s], out=target[s]), len(target), values.size)


def _padded_zeros(x_shape: tuple[int, int, int, int], padding: Pair, groups: int,
                  dtype: np.dtype) -> np.ndarray:
    n, c, h, w = x_shape
    return np.zeros((n, h + 2 * padding[0], w + 2 * padding[1], groups, c // groups), dtype)


def _unpad(dxp: np.ndarray, x_shape: tuple[int, int, int, int], padding: Pair) -> np.ndarray:
    n, c, h, w = x_shape
    ph, pw = padding
    return channels_first(dxp[:, ph:ph + h, pw:pw + w].reshape(n, h, w, c))


def weight_rows(w: np.ndarray) -> np.ndarray:
    """W_flat: weight (F, C/G, HH, WW) -> (F, HH*WW*C/G), columns in X_col's (i, j, c) order."""
    return w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)


def weight_from_rows(rows: np.ndarray, w_shape: tuple[int, int, int, int]) -> np.ndarray:
    """The inverse of ``weight_rows``: (F, HH*WW*C/G) -> a contiguous (F, C/G, HH, WW)."""
    f, cg, kh, kw = w_shape
    return np.ascontiguousarray(rows.reshape(f, kh, kw, cg).transpose(0, 3, 1, 2))


def flat_pixels(y: np.ndarray) -> np.ndarray:
    """dout_flat: (N, F, H', W') -> (F, N*H'*W'); a view when y is channels-last in memory.

    Other layouts are copied channel-major: from (N, F, H', W') memory that copy moves whole
    image planes, where a pixel-major one would read with a stride of H'*W'.
    """
    yl = channels_last(y)
    if _merges(yl.shape[:3], yl.strides[:3]):
        return yl.reshape(-1, y.shape[1]).T  # a view
    n, f, ho, wo = y.shape
    flat = np.empty((f, n, ho, wo), dtype=y.dtype)
    by_channel = y.transpose(1, 0, 2, 3)
    over_batch(lambda s: np.copyto(flat[s], by_channel[s]), f, y.size)
    return flat.reshape(f, -1)


def _merges(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """Whether axes of these sizes and strides can be flattened into one without a copy."""
    kept = [(n, s) for n, s in zip(shape, strides) if n != 1]
    return all(s_outer == s_inner * n_inner
               for (_, s_outer), (n_inner, s_inner) in zip(kept, kept[1:]))


def pool_windows(x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair,
                 fill: float) -> list[np.ndarray]:
    """One (N, H', W', C) view per kernel offset of x (N, C, H, W) padded with ``fill``,
    in row-major offset order."""
    out_hw = _out_hw(x.shape, kernel, stride, padding, (1, 1))
    xp = pad_channels_last(x, padding, value=fill)
    return [window(xp, i, j, out_hw, stride) for i in range(kernel[0]) for j in range(kernel[1])]


def max_pool_forward(x: np.ndarray, kernel: Pair, stride: Pair,
                     padding: Pair) -> tuple[np.ndarray, np.ndarray]:
    """x (N, C, H, W) -> (out (N, C, H', W'), winner (N, H', W', C) kernel-offset index).

    The first maximum in window order wins ties (as PyTorch); padding is -inf, never a max.
    """
    views = pool_windows(x, kernel, stride, padding, -np.inf)
    out = np.empty(views[0].shape, dtype=x.dtype)
    index_type = np.uint8 if len(views) <= 256 else np.int32
    winner = np.zeros(out.shape, dtype=index_type)

    def work(s: slice) -> None:
        best, won = out[s], winner[s]
        np.copyto(best, views[0][s])
        better = np.empty(best.shape, dtype=bool)
        # each view is copied to contiguous memory first: NumPy compares strided views
        # (runs of C values) at half the speed, so a copy plus contiguous compares is cheaper
        candidate = np.empty_like(best)
        for k, view in enumerate(views[1:], start=1):
            np.copyto(candidate, view[s])
            np.greater(candidate, best, out=better)  # strictly: the first maximum keeps its win
            np.maximum(best, candidate, out=best)
            # offsets come in increasing order, so a new winner k exceeds any earlier one
            np.maximum(won, better * index_type(k), out=won)

    over_batch(work, len(out), out.size * len(views))
    nan = np.isnan(out)
    if nan.any():  # a NaN is its window's maximum (np.argmax's rule, PyTorch's); the
        # compares above never pick one, so its winner is set here: the first NaN
        first_nan = np.argmax(np.isnan(np.stack(views)), axis=0)
        winner[nan] = first_nan[nan]
    return channels_first(out), winner


def windows_tile(x_shape: tuple[int, ...], kernel: Pair, stride: Pair, padding: Pair) -> bool:
    """Whether pooling windows tile the input exactly (stride = kernel, no padding, no rest)."""
    (h, w), (kh, kw) = x_shape[2:], kernel
    return (tuple(stride) == tuple(kernel) and tuple(padding) == (0, 0)
            and h % kh == 0 and w % kw == 0)


def _overlapping(kernel: Pair, stride: Pair) -> bool:
    return stride[0] < kernel[0] or stride[1] < kernel[1]


def window_scatter(values: np.ndarray, x_shape: tuple[int, int, int, int], kernel: Pair,
                   stride: Pair, padding: Pair, winner: np.ndarray | None) -> np.ndarray:
    """Send each window's value back to its input pixels: the adjoint of pooling.

    values (N, C, H', W'). With ``winner`` (max pooling) a window's value goes to its winning
    pixel; without (average pooling) it goes to every pixel of the window (the caller has
    divided it by the window size). Returns (N, C, H, W) as a view.
    """
    n, c, h, w = x_shape
    ph, pw = padding
    vl = channels_last(values)
    # each thread copies its images to contiguous channels-last memory first when values
    # are laid out otherwise (a flatten's channels-first gradient, a view into conv2d's
    # padded dX): cheaper than the passes below reading such memory
    relayout = not vl.flags.c_contiguous
    out_hw = vl.shape[1:3]
    add = _overlapping(kernel, stride)  # disjoint windows can be written, not accumulated
    # windows that tile the input exactly write every pixel once: no zeroing needed
    tiled = windows_tile(x_shape, kernel, stride, padding)
    dxp = (np.empty if tiled else np.zeros)((n, h + 2 * ph, w + 2 * pw, c), dtype=values.dtype)
    offsets = [(i, j) for i in range(kernel[0]) for j in range(kernel[1])]

    def work(s: slice) -> None:
        part = np.ascontiguousarray(vl[s]) if relayout else vl[s]
        hit = None if winner is None else np.empty(part.shape, dtype=bool)
        for k, (i, j) in enumerate(offsets):
            target = window(dxp, i, j, out_hw, stride)[s]
            if winner is None:
                np.add(target, part, out=target) if add else np.copyto(target, part)
                continue
            np.equal(winner[s], k, out=hit)
            if add:
                target += part * hit
            else:
                np.multiply(part, hit, out=target)

    over_batch(work, n, vl.size * len(offsets))
    return channels_first(dxp[:, ph:ph + h, pw:pw + w])


def max_pool_gather(x: np.ndarray, winner: np.ndarray, kernel: Pair, stride: Pair,
                    padding: Pair) -> np.ndarray:
    """For each window of x (N, C, H, W), the entry at the recorded winning offset.

    The adjoint of max pooling's scatter; used for second derivatives through max_pool2d.
    """
    out = np.zeros(winner.shape, dtype=x.dtype)
    for k, view in enumerate(pool_windows(x, kernel, stride, padding, 0.0)):
        out += view * (winner == k)
    return channels_first(out)


def avg_pool_forward(x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair) -> np.ndarray:
    """Mean of each window of x (N, C, H, W), zero padding counted -> (N, C, H', W')."""
    views = pool_windows(x, kernel, stride, padding, 0.0)
    out = views[0].copy()
    for view in views[1:]:
        out += view
    out *= x.dtype.type(1.0 / len(views))
    return channels_first(out)


ROW_SUM_MIN_ELEMENTS = 1 << 15  # smaller sums stay with np.sum


def sum_outer_axes(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray | None:
    """np.sum(a, axes) as one GEMV, ones @ a2d, when the kept axes are the innermost in memory.

    That is conv's bias gradient dout.sum((0, 2, 3)) on channels-last memory: NumPy adds
    such rows one short row at a time, a GEMV streams them (about 10 times faster).
    Returns None when the layout or dtype does not fit.
    """
    if a.dtype not in (np.float32, np.float64) or a.size < ROW_SUM_MIN_ELEMENTS:
        return None
    memory_order = sorted(range(a.ndim), key=lambda i: -abs(a.strides[i]))
    kept = [i for i in memory_order if i not in axes]
    if not kept or memory_order[-len(kept):] != kept:
        return None
    in_memory = a.transpose(memory_order)
    if not in_memory.flags.c_contiguous:
        return None
    rows = in_memory.reshape(-1, int(np.prod([a.shape[i] for i in kept])))
    sums = matmul(np.ones((1, len(rows)), a.dtype), rows)[0]  # rows split by thread
    sums = sums.reshape([a.shape[i] for i in kept]).transpose(np.argsort(kept))
    return np.ascontiguousarray(sums)
