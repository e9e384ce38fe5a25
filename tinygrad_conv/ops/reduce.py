"""Reductions: sum, mean, max, min over axes."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import kernels
from ..engine import Op, register
from ..tensor import Tensor
from .movement import broadcast_to, reshape


def _normalize_axes(axis: Any, shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    ndim = len(shape)
    if axis is None:
        return tuple(range(ndim))
    if type(axis) is int and -ndim <= axis < ndim:  # the common case (a bias grad's sum)
        return (axis % ndim,)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for a in axes:
        if not -max(ndim, 1) <= a < max(ndim, 1):
            raise ValueError(f"{name}: axis {a} is out of range for a tensor of shape {shape}")
    return tuple(sorted(int(a) % max(ndim, 1) for a in axes)) if ndim else ()


def _expand_back(g: Tensor, shape: tuple[int, ...], axes: tuple[int, ...],
                 keepdims: bool) -> Tensor:
    """Broadcast a reduced gradient back over the reduced axes of ``shape``."""
    if not keepdims:
        kept = tuple(1 if i in axes else s for i, s in enumerate(shape))
        g = reshape(g, kept)
    return broadcast_to(g, shape)


class _Reduce(Op):
    def axes_for(self, a: np.ndarray) -> tuple[int, ...]:
        self.in_shape = a.shape
        self.axes = _normalize_axes(self.attrs["axis"], a.shape, self.name)
        return self.axes


@register("sum")
class Sum(_Reduce):
    def forward(self, a):
        return kernels().sum_axes(a, self.axes_for(a), self.attrs["keepdims"])

    def backward(self, g):
        return (_expand_back(g, self.in_shape, self.axes, self.attrs["keepdims"]),)


@register("mean")
class Mean(_Reduce):
    def forward(self, a):
        return np.mean(a, axis=self.axes_for(a), keepdims=self.attrs["keepdims"])

    def backward(self, g):
        count = int(np.prod([self.in_shape[i] for i in self.axes]))
        return (_expand_back(g, self.in_shape, self.axes, self.attrs["keepdims"]) / count,)


class _Extreme(_Reduce):
    """max/min: the gradient is split evenly among tied extremes (as torch.amax)."""

    reduce_fn = staticmethod(np.max)

    def forward(self, a):
        if a.size == 0:
            raise ValueError(f"{self.name}: cannot reduce an empty tensor of shape {a.shape}")
        axes = self.axes_for(a)
        out = self.reduce_fn(a, axis=axes, keepdims=True)
        if any(self.needs_grad):
            hits = a == out
            self.share = hits / hits.sum(axis=axes, keepdims=True, dtype=a.dtype)
        return out if self.attrs["keepdims"] else np.squeeze(out, axis=axes)

    def backward(self, g):
        spread = _expand_back(g, self.in_shape, self.axes, self.attrs["keepdims"])
        return (spread * Tensor._from_array(self.share.astype(g.dtype, copy=False)),)


@register("max")
class Max(_Extreme):
    reduce_fn = staticmethod(np.max)


@register("min")
class Min(_Extreme):
    reduce_fn = staticmethod(np.min)


def sum(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum over ``axis`` (an int, a tuple, or None for all)."""
    return Sum(axis=axis, keepdims=keepdims).apply(a)


def mean(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis`` (an int, a tuple, or None for all)."""
    return Mean(axis=axis, keepdims=keepdims).apply(a)


def amax(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Maximum over ``axis``; ties share the gradient evenly."""
    return Max(axis=axis, keepdims=keepdims).apply(a)


def amin(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    """Minimum over ``axis``; ties share the gradient evenly."""
    return Min(axis=axis, keepdims=keepdims).apply(a)
