"""Matrix products: matmul, and linear (x @ W.T + b as one op) with its weight gradient."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backends import kernels
from ..engine import Op, register
from ..tensor import Tensor
from .elementwise import _operands
from .movement import reshape
from .reduce import sum as reduce_sum


def _swap_last(t: Tensor) -> Tensor:
    return t.transpose(-1, -2)


@register("matmul")
class MatMul(Op):
    """(..., n, k) @ (..., k, m); 1-D operands are promoted by ``matmul`` before this op."""

    def forward(self, a, b):
        return kernels().matmul(a, b)

    def backward(self, grad):
        a, b = self.inputs
        ga = grad @ _swap_last(b) if self.needs_grad[0] else None
        gb = _swap_last(a) @ grad if self.needs_grad[1] else None
        return ga, gb


def matmul(a: Any, b: Any) -> Tensor:
    """``a @ b`` as ``np.matmul``: (..., n, k) @ (..., k, m) -> (..., n, m), batch broadcast."""
    a, b = _operands(a, b)  # an array operand takes the Tensor's float dtype
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least 1 dim, got {a.shape} and {b.shape}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(
            f"matmul: shapes {a.shape} and {b.shape} do not align: the last dim of the first "
            f"({k_a}) must equal the {'only' if b.ndim == 1 else 'second-to-last'} dim of the "
            f"second ({k_b})"
        )
    try:
        if a.ndim > 2 or b.ndim > 2:
            np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(
            f"matmul: shapes {a.shape} and {b.shape} have batch dims {a.shape[:-2]} and "
            f"{b.shape[:-2]} that cannot be broadcast together"
        ) from None
    if a.ndim == 1:
        return matmul(a.unsqueeze(0), b).squeeze(-2)
    if b.ndim == 1:
        return matmul(a, b.unsqueeze(-1)).squeeze(-1)
    return MatMul().apply(a, b)


@register("linear")
class Linear(Op):
    """y = x @ W.T + b for x (..., in), W (out, in), b (out,)."""

    def forward(self, x, w, b=None):
        rows = math.prod(x.shape[:-1])  # not -1: a reshape cannot infer it when a size is 0
        out = kernels().matmul(x.reshape(rows, x.shape[-1]), w.T).reshape(x.shape[:-1] + (len(w),))
        if b is not None:
            out += b
        return out

    def backward(self, grad):
        x, w = self.inputs[0], self.inputs[1]
        x_shape = x.shape
        if grad.ndim != 2:  # (..., out): the products and the bias sum run over all rows at once
            rows = math.prod(x_shape[:-1])
            grad, x = reshape(grad, (rows, grad.shape[-1])), reshape(x, (rows, x.shape[-1]))
        # the shapes are the forward's, known to fit: MatMul directly, without matmul's checks
        gx = reshape(MatMul().apply(grad, w), x_shape) if self.needs_grad[0] else None
        gw = LinearGradWeight().apply(grad, x) if self.needs_grad[1] else None
        grads = (gx, gw)
        if len(self.inputs) == 3:
            grads += (reduce_sum(grad, 0) if self.needs_grad[2] else None,)
        return grads


@register("linear_grad_weight")
class LinearGradWeight(Op):
    """dW = g.T @ x: upstream g (N, out) and input x (N, in) -> (out, in), one GEMM that
    reads g transposed in place (no transposed copy, no separate transpose op).

    Bilinear in (g, x); for the upstream gradient ``grad`` (out, in): d/dg = x @ grad.T,
    d/dx = g @ grad.
    """

    def forward(self, g, x):
        return kernels().matmul(g.T, x)

    def backward(self, grad):
        g, x = self.inputs
        grad_g = MatMul().apply(x, _swap_last(grad)) if self.needs_grad[0] else None
        grad_x = MatMul().apply(g, grad) if self.needs_grad[1] else None
        return grad_g, grad_x
