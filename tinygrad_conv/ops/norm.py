"""Batch normalisation as one op: forward and closed-form backward side by side.

Per channel c (axis 1), over the m = N*H*W (or N, or N*L) values of that channel:

    mean = sum(x) / m,   var = sum((x - mean)**2) / m   (biased),   r = 1 / sqrt(var + eps)
    xhat = (x - mean) * r,                               y = weight * xhat + bias

Training uses the batch's mean and var, and mean and var depend on x, so the input gradient
is not just ``weight * r * g``: with g the upstream gradient,

    dbias = sum(g),   dweight = sum(g * xhat),
    dx = weight * r * (g - dbias / m - xhat * dweight / m)

Eval uses the running statistics (constants), so ``dx = weight * r * g``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..engine import Op, is_grad_enabled, register
from ..tensor import Tensor


def channel_axes(ndim: int) -> tuple[int, ...]:
    """The axes a channel's statistics run over: all but axis 1."""
    return (0,) + tuple(range(2, ndim))


def _per_channel(ndim: int, c: int) -> tuple[int, ...]:
    """(1, C, 1, ...): a (C,) statistic shaped to broadcast against (N, C, ...)."""
    return (1, c) + (1,) * (ndim - 2)


@register("batch_norm")
class BatchNorm(Op):
    """x (N, C, ...), then weight (C,) and bias (C,) when ``affine`` says they are given ->
    y of x's shape. ``training``: batch statistics (kept as ``batch_mean`` and the biased
    ``batch_var``, for the caller's running averages); else ``running_mean``/``running_var``."""

    def forward(self, x: np.ndarray, *params: np.ndarray) -> np.ndarray:
        a = self.attrs
        axes, shape = channel_axes(x.ndim), _per_channel(x.ndim, x.shape[1])
        if a["training"]:
            mean = x.mean(axis=axes, keepdims=True)
            centered = x - mean
            var = np.mean(np.square(centered), axis=axes, keepdims=True)
            self.batch_mean, self.batch_var = mean.reshape(-1), var.reshape(-1)
        else:
            centered = x - a["running_mean"].astype(x.dtype, copy=False).reshape(shape)
            var = a["running_var"].astype(x.dtype, copy=False).reshape(shape)
        self.inv_std = (1.0 / np.sqrt(var + x.dtype.type(a["eps"]))).astype(x.dtype)
        xhat = centered * self.inv_std
        self.xhat = xhat
        weight, bias = self._split(params)
        out = xhat * weight.reshape(shape) if weight is not None else xhat.copy()
        if bias is not None:
            out += bias.reshape(shape)
        return out

    def _split(self, params: tuple[Any, ...]) -> tuple[Any, Any]:
        """(weight, bias) from the inputs after x, None where the affine flag says absent."""
        has_weight, has_bias = self.attrs["affine"]
        weight = params[0] if has_weight else None
        bias = params[int(has_weight)] if has_bias else None
        return weight, bias

    def backward(self, grad: Tensor) -> tuple[Tensor | None, ...]:
        if is_grad_enabled():  # create_graph: the same formulas on Tensors, recorded again
            xhat, inv_std = self._stats_as_tensors()
            weight, _ = self._split(self.inputs[1:])
            upstream = grad
        else:
            xhat, inv_std = self.xhat, self.inv_std
            weight, _ = self._split(tuple(t.data for t in self.inputs[1:]))
            upstream = grad.data
        grads = _grads(upstream, xhat, inv_std, weight, self.attrs["training"])
        if not is_grad_enabled():
            grads = tuple(Tensor._from_array(np.asarray(v)) for v in grads)
        gx, gweight, gbias = grads
        has_weight, has_bias = self.attrs["affine"]
        out = (gx,) + ((gweight,) if has_weight else ()) + ((gbias,) if has_bias else ())
        return tuple(v if need else None for v, need in zip(out, self.needs_grad))

    def _stats_as_tensors(self) -> tuple[Tensor, Tensor]:
        """xhat and 1/sqrt(var + eps) as functions of the input Tensor (for higher derivatives)."""
        x, a = self.inputs[0], self.attrs
        axes, shape = channel_axes(x.ndim), _per_channel(x.ndim, x.shape[1])
        if a["training"]:
            centered = x - x.mean(axes, keepdims=True)
            inv_std = 1.0 / ((centered * centered).mean(axes, keepdims=True) + a["eps"]).sqrt()
        else:
            centered = x - Tensor(a["running_mean"].reshape(shape), dtype=x.dtype)
            inv_std = Tensor(self.inv_std)
        return centered * inv_std, inv_std


def _grads(g: Any, xhat: Any, inv_std: Any, weight: Any, training: bool) -> tuple[Any, Any, Any]:
    """(dx, dweight, dbias) by the formulas in the module docstring; on ndarrays or Tensors."""
    axes, c = channel_axes(xhat.ndim), xhat.shape[1]
    shape = _per_channel(xhat.ndim, c)
    dbias = g.sum(axis=axes)
    dweight = (g * xhat).sum(axis=axes)
    scale = inv_std if weight is None else inv_std * weight.reshape(shape)
    if not training:
        return scale * g, dweight, dbias
    m = math.prod(xhat.shape) // c
    mean_g, mean_gx = dbias.reshape(shape) * (1.0 / m), dweight.reshape(shape) * (1.0 / m)
    dx = scale * (g - mean_g - xhat * mean_gx)
    return dx, dweight, dbias
