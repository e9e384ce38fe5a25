"""Module, Parameter and Sequential: the containers that hold a model's weights.

A Module registers what is assigned to it: a ``Parameter`` goes to ``_parameters``, a Module to
``_modules`` and a tensor passed to ``register_buffer`` to ``_buffers``. Walks over them
(``named_parameters``, ``state_dict``...) visit a module's own entries in the order they were
assigned, then each child's, so the order and the dotted names (``"features.0.weight"``) are
those PyTorch gives.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np

from .. import engine
from ..tensor import Tensor, clear_grads, parse_to_args


class Parameter(Tensor):
    """A Tensor that a Module registers as a learnable weight (``requires_grad=True``)."""

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        if data is None:
            data = np.empty(0, dtype=np.float32)
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(strict=False)`` skipped."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of layers and models: subclass it, assign layers in ``__init__``, write
    ``forward``, and call the instance."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    # ---- registration -----------------------------------------------------------------
    def _registry(self, kind: str) -> dict:
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {kind} before Module.__init__() call: call super().__init__() "
                f"first in {type(self).__name__}.__init__"
            )
        return self.__dict__[f"_{kind}"]

    def _forget(self, name: str) -> None:
        for kind in ("parameters", "buffers", "modules"):
            self.__dict__.get(f"_{kind}", {}).pop(name, None)
        self.__dict__.pop(name, None)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add ``param`` (or None, a declared but absent parameter such as ``bias=False``)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot assign {type(param).__name__} as parameter {name!r} of "
                f"{type(self).__name__} (nn.Parameter or None expected)"
            )
        registry = self._registry("parameters")
        self._forget(name)
        registry[name] = param

    def register_buffer(self, name: str, tensor: Any, persistent: bool = True) -> None:
        """Add a non-learnable tensor (e.g. running statistics); in ``state_dict`` if persistent."""
        registry = self._registry("buffers")
        self._forget(name)
        registry[name] = None if tensor is None else _as_buffer(tensor)
        self._non_persistent.discard(name)
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Add a child module under ``name`` (also done by assigning it as an attribute)."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        if not name or "." in name:
            raise KeyError(f"module name must be a non-empty string without '.', got {name!r}")
        registry = self._registry("modules")
        self._forget(name)
        registry[name] = module

    def __setattr__(self, name: str, value: Any) -> None:
        params, buffers, modules = (self.__dict__.get(k) for k in
                                    ("_parameters", "_buffers", "_modules"))
        if isinstance(value, Parameter) or (params is not None and name in params):
            self.register_parameter(name, value)
        elif isinstance(value, Module) or (modules is not None and name in modules):
            self.add_module(name, value)
        elif buffers is not None and name in buffers:
            if value is not None and not isinstance(value, (Tensor, np.ndarray)):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r}")
            buffers[name] = None if value is None else _as_buffer(value)
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        params = self.__dict__.get("_parameters")  # layers read their weights every call
        if params is not None and name in params:
            return params[name]
        for kind in ("_buffers", "_modules"):
            registry = self.__dict__.get(kind, {})
            if name in registry:
                return registry[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        if not any(name in self.__dict__.get(k, {}) for k in
                   ("_parameters", "_buffers", "_modules")) and name not in self.__dict__:
            raise AttributeError(name)
        self._forget(name)
        self._non_persistent.discard(name)

    # ---- running ----------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The computation; subclasses override it."""
        raise NotImplementedError(f"{type(self).__name__} is missing the required forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run ``forward``; ops made inside record this module in their ``op.scope``."""
        stack = engine.module_stack()
        stack.append(self)
        try:
            return self.forward(*args, **kwargs)
        finally:
            stack.pop()

    def train(self, mode: bool = True) -> Module:
        """Set ``.training`` on this module and every submodule; returns self."""
        if not isinstance(mode, bool):
            raise ValueError(f"train(mode): mode must be a bool, got {mode!r}")
        object.__setattr__(self, "training", mode)
        for child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        """``train(False)``: dropout off, batch norm uses its running statistics."""
        return self.train(False)

    def to(self, *args: Any, dtype: Any = None, device: Any = None) -> Module:
        """Cast floating parameters and buffers to ``dtype`` in place (the same Parameter
        objects); a device other than the CPU raises. Returns self (as PyTorch's)."""
        dtype = parse_to_args(args, dtype, device)
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype.kind != "f":
                raise TypeError(f"Module.to: only floating dtypes are allowed, got {dtype}")
            for t in (*self.parameters(), *self.buffers()):
                if t.dtype.kind == "f" and t.dtype != dtype:
                    t.data = t.data.astype(dtype)
                    if t.grad is not None:
                        t.grad = Tensor._from_array(t.grad.data.astype(dtype))
        return self

    def cpu(self) -> Module:
        """Self: modules live on the CPU."""
        return self

    def float(self) -> Module:
        """Floating parameters and buffers to float32; returns self."""
        return self.to(np.float32)

    def double(self) -> Module:
        """Floating parameters and buffers to float64; returns self."""
        return self.to(np.float64)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Turn gradient tracking of every parameter on or off (freezing); returns self."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's ``.grad`` (to None, PyTorch 2's default, or to zeros)."""
        clear_grads(self.parameters(), set_to_none)

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call ``fn`` on every submodule (children first) and then on self; returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ---- walks ------------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Module]]:
        """(name, module) for each direct child, in registration order."""
        seen: set[int] = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator[Module]:
        """The direct child modules."""
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """(dotted name, module) for self (``""``) and every submodule, pre-order, once each."""
        seen: set[int] = set()
        stack: list[tuple[str, Module]] = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            kids = [(_join(name, k), m) for k, m in module._modules.items() if m is not None]
            stack.extend(reversed(kids))

    def modules(self) -> Iterator[Module]:
        """Self and every submodule, pre-order."""
        for _, module in self.named_modules():
            yield module

    def _named_members(self, kind: str) -> Iterator[tuple[str, Tensor]]:
        seen: set[int] = set()
        for prefix, module in self.named_modules():
            for name, t in module.__dict__[kind].items():
                if t is not None and id(t) not in seen:
                    seen.add(id(t))
                    yield _join(prefix, name), t

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) in registration order, e.g. ``("0.weight", p)``."""
        return self._named_members("_parameters")

    def parameters(self) -> Iterator[Parameter]:
        """The learnable parameters in registration order (each shared one once)."""
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self) -> Iterator[tuple[str, Tensor]]:
        """(dotted name, buffer), e.g. ``("1.running_mean", t)``."""
        return self._named_members("_buffers")

    def buffers(self) -> Iterator[Tensor]:
        """The buffers (running statistics...), not learnable."""
        for _, b in self.named_buffers():
            yield b

    # ---- state dicts ------------------------------------------------------------------
    def _state_tensors(self) -> OrderedDict[str, Tensor]:
        """name -> the live tensor, per module its parameters then its persistent buffers."""
        out: OrderedDict[str, Tensor] = OrderedDict()
        self._collect_state(out, "")
        return out

    def _collect_state(self, out: dict, prefix: str) -> None:
        for name, p in self._parameters.items():
            if p is not None:
                out[prefix + name] = p
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent:
                out[prefix + name] = b
        for name, child in self._modules.items():
            if child is not None:
                child._collect_state(out, prefix + name + ".")

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """name -> a copy of each parameter and persistent buffer (PyTorch's key names)."""
        return OrderedDict((k, np.array(t.data, copy=True))
                           for k, t in self._state_tensors().items())

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy arrays (or Tensors) into the existing parameters and buffers, in place.

        Everything is checked before anything is copied. Mis-shaped keys always raise; missing
        and unexpected keys raise when ``strict``. One RuntimeError names every bad key.
        """
        own = self._state_tensors()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        values = {k: _as_array(state_dict[k]) for k in own if k in state_dict}
        problems = [_mismatch(k, own[k], v) for k, v in values.items()]
        problems = [p for p in problems if p]
        if strict:
            problems = _key_problems(missing, unexpected) + problems
        if problems:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                + "\n\t".join(problems)
            )
        for k, v in values.items():
            own[k].data[...] = v
        return IncompatibleKeys(missing, unexpected)

    # ---- printing ---------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The settings shown inside this module's parentheses; layers override it."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr().split("\n") if self.extra_repr() else []
        kids = [f"({name}): {_indent(repr(m), 2)}" for name, m in self._modules.items()]
        if not kids and len(extra) <= 1:
            return f"{type(self).__name__}({''.join(extra)})"
        body = "\n  ".join(extra + kids)
        return f"{type(self).__name__}(\n  {body}\n)"


class Sequential(Module):
    """Runs its modules in order, each one's output the next one's input.

    ``Sequential(m0, m1, ...)`` names them "0", "1", ...; ``Sequential(OrderedDict(...))`` uses
    the given names. Supports ``len``, iteration, indexing (negative too) and slicing.

    A ReLU followed by a MaxPool2d runs as the one op relu_max_pool2d (the same values and
    gradients, fewer passes over memory) where that is exact (``_fusable``); set
    ``fuse_relu_pool = False`` on the class or an instance, or TINYGRAD_CONV_FUSE=0, to run
    them one by one (docs/architecture.md, "Fused layers").
    """

    fuse_relu_pool: bool = os.environ.get("TINYGRAD_CONV_FUSE", "1") != "0"

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(modules):
                self.add_module(str(i), module)

    def forward(self, x: Any) -> Any:
        modules = list(self._modules.values())
        i = 0
        while i < len(modules):
            if self.fuse_relu_pool and _fusable(modules[i:i + 2], x):
                x = _relu_max_pool(modules[i + 1], x)
                i += 2
            else:
                x = modules[i](x)
                i += 1
        return x

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, index: int | slice) -> Any:
        items = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(items[index]))
        if not -len(items) <= index < len(items):
            raise IndexError(f"index {index} is out of range for a Sequential of {len(items)}")
        return items[index][1]

    def append(self, module: Module) -> Sequential:
        """Add ``module`` at the end; returns self."""
        self.add_module(str(len(self)), module)
        return self


def _fusable(pair: list[Module], x: Any) -> bool:
    """Whether ``pair`` is an nn.ReLU then an nn.MaxPool2d that ``_relu_max_pool`` runs
    exactly as they would run: the library's own classes, no forward replaced on the
    instance (as ``tc.summary`` does to watch a layer), and a 4-D float tensor coming in
    (any other input runs the layers one by one, which raise their own errors)."""
    from .layers import MaxPool2d, ReLU

    return (len(pair) == 2 and type(pair[0]) is ReLU and type(pair[1]) is MaxPool2d
            and "forward" not in pair[0].__dict__ and "forward" not in pair[1].__dict__
            and isinstance(x, Tensor) and x.ndim == 4 and x.dtype.kind == "f")


def _relu_max_pool(pool: Module, x: Tensor) -> Tensor:
    """pool(relu(x)) as the one op relu_max_pool2d, recorded as made by ``pool`` (the layer
    whose output it is; the ReLU layer makes no op in this call)."""
    from .. import functional as F
    from ..ops.fused import ReluMaxPool2d

    stack = engine.module_stack()
    stack.append(pool)
    try:
        return F._max_pool(ReluMaxPool2d, "max_pool2d", x, pool.kernel_size, pool.stride,
                           pool.padding, pool.ceil_mode)
    finally:
        stack.pop()


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _indent(text: str, spaces: int) -> str:
    lines = text.split("\n")
    return "\n".join(lines[:1] + [" " * spaces + line for line in lines[1:]])


def _as_buffer(value: Any) -> Tensor:
    arr = value.data if isinstance(value, Tensor) else np.asarray(value)
    return Tensor._from_array(np.array(arr, copy=True))


def _as_array(value: Any) -> np.ndarray:
    return value.data if isinstance(value, Tensor) else np.asarray(value)


def _mismatch(key: str, target: Tensor, value: np.ndarray) -> str | None:
    if value.dtype.kind not in "fiub":
        return f"bad value for {key}: expected a numeric array, got {value.dtype} data"
    if value.shape != target.shape:
        return (f"size mismatch for {key}: copying an array with shape {value.shape} from "
                f"the checkpoint, the shape in the current model is {target.shape}")
    return None


def _key_problems(missing: Iterable[str], unexpected: Iterable[str]) -> list[str]:
    out = []
    if missing:
        out.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing))
    if unexpected:
        out.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected))
    return out
