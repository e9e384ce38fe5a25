"""Elementwise ops: arithmetic with NumPy broadcasting, and the unary functions.

Each op's forward works on arrays, its backward on Tensors (so it can be differentiated
again). Broadcast gradients are summed back to each input's shape by the engine, not here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import kernels
from ..engine import Op, register
from ..tensor import Tensor, as_tensor


def _constant(value: Any, like: np.dtype) -> Tensor:
    """A Python number (or float array) as a Tensor of the other operand's float dtype
    (no silent float64, no float64 data rounded through float32)."""
    if isinstance(value, (bool, int, float)) and not isinstance(value, np.generic):
        if like.kind == "f":
            return Tensor._from_array(np.asarray(value, dtype=like))
        if isinstance(value, float):
            return Tensor._from_array(np.asarray(value, dtype=np.float32))
        return Tensor._from_array(np.asarray(value, dtype=like))
    if not isinstance(value, Tensor) and like.kind == "f" and np.asarray(value).dtype.kind == "f":
        return Tensor(value, dtype=like)  # a float array takes the Tensor's float dtype
    return as_tensor(value)


def _pair(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a, b
    if isinstance(a, Tensor):
        return a, _constant(b, a.dtype)
    if isinstance(b, Tensor):
        return _constant(a, b.dtype), b
    return as_tensor(a), as_tensor(b)


def _operands(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    """The two operands of an arithmetic op as Tensors. An integer one meeting a float one
    takes the float's dtype (as PyTorch; NumPy would make int64 with float32 float64)."""
    a, b = _pair(a, b)
    if a.dtype.kind in "iu" and b.dtype.kind == "f":
        a = cast(a, b.dtype)
    elif b.dtype.kind in "iu" and a.dtype.kind == "f":
        b = cast(b, a.dtype)
    return a, b


def _check_broadcast(name: str, a: Tensor, b: Tensor) -> None:
    if a.data.shape == b.data.shape:
        return
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"{name}: shapes {a.shape} and {b.shape} cannot be broadcast together (each "
            "trailing dimension must match or be 1)"
        ) from None


def _binary(op: Op, a: Any, b: Any) -> Tensor:
    a, b = _operands(a, b)
    _check_broadcast(op.name, a, b)
    return op.apply(a, b)


@register("add")
class Add(Op):
    def forward(self, a, b):
        return a + b

    def backward(self, grad):
        return grad, grad


@register("sub")
class Sub(Op):
    def forward(self, a, b):
        return a - b

    def backward(self, grad):
        return grad, -grad


@register("mul")
class Mul(Op):
    def forward(self, a, b):
        return a * b

    def backward(self, grad):
        a, b = self.inputs
        return ((grad * b if self.needs_grad[0] else None),
                (grad * a if self.needs_grad[1] else None))


@register("div")
class Div(Op):
    def forward(self, a, b):
        return a / b

    def backward(self, grad):
        a, b = self.inputs
        ga = grad / b if self.needs_grad[0] else None
        gb = -grad * a / (b * b) if self.needs_grad[1] else None
        return ga, gb


@register("pow")
class Pow(Op):
    def forward(self, a, b):
        return a**b

    def backward(self, grad):
        a, b = self.inputs
        ga = None
        if self.needs_grad[0]:
            # b * a**(b-1), and 0 where b == 0 (a**(-1) would make 0 * inf at a = 0)
            exponent_shift = Tensor._from_array((b.data == 0).astype(b.dtype))
            ga = grad * b * a ** (b - 1 + exponent_shift)
        gb = None
        if self.needs_grad[1]:
            # d(a**b)/db = a**b * log(a), defined where a > 0; 0 elsewhere (as PyTorch at a=0)
            positive = Tensor._from_array((a.data > 0).astype(a.dtype))
            gb = grad * self.output() * (a * positive + (1 - positive)).log() * positive
        return ga, gb


@register("neg")
class Neg(Op):
    def forward(self, a):
        return -a

    def backward(self, grad):
        return (-grad,)


@register("exp")
class Exp(Op):
    def forward(self, a):
        return np.exp(a)

    def backward(self, grad):
        return (grad * self.output(),)


@register("log")
class Log(Op):
    def forward(self, a):
        return np.log(a)

    def backward(self, grad):
        return (grad / self.inputs[0],)


@register("sqrt")
class Sqrt(Op):
    def forward(self, a):
        return np.sqrt(a)

    def backward(self, grad):
        return (grad / (2 * self.output()),)


@register("abs")
class Abs(Op):
    def forward(self, a):
        self.sign = np.sign(a)
        return np.abs(a)

    def backward(self, grad):
        return (grad * Tensor._from_array(self.sign),)


@register("relu")
class ReLU(Op):
    def forward(self, a):
        out, self.mask = kernels().relu(a, want_mask=any(self.needs_grad))
        return out

    def backward(self, grad):
        return (_masked(grad, self.mask),)


@register("relu_backward")
class ReluBackward(Op):
    """g where the mask is set, else 0: relu's backward (and, being linear, its own)."""

    mask: np.ndarray

    def forward(self, g):
        return kernels().relu_backward(g, self.mask)

    def backward(self, grad):
        return (_masked(grad, self.mask),)


def _masked(g: Tensor, mask: np.ndarray) -> Tensor:
    op = ReluBackward()
    op.mask = mask
    return op.apply(g)


@register("sigmoid")
class Sigmoid(Op):
    def forward(self, a):
        # exp of a non-positive number only, so large |a| never overflows
        e = np.exp(-np.abs(a))
        return np.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)

    def backward(self, grad):
        y = self.output()
        return (grad * y * (1 - y),)


@register("tanh")
class Tanh(Op):
    def forward(self, a):
        return np.tanh(a)

    def backward(self, grad):
        y = self.output()
        return (grad * (1 - y * y),)


@register("clip")
class Clip(Op):
    def forward(self, a):
        lo, hi = self.attrs["lo"], self.attrs["hi"]
        self.inside = np.ones(a.shape, dtype=bool)
        if lo is not None:
            self.inside &= a >= lo
        if hi is not None:
            self.inside &= a <= hi
        return np.clip(a, lo, hi).astype(a.dtype, copy=False)

    def backward(self, grad):
        return (grad * Tensor._from_array(self.inside),)


@register("clone")
class Clone(Op):
    def forward(self, a):
        return a.copy()

    def backward(self, grad):
        return (grad,)


@register("cast")
class Cast(Op):
    def forward(self, a):
        self.source_dtype = a.dtype
        return a.astype(self.attrs["dtype"])

    def backward(self, grad):
        return (cast(grad, self.source_dtype),)


def add(a: Any, b: Any) -> Tensor:
    """a + b with broadcasting."""
    return _binary(Add(), a, b)


def sub(a: Any, b: Any) -> Tensor:
    """a - b with broadcasting."""
    return _binary(Sub(), a, b)


def mul(a: Any, b: Any) -> Tensor:
    """a * b with broadcasting."""
    return _binary(Mul(), a, b)


def div(a: Any, b: Any) -> Tensor:
    """a / b with broadcasting; integers divide to float32 (as PyTorch), not float64."""
    a, b = _operands(a, b)
    if a.dtype.kind != "f" and b.dtype.kind != "f":
        a = cast(a, np.dtype(np.float32))
    return _binary(Div(), a, b)


def pow(a: Any, b: Any) -> Tensor:  # noqa: A001 (mirrors the operator's name)
    """a ** b with broadcasting."""
    return _binary(Pow(), a, b)


def neg(a: Tensor) -> Tensor:
    return Neg().apply(a)


def exp(a: Tensor) -> Tensor:
    return Exp().apply(a)


def log(a: Tensor) -> Tensor:
    return Log().apply(a)


def sqrt(a: Tensor) -> Tensor:
    return Sqrt().apply(a)


def abs(a: Tensor) -> Tensor:  # noqa: A001
    return Abs().apply(a)


def relu(a: Tensor) -> Tensor:
    """max(a, 0); gradient 0 at 0."""
    return ReLU().apply(a)


def sigmoid(a: Tensor) -> Tensor:
    return Sigmoid().apply(a)


def tanh(a: Tensor) -> Tensor:
    return Tanh().apply(a)


def clip(a: Tensor, lo: float | None = None, hi: float | None = None) -> Tensor:
    """Limit values to [lo, hi]; gradient 1 inside (bounds included), 0 outside."""
    return Clip(lo=lo, hi=hi).apply(a)


def clone(a: Tensor) -> Tensor:
    """A copy with its own (writable) data, still in the graph."""
    return Clone().apply(a)


def cast(a: Tensor, dtype: np.dtype) -> Tensor:
    """Convert to ``dtype``; differentiable between float dtypes."""
    if a.dtype == dtype:
        return a
    return Cast(dtype=np.dtype(dtype)).apply(a)


def compare(fn: np.ufunc, a: Any, b: Any) -> Tensor:
    """An elementwise comparison: a boolean Tensor, never part of the graph."""
    a, b = _pair(a, b)
    _check_broadcast(fn.__name__, a, b)
    return Tensor._from_array(fn(a.data, b.data))


@register("where")
class Where(Op):
    """a where the (constant, boolean) condition is set, else b; broadcasting."""

    def forward(self, a, b):
        return np.where(self.attrs["condition"], a, b)

    def backward(self, grad):
        keep = self.attrs["condition"]
        ga = grad * Tensor._from_array(keep.astype(grad.dtype)) if self.needs_grad[0] else None
        gb = grad * Tensor._from_array((~keep).astype(grad.dtype)) if self.needs_grad[1] else None
        return ga, gb


@register("remainder")
class Remainder(Op):
    """a - floor(a / b) * b (the sign of b, as Python's % and torch.remainder)."""

    def forward(self, a, b):
        return np.mod(a, b)

    def backward(self, grad):
        a, b = self.inputs
        ga = grad if self.needs_grad[0] else None
        gb = None
        if self.needs_grad[1]:
            gb = -grad * Tensor._from_array(np.floor_divide(a.data, b.data))
        return ga, gb


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """Elementwise ``a if condition else b`` with broadcasting; differentiable in a and b."""
    cond = condition.data if isinstance(condition, Tensor) else np.asarray(condition)
    if cond.dtype != np.bool_:
        raise TypeError(f"where: condition must be a bool tensor, got dtype {cond.dtype}; "
                        "compare first (e.g. x > 0)")
    a, b = _operands(a, b)
    try:
        shape = np.broadcast_shapes(cond.shape, a.shape, b.shape)
    except ValueError:
        raise ValueError(f"where: condition {cond.shape}, input {a.shape} and other {b.shape} "
                         "cannot be broadcast together") from None
    return Where(condition=np.broadcast_to(cond, shape)).apply(a, b)


def full_like_value(like: Tensor, value: Any) -> Tensor:
    """``value`` (a number or 0-d tensor) as a constant of ``like``'s dtype."""
    arr = value.data if isinstance(value, Tensor) else value
    return Tensor._from_array(np.asarray(arr, dtype=like.dtype))


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise max; where equal, each side gets half the gradient (as PyTorch)."""
    a, b = _operands(a, b)
    return _half_at_ties(a, b, np.greater)


def minimum(a: Any, b: Any) -> Tensor:
    """Elementwise min; where equal, each side gets half the gradient (as PyTorch)."""
    a, b = _operands(a, b)
    return _half_at_ties(a, b, np.less)


def _half_at_ties(a: Tensor, b: Tensor, wins: np.ufunc) -> Tensor:
    a_wins = wins(a.data, b.data)
    ties = a.data == b.data
    picked = where(a_wins, a, b)
    if not ties.any():
        return picked
    return where(ties, (a + b) * 0.5, picked)


def remainder(a: Any, b: Any) -> Tensor:
    """a % b with Python's sign rule; gradient 1 for a, -floor(a / b) for b."""
    return _binary(Remainder(), a, b)


def floor_divide(a: Any, b: Any) -> Tensor:
    """a // b rounded down (as Python and PyTorch); not differentiable: a constant."""
    a, b = _operands(a, b)
    _check_broadcast("floor_divide", a, b)
    return Tensor._from_array(np.asarray(np.floor_divide(a.data, b.data)))


# Abramowitz & Stegun 7.1.26 is too coarse for float64; this is the Numerical Recipes
# erfc Chebyshev fit (fractional error below 1.2e-7 everywhere), exact enough for float32
_ERFC_COEFFS = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807,
                -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def _erf_array(x: np.ndarray) -> np.ndarray:
    z = np.abs(x).astype(np.float64)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.zeros_like(z)
    for c in reversed(_ERFC_COEFFS):
        poly = poly * t + c
    erfc = t * np.exp(-z * z + poly)
    return np.copysign(1.0 - erfc, x).astype(x.dtype, copy=False)


@register("erf")
class Erf(Op):
    """The error function; d/dx erf(x) = 2/sqrt(pi) * exp(-x**2)."""

    def forward(self, a):
        return _erf_array(a)

    def backward(self, grad):
        (a,) = self.inputs
        return (grad * (a * a * -1.0).exp() * (2.0 / np.sqrt(np.pi)),)


def erf(a: Tensor) -> Tensor:
    """The error function, elementwise (float32 accuracy: relative error below 2e-7)."""
    return Erf().apply(a)
