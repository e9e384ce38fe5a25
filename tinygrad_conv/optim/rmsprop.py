"""RMSprop, as ``torch.optim.RMSprop``.

For each parameter p with gradient g, per step (PyTorch's arithmetic)::

    g = g + weight_decay * p                       (when weight_decay != 0)
    v = alpha * v + (1 - alpha) * g * g
    avg = sqrt(v - m * m) + eps  if centered (m = lerp(m, g, 1 - alpha))  else  sqrt(v) + eps
    buf = momentum * buf + g / avg;  p = p - lr * buf     (when momentum > 0)
    p = p - lr * g / avg                                   (otherwise)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .optimizer import Optimizer


class RMSprop(Optimizer):
    """``RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
    centered=False)``; state per parameter: ``step``, ``square_avg``, and
    ``momentum_buffer`` / ``grad_avg`` when momentum / centered."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False) -> None:
        for name, value in (("learning rate", lr), ("epsilon", eps), ("momentum", momentum),
                            ("weight_decay", weight_decay), ("alpha", alpha)):
            if value < 0:
                raise ValueError(f"RMSprop: invalid {name}: {value} (must be >= 0)")
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=bool(centered))
        super().__init__(params, defaults)

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        lr, alpha, eps = float(group["lr"]), float(group["alpha"]), float(group["eps"])
        momentum, weight_decay = float(group["momentum"]), float(group["weight_decay"])
        if not state:
            state.update(step=0, square_avg=np.zeros_like(param))
            if momentum > 0:
                state["momentum_buffer"] = np.zeros_like(param)
            if group["centered"]:
                state["grad_avg"] = np.zeros_like(param)
        state["step"] += 1
        if weight_decay != 0:
            grad = grad + weight_decay * param
        v = state["square_avg"]
        v *= alpha
        v += (1 - alpha) * grad * grad
        if group["centered"]:
            m = state["grad_avg"]
            m += (1 - alpha) * (grad - m)
            avg = np.sqrt(v - m * m)
        else:
            avg = np.sqrt(v)
        avg += eps
        if momentum > 0:
            buf = state["momentum_buffer"]
            buf *= momentum
            buf += grad / avg
            param -= lr * buf
        else:
            param -= lr * (grad / avg)
