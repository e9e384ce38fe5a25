"""The autograd engine: grad mode, the Op base class and registry, and the backward walk.

An Op is one object holding its forward (on NumPy arrays) and its backward (on Tensors, so
that with ``create_graph=True`` the gradient computation is itself recorded and can be
differentiated again). ``Op.apply`` runs the forward and, when grad is enabled and an input
requires grad, links the output Tensor to the op and the op to its inputs: that link is the
computation graph. ``run_backward`` walks it in reverse topological order.
"""

from __future__ import annotations

import functools
import inspect
import operator
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .tensor import Tensor
else:
    Tensor = None  # the class, bound by tensor.py once it is defined (it imports this module)


def bind_tensor_class(cls: type) -> None:
    """Called once by tensor.py: the class ``Op.apply`` wraps its inputs and output in."""
    global Tensor
    Tensor = cls

class _ThreadState(threading.local):
    """What differs per thread, as in PyTorch: each thread starts with grad mode on and an
    empty module stack, whatever other threads are doing."""

    grad_enabled = True

    def __init__(self) -> None:
        self.module_stack: list[Any] = []  # nn.Module.__call__ pushes itself; ops record it


_state = _ThreadState()

OPS: dict[str, type[Op]] = {}
_data, _requires_grad = operator.attrgetter("data"), operator.attrgetter("requires_grad")
_version = operator.attrgetter("_version")


def is_grad_enabled() -> bool:
    """True when operations are being recorded into the graph."""
    return _state.grad_enabled


def module_stack() -> list[Any]:
    """The modules whose forward the calling thread is inside, outermost first."""
    return _state.module_stack


class set_grad_enabled:
    """Context manager that turns graph recording on or off inside its block.

    A class, not a generator-based context manager: the backward walk enters one every
    step, and contextlib's machinery cost it several microseconds with cold caches.
    """

    def __init__(self, mode: bool) -> None:
        self._mode = bool(mode)

    def __enter__(self) -> None:
        self._previous = _state.grad_enabled
        _state.grad_enabled = self._mode

    def __exit__(self, *exc: object) -> None:
        _state.grad_enabled = self._previous


class no_grad(set_grad_enabled):
    """``with tc.no_grad():`` records nothing; also usable as a function decorator (on a
    generator function too: its body then runs without grad each time it resumes)."""

    def __init__(self) -> None:
        super().__init__(False)

    def __call__(self, fn: Callable) -> Callable:
        mode_class = type(self)
        if inspect.isgeneratorfunction(fn):
            return functools.wraps(fn)(_generator_in_mode(fn, mode_class))

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with mode_class():
                return fn(*args, **kwargs)

        return wrapper


def _generator_in_mode(fn: Callable, mode_class: type) -> Callable:
    """A generator function running ``fn``'s body inside ``mode_class()`` at every resume,
    and the caller's own grad mode while it is suspended (PyTorch's rule)."""

    def generator(*args, **kwargs):
        inner = fn(*args, **kwargs)
        with mode_class():
            value = next(inner, _DONE)
        while value is not _DONE:
            try:
                sent = yield value
            except GeneratorExit:
                with mode_class():
                    inner.close()
                raise
            except BaseException as error:
                with mode_class():
                    value = _resume(inner.throw, error)
            else:
                with mode_class():
                    value = _resume(inner.send, sent)

    return generator


_DONE = object()


def _resume(step: Callable, arg: Any) -> Any:
    try:
        return step(arg)
    except StopIteration:
        return _DONE


def register(name: str) -> Callable[[type[Op]], type[Op]]:
    """Class decorator: register an Op subclass under ``name`` (the name graphs show)."""

    def decorate(cls: type[Op]) -> type[Op]:
        if name in OPS:
            raise ValueError(f"an op named {name!r} is already registered")
        cls.name = name
        OPS[name] = cls
        return cls

    return decorate


class Op:
    """Base class of every differentiable operation.

    Subclasses define ``forward(*arrays) -> array`` and ``backward(grad) -> tuple`` (one
    Tensor or None per input, in input order). Settings passed to the constructor are kept in
    ``self.attrs`` (graph drawings show them). Anything ``forward`` stores on ``self`` for the
    backward is released after a backward unless ``retain_graph=True``.
    """

    name = "op"
    output_version = 0  # the output's in-place counter when made (set when an update is one)
    # the graph's links live in slots; whatever a forward saves for its backward goes to
    # the instance __dict__, which release() empties
    __slots__ = ("attrs", "inputs", "versions", "needs_grad", "scope", "released", "_output",
                 "__dict__")

    def __init__(self, **attrs: Any) -> None:
        self.attrs = attrs
        self.inputs: tuple[Tensor, ...] = ()
        self.versions: tuple[int, ...] = ()  # the inputs' in-place counters when recorded
        self.needs_grad: tuple[bool, ...] = ()
        self.scope: tuple[Any, ...] = ()
        self.released = False
        self._output: weakref.ref | None = None

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: Tensor) -> tuple[Tensor | None, ...]:
        raise NotImplementedError

    def output(self) -> Tensor:
        """The Tensor this op produced (alive for as long as a backward walk runs through it)."""
        out = self._output() if self._output is not None else None
        if out is None:
            raise RuntimeError(f"{self.name}: its output tensor is gone; backward cannot use it")
        if out._version != self.output_version:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: the output of op {self.name!r} (a tensor of shape "
                f"{out.shape}) is at version {out._version}; expected version "
                f"{self.output_version} instead. Change it out of place, or .clone() it first."
            )
        return out

    def apply(self, *inputs: Any) -> Tensor:
        """Run the forward on ``inputs`` (Tensors or array-likes) and record it in the graph."""
        # this runs for every op: attribute reads go through C getters (map, attrgetter),
        # not comprehensions, each of which would be a Python call of its own
        tensors = inputs
        for x in inputs:
            if not isinstance(x, Tensor):
                tensors = tuple([x if isinstance(x, Tensor) else Tensor(x) for x in inputs])
                break
        needs_grad = tuple(map(_requires_grad, tensors))
        state = _state
        record = state.grad_enabled and True in needs_grad
        self.needs_grad = needs_grad if record else (False,) * len(tensors)
        out_array = self.forward(*map(_data, tensors))
        if type(out_array) is not np.ndarray:  # full reductions give NumPy scalars
            out_array = np.asarray(out_array)
        out = Tensor._from_array(out_array, record)
        if record:
            self.inputs = tensors
            self.versions = tuple(map(_version, tensors))
            self.scope = tuple(state.module_stack)
            self._output = weakref.ref(out)
            out.op = self
        return out

    def release(self) -> None:
        """Free what forward saved for backward; a later backward through this op raises."""
        self.__dict__.clear()
        self.released = True

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.attrs.items())
        return f"<op {self.name}{'(' + settings + ')' if settings else ''}>"


def topological_order(*roots: Tensor, every_input: bool = False) -> list[Tensor]:
    """Tensors that ``roots`` depend on, each once, inputs before users.

    By default only through inputs that require grad (what backward needs); ``every_input``
    also reaches the constants the ops were given (what a drawing shows). Iterative
    depth-first post-order, so graphs of any depth work (no recursion limit); an op's first
    input is expanded first, so the order depends only on the graph's structure.
    """
    order: list[Tensor] = []
    visited: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False) for root in reversed(roots)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:  # reached again by another path, already placed
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node.op is not None:
            for parent in reversed(node.op.inputs):
                if (every_input or parent.requires_grad) and id(parent) not in visited:
                    stack.append((parent, False))
    return order


def sum_to_shape(grad: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Sum a broadcast gradient back down to ``shape`` (the one place broadcasting is undone)."""
    if grad.shape == shape:
        return grad
    from .ops.movement import sum_to

    return sum_to(grad, shape)


def run_backward(root: Tensor | list[Tensor], grad: Tensor | list[Tensor], retain_graph: bool,
                 create_graph: bool, capture: dict[int, Tensor | None] | None = None) -> None:
    """Reverse-mode accumulation from ``root`` (seeded with ``grad``) into leaf ``.grad``s.

    ``root`` and ``grad`` may be lists (several outputs, each with its seed). With
    ``capture`` (id of a tensor -> None), the grads of those tensors are stored there instead
    and no ``.grad`` is touched: ``autograd.grad``.
    """
    roots, seeds = (root, grad) if isinstance(root, list) else ([root], [grad])
    order = topological_order(*roots)
    pending: dict[int, Tensor] = {}
    for r, seed in zip(roots, seeds):
        earlier = pending.get(id(r))
        pending[id(r)] = seed if earlier is None else earlier + seed
    # arrays some other holder may also see or change
    handed_out: set[int] = {id(seed.data) for seed in seeds}
    with set_grad_enabled(create_graph):
        for node in reversed(order):
            g = pending.pop(id(node), None)
            if g is None:
                continue
            for hook in node._hooks:
                replaced = hook(g)
                if replaced is not None:
                    g = _checked_hook_grad(hook, replaced, g)
            op = node.op
            if capture is not None:
                if id(node) in capture:
                    capture[id(node)] = g
            elif op is None or node._retains_grad:
                _accumulate_into_grad(node, g, create_graph, handed_out)
            if op is not None:
                _propagate(op, g, pending, retain_graph)


def _propagate(op: Op, g: Tensor, pending: dict[int, Tensor], retain_graph: bool) -> None:
    """Run ``op``'s backward for upstream ``g`` and add each input's grad into ``pending``."""
    if op.released:
        raise RuntimeError(
            f"Trying to backward through the graph a second time (op {op.name!r}): its saved "
            "arrays were freed after the first backward. Pass retain_graph=True to the first "
            "backward() call if you need to backward through the graph again."
        )
    if tuple(map(_version, op.inputs)) != op.versions:
        _raise_modified(op)
    input_grads = op.backward(g)
    if not retain_graph:
        op.release()
    for parent, pg in zip(op.inputs, input_grads):
        if pg is None or not parent.requires_grad:
            continue
        if pg.data.shape != parent.data.shape:
            pg = sum_to_shape(pg, parent.shape)
        key = id(parent)
        earlier = pending.get(key)
        pending[key] = pg if earlier is None else earlier + pg


def _accumulate_into_grad(node: Tensor, g: Tensor, create_graph: bool,
                          handed_out: set[int]) -> None:
    """Add ``g`` into ``node.grad``, which must own its data.

    The same grad may flow to several leaves (add passes it on unchanged), be the caller's
    seed, come from a hook, or be a read-only broadcast view: then ``node.grad`` gets a copy.
    A fresh array that nothing else holds is kept as it is (no copy per parameter per step).
    """
    if node.grad is not None:
        node.grad = node.grad + g  # a new array either way
        return
    if create_graph:
        from .ops.elementwise import clone

        node.grad = clone(g)
        return
    arr = g.data
    if (id(arr) in handed_out or node._hooks or arr.base is not None
            or not arr.flags.writeable or arr.dtype != node.dtype):
        arr = np.array(arr, dtype=node.dtype, copy=True)
    handed_out.add(id(arr))
    node.grad = Tensor._from_array(arr)


def _raise_modified(op: Op) -> None:
    for i, (t, seen) in enumerate(zip(op.inputs, op.versions)):
        if t._version != seen:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: input {i} of op {op.name!r} (a tensor of shape {t.shape}) "
                f"is at version {t._version}; expected version {seen} instead. Change it out "
                "of place (e.g. x = x + 1, not x += 1), or .clone() it before the change."
            )


def _checked_hook_grad(hook: Callable, replaced: Any, g: Tensor) -> Tensor:
    """What a tensor hook returned, checked to be a gradient of the same shape."""
    if not isinstance(replaced, Tensor):
        raise TypeError(
            f"hook {getattr(hook, '__name__', hook)!r} returned {type(replaced).__name__}; a "
            "hook must return None or a Tensor"
        )
    if replaced.shape != g.shape:
        raise RuntimeError(
            f"hook {getattr(hook, '__name__', hook)!r} has changed the size of value: it "
            f"returned a gradient of shape {replaced.shape}, expected {g.shape}"
        )
    return replaced
