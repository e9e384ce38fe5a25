"""Softmax, log-softmax and the losses built on them."""

from __future__ import annotations

import numpy as np

from ..engine import Op, register
from ..tensor import Tensor
from .elementwise import Mul
from .reduce import sum as reduce_sum


def _log_softmax_array(x: np.ndarray, axis: int) -> np.ndarray:
    # log-sum-exp with the max subtracted first: finite for logits of any size
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


@register("log_softmax")
class LogSoftmax(Op):
    def forward(self, x):
        return _log_softmax_array(x, self.attrs["axis"])

    def backward(self, grad):
        return (LogSoftmaxBackward(axis=self.attrs["axis"]).apply(grad, self.output()),)


@register("log_softmax_backward")
class LogSoftmaxBackward(Op):
    """d/dx of log_softmax for upstream g, from its output y: g - exp(y) * sum(g).

    One op instead of four (exp, sum, mul, sub). Its own backward, for the upstream gradient
    ``grad`` and s = exp(y): d/dg = grad - sum(grad * s), d/dy = -grad * s * sum(g) (sums
    along the axis).
    """

    def forward(self, g, y):
        axis = self.attrs["axis"]
        return g - np.exp(y) * g.sum(axis=axis, keepdims=True)

    def backward(self, grad):
        g, y = self.inputs
        axis = self.attrs["axis"]
        s = y.exp()
        grad_s = grad * s
        grad_g = grad - reduce_sum(grad_s, axis, keepdims=True) if self.needs_grad[0] else None
        grad_y = -grad_s * reduce_sum(g, axis, keepdims=True) if self.needs_grad[1] else None
        return grad_g, grad_y


@register("softmax")
class Softmax(Op):
    def forward(self, x):
        return np.exp(_log_softmax_array(x, self.attrs["axis"]))

    def backward(self, grad):
        y = self.output()
        return (y * (grad - reduce_sum(grad * y, self.attrs["axis"], keepdims=True)),)


@register("nll_loss")
class NLLLoss(Op):
    """-log_probs[i, target[i]], reduced by mean, sum or none."""

    def forward(self, log_probs):
        target, reduction = self.attrs["target"], self.attrs["reduction"]
        picked = -log_probs[np.arange(len(target)), target]
        self.weights = np.zeros_like(log_probs)
        scale = 1.0 / len(target) if reduction == "mean" else 1.0
        self.weights[np.arange(len(target)), target] = -scale
        if reduction == "none":
            return picked
        total = picked.sum(dtype=log_probs.dtype)
        return (total * log_probs.dtype.type(scale)).astype(log_probs.dtype)

    def backward(self, grad):
        if self.attrs["reduction"] == "none":
            grad = grad.unsqueeze(-1)
        # the shapes broadcast by construction: Mul directly, without mul's operand checks
        return (Mul().apply(grad, Tensor._from_array(self.weights)),)


def _axis_of(name: str, x: Tensor, dim: int) -> int:
    if not isinstance(dim, (int, np.integer)) or not -max(x.ndim, 1) <= dim < max(x.ndim, 1):
        raise IndexError(f"{name}: dim {dim!r} is out of range for a tensor of shape {x.shape}")
    return int(dim) % max(x.ndim, 1)


def softmax(x: Tensor, dim: int) -> Tensor:
    """exp(x) / sum(exp(x)) along ``dim``."""
    return Softmax(axis=_axis_of("softmax", x, dim)).apply(x)


def log_softmax(x: Tensor, dim: int) -> Tensor:
    """x - logsumexp(x) along ``dim``."""
    return LogSoftmax(axis=_axis_of("log_softmax", x, dim)).apply(x)


@register("binary_cross_entropy_with_logits")
class BinaryCrossEntropyWithLogits(Op):
    """max(x, 0) - x * y + log(1 + exp(-|x|)) elementwise, for logits x and targets y
    (never overflows); d/dx = sigmoid(x) - y, d/dy = -x."""

    def forward(self, x, y):
        return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))

    def backward(self, grad):
        x, y = self.inputs
        gx = grad * (x.sigmoid() - y) if self.needs_grad[0] else None
        gy = -grad * x if self.needs_grad[1] else None
        return gx, gy
