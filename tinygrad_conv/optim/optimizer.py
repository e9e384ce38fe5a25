"""The Optimizer base class: parameter groups, per-parameter state, and their state dicts.

``params`` is an iterable of Parameters or of dicts ``{"params": [...], "lr": ...}`` (each a
parameter group; settings a group leaves out come from the optimiser's defaults). Subclasses
implement ``_update(p, grad, state, group)`` on NumPy arrays; ``step`` calls it for each
parameter that has a grad, in place on ``p.data`` and without recording a graph.

``state_dict()`` has PyTorch's shape: parameters are replaced by their index (counted across
groups in order)::

    {"state": {0: {"momentum_buffer": array}, ...},
     "param_groups": [{"lr": 0.1, "momentum": 0.9, ..., "params": [0, 1]}]}
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..engine import set_grad_enabled
from ..tensor import Tensor, clear_grads


class Optimizer:
    """Base of SGD, Adam and AdamW. ``defaults`` holds the hyperparameters' default values."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        if isinstance(params, Tensor):
            raise TypeError(
                "params should be an iterable of Tensors or dicts, got a single Tensor; "
                "pass model.parameters() or [tensor]"
            )
        self.defaults = defaults
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Tensor, dict[str, Any]] = {}
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group ``{"params": [...], **settings}``; missing settings take the defaults."""
        params = group["params"]
        if isinstance(params, (set, frozenset)):
            raise TypeError("optimizer params must be an ordered collection (a list), not a set")
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            _check_param(p)
        known = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or known & {id(p) for p in params}:
            raise ValueError("some parameters appear more than once (in one or several groups)")
        full = {**self.defaults, **group, "params": params}
        self.param_groups.append(full)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the grads of every parameter (to None, PyTorch 2's default, or to zeros)."""
        clear_grads(self._all_params(), set_to_none)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a grad; ``closure`` (re-evaluating the loss) is
        called first with grad enabled and its result returned."""
        loss = None
        if closure is not None:
            with set_grad_enabled(True):
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.data.astype(p.data.dtype, copy=False)
                self._update(p.data, grad, self.state.setdefault(p, {}), group)
                p._version += 1  # an in-place change: graphs that saved p see it
        return loss

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _all_params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}`` (copies)."""
        index = {id(p): i for i, p in enumerate(self._all_params())}
        groups, start = [], 0
        for g in self.param_groups:
            settings = {k: copy.deepcopy(v) for k, v in g.items() if k != "params"}
            groups.append({**settings, "params": list(range(start, start + len(g["params"])))})
            start += len(g["params"])
        state = {index[id(p)]: _copy_state(s) for p, s in self.state.items() if s}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters and state saved by ``state_dict`` (arrays are copied and
        cast to each parameter's dtype). The groups must match this optimiser's in size."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, this optimizer "
                f"has {len(self.param_groups)}"
            )
        for i, (saved, own) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(
                    f"loaded state dict's parameter group {i} has {len(saved['params'])} "
                    f"parameters, this optimizer's has {len(own['params'])}"
                )
        by_index = {}
        for saved, own in zip(saved_groups, self.param_groups, strict=True):
            by_index.update(zip(saved["params"], own["params"], strict=True))
        new_state = {}
        for key, s in state_dict["state"].items():
            if int(key) not in by_index:
                raise ValueError(f"loaded state dict has state for unknown parameter {key}")
            p = by_index[int(key)]
            new_state[p] = _cast_state(s, p, int(key))
        for saved, own in zip(saved_groups, self.param_groups, strict=True):
            own.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})
        self.state = new_state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines + [")"])


def _check_param(p: Any) -> None:
    if not isinstance(p, Tensor):
        raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
    if not p.is_leaf:
        raise ValueError("can't optimize a non-leaf Tensor (one made by an op); use a Parameter")


def _copy_state(state: dict[str, Any]) -> dict[str, Any]:
    return {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else copy.deepcopy(v)
            for k, v in state.items()}


def _cast_state(state: dict[str, Any], p: Tensor, index: int) -> dict[str, Any]:
    out = {}
    for k, v in state.items():
        if isinstance(v, Tensor):
            v = v.data
        if isinstance(v, np.ndarray) and v.ndim > 0:
            if v.shape != p.shape:
                raise ValueError(
                    f"loaded optimizer state {k!r} of parameter {index} has shape {v.shape}, "
                    f"the parameter has shape {p.shape}"
                )
            v = v.astype(p.dtype, copy=True)
        elif isinstance(v, np.ndarray):
            v = v.item()
        out[k] = copy.deepcopy(v)
    return out
