"""conv2d's three passes on the fast backend, by each algorithm it has.

- ``im2col``: the formulas of ops/conv.py, fused. X_col is made a few images at a time in
  cache-sized blocks and multiplied there (kernels.py), for any convolution without groups.
- ``winograd2`` and ``winograd4``: Winograd's F(2x2, 3x3) and F(4x4, 3x3) (winograd.py),
  2.25x and 4x fewer multiplies, for float32 3x3 stride-1 undilated convolutions.
- ``onednn``: oneDNN's own direct convolutions (onednn_conv.py), JIT-compiled, for float32
  convolutions of any window where oneDNN is installed.

Which one runs for a given shape is decided in autotune.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...geometry import Window
from . import kernels, onednn_conv, winograd

PASSES = ("conv2d_forward", "conv2d_grad_input", "conv2d_grad_weight")


def kernel_settings(geo: Window) -> dict[str, object]:
    return dict(kernel=geo.kernel, stride=geo.stride, padding=geo.padding,
                dilation=geo.dilation)


def im2col_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                   geo: Window) -> tuple[np.ndarray, kernels.Columns]:
    """W_row @ X_col + b as (N, F, H', W'), X_col made and multiplied block by block; also
    returns the padded x those blocks came from, for im2col_grad_weight to reuse."""
    out_t, columns = kernels.im2col_matmul(x, kernels.weight_rows(w), b, **kernel_settings(geo))
    n, (ho, wo) = x.shape[0], geo.out_hw
    return kernels.channels_first(out_t.reshape(n, ho, wo, w.shape[0])), columns


def im2col_grad_weight(dout: np.ndarray, x: np.ndarray, saved: object,
                       geo: Window) -> np.ndarray:
    """dW = dout_flat @ X_col.T, X_col remade block by block from ``saved`` (what
    im2col_forward returned) or from x."""
    columns = saved if isinstance(saved, kernels.Columns) else None
    dw_flat, _ = kernels.im2col_grad_weight(kernels.flat_pixels(dout), x, **kernel_settings(geo),
                                            columns=columns)
    return kernels.weight_from_rows(dw_flat, geo.w_shape)


def im2col_grad_input(dout: np.ndarray, w: np.ndarray, geo: Window) -> np.ndarray:
    """dX = col2im(W_row.T @ dout_flat), each block of the product added as it is made."""
    return kernels.col2im_of_product(kernels.weight_rows(w), kernels.flat_pixels(dout),
                                     geo.x_shape, **kernel_settings(geo))


def _winograd_passes(m: int) -> dict[str, Callable]:
    def forward(x, w, b, geo):
        return winograd.conv2d(x, w, b, geo.padding, m), None

    def grad_input(dout, w, geo):
        return winograd.conv2d_grad_input(dout, w, geo.x_shape, geo.padding, m)

    def grad_weight(dout, x, saved, geo):
        return winograd.conv2d_grad_weight(dout, x, geo.padding, m)

    return dict(zip(PASSES, (forward, grad_input, grad_weight)))


class Pass:
    """One pass of one algorithm: called as the seam's fused formula of that name, and
    ``algorithm`` names it (the ops show it in graph drawings)."""

    def __init__(self, algorithm: str, fn: Callable) -> None:
        self.algorithm, self._fn = algorithm, fn
        self.__doc__ = fn.__doc__

    def __call__(self, *args):
        return self._fn(*args)

    def __repr__(self) -> str:
        return f"<{self.algorithm} {self._fn.__name__}>"


@dataclass(frozen=True)
class Algorithm:
    """A way to compute conv2d: where it applies, and its three passes by name."""

    name: str
    applies: Callable[[Window, np.dtype], bool]
    passes: dict[str, Pass]


def _algorithm(name: str, applies: Callable, fns: dict[str, Callable]) -> Algorithm:
    return Algorithm(name, applies, {p: Pass(name, fn) for p, fn in fns.items()})


def _ungrouped(geo: Window, dtype: np.dtype) -> bool:
    return geo.groups == 1


def _onednn_passes() -> dict[str, Callable]:
    def forward(x, w, b, geo):
        return onednn_conv.conv2d(x, w, b, geo), None

    def grad_input(dout, w, geo):
        return onednn_conv.conv2d_grad_input(dout, w, geo)

    def grad_weight(dout, x, saved, geo):
        return onednn_conv.conv2d_grad_weight(dout, x, geo)

    return dict(zip(PASSES, (forward, grad_input, grad_weight)))


ALGORITHMS: dict[str, Algorithm] = {
    "im2col": _algorithm("im2col", _ungrouped, dict(zip(PASSES, (
        im2col_forward, im2col_grad_input, im2col_grad_weight)))),
    "winograd2": _algorithm("winograd2", winograd.supports, _winograd_passes(2)),
    "winograd4": _algorithm("winograd4", winograd.supports, _winograd_passes(4)),
    "onednn": _algorithm("onednn", onednn_conv.supports, _onednn_passes()),
}
