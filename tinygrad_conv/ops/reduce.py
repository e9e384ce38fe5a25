"""Reductions: sum, mean, max, min over axes; max/min/sort/topk with their indices; var."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backends import kernels
from ..engine import Op, register
from ..tensor import Tensor
from ..tensor import _check_dim as _dim
from .elementwise import sqrt
from .movement import broadcast_to, gather, reshape


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

    def backward(self, grad):
        return (_expand_back(grad, self.in_shape, self.axes, self.attrs["keepdims"]),)


@register("mean")
class Mean(_Reduce):
    def forward(self, a):
        return np.mean(a, axis=self.axes_for(a), keepdims=self.attrs["keepdims"])

    def backward(self, grad):
        count = int(np.prod([self.in_shape[i] for i in self.axes]))
        return (_expand_back(grad, self.in_shape, self.axes, self.attrs["keepdims"]) / count,)


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

    def backward(self, grad):
        spread = _expand_back(grad, self.in_shape, self.axes, self.attrs["keepdims"])
        return (spread * Tensor._from_array(self.share.astype(grad.dtype, copy=False)),)


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


class ValuesIndices(NamedTuple):
    """What ``max(dim)``, ``min(dim)``, ``sort`` and ``topk`` return (PyTorch's fields)."""

    values: Tensor
    indices: Tensor


def _pick(a: Tensor, idx: np.ndarray, axis: int) -> Tensor:
    """a's values at ``idx`` along ``axis`` (idx has a's number of dims); differentiable."""
    return gather(a, axis, idx) if a.ndim else a


def max_with_indices(a: Tensor, dim: Any, keepdim: bool, kind: str) -> Any:
    """max/min: without ``dim`` a 0-d tensor; with it ``(values, indices)`` (the gradient
    goes to the index picked, the first of ties)."""
    if dim is None:
        return (amax if kind == "max" else amin)(a)
    if isinstance(dim, tuple):  # several dims: as amax (no indices)
        return (amax if kind == "max" else amin)(a, dim, keepdim)
    axis = _dim(kind, a, dim)
    if a.ndim and a.shape[axis] == 0:
        raise IndexError(f"{kind}(): cannot reduce dim {dim} of size 0 (shape {a.shape})")
    find = np.argmax if kind == "max" else np.argmin
    idx = np.expand_dims(find(a.data, axis=axis), axis) if a.ndim else np.asarray(0)
    values = _pick(a, idx, axis)
    if not keepdim and a.ndim:
        values, idx = reshape(values, values.shape[:axis] + values.shape[axis + 1:]), \
            np.squeeze(idx, axis)
    return ValuesIndices(values, Tensor._from_array(idx.astype(np.int64, copy=False)))


def arg_extreme(find: Any, a: Tensor, dim: Any, keepdim: bool) -> Tensor:
    """argmax/argmin: int64 indices over ``dim``, or into the flattened tensor."""
    if dim is None:
        out = np.asarray(find(a.data))
        return Tensor._from_array(out.reshape((1,) * a.ndim) if keepdim else out)
    axis = _dim(find.__name__, a, dim)
    return Tensor._from_array(np.asarray(find(a.data, axis=axis, keepdims=keepdim)))


def _sort_order(data: np.ndarray, axis: int, descending: bool) -> np.ndarray:
    if descending:
        data = -data.astype(np.int64) if data.dtype.kind in "ub" else -data
    return np.argsort(data, axis=axis, kind="stable")


def sort(a: Tensor, dim: int = -1, descending: bool = False) -> ValuesIndices:
    """(values, indices) sorted along ``dim`` (stable); values are differentiable."""
    if a.ndim == 0:
        return ValuesIndices(a, Tensor._from_array(np.asarray(0, dtype=np.int64)))
    axis = _dim("sort", a, dim)
    idx = _sort_order(a.data, axis, descending)
    return ValuesIndices(_pick(a, idx, axis), Tensor._from_array(idx.astype(np.int64)))


def topk(a: Tensor, k: int, dim: int = -1, largest: bool = True) -> ValuesIndices:
    """The k largest (or smallest) along ``dim``, in order, with their indices."""
    axis = _dim("topk", a, dim)
    n = a.shape[axis] if a.ndim else 1
    if not 0 <= k <= n:
        raise RuntimeError(f"topk: k ({k}) is out of range for dim {dim} of size {n}")
    if a.ndim == 0:
        return sort(a)
    idx = np.take(_sort_order(a.data, axis, largest), np.arange(k), axis=axis)
    return ValuesIndices(_pick(a, idx, axis), Tensor._from_array(idx.astype(np.int64)))


def var(a: Tensor, dim: Any = None, correction: float = 1.0, keepdim: bool = False) -> Tensor:
    """sum((a - mean)**2) / (n - correction) over ``dim`` (all elements when None)."""
    axes = _normalize_axes(dim, a.shape, "var")
    n = int(np.prod([a.shape[i] for i in axes])) if a.ndim else 1
    centered = a - mean(a, axes, keepdims=True)
    total = sum(centered * centered, axes, keepdims=keepdim)
    return total / a.dtype.type(max(n - correction, 0)) if n - correction > 0 else total / 0.0


def norm(a: Tensor, p: Any = 2, dim: Any = None, keepdim: bool = False) -> Tensor:
    """The p-norm over ``dim``: p = 2 (sqrt of the sum of squares), 1, or inf (max |a|)."""
    if p in ("fro", 2, 2.0):
        return sqrt(sum(a * a, dim, keepdims=keepdim))
    if p in (1, 1.0):
        return sum(a.abs(), dim, keepdims=keepdim)
    if p == float("inf"):
        return amax(a.abs(), dim, keepdims=keepdim)
    raise ValueError(f"norm: p must be 1, 2, 'fro' or inf, got {p!r}")
