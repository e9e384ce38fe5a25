"""max_pool2d and avg_pool2d, each with the op that is its backward.

Pooling's backward is linear in the upstream gradient, so each backward is an op whose own
backward is the forward pooling again (max pooling gathers at the recorded winners): that is
what makes second derivatives flow through pools. The array work is the backend's
(``tinygrad_conv.backends``): ``max_pool`` returns each window's maximum and its winner, the
index of the kernel offset that held it.
"""

from __future__ import annotations

import functools

from ..backends import kernels
from ..engine import register
from ..geometry import Window
from ..tensor import Tensor
from .conv import _ConvOp


@register("max_pool2d")
class MaxPool2d(_ConvOp):
    def forward(self, x):
        out, winner = kernels().max_pool(x, self.window)
        self.winner = winner if any(self.needs_grad) else None
        return out

    def backward(self, grad):
        return (MaxPool2dBackward(self.window, winner=self.winner).apply(grad),)


@register("max_pool2d_backward")
class MaxPool2dBackward(_ConvOp):
    """Each window's upstream gradient goes to the pixel that won the max."""

    def forward(self, grad):
        return kernels().max_pool_backward(grad, self.winner, self.window)

    def backward(self, grad):
        return (MaxPool2dGather(self.window, winner=self.winner).apply(grad),)


@register("max_pool2d_gather")
class MaxPool2dGather(_ConvOp):
    """The adjoint of max_pool2d_backward: read each window's winning pixel."""

    def forward(self, x):
        return kernels().max_pool_gather(x, self.winner, self.window)

    def backward(self, grad):
        return (MaxPool2dBackward(self.window, winner=self.winner).apply(grad),)


@register("avg_pool2d")
class AvgPool2d(_ConvOp):
    def forward(self, x):
        return kernels().avg_pool(x, self.window)

    def backward(self, grad):
        return (AvgPool2dBackward(self.window).apply(grad),)


@register("avg_pool2d_backward")
class AvgPool2dBackward(_ConvOp):
    """Each window's upstream gradient, divided by the window size, to every pixel in it."""

    def forward(self, grad):
        return kernels().avg_pool_backward(grad, self.window)

    def backward(self, grad):
        return (AvgPool2d(self.window).apply(grad),)


def check_pool_args(name: str, x: Tensor, kernel: tuple[int, int],
                    stride: tuple[int, int] | None, padding: tuple[int, int]) -> Window:
    """Validate a pooling call; return its Window. stride defaults to the kernel."""
    window = _pool_window(name, x.shape, kernel, stride, padding)
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: input must be float, got dtype {x.dtype}; use .float()")
    return window


@functools.lru_cache(maxsize=256)  # a model pools the same few shapes every step
def _pool_window(name: str, x_shape: tuple[int, ...], kernel: tuple[int, int],
                 stride: tuple[int, int] | None, padding: tuple[int, int]) -> Window:
    """check_pool_args's shape checks (a frozen Window, so the cache can hand it out)."""
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
    return Window(x_shape=tuple(x_shape), kernel=tuple(kernel), stride=tuple(stride),
                  padding=tuple(padding))
