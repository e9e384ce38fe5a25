"""conv2d and the three ops its backward is made of, written as the im2col formulas.

    X_col = im2col(x)                      (G, C/G*HH*WW, N*H'*W'), one column per window
    out   = W_row @ X_col + b              (F, N*H'*W') -> (N, F, H', W')
    db    = dout.sum((0, 2, 3))            conv2d_grad_bias
    dW    = dout_flat @ X_col.T            conv2d_grad_weight
    dX    = col2im(W_row.T @ dout_flat)    conv2d_grad_input

W_row is the weight (F, C/G, HH, WW) with one row per filter, split into G groups, and
dout_flat the upstream gradient (N, F, H', W') with one column per output pixel. Each
product runs group by group (a batched matmul over the leading G axis).

The code below is those formulas, run on the kernels of the backend in use
(``tinygrad_conv.backends``). A backend may fuse a whole formula, or compute it by another
algorithm (the fast one makes X_col a few images at a time and multiplies each block at
once, never holding it whole, or runs Winograd's minimal filtering for 3x3 convs); it then
says so through ``fused(...)`` and the op calls that instead of the step-by-step lines. The
op's ``algorithm`` setting names what ran (graph drawings show it).

conv2d is bilinear in (x, W), so each gradient op is bilinear too and its own backward is
made of conv2d and the other gradient op: that is what gives second derivatives.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..backends import kernels
from ..engine import Op, register
from ..geometry import Window
from ..tensor import Tensor
from .reduce import _expand_back


class _ConvOp(Op):
    """An op that slides a window: its geometry is kept beside the displayed settings."""

    __slots__ = ("window",)

    def __init__(self, window: Window, **saved: Any) -> None:
        super().__init__(**window.settings())
        self.window = window
        self.__dict__.update(saved)  # arrays for the forward, released after the backward

    def formula(self, name: str, dtype: np.dtype) -> Any:
        """The backend's fused version of formula ``name`` (None: run it step by step);
        records the algorithm that computes it in the op's settings."""
        fused = kernels().fused(name, self.window, dtype)
        self.attrs["algorithm"] = getattr(fused, "algorithm", "im2col")
        return fused


def weight_rows(w: np.ndarray, groups: int) -> np.ndarray:
    """W_row: weight (F, C/G, HH, WW) -> (G, F/G, C/G*HH*WW), one row per filter."""
    return w.reshape(groups, w.shape[0] // groups, -1)


def flat_pixels(dout: np.ndarray, groups: int) -> np.ndarray:
    """dout_flat: (N, F, H', W') -> (G, F/G, N*H'*W'), one column per output pixel."""
    n, f = dout.shape[:2]
    return dout.transpose(1, 0, 2, 3).reshape(groups, f // groups, -1)


def image_of(out_flat: np.ndarray, window: Window) -> np.ndarray:
    """The inverse of flat_pixels: (G, F/G, N*H'*W') -> (N, F, H', W')."""
    n, f, ho, wo = window.out_shape
    return out_flat.reshape(f, n, ho, wo).transpose(1, 0, 2, 3)


@register("conv2d")
class Conv2d(_ConvOp):
    """x (N, C, H, W), weight (F, C/G, HH, WW), optional bias (F,) -> (N, F, H', W')."""

    def forward(self, x, w, b=None):
        K, window = kernels(), self.window
        wants_dw = len(self.needs_grad) > 1 and self.needs_grad[1]
        fused = self.formula("conv2d_forward", x.dtype)
        if fused is not None:
            out, x_col = fused(x, w, b, window)
        else:
            x_col = K.im2col(x, window)                                 # X_col = im2col(x)
            out = K.matmul(weight_rows(w, window.groups), x_col)       # W_row @ X_col
            if b is not None:
                out = out + b.reshape(window.groups, -1, 1)            # + b
            out = image_of(out, window)
        self.x_col = x_col if wants_dw else None  # dW reuses the forward's X_col
        return out

    def backward(self, grad):
        x, w = self.inputs[0], self.inputs[1]
        window, wants = self.window, self.needs_grad
        dx = conv2d_grad_input(grad, w, window) if wants[0] else None
        dw = conv2d_grad_weight(grad, x, window, x_col=self.x_col) if wants[1] else None
        if len(self.inputs) == 2:
            return dx, dw
        return dx, dw, (conv2d_grad_bias(grad) if wants[2] else None)


@register("conv2d_grad_input")
class Conv2dGradInput(_ConvOp):
    """dX = col2im(W_row.T @ dout_flat): inputs (dout, weight) -> x-shaped."""

    def forward(self, dout, w):
        K, window = kernels(), self.window
        fused = self.formula("conv2d_grad_input", dout.dtype)
        if fused is not None:
            return fused(dout, w, window)
        w_row_t = weight_rows(w, window.groups).transpose(0, 2, 1)        # W_row.T
        return K.col2im(K.matmul(w_row_t, flat_pixels(dout, window.groups)), window)

    def backward(self, grad):
        dout, w = self.inputs
        d_dout = Conv2d(self.window).apply(grad, w) if self.needs_grad[0] else None
        d_w = conv2d_grad_weight(dout, grad, self.window) if self.needs_grad[1] else None
        return d_dout, d_w


@register("conv2d_grad_weight")
class Conv2dGradWeight(_ConvOp):
    """dW = dout_flat @ X_col.T: inputs (dout, x) -> weight-shaped.

    ``x_col`` is the forward's X_col (as that backend's conv2d made it), if it was kept.
    """

    def forward(self, dout, x):
        K, window = kernels(), self.window
        x_col, self.x_col = self.__dict__.get("x_col"), None  # used once, then freed
        fused = self.formula("conv2d_grad_weight", dout.dtype)
        if fused is not None:
            return fused(dout, x, x_col, window)
        if not isinstance(x_col, np.ndarray):
            x_col = K.im2col(x, window)                                 # X_col = im2col(x)
        dout_flat = flat_pixels(dout, window.groups)
        dw = K.matmul(dout_flat, x_col.transpose(0, 2, 1))             # dout_flat @ X_col.T
        return dw.reshape(window.w_shape)

    def backward(self, grad):
        dout, x = self.inputs
        d_dout = Conv2d(self.window).apply(x, grad) if self.needs_grad[0] else None
        d_x = conv2d_grad_input(dout, grad, self.window) if self.needs_grad[1] else None
        return d_dout, d_x


@register("conv2d_grad_bias")
class Conv2dGradBias(Op):
    """db = dout.sum((0, 2, 3)): input dout (N, F, H', W') -> (F,)."""

    def forward(self, dout):
        return kernels().sum_axes(dout, (0, 2, 3))

    def backward(self, grad):
        return (_expand_back(grad, self.inputs[0].shape, (0, 2, 3), keepdims=False),)


def conv2d_grad_bias(dout: Tensor) -> Tensor:
    """The bias gradient of conv2d for upstream ``dout`` (N, F, H', W') -> (F,)."""
    return Conv2dGradBias().apply(dout)


def conv2d_grad_input(dout: Tensor, w: Tensor, window: Window) -> Tensor:
    """The input gradient of conv2d for upstream ``dout`` (N, F, H', W') -> (N, C, H, W)."""
    return Conv2dGradInput(window).apply(dout, w)


def conv2d_grad_weight(dout: Tensor, x: Tensor, window: Window, x_col: Any = None) -> Tensor:
    """The weight gradient of conv2d for upstream ``dout`` -> (F, C/G, HH, WW); ``x_col`` is
    the forward's X_col when it was kept (it is then not made again)."""
    return Conv2dGradWeight(window, x_col=x_col).apply(dout, x)


def check_conv2d_args(x: Tensor, w: Tensor, b: Tensor | None, stride: tuple[int, int],
                      padding: tuple[int, int], dilation: tuple[int, int],
                      groups: int) -> Window:
    """Validate conv2d's arguments; return the convolution's Window."""
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    for label, t in (("input", x), ("weight", w)):
        if t.dtype.kind != "f":
            raise TypeError(f"conv2d: {label} must be float, got dtype {t.dtype}; use .float()")
    b_shape = None if b is None else b.shape
    return _conv2d_window(x.shape, w.shape, b_shape, stride, padding, dilation, int(groups))


@functools.lru_cache(maxsize=256)  # a model calls it with the same few shapes every step
def _conv2d_window(x_shape: tuple[int, ...], w_shape: tuple[int, ...],
                   b_shape: tuple[int, ...] | None, stride: tuple[int, int],
                   padding: tuple[int, int], dilation: tuple[int, int],
                   groups: int) -> Window:
    """check_conv2d_args's shape checks (a frozen Window, so the cache can hand it out)."""
    if len(x_shape) != 4:
        raise ValueError(f"conv2d: expected a 4-D input (N, C, H, W), got shape {x_shape}")
    if len(w_shape) != 4:
        raise ValueError(
            f"conv2d: expected a 4-D weight (F, C/groups, HH, WW), got shape {w_shape}"
        )
    n, c, h, wd = x_shape
    f, c_per_group, kh, kw = w_shape
    if c % groups or f % groups:
        raise ValueError(
            f"conv2d: groups={groups} must divide both the input channels ({c}) and the "
            f"output channels ({f})"
        )
    if c_per_group * groups != c:
        raise ValueError(
            f"conv2d: input of shape {x_shape} has {c} channels but weight of shape {w_shape} "
            f"expects {c_per_group * groups} (weight.shape[1] * groups = {c_per_group} * "
            f"{groups}); expected input (N, {c_per_group * groups}, H, W)"
        )
    if kh < 1 or kw < 1:
        raise ValueError(f"conv2d: the kernel must be at least 1x1, got weight of shape {w_shape}")
    if b_shape is not None and b_shape != (f,):
        raise ValueError(f"conv2d: bias must have shape ({f},) for weight {w_shape}, got {b_shape}")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(
            f"conv2d: stride and dilation must be >= 1 and padding >= 0, got stride={stride}, "
            f"padding={padding}, dilation={dilation}"
        )
    span = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    padded = (h + 2 * padding[0], wd + 2 * padding[1])
    if span[0] > padded[0] or span[1] > padded[1]:
        raise ValueError(
            f"conv2d: kernel {kh}x{kw} (dilation {dilation}, so spanning {span[0]}x{span[1]}) "
            f"is larger than the padded input {padded[0]}x{padded[1]} (input {x_shape}, "
            f"padding {padding})"
        )
    return Window(x_shape=tuple(x_shape), kernel=(kh, kw), stride=tuple(stride),
                  padding=tuple(padding), dilation=tuple(dilation), groups=groups, filters=f)
