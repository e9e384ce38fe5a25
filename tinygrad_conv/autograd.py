"""``tc.autograd.grad``: gradients of outputs with respect to chosen inputs, returned
instead of accumulated into ``.grad`` (as ``torch.autograd.grad``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import engine
from .tensor import Tensor


def _as_list(x: Any) -> list:
    return [x] if isinstance(x, Tensor) else list(x)


def grad(outputs: Tensor | Sequence[Tensor], inputs: Tensor | Sequence[Tensor],
         grad_outputs: Any = None, retain_graph: bool | None = None,
         create_graph: bool = False, allow_unused: bool = False) -> tuple[Tensor | None, ...]:
    """d(sum of outputs * grad_outputs) / d(each input), one Tensor per input.

    ``grad_outputs`` defaults to 1 for one-element outputs. ``create_graph`` records the
    gradient computation so it can be differentiated again; ``retain_graph`` defaults to it.
    An input the outputs do not depend on raises unless ``allow_unused`` (then None).
    """
    outputs, inputs = _as_list(outputs), _as_list(inputs)
    seeds = _as_list(grad_outputs) if grad_outputs is not None else [None] * len(outputs)
    if len(seeds) != len(outputs):
        raise ValueError(f"grad: {len(outputs)} outputs but {len(seeds)} grad_outputs")
    for t in outputs:
        if not t.requires_grad:
            raise RuntimeError("grad: element 0 of tensors does not require grad and does not "
                               "have a grad_fn; compute the outputs from inputs that require "
                               "grad")
    for t in inputs:
        if not t.requires_grad:
            raise RuntimeError("grad: one of the differentiated Tensors does not require grad")
    seeds = [_seed(out, s) for out, s in zip(outputs, seeds)]
    capture: dict[int, Tensor | None] = {id(t): None for t in inputs}
    retain = create_graph if retain_graph is None else retain_graph
    engine.run_backward(outputs, seeds, retain, create_graph, capture)
    result = []
    for t in inputs:
        g = capture[id(t)]
        if g is None and not allow_unused:
            raise RuntimeError("grad: one of the differentiated Tensors appears to not have "
                               "been used in the graph. Set allow_unused=True if this is the "
                               "desired behavior.")
        if g is not None and not create_graph:
            g = Tensor._from_array(np.array(g.data, dtype=t.dtype, copy=True))
        result.append(g)
    return tuple(result)


def _seed(out: Tensor, given: Any) -> Tensor:
    if given is None:
        if out.numel() != 1:
            raise RuntimeError(f"grad: grad can be implicitly created only for one-element "
                               f"outputs; pass grad_outputs for the output of shape "
                               f"{out.shape}")
        return Tensor._from_array(np.ones(out.shape, dtype=out.dtype))
    seed = given if isinstance(given, Tensor) else Tensor(given, dtype=out.dtype)
    if seed.shape != out.shape:
        raise RuntimeError(f"grad: grad_outputs has shape {seed.shape}, the output "
                           f"{out.shape}")
    return seed
