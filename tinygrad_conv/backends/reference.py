"""The reference backend: every kernel in plain NumPy, written the way the math reads.

This is the oracle the fast backend is tested against, and the code to read to learn what
each kernel computes. Shapes follow the user's (N, C, H, W). No loop runs over pixels: the
windowed kernels loop over the HH x WW kernel offsets, and each offset is one strided slice
of the whole batch (``window``).

X_col, the matrix of the im2col formulas, is (G, C/G*HH*WW, N*H'*W'): one column per output
pixel (n, y, x), and within a group one row per (channel, kernel row, kernel column), the
order in which ``w.reshape(F, -1)`` lays out a weight. So ``W_row @ X_col`` is the
convolution, group by group.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..geometry import Window

NAME = "reference"


def window(xp: np.ndarray, i: int, j: int, geo: Window) -> np.ndarray:
    """The strided view of padded xp (N, C, Hp, Wp) that kernel offset (i, j) sees:
    (N, C, H', W') with [n, c, y, x] = xp[n, c, y*sh + i*dh, x*sw + j*dw]."""
    (ho, wo), (sh, sw), (dh, dw) = geo.out_hw, geo.stride, geo.dilation
    top, left = i * dh, j * dw
    return xp[:, :, top:top + sh * (ho - 1) + 1:sh, left:left + sw * (wo - 1) + 1:sw]


def offsets(geo: Window) -> list[tuple[int, int]]:
    """The kernel offsets (i, j) in row-major order (a pool's winner indexes this list)."""
    return [(i, j) for i in range(geo.kernel[0]) for j in range(geo.kernel[1])]


def pad(x: np.ndarray, geo: Window, value: float = 0.0) -> np.ndarray:
    """x (N, C, H, W) -> (N, C, H + 2ph, W + 2pw), borders set to ``value``."""
    ph, pw = geo.padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def unpad(xp: np.ndarray, geo: Window) -> np.ndarray:
    """The inverse of ``pad``: the (N, C, H, W) interior of xp."""
    (ph, pw), (h, w) = geo.padding, geo.x_shape[2:]
    return xp[:, :, ph:ph + h, pw:pw + w]


def im2col(x: np.ndarray, geo: Window) -> np.ndarray:
    """x (N, C, H, W) -> X_col (G, C/G*HH*WW, N*H'*W'): every window as a column."""
    (n, c), (kh, kw), (ho, wo) = x.shape[:2], geo.kernel, geo.out_hw
    xp = pad(x, geo)
    cols = np.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
    for i, j in offsets(geo):
        cols[:, i, j] = window(xp, i, j, geo).transpose(1, 0, 2, 3)  # (C, N, H', W')
    return cols.reshape(geo.groups, -1, n * ho * wo)


def col2im(x_col: np.ndarray, geo: Window) -> np.ndarray:
    """The adjoint of im2col: (G, C/G*HH*WW, N*H'*W') -> (N, C, H, W).

    Each entry goes back to the pixel it was copied from; a pixel seen by several windows
    sums their entries.
    """
    (n, c), (kh, kw), (ho, wo) = geo.x_shape[:2], geo.kernel, geo.out_hw
    cols = x_col.reshape(c, kh, kw, n, ho, wo)
    dxp = np.zeros((n, c) + _padded_hw(geo), x_col.dtype)
    for i, j in offsets(geo):
        window(dxp, i, j, geo)[...] += cols[:, i, j].transpose(1, 0, 2, 3)
    return unpad(dxp, geo)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b: (M, K) @ (K, N) -> (M, N), or batched (G, M, K) @ (G, K, N) -> (G, M, N)."""
    return np.matmul(a, b)


def sum_axes(a: np.ndarray, axes: tuple[int, ...], keepdims: bool = False) -> np.ndarray:
    """The sum of a over ``axes`` (conv2d's db = dout.sum((0, 2, 3)) among them)."""
    return np.sum(a, axis=axes, keepdims=keepdims)


def relu(a: np.ndarray, want_mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(max(a, 0), the mask a > 0 if wanted): relu and what its backward needs."""
    return np.maximum(a, a.dtype.type(0)), (a > 0 if want_mask else None)


def relu_backward(g: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """g where the mask is set, else 0 (the gradient at exactly 0 is 0)."""
    return g * mask


def max_pool(x: np.ndarray, geo: Window) -> tuple[np.ndarray, np.ndarray]:
    """x (N, C, H, W) -> (the max of each window (N, C, H', W'), the winner: which kernel
    offset held it, an index into ``offsets``). The first maximum wins ties; padding is
    -inf, never a maximum."""
    xp = pad(x, geo, value=-np.inf)
    views = np.stack([window(xp, i, j, geo) for i, j in offsets(geo)])  # (HH*WW, N, C, H', W')
    winner = np.argmax(views, axis=0)
    return np.take_along_axis(views, winner[None], axis=0)[0], winner


def max_pool_backward(dout: np.ndarray, winner: np.ndarray, geo: Window) -> np.ndarray:
    """Each window's upstream gradient dout (N, C, H', W') goes to its winning pixel."""
    dxp = np.zeros(dout.shape[:2] + _padded_hw(geo), dout.dtype)
    for k, (i, j) in enumerate(offsets(geo)):
        window(dxp, i, j, geo)[...] += dout * (winner == k)
    return unpad(dxp, geo)


def max_pool_gather(x: np.ndarray, winner: np.ndarray, geo: Window) -> np.ndarray:
    """The adjoint of max_pool_backward: each window's entry at its winner -> (N, C, H', W')."""
    xp = pad(x, geo)
    out = np.zeros(winner.shape, x.dtype)
    for k, (i, j) in enumerate(offsets(geo)):
        out += window(xp, i, j, geo) * (winner == k)
    return out


def avg_pool(x: np.ndarray, geo: Window) -> np.ndarray:
    """The mean of each window of x (N, C, H, W), zero padding counted -> (N, C, H', W')."""
    xp = pad(x, geo)
    return sum(window(xp, i, j, geo) for i, j in offsets(geo)) / x.dtype.type(len(offsets(geo)))


def avg_pool_backward(dout: np.ndarray, geo: Window) -> np.ndarray:
    """Each window's upstream gradient dout (N, C, H', W'), shared equally by its pixels."""
    share = dout / dout.dtype.type(len(offsets(geo)))
    dxp = np.zeros(dout.shape[:2] + _padded_hw(geo), dout.dtype)
    for i, j in offsets(geo):
        window(dxp, i, j, geo)[...] += share
    return unpad(dxp, geo)


def _padded_hw(geo: Window) -> tuple[int, int]:
    (h, w), (ph, pw) = geo.x_shape[2:], geo.padding
    return h + 2 * ph, w + 2 * pw


def fused(name: str, geo: Window, dtype: np.dtype | None = None) -> Callable | None:
    """The reference backend fuses nothing: the ops run their formulas step by step."""
    return None
