"""Adam and AdamW, as ``torch.optim.Adam`` / ``torch.optim.AdamW``.

For each parameter p with gradient g, at step t = 1, 2, ... (PyTorch's arithmetic)::

    p = p * (1 - lr * weight_decay)          (AdamW: decoupled weight decay)
    g = g + weight_decay * p                 (Adam: L2 added to the gradient)
    m = m + (1 - beta1) * (g - m)            (lerp towards g)
    v = beta2 * v + (1 - beta2) * g * g
    denom = sqrt(v) / sqrt(1 - beta2**t) + eps
    p = p - lr / (1 - beta1**t) * m / denom
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .optimizer import Optimizer


class Adam(Optimizer):
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
    amsgrad=False)``; state per parameter: ``step`` (int), ``exp_avg`` and ``exp_avg_sq``
    (shaped like the parameter), and ``max_exp_avg_sq`` with amsgrad (the running maximum
    of exp_avg_sq, used in its place in the denominator)."""

    decoupled_weight_decay = False

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False) -> None:
        name = type(self).__name__
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(
                f"{name}: lr, eps and weight_decay must be >= 0, got lr={lr}, eps={eps}, "
                f"weight_decay={weight_decay}"
            )
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"{name}: betas must be two numbers in [0, 1), got {betas}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=bool(amsgrad))
        super().__init__(params, defaults)

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        lr, eps = float(group["lr"]), float(group["eps"])
        weight_decay = float(group["weight_decay"])
        beta1, beta2 = (float(b) for b in group["betas"])
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(param), exp_avg_sq=np.zeros_like(param))
            if group.get("amsgrad"):
                state["max_exp_avg_sq"] = np.zeros_like(param)
        state["step"] += 1
        step, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        if weight_decay != 0:
            if self.decoupled_weight_decay:
                param *= 1 - lr * weight_decay
            else:
                grad = grad + weight_decay * param
        # the formulas above, evaluated in the same order but into one scratch array
        # (PyTorch's float32 roundings, without a temporary per operation)
        scratch = np.empty_like(param)
        _lerp_(m, grad, 1 - beta1, scratch)
        v *= beta2
        np.multiply(grad, 1 - beta2, out=scratch)
        scratch *= grad
        v += scratch
        if group.get("amsgrad"):
            v = np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        denom = np.sqrt(v, out=scratch)
        denom /= math.sqrt(1 - beta2**step)
        denom += eps
        update = np.divide(m, denom, out=scratch)
        update *= lr / (1 - beta1**step)
        param -= update


class AdamW(Adam):
    """Adam with decoupled weight decay: ``AdamW(params, lr=1e-3, betas=(0.9, 0.999),
    eps=1e-8, weight_decay=0.01)``; same state as Adam."""

    decoupled_weight_decay = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


def _lerp_(start: np.ndarray, end: np.ndarray, weight: float, scratch: np.ndarray) -> None:
    """start += weight * (end - start), in place, with PyTorch's two-sided formula
    (``scratch``: an array like ``start`` that may be overwritten)."""
    difference = np.subtract(end, start, out=scratch)
    if weight < 0.5:
        difference *= weight
        start += difference
    else:
        difference *= 1 - weight
        np.subtract(end, difference, out=start)
