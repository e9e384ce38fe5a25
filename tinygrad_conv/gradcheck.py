"""``tc.gradcheck``: analytic gradients against central finite differences in float64."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .tensor import Tensor


def _as_float64_inputs(inputs: Sequence[Any]) -> list[Any]:
    out = []
    for x in inputs:
        if isinstance(x, Tensor) and x.dtype.kind == "f":
            # C order, so that perturbing x.data.reshape(-1) in place reaches the tensor
            data = np.ascontiguousarray(x.data, dtype=np.float64)
            out.append(Tensor(data, requires_grad=x.requires_grad, dtype=np.float64))
        else:
            out.append(x)
    return out


def _projected(fn: Callable, inputs: list[Any],
               weights: np.ndarray | None) -> tuple[Tensor, np.ndarray]:
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    if weights is None:
        weights = np.random.default_rng(0).standard_normal(out.shape)
    return (out * Tensor(weights, dtype=np.float64)).sum(), weights


def gradcheck(fn: Callable[..., Tensor], inputs: Sequence[Any], eps: float = 1e-6,
              atol: float = 1e-5, rtol: float = 1e-3, raise_exception: bool = True) -> bool:
    """Check ``fn``'s gradients w.r.t. every input Tensor with ``requires_grad``.

    Float inputs are copied to float64. The output is projected onto fixed random weights
    v (a scalar L = sum(v * fn(inputs))); dL/dx from backward is compared entry by entry with
    (L(x + eps) - L(x - eps)) / (2 eps). Returns True, or raises (or returns False) naming
    the input and its worst entry.
    """
    inputs = _as_float64_inputs(inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input Tensor has requires_grad=True")
    loss, weights = _projected(fn, inputs, None)
    for i in checked:
        inputs[i].grad = None
    loss.backward()
    # snapshot now: evaluating fn below may touch the inputs' .grad
    analytics = {i: np.zeros(inputs[i].shape) if inputs[i].grad is None
                 else inputs[i].grad.data.copy() for i in checked}
    for i in checked:  # an fn that calls backward itself must not start from these
        inputs[i].grad = None
    for i in checked:
        x, analytic = inputs[i], analytics[i]
        numeric = np.zeros(x.shape)
        flat = x.data.reshape(-1)  # a view: perturb in place, evaluate, restore
        for k in range(flat.size):
            saved = flat[k]
            flat[k] = saved + eps
            up = _projected(fn, inputs, weights)[0].item()
            flat[k] = saved - eps
            down = _projected(fn, inputs, weights)[0].item()
            flat[k] = saved
            numeric.reshape(-1)[k] = (up - down) / (2 * eps)
        excess = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if (excess > 0).any():
            worst = np.unravel_index(int(np.argmax(excess)), x.shape)
            message = (
                f"gradcheck: gradient mismatch for input {i} (shape {x.shape}) at index "
                f"{tuple(int(w) for w in worst)}: analytic {analytic[worst]:.8g}, numerical "
                f"{numeric[worst]:.8g} (atol={atol}, rtol={rtol})"
            )
            if raise_exception:
                raise AssertionError(message)
            return False
    return True
