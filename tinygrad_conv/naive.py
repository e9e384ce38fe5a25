"""Slow, obviously-correct loop references for convolution and pooling. Tests only.

Written the way the textbook states the math, one output pixel at a time, so that the fast
im2col kernels have an independent oracle. Nothing in the library calls these.
"""

from __future__ import annotations

import numpy as np


def _pad(x: np.ndarray, ph: int, pw: int, value: float = 0.0) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def conv2d(x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """out[n, f, i, j] = b[f] + sum_{c,a,e} w[f, c, a, e] * xpad[n, g*Cg + c, i*s + a*d, j*s + e*d]
    where g is f's group and Cg = C / groups."""
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho, wo = _out(h, kh, sh, ph, dh), _out(wd, kw, sw, pw, dw)
    xp = _pad(x.astype(np.float64), ph, pw)
    out = np.zeros((n, f, ho, wo))
    fg = f // groups
    for img in range(n):
        for o in range(f):
            first = (o // fg) * cg
            for i in range(ho):
                for j in range(wo):
                    patch = xp[img, first:first + cg, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                               j * sw:j * sw + dw * (kw - 1) + 1:dw]
                    out[img, o, i, j] = np.sum(patch * w[o])
            if b is not None:
                out[img, o] += b[o]
    return out


def conv2d_backward(dout, x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """(dx, dw, db) by sending each output pixel's gradient back through its window."""
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw_) = stride, padding, dilation
    xp = _pad(x.astype(np.float64), ph, pw)
    dxp = np.zeros_like(xp)
    dw = np.zeros(w.shape)
    fg = f // groups
    for img in range(n):
        for o in range(f):
            first = (o // fg) * cg
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    rows = slice(i * sh, i * sh + dh * (kh - 1) + 1, dh)
                    cols = slice(j * sw, j * sw + dw_ * (kw - 1) + 1, dw_)
                    g = dout[img, o, i, j]
                    dw[o] += g * xp[img, first:first + cg, rows, cols]
                    dxp[img, first:first + cg, rows, cols] += g * w[o]
    dx = dxp[:, :, ph:ph + h, pw:pw + wd]
    return dx, dw, dout.sum(axis=(0, 2, 3))


def conv2d_input_grad_rotated(dout, w, x_shape, stride=(1, 1), padding=(0, 0)):
    """dX the way the first tutorial derives it (groups 1, dilation 1): dilate dout by the
    stride, pad it by k - 1 - padding, and convolve (stride 1) with the kernel rotated 180
    degrees and its in/out channels swapped."""
    n, c, h, wd = x_shape
    f, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    ho, wo = dout.shape[2:]
    dilated = np.zeros((n, f, (ho - 1) * sh + 1, (wo - 1) * sw + 1))
    dilated[:, :, ::sh, ::sw] = dout
    # leftover rows/cols the forward never reached (floor in the output size) get zero grad
    extra_h = h + 2 * ph - kh - (ho - 1) * sh
    extra_w = wd + 2 * pw - kw - (wo - 1) * sw
    framed = np.pad(
        dilated, ((0, 0), (0, 0), (kh - 1, kh - 1 + extra_h), (kw - 1, kw - 1 + extra_w))
    )
    rotated = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # (C, F, kh, kw)
    full = conv2d(framed, rotated)  # gradient w.r.t. the padded input
    return full[:, :, ph:ph + h, pw:pw + wd]


def _window(xp, i, j, kernel, stride):
    top, left = i * stride[0], j * stride[1]
    return xp[:, :, top:top + kernel[0], left:left + kernel[1]]


def _pool(x, kernel, stride, padding, fill, reduce):
    stride = stride or kernel
    xp = _pad(x.astype(np.float64), *padding, value=fill)
    n, c = x.shape[:2]
    ho = _out(x.shape[2], kernel[0], stride[0], padding[0], 1)
    wo = _out(x.shape[3], kernel[1], stride[1], padding[1], 1)
    out = np.zeros((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = reduce(_window(xp, i, j, kernel, stride), axis=(2, 3))
    return out


def max_pool2d(x, kernel=(2, 2), stride=None, padding=(0, 0)):
    """Max over each window; padding is -inf."""
    return _pool(x, kernel, stride, padding, -np.inf, np.max)


def avg_pool2d(x, kernel=(2, 2), stride=None, padding=(0, 0)):
    """Mean over each window; zero padding counts in the mean."""
    return _pool(x, kernel, stride, padding, 0.0, np.mean)
