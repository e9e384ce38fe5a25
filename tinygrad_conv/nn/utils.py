"""``nn.utils``: gradient clipping, as ``torch.nn.utils``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..tensor import Tensor


def _grads(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p.grad for p in params if p.grad is not None]


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    """Scale all grads in place so that their joint norm is at most ``max_norm``; returns
    the norm before clipping (a 0-d tensor). The scale is max_norm / (norm + 1e-6), applied
    only when below 1, as PyTorch."""
    grads = _grads(parameters)
    if not grads:
        return Tensor(0.0)
    norm_type = float(norm_type)
    if norm_type == float("inf"):
        total = max(float(np.abs(g.data).max(initial=0.0)) for g in grads)
    else:
        per = [np.sum(np.abs(g.data.astype(np.float64)) ** norm_type) for g in grads]
        total = float(np.sum(per)) ** (1.0 / norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients is non-finite, "
                           "so it cannot be clipped")
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g.data *= g.dtype.type(coef)
            g._version += 1
    return Tensor._from_array(np.asarray(total, dtype=grads[0].dtype))


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: Any) -> None:
    """Clamp every grad to [-clip_value, clip_value] in place."""
    clip_value = float(clip_value)
    for g in _grads(parameters):
        np.clip(g.data, -clip_value, clip_value, out=g.data)
        g._version += 1
