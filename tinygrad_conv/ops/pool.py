"""max_pool2d and avg_pool2d, each with the op that is its backward.

Pooling's backward is linear in the upstream gradient, so each backward is an op whose own
backward is the forward pooling again (max pooling gathers at the recorded winners): that is
what makes second derivatives flow through pools.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .. import kernels
from ..engine import Op, register
from ..tensor import Tensor


def _window(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: attrs[k] for k in ("kernel", "stride", "padding")}


@register("max_pool2d")
class MaxPool2d(Op):
    def forward(self, x):
        out, winner = kernels.max_pool_forward(x, **_window(self.attrs))
        if any(self.needs_grad):
            self.winner, self.x_shape = winner, x.shape
        return out

    def backward(self, g):
        return (_routed(MaxPoolScatter, self.attrs, self.winner, x_shape=self.x_shape).apply(g),)


@register("max_pool2d_backward")
class MaxPoolScatter(Op):
    """Each window's upstream gradient goes to the pixel that won the max."""

    def forward(self, g):
        return kernels.window_scatter(g, self.attrs["x_shape"], **_window(self.attrs),
                                      winner=self.winner)

    def backward(self, gg):
        return (_routed(MaxPoolGather, self.attrs, self.winner).apply(gg),)


@register("max_pool2d_gather")
class MaxPoolGather(Op):
    """The adjoint of MaxPoolScatter: read each window's winning pixel."""

    def forward(self, x):
        return kernels.max_pool_gather(x, self.winner, **_window(self.attrs))

    def backward(self, g):
        return (_routed(MaxPoolScatter, self.attrs, self.winner).apply(g),)


def _routed(op_class: type[Op], attrs: dict[str, Any], winner: np.ndarray, **extra: Any) -> Op:
    """A max-pool routing op with the forward's winners (kept off attrs: released after use)."""
    op = op_class(**{**attrs, **extra})
    op.winner = winner
    return op


@register("avg_pool2d")
class AvgPool2d(Op):
    def forward(self, x):
        self.x_shape = x.shape
        return kernels.avg_pool_forward(x, **_window(self.attrs))

    def backward(self, g):
        return (AvgPoolScatter(**self.attrs, x_shape=self.x_shape).apply(g),)


@register("avg_pool2d_backward")
class AvgPoolScatter(Op):
    """Each window's upstream gradient, divided by the window size, to every pixel in it."""

    def forward(self, g):
        a = self.attrs
        share = g * g.dtype.type(1.0 / (a["kernel"][0] * a["kernel"][1]))
        return kernels.window_scatter(share, a["x_shape"], **_window(a), winner=None)

    def backward(self, gg):
        settings = {k: v for k, v in self.attrs.items() if k != "x_shape"}
        return (AvgPool2d(**settings).apply(gg),)


def check_pool_args(name: str, x: Tensor, kernel: tuple[int, int],
                    stride: tuple[int, int] | None, padding: tuple[int, int]) -> dict[str, Any]:
    """Validate a pooling call; return the op's settings. stride defaults to the kernel."""
    settings = _pool_settings(name, x.shape, kernel, stride, padding)
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: input must be float, got dtype {x.dtype}; use .float()")
    return dict(settings)


@functools.lru_cache(maxsize=256)  # a model pools the same few shapes every step
def _pool_settings(name: str, x_shape: tuple[int, ...], kernel: tuple[int, int],
                   stride: tuple[int, int] | None,
                   padding: tuple[int, int]) -> dict[str, Any]:
    """check_pool_args's shape checks and settings (callers copy the returned dict)."""
    if len(x_shape) != 4:
        raise ValueError(f"{name}: expected a 4-D input (N, C, H, W), got shape {x_shape}")
    stride = kernel if stride is None else stride
    if min(kernel) < 1 or min(stride) < 1:
        raise ValueError(f"{name}: kernel_size and stride must be >= 1, got {kernel}, {stride}")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2 or min(padding) < 0:
        raise ValueError(
            f"{name}: padding {padding} must be between 0 and half the kernel size {kernel}"
        )
    h, w = x_shape[2] + 2 * padding[0], x_shape[3] + 2 * padding[1]
    if kernel[0] > h or kernel[1] > w:
        raise ValueError(
            f"{name}: kernel {kernel} is larger than the padded input {h}x{w} (input {x_shape})"
        )
    return dict(kernel=kernel, stride=stride, padding=padding)
