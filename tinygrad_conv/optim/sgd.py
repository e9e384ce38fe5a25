"""Stochastic gradient descent with momentum, as ``torch.optim.SGD``.

For each parameter p with gradient g, per step (PyTorch's arithmetic)::

    g = g + weight_decay * p                         (when weight_decay != 0)
    buf = g                                          (first step)
    buf = momentum * buf + (1 - dampening) * g       (later steps)
    g = g + momentum * buf  if nesterov  else  buf   (when momentum != 0)
    p = p - lr * g
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .optimizer import Optimizer


class SGD(Optimizer):
    """``SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False)``;
    state per parameter: ``momentum_buffer`` (same shape as the parameter) when momentum."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:
        for name, value in (("learning rate", lr), ("momentum", momentum),
                            ("weight_decay", weight_decay)):
            if value < 0:
                raise ValueError(f"SGD: invalid {name}: {value} (must be >= 0)")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        lr, momentum = float(group["lr"]), float(group["momentum"])
        weight_decay = float(group["weight_decay"])
        if weight_decay != 0:
            grad = grad + weight_decay * param
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= momentum
                buf += (1 - float(group["dampening"])) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        param -= lr * grad
