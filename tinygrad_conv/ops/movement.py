"""Movement ops: reshape, permute, broadcast/sum-to, indexing, padding, concatenation.

Several come in pairs that are each other's backward (broadcast_to and sum_to, getitem and
scatter_add), which is what makes higher-order gradients work through them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..engine import Op, register
from ..tensor import Tensor, as_tensor


@register("reshape")
class Reshape(Op):
    def forward(self, a):
        self.in_shape = a.shape
        try:
            return a.reshape(self.attrs["shape"])
        except ValueError:
            raise ValueError(
                f"reshape: cannot reshape a tensor of shape {a.shape} ({a.size} elements) "
                f"into {self.attrs['shape']}"
            ) from None

    def backward(self, grad):
        return (reshape(grad, self.in_shape),)


@register("permute")
class Permute(Op):
    def forward(self, a):
        axes = self.attrs["axes"]
        if sorted(int(x) % max(a.ndim, 1) for x in axes) != list(range(a.ndim)):
            raise ValueError(f"permute: {axes} is not a permutation of the {a.ndim} axes")
        return np.transpose(a, axes)

    def backward(self, grad):
        return (permute(grad, tuple(np.argsort([x % grad.ndim for x in self.attrs["axes"]]))),)


@register("broadcast_to")
class BroadcastTo(Op):
    def forward(self, a):
        self.in_shape = a.shape
        return np.broadcast_to(a, self.attrs["shape"])

    def backward(self, grad):
        return (sum_to(grad, self.in_shape),)


@register("sum_to")
class SumTo(Op):
    """Sum a gradient down to a shape it was broadcast from (leading axes and size-1 axes)."""

    def forward(self, a):
        shape = self.attrs["shape"]
        self.in_shape = a.shape
        lead = a.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(
            lead + i for i, s in enumerate(shape) if s == 1 and a.shape[lead + i] != 1
        )
        out = a.sum(axis=axes, keepdims=True) if axes else a
        return out.reshape(shape)

    def backward(self, grad):
        return (broadcast_to(grad, self.in_shape),)


def _plain_index(index: Any) -> Any:
    """Turn Tensors inside an index into arrays."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(_plain_index(i) for i in index)
    if isinstance(index, list):
        return np.asarray(index)
    return index


def _is_basic(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice, type(None), type(Ellipsis))) for i in items)


@register("getitem")
class GetItem(Op):
    def forward(self, a):
        self.in_shape = a.shape
        return a[self.attrs["index"]]

    def backward(self, grad):
        return (scatter_add(grad, self.attrs["index"], self.in_shape),)


@register("scatter_add")
class ScatterAdd(Op):
    """Zeros of ``shape`` with ``a`` added at ``index`` (repeated indices accumulate)."""

    def forward(self, a):
        out = np.zeros(self.attrs["shape"], dtype=a.dtype)
        index = self.attrs["index"]
        if _is_basic(index):
            out[index] += a
        else:
            np.add.at(out, index, a)
        return out

    def backward(self, grad):
        return (getitem(grad, self.attrs["index"]),)


@register("pad")
class Pad(Op):
    def forward(self, a):
        self.in_shape = a.shape
        return np.pad(a, self.attrs["pad_width"], constant_values=self.attrs["value"])

    def backward(self, grad):
        widths = self.attrs["pad_width"]
        inside = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, self.in_shape))
        return (getitem(grad, inside),)


@register("cat")
class Cat(Op):
    def forward(self, *arrays):
        self.sizes = [a.shape[self.attrs["axis"]] for a in arrays]
        return np.concatenate(arrays, axis=self.attrs["axis"])

    def backward(self, grad):
        axis, grads, start = self.attrs["axis"] % grad.ndim, [], 0
        for size, needed in zip(self.sizes, self.needs_grad):
            index = (slice(None),) * axis + (slice(start, start + size),)
            grads.append(getitem(grad, index) if needed else None)
            start += size
        return tuple(grads)


def reshape(a: Tensor, shape: Sequence[int]) -> Tensor:
    """View ``a`` with a new shape of the same size (-1 infers one size)."""
    shape = tuple(map(int, shape))
    if shape == a.shape:
        return a
    return Reshape(shape=shape).apply(a)


def permute(a: Tensor, axes: Sequence[int]) -> Tensor:
    """Reorder the axes of ``a``."""
    return Permute(axes=tuple(int(x) for x in axes)).apply(a)


def broadcast_to(a: Tensor, shape: Sequence[int]) -> Tensor:
    """Broadcast ``a`` to ``shape`` (NumPy rules)."""
    shape = tuple(shape)
    if a.shape == shape:
        return a
    try:
        np.broadcast_shapes(a.shape, shape)
    except ValueError:
        raise ValueError(f"broadcast_to: cannot broadcast shape {a.shape} to {shape}") from None
    return BroadcastTo(shape=shape).apply(a)


def sum_to(a: Tensor, shape: Sequence[int]) -> Tensor:
    """Sum ``a`` down to ``shape``, undoing a broadcast."""
    shape = tuple(shape)
    if a.shape == shape:
        return a
    return SumTo(shape=shape).apply(a)


def getitem(a: Tensor, index: Any) -> Tensor:
    """``a[index]``: basic slices, integer arrays, boolean masks; differentiable."""
    index = _plain_index(index)
    try:
        np.broadcast_to(np.empty((), dtype=bool), a.shape)[index]
    except (IndexError, ValueError, TypeError) as e:
        raise IndexError(
            f"getitem: index {index!r} does not fit a tensor of shape {a.shape}: {e}"
        ) from None
    return GetItem(index=index).apply(a)


def scatter_add(a: Tensor, index: Any, shape: Sequence[int]) -> Tensor:
    """Zeros of ``shape`` with ``a`` added at ``index``; the backward of getitem."""
    return ScatterAdd(index=_plain_index(index), shape=tuple(shape)).apply(a)


def pad(a: Tensor, pad_width: Any, value: float = 0) -> Tensor:
    """Constant padding; ``pad_width`` as ``np.pad`` takes it (a (before, after) pair per axis)."""
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (a.ndim, 2))
    if (widths < 0).any():
        raise ValueError(f"pad: widths must be non-negative, got {pad_width}")
    pairs = tuple((int(lo), int(hi)) for lo, hi in widths)
    return Pad(pad_width=pairs, value=value).apply(a)


def cat(tensors: Sequence[Any], axis: int = 0) -> Tensor:
    """Concatenate along an existing axis."""
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("cat: expected a non-empty sequence of tensors")
    first = tensors[0]
    for t in tensors[1:]:
        if t.ndim != first.ndim or any(
            s != f for i, (s, f) in enumerate(zip(t.shape, first.shape)) if i != axis % first.ndim
        ):
            raise ValueError(
                f"cat: shapes {[x.shape for x in tensors]} differ outside axis {axis}"
            )
    return Cat(axis=axis).apply(*tensors)


def _along_index(index: np.ndarray, axis: int) -> tuple[np.ndarray, ...]:
    """The fancy index that picks ``a[..., index[i, j, ...], ...]`` along ``axis`` (the
    index tuple of ``np.take_along_axis``)."""
    grids = np.ix_(*[np.arange(n) for n in index.shape]) if index.ndim else ()
    return tuple(index if i == axis else g for i, g in enumerate(grids))


def gather(a: Tensor, dim: int, index: Any) -> Tensor:
    """out[i, j] = a[index[i, j], j] for dim 0 (and so on): ``torch.gather``; differentiable
    in ``a`` (repeated indices accumulate)."""
    idx = index.data if isinstance(index, Tensor) else np.asarray(index)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"gather: index must hold integers, got dtype {idx.dtype}")
    if idx.ndim != a.ndim:
        raise ValueError(f"gather: index has {idx.ndim} dims, the input {a.ndim}; they must "
                         "match")
    axis = dim % max(a.ndim, 1)
    for d, (n_idx, n_a) in enumerate(zip(idx.shape, a.shape)):
        if d != axis and n_idx > n_a:
            raise ValueError(f"gather: index shape {idx.shape} is larger than the input "
                             f"{a.shape} in dim {d}")
    if idx.size and (idx.min() < -a.shape[axis] or idx.max() >= a.shape[axis]):
        raise IndexError(f"gather: index out of range for size {a.shape[axis]} in dim {axis}")
    if a.ndim == 0:
        return a
    return GetItem(index=_along_index(idx % a.shape[axis] if idx.size else idx, axis)).apply(a)


def repeat(a: Tensor, sizes: Sequence[int]) -> Tensor:
    """Tile ``a`` sizes[i] times along dim i (leading sizes add dims), as ``Tensor.repeat``:
    a broadcast into a new axis before each dim, then a reshape (differentiable)."""
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) < a.ndim:
        raise ValueError(f"repeat: got {len(sizes)} sizes for a tensor of {a.ndim} dims; pass "
                         "at least one per dim")
    shape = (1,) * (len(sizes) - a.ndim) + a.shape
    interleaved = tuple(x for n in shape for x in (1, n))
    tiled = tuple(x for r, n in zip(sizes, shape) for x in (r, n))
    out = broadcast_to(reshape(a, interleaved), tiled)
    return reshape(out, tuple(r * n for r, n in zip(sizes, shape)))


def split(a: Tensor, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
    """Pieces along ``dim``: of ``split_size`` each (the last may be smaller) or of the
    listed sizes (which must add up to the dim's size)."""
    axis = dim % max(a.ndim, 1)
    n = a.shape[axis]
    if isinstance(split_size_or_sections, (int, np.integer)):
        step = int(split_size_or_sections)
        if step <= 0:
            raise ValueError(f"split: split_size must be positive, got {step}")
        sizes = [min(step, n - start) for start in range(0, n, step)] or [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} add up to {sum(sizes)}, but dim {dim} has "
                             f"size {n}")
    pieces, start = [], 0
    for size in sizes:
        pieces.append(getitem(a, (slice(None),) * axis + (slice(start, start + size),)))
        start += size
    return tuple(pieces)
