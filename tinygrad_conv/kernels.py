"""Array kernels for convolution and pooling: im2col, col2im, pooling windows.

Layout. Every kernel here works "channels first": on arrays laid out (C, N, H, W) in memory.
The ops hand out their (N, C, H, W) results as transposed *views* of such arrays, so a chain
conv -> relu -> pool -> conv never copies to change layout, and the GEMM output
(F, N*H'*W') is the next layer's input without a transpose copy.

Loops run over kernel offsets (HH x WW of them, each one strided slice of the whole batch),
never over output pixels.
"""

from __future__ import annotations

import numpy as np


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """PyTorch's rule: 1 + (size + 2*pad - dilation*(kernel-1) - 1) // stride."""
    return 1 + (size + 2 * pad - dilation * (kernel - 1) - 1) // stride


def channels_first(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> a (C, N, H, W) view (no copy)."""
    return x.transpose(1, 0, 2, 3)


def pad_channels_first(x: np.ndarray, ph: int, pw: int, value: float = 0.0) -> np.ndarray:
    """x (N, C, H, W) -> (C, N, H + 2ph, W + 2pw), borders filled with ``value``.

    With no padding this is a view; otherwise one copy into a fresh buffer.
    """
    xc = channels_first(x)
    if ph == 0 and pw == 0:
        return xc
    c, n, h, w = xc.shape
    out = np.empty((c, n, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    out[:, :, :ph] = value
    out[:, :, ph + h:] = value
    out[:, :, ph:ph + h, :pw] = value
    out[:, :, ph:ph + h, pw + w:] = value
    out[:, :, ph:ph + h, pw:pw + w] = xc
    return out


def window(xp: np.ndarray, i: int, j: int, out_hw: tuple[int, int],
           stride: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> np.ndarray:
    """The strided view of padded xp (C, N, Hp, Wp) that kernel offset (i, j) sees:
    (C, N, H', W'), element [c, n, y, x] = xp[c, n, i*dh + y*sh, j*dw + x*sw]."""
    (ho, wo), (sh, sw), (dh, dw) = out_hw, stride, dilation
    top, left = i * dh, j * dw
    return xp[:, :, top:top + sh * (ho - 1) + 1:sh, left:left + sw * (wo - 1) + 1:sw]


def im2col(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
           padding: tuple[int, int], dilation: tuple[int, int]) -> np.ndarray:
    """x (N, C, H, W) -> X_col (C*HH*WW, N*H'*W').

    Row (c, i, j) holds input channel c seen at kernel offset (i, j); column (n, y, x) is one
    output position. One strided copy per kernel offset.
    """
    n, c, h, w = x.shape
    kh, kw = kernel
    ho = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    xp = pad_channels_first(x, *padding)
    cols = np.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = window(xp, i, j, (ho, wo), stride, dilation)
    return cols.reshape(c * kh * kw, n * ho * wo)


def col2im(cols: np.ndarray, x_shape: tuple[int, int, int, int], kernel: tuple[int, int],
           stride: tuple[int, int], padding: tuple[int, int],
           dilation: tuple[int, int]) -> np.ndarray:
    """The adjoint of im2col: X_col-shaped (C*HH*WW, N*H'*W') -> (N, C, H, W).

    Each column entry is added back to the input pixel it was copied from; pixels seen by
    several windows sum their contributions. One strided add per kernel offset. The result
    is a channels-first view.
    """
    n, c, h, w = x_shape
    kh, kw = kernel
    (ph, pw) = padding
    ho = conv_output_size(h, kh, stride[0], ph, dilation[0])
    wo = conv_output_size(w, kw, stride[1], pw, dilation[1])
    cols6 = cols.reshape(c, kh, kw, n, ho, wo)
    dxp = np.zeros((c, n, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            window(dxp, i, j, (ho, wo), stride, dilation)[...] += cols6[:, i, j]
    return channels_first(dxp[:, :, ph:ph + h, pw:pw + w])


def grouped_matmul(a: np.ndarray, b: np.ndarray, groups: int) -> np.ndarray:
    """Block-diagonal product: a (G*M, K) @ b (G*K, P) -> (G*M, P), group g with group g.

    With one group it is a plain GEMM; the transposed-view operands that conv's backward passes
    go to BLAS without copies.
    """
    if groups == 1:
        return a @ b
    m, k = a.shape[0] // groups, a.shape[1]
    out = np.matmul(a.reshape(groups, m, k), b.reshape(groups, k, b.shape[1]))
    return out.reshape(groups * m, b.shape[1])


def grouped_matmul_nt(a: np.ndarray, b: np.ndarray, groups: int) -> np.ndarray:
    """Block-diagonal a @ b.T: a (G*M, P), b (G*K, P) -> (G*M, K) (BLAS reads b transposed)."""
    if groups == 1:
        return a @ b.T
    m, k, p = a.shape[0] // groups, b.shape[0] // groups, a.shape[1]
    out = np.matmul(a.reshape(groups, m, p), b.reshape(groups, k, p).transpose(0, 2, 1))
    return out.reshape(groups * m, k)


def flat_channels_first(y: np.ndarray) -> np.ndarray:
    """(N, F, H', W') -> (F, N*H'*W'): a view when y is already channels-first in memory."""
    return channels_first(y).reshape(y.shape[1], -1)


def pool_windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int], fill: float):
    """((H', W'), views): one (C, N, H', W') view per kernel offset of x (N, C, H, W)
    padded with ``fill``, in row-major offset order."""
    _, _, h, w = x.shape
    ho = conv_output_size(h, kernel[0], stride[0], padding[0], 1)
    wo = conv_output_size(w, kernel[1], stride[1], padding[1], 1)
    xp = pad_channels_first(x, *padding, value=fill)
    offsets = [(i, j) for i in range(kernel[0]) for j in range(kernel[1])]
    return (ho, wo), [window(xp, i, j, (ho, wo), stride) for i, j in offsets]


def max_pool_forward(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
                     padding: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """x (N, C, H, W) -> (out (N, C, H', W'), winner (C, N, H', W') uint8 kernel-offset index).

    The first maximum in window order wins ties (as PyTorch); padding is -inf, never a max.
    """
    _, views = pool_windows(x, kernel, stride, padding, -np.inf)
    out = views[0].copy()
    winner = np.zeros(out.shape, dtype=np.uint8)
    better = np.empty(out.shape, dtype=bool)
    for k, view in enumerate(views[1:], start=1):
        np.greater(view, out, out=better)
        np.copyto(out, view, where=better)
        winner[better] = k
    return channels_first(out), winner


def window_scatter(values: np.ndarray, x_shape: tuple[int, int, int, int],
                   kernel: tuple[int, int], stride: tuple[int, int],
                   padding: tuple[int, int], winner: np.ndarray | None) -> np.ndarray:
    """Send each window's value back to its input pixels: the adjoint of pooling.

    values (N, C, H', W'). With ``winner`` (max pooling) a window's value goes to its winning
    pixel; without (average pooling) it goes to every pixel of the window, already divided by
    the caller. Returns (N, C, H, W), a channels-first view.
    """
    n, c, h, w = x_shape
    (ph, pw) = padding
    vc = channels_first(values)
    ho, wo = vc.shape[2:]
    dxp = np.zeros((c, n, h + 2 * ph, w + 2 * pw), dtype=values.dtype)
    k = 0
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            target = window(dxp, i, j, (ho, wo), stride)
            target += vc if winner is None else np.where(winner == k, vc, 0)
            k += 1
    return channels_first(dxp[:, :, ph:ph + h, pw:pw + w])


def max_pool_gather(x: np.ndarray, winner: np.ndarray, kernel: tuple[int, int],
                    stride: tuple[int, int], padding: tuple[int, int]) -> np.ndarray:
    """Pick, for each window of x (N, C, H, W), the entry at the recorded winning offset.

    The adjoint of max pooling's scatter; used for second derivatives through max_pool2d.
    """
    _, views = pool_windows(x, kernel, stride, padding, 0.0)
    out = np.zeros(winner.shape, dtype=x.dtype)
    for k, view in enumerate(views):
        np.copyto(out, view, where=winner == k)
    return channels_first(out)


def avg_pool_forward(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
                     padding: tuple[int, int]) -> np.ndarray:
    """Mean of each window of x (N, C, H, W), zero padding counted -> (N, C, H', W')."""
    _, views = pool_windows(x, kernel, stride, padding, 0.0)
    out = views[0].copy()
    for view in views[1:]:
        out += view
    out *= x.dtype.type(1.0 / len(views))
    return channels_first(out)
