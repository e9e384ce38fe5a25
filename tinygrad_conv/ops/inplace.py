"""In-place updates, as PyTorch has them: ``x += y``, ``x.add_(y)``, ``x.zero_()``...

The tensor keeps its identity and its array (the new values are written into it) and its
``_version`` goes up by one, so a backward through an op that saved it before the change
raises instead of using the new values.

PyTorch's rules: on a leaf that requires grad, an in-place change raises unless grad mode is
off (``with no_grad():``, the manual SGD step). On a tensor that is part of a graph (or whose
new value depends on one that requires grad) the change is recorded: the old value is kept
in a copy that takes over the tensor's place in the graph, and the tensor becomes the output
of the op that computed the new value, so gradients flow through the update.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from ..engine import Op, is_grad_enabled, no_grad, register
from ..tensor import Tensor, as_tensor
from .elementwise import cast

LEAF_MESSAGE = (
    "a leaf Variable that requires grad is being used in an in-place operation. Change it "
    "inside `with tc.no_grad():` (as an optimiser step does), or use an out-of-place op"
)


def update(t: Tensor, compute: Callable[..., Tensor], *operands: Any,
           casting: str = "same_kind") -> Tensor:
    """Set ``t`` to ``compute(t, *operands)`` in place; returns ``t``."""
    grad_mode = is_grad_enabled()
    if grad_mode and t.requires_grad and t.op is None:
        raise RuntimeError(LEAF_MESSAGE)
    record = grad_mode and (t.requires_grad or any(
        isinstance(o, Tensor) and o.requires_grad for o in operands))
    if not record:
        with no_grad():
            result = compute(t, *operands)
        _write(t, result, casting)
        t._version += 1
        return t
    old = Tensor._from_array(t.data.copy(), t.requires_grad)  # the value before, in the graph
    old.op = t.op
    if t.op is not None:
        t.op._output = weakref.ref(old)
    result = compute(old, *(old if o is t else o for o in operands))
    if result.dtype != t.dtype:
        _check_cast(result, t, casting)
        result = cast(result, t.dtype)
    _write(t, result, casting)
    t._version += 1
    t.requires_grad = result.requires_grad
    if result.op is not None:
        t.op = result.op
        t.op._output = weakref.ref(t)
        t.op.output_version = t._version
    return t


def _check_cast(result: Tensor, t: Tensor, casting: str) -> None:
    if not np.can_cast(result.dtype, t.dtype, casting=casting):
        raise RuntimeError(
            f"result type {result.dtype} can't be cast to the desired output type {t.dtype} "
            "of this in-place operation; convert the tensor first (e.g. t = t.float())"
        )


def _write(t: Tensor, result: Tensor, casting: str) -> None:
    if result.shape != t.shape:
        raise RuntimeError(
            f"output with shape {t.shape} doesn't match the broadcast shape {result.shape} "
            "of this in-place operation; an in-place result must keep the tensor's shape"
        )
    _check_cast(result, t, casting)
    if not t.data.flags.writeable:
        raise RuntimeError(
            f"this tensor's array (shape {t.shape}) is read-only (a broadcast view or a "
            "read-only NumPy array), so it cannot change in place; .clone() it first"
        )
    np.copyto(t.data, result.data, casting="unsafe")


@register("fill_")
class Fill(Op):
    """Every element set to a constant: a zero gradient to the old value."""

    def forward(self, a):
        return np.full_like(a, self.attrs["value"])

    def backward(self, grad):
        return (_zeros_like(grad),)


@register("copy_")
class Copy(Op):
    """The old value replaced by ``src`` broadcast to its shape: the gradient goes to src
    (summed back to its shape by the engine), zero to the old value."""

    def forward(self, a, src):
        self.src_dtype = src.dtype
        return np.broadcast_to(src, a.shape).astype(a.dtype)

    def backward(self, grad):
        gs = grad if grad.dtype == self.src_dtype else cast(grad, self.src_dtype)
        return _zeros_like(grad), gs


def _zeros_like(g: Tensor) -> Tensor:
    return Tensor._from_array(np.zeros(g.shape, dtype=g.dtype))


def fill(t: Tensor, value: Any) -> Tensor:
    """Set every element of ``t`` to ``value`` (a number or one-element tensor) in place."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise RuntimeError(f"fill_ takes a number or a 0-d tensor, got shape {value.shape}")
        value = value.item()
    return update(t, lambda a: Fill(value=value).apply(a), casting="unsafe")


def copy(t: Tensor, src: Any) -> Tensor:
    """Copy ``src`` (broadcast to ``t``'s shape, cast to its dtype) into ``t`` in place."""
    src = as_tensor(src)
    try:
        if np.broadcast_shapes(src.shape, t.shape) != t.shape:
            raise ValueError
    except ValueError:
        raise RuntimeError(f"copy_: the source of shape {src.shape} cannot be broadcast to "
                           f"the tensor's shape {t.shape}") from None
    return update(t, lambda a, s: Copy().apply(a, s), src, casting="unsafe")
