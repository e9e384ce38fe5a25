"""The Tensor: an ndarray plus the graph link to the op that made it.

Every method here is a thin wrapper: the math of each op (forward and backward side by side)
lives in ``tinygrad_conv.ops``; graph recording and the backward walk live in ``engine``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from . import engine

DEFAULT_FLOAT = np.float32


def _as_array(data: Any, dtype: Any) -> np.ndarray:
    if isinstance(data, Tensor):
        arr = np.array(data.data, dtype=dtype, copy=True)
    else:
        arr = np.array(data, dtype=dtype, copy=True)
        if dtype is None and arr.dtype.kind == "f" and arr.dtype != DEFAULT_FLOAT:
            arr = arr.astype(DEFAULT_FLOAT)
    if arr.dtype.kind not in "fiub":
        raise TypeError(
            f"Tensor: cannot hold data of dtype {arr.dtype}; pass numbers (float, int or bool)"
        )
    return arr


class Tensor:
    """An n-dimensional array that records the operations applied to it.

    ``Tensor(data, requires_grad=False, dtype=None)``: data is a Tensor, ndarray, list or number.
    Float data becomes float32 unless ``dtype`` says otherwise; integer data stays integer.
    """

    # slots: a step makes dozens of tensors, and compact ones are cheaper to make and reach;
    # __dict__ keeps arbitrary attributes working, __weakref__ lets ops point at outputs
    __slots__ = ("data", "grad", "op", "_hooks", "_retains_grad", "requires_grad", "_version",
                 "__dict__", "__weakref__")
    __array_ufunc__ = None  # make `ndarray + Tensor` call Tensor.__radd__
    __hash__ = object.__hash__  # __eq__ is elementwise, so hash by identity

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None) -> None:
        self.data: np.ndarray = _as_array(data, dtype)
        self.grad: Tensor | None = None
        self.op: engine.Op | None = None
        self._hooks: Sequence[Callable] = ()  # a list once a hook is registered
        self._retains_grad = False
        self.requires_grad = False
        self._version = 0  # counts in-place changes; ops remember it for their backward
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _from_array(cls, arr: np.ndarray, requires_grad: bool = False) -> Tensor:
        """Wrap an array without copying or converting (for ops' outputs)."""
        t = cls.__new__(cls)
        t.data, t.grad, t.op, t._hooks, t._retains_grad = arr, None, None, (), False
        t.requires_grad = requires_grad
        t._version = 0
        return t

    # ---- attributes -------------------------------------------------------------------
    # the array's own attributes, read through C getters (no Python call per read: the
    # engine and the layers read shapes for every op)
    shape = property(operator.attrgetter("data.shape"), doc="The array's shape (a tuple).")
    ndim = property(operator.attrgetter("data.ndim"), doc="The number of dimensions.")
    dtype = property(operator.attrgetter("data.dtype"), doc="The array's NumPy dtype.")

    def size(self, dim: int | None = None) -> Any:
        """The shape (a tuple), or with ``dim`` the size of that dimension (as PyTorch)."""
        if dim is None:
            return self.data.shape
        return self.data.shape[_check_dim("size", self, dim)]

    def dim(self) -> int:
        """The number of dimensions (same as ``ndim``)."""
        return self.data.ndim

    def numel(self) -> int:
        """The number of elements."""
        return self.data.size

    nelement = numel

    @property
    def device(self) -> Any:
        """Always the CPU: ``device("cpu")``."""
        return CPU

    @property
    def grad_fn(self) -> engine.Op | None:
        """The op that made this tensor (its ``.name`` says which), None for a leaf."""
        return self.op

    @property
    def _version_counter(self) -> int:
        return self._version

    @property
    def parents(self) -> tuple[Tensor, ...]:
        """The inputs of the op that made this tensor (empty for a leaf)."""
        return self.op.inputs if self.op is not None else ()

    @property
    def is_leaf(self) -> bool:
        return self.op is None

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.data if dtype is None else self.data.astype(dtype)

    def numpy(self) -> np.ndarray:
        """The underlying array (shared, not copied), as ``torch.Tensor.numpy``."""
        return self.data

    def item(self) -> float | int | bool:
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise RuntimeError(
                f"item(): only one-element tensors convert, this one has shape {self.shape}"
            )
        return self.data.item()

    def tolist(self) -> Any:
        """The values as (nested) Python lists of numbers; a number for a 0-d tensor."""
        return self.data.tolist()

    def __float__(self) -> float:
        return float(self._scalar())

    def __int__(self) -> int:
        return int(self._scalar())

    def _scalar(self) -> Any:
        if self.data.size != 1:
            raise ValueError(f"only one element tensors can be converted to Python scalars; "
                             f"this one has shape {self.shape}")
        return self.data.item()

    def __index__(self) -> int:
        if self.dtype.kind not in "iub":
            raise TypeError(f"only integer tensors of a single element can be used as an index, "
                            f"this one is {self.dtype} of shape {self.shape}")
        return int(self.item())

    def __format__(self, spec: str) -> str:
        if self.ndim == 0:
            return format(self.item(), spec)
        if spec:
            raise TypeError(f"unsupported format string {spec!r} for a tensor of shape "
                            f"{self.shape}; format its .tolist() or one element")
        return str(self)

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="tensor(")
        extra = ""
        if self.dtype != DEFAULT_FLOAT:
            extra += f", dtype={self.dtype}"
        if self.op is not None:
            extra += f", op={self.op.name}"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise RuntimeError(
                f"the truth value of a tensor with {self.data.size} elements is ambiguous; "
                "use .any() or .all() on t.numpy()"
            )
        return bool(self.data)

    # ---- autograd ---------------------------------------------------------------------
    def backward(
        self, grad: Any = None, retain_graph: bool | None = None, create_graph: bool = False
    ) -> None:
        """Accumulate d(self)/d(leaf) into ``.grad`` of every leaf that requires grad.

        ``grad`` (same shape as self) seeds the walk; it defaults to 1 for a one-element tensor.
        ``retain_graph`` defaults to ``create_graph`` (as PyTorch): the grads' own graph runs
        through this one.
        """
        retain_graph = create_graph if retain_graph is None else retain_graph
        if not self.requires_grad:
            raise RuntimeError(
                "backward: this tensor does not require grad and has no graph; create the "
                "inputs with requires_grad=True (and do not compute it under no_grad)"
            )
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward: grad can be implied only for a one-element tensor, but this one "
                    f"has shape {self.shape}; pass grad= with that shape (or reduce it first, "
                    "e.g. .sum())"
                )
            seed = Tensor._from_array(np.array(1, dtype=self.dtype).reshape(self.shape))
        else:
            seed = grad if isinstance(grad, Tensor) else Tensor(grad, dtype=self.dtype)
            if seed.shape != self.shape:
                raise RuntimeError(
                    f"backward: grad has shape {seed.shape} but the tensor has shape {self.shape}"
                )
        engine.run_backward(self, seed, retain_graph, create_graph)

    def detach(self) -> Tensor:
        """A new leaf sharing this tensor's data, cut from the graph."""
        return Tensor._from_array(self.data)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set ``requires_grad`` in place (leaves only); returns self."""
        if requires_grad and self.data.dtype.kind != "f":
            raise RuntimeError(
                f"only floating-point tensors can require grad; this one is {self.dtype} "
                "(pass dtype=np.float32 or float data)"
            )
        if not requires_grad and self.op is not None:
            raise RuntimeError("requires_grad_(False) works on leaves only; use .detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self) -> None:
        """Keep ``.grad`` on this non-leaf tensor after backward."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad: this tensor does not require grad")
        self._retains_grad = True

    def register_hook(self, fn: Callable[[Tensor], Tensor | None]) -> RemovableHandle:
        """Call ``fn(grad)`` when this tensor's grad is computed; a returned Tensor (of the
        grad's shape) replaces it.

        Returns a handle: ``handle.remove()`` (or ``handle()``) removes the hook; twice is
        harmless.
        """
        if not self.requires_grad:
            raise RuntimeError("register_hook: this tensor does not require grad")
        if not isinstance(self._hooks, list):  # the shared empty tuple every tensor starts with
            self._hooks = []
        self._hooks.append(fn)
        return RemovableHandle(self._hooks, fn)

    # ---- operators (math in ops.elementwise / ops.linalg) ------------------------------
    def __add__(self, other: Any) -> Tensor:
        return E.add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return E.add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return E.sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return E.sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return E.mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return E.mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return E.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return E.div(other, self)

    def __floordiv__(self, other: Any) -> Tensor:
        return E.floor_divide(self, other)

    def __rfloordiv__(self, other: Any) -> Tensor:
        return E.floor_divide(other, self)

    def __mod__(self, other: Any) -> Tensor:
        return E.remainder(self, other)

    def __rmod__(self, other: Any) -> Tensor:
        return E.remainder(other, self)

    def __pow__(self, other: Any) -> Tensor:
        return E.pow(self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return E.pow(other, self)

    def __matmul__(self, other: Any) -> Tensor:
        return L.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return L.matmul(other, self)

    def __neg__(self) -> Tensor:
        return E.neg(self)

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return E.compare(np.equal, self, other)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return E.compare(np.not_equal, self, other)

    def __lt__(self, other: Any) -> Tensor:
        return E.compare(np.less, self, other)

    def __le__(self, other: Any) -> Tensor:
        return E.compare(np.less_equal, self, other)

    def __gt__(self, other: Any) -> Tensor:
        return E.compare(np.greater, self, other)

    def __ge__(self, other: Any) -> Tensor:
        return E.compare(np.greater_equal, self, other)

    def __getitem__(self, index: Any) -> Tensor:
        return M.getitem(self, index)

    # ---- elementwise methods ----------------------------------------------------------
    def exp(self) -> Tensor:
        return E.exp(self)

    def log(self) -> Tensor:
        return E.log(self)

    def sqrt(self) -> Tensor:
        return E.sqrt(self)

    def abs(self) -> Tensor:
        return E.abs(self)

    def relu(self) -> Tensor:
        return E.relu(self)

    def sigmoid(self) -> Tensor:
        return E.sigmoid(self)

    def tanh(self) -> Tensor:
        return E.tanh(self)

    def clip(self, lo: float | None = None, hi: float | None = None) -> Tensor:
        return E.clip(self, lo, hi)

    def clamp(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
        """Limit values to [min, max] (either may be None); gradient 1 inside, 0 outside."""
        return E.clip(self, _number(min), _number(max))

    def pow(self, exponent: Any) -> Tensor:
        return E.pow(self, exponent)

    def neg(self) -> Tensor:
        return E.neg(self)

    def square(self) -> Tensor:
        return E.mul(self, self)

    def softmax(self, dim: int) -> Tensor:
        """exp(x) / sum(exp(x)) along ``dim``."""
        return LS.softmax(self, dim)

    def log_softmax(self, dim: int) -> Tensor:
        """x - logsumexp(x) along ``dim``."""
        return LS.log_softmax(self, dim)

    def masked_fill(self, mask: Any, value: Any) -> Tensor:
        """``value`` where the boolean ``mask`` (broadcast to this shape) is set, else self."""
        return E.where(mask, E.full_like_value(self, value), self)

    def where(self, condition: Any, other: Any) -> Tensor:
        """self where ``condition`` is set, else ``other`` (as ``tc.where(condition, self,
        other)``)."""
        return E.where(condition, self, other)

    def eq(self, other: Any) -> Tensor:
        return self == other

    def ne(self, other: Any) -> Tensor:
        return self != other

    def lt(self, other: Any) -> Tensor:
        return self < other

    def le(self, other: Any) -> Tensor:
        return self <= other

    def gt(self, other: Any) -> Tensor:
        return self > other

    def ge(self, other: Any) -> Tensor:
        return self >= other

    def equal(self, other: Any) -> bool:
        """True when ``other`` has the same shape and values."""
        other = as_tensor(other)
        return self.shape == other.shape and bool(np.array_equal(self.data, other.data))

    def any(self) -> Tensor:
        return Tensor._from_array(np.any(self.data))

    def all(self) -> Tensor:
        return Tensor._from_array(np.all(self.data))

    def clone(self) -> Tensor:
        """A copy of the data that stays in the graph (gradient flows through unchanged)."""
        return E.clone(self)

    def astype(self, dtype: Any) -> Tensor:
        """Cast to ``dtype`` (differentiable between float dtypes)."""
        return E.cast(self, np.dtype(dtype))

    def float(self) -> Tensor:
        return self.astype(np.float32)

    def double(self) -> Tensor:
        return self.astype(np.float64)

    def long(self) -> Tensor:
        return self.astype(np.int64)

    def int(self) -> Tensor:
        return self.astype(np.int32)

    def bool(self) -> Tensor:
        return self.astype(np.bool_)

    def to(self, *args: Any, dtype: Any = None, device: Any = None, copy: bool = False,
           non_blocking: bool = False) -> Tensor:
        """``to(dtype)``, ``to(device)``, ``to(device, dtype)`` or ``to(other_tensor)``.

        The only device is the CPU; any other raises. Returns self when nothing changes.
        """
        dtype = parse_to_args(args, dtype, device)
        out = self if dtype is None else self.astype(dtype)
        return E.clone(out) if copy and out is self else out

    def cpu(self) -> Tensor:
        """Self: tensors live on the CPU."""
        return self

    def type(self, dtype: Any = None) -> Any:
        """Without ``dtype``, PyTorch's type name (``"torch.FloatTensor"``); with it, a cast."""
        if dtype is None:
            return _TYPE_NAMES.get(self.dtype.name, f"torch.{self.dtype.name}")
        return self.astype(dtype)

    def type_as(self, other: Tensor) -> Tensor:
        return self.astype(other.dtype)

    def contiguous(self) -> Tensor:
        """Self if its data is C-contiguous, else a contiguous copy (still in the graph)."""
        return self if self.data.flags.c_contiguous else E.clone(self)

    # ---- reductions -------------------------------------------------------------------
    def sum(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
            keepdim: bool | None = None) -> Tensor:
        return R.sum(self, _axis(axis, dim), _keep(keepdims, keepdim))

    def mean(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None,
             keepdim: bool | None = None) -> Tensor:
        return R.mean(self, _axis(axis, dim), _keep(keepdims, keepdim))

    def max(self, dim: Any = None, keepdim: bool = False, *, axis: Any = None,
            keepdims: bool | None = None) -> Any:
        """Without ``dim``, the largest value (0-d). With ``dim``, ``(values, indices)`` as a
        named tuple; with a Tensor, the elementwise maximum (as ``torch.max``)."""
        if isinstance(dim, Tensor):
            return E.maximum(self, dim)
        return R.max_with_indices(self, _axis(axis, dim), _keep(keepdim, keepdims), "max")

    def min(self, dim: Any = None, keepdim: bool = False, *, axis: Any = None,
            keepdims: bool | None = None) -> Any:
        """As ``max``, for the smallest."""
        if isinstance(dim, Tensor):
            return E.minimum(self, dim)
        return R.max_with_indices(self, _axis(axis, dim), _keep(keepdim, keepdims), "min")

    def amax(self, dim: Any = None, keepdim: bool = False, *, axis: Any = None,
             keepdims: bool | None = None) -> Tensor:
        """Maximum over ``dim`` (an int, a tuple, or None for all); ties share the gradient."""
        return R.amax(self, _axis(axis, dim), _keep(keepdim, keepdims))

    def amin(self, dim: Any = None, keepdim: bool = False, *, axis: Any = None,
             keepdims: bool | None = None) -> Tensor:
        """Minimum over ``dim``; ties share the gradient."""
        return R.amin(self, _axis(axis, dim), _keep(keepdim, keepdims))

    def argmax(self, dim: int | None = None, keepdim: bool = False, *,
               axis: int | None = None) -> Tensor:
        """Indices of the maxima (int64, no grad); over the flattened tensor without dim."""
        return R.arg_extreme(np.argmax, self, _axis(axis, dim), keepdim)

    def argmin(self, dim: int | None = None, keepdim: bool = False, *,
               axis: int | None = None) -> Tensor:
        return R.arg_extreme(np.argmin, self, _axis(axis, dim), keepdim)

    def sort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> Any:
        """``(values, indices)`` sorted along ``dim``; values keep the gradient."""
        return R.sort(self, dim, descending)

    def argsort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
        """The indices that sort along ``dim`` (int64)."""
        return R.sort(self, dim, descending).indices

    def topk(self, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:  # noqa: A002
        """``(values, indices)`` of the k largest (or smallest) along ``dim``."""
        return R.topk(self, k, dim, largest)

    def gather(self, dim: int, index: Any) -> Tensor:
        """out[i][j] = self[index[i][j]][j] for dim 0 (and so on), as ``torch.gather``."""
        return M.gather(self, dim, index)

    def var(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
            correction: float | None = None) -> Tensor:
        """Variance over ``dim``, divided by n - correction (correction 1 unless
        ``unbiased=False`` or ``correction=`` says otherwise)."""
        return R.var(self, dim, _correction(unbiased, correction), keepdim)

    def std(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *,
            correction: float | None = None) -> Tensor:
        """Standard deviation: ``var(...).sqrt()``."""
        return E.sqrt(R.var(self, dim, _correction(unbiased, correction), keepdim))

    def norm(self, p: Any = 2, dim: Any = None, keepdim: bool = False) -> Tensor:
        """The p-norm (2, 1 or inf) over ``dim`` (all elements by default)."""
        return R.norm(self, p, dim, keepdim)

    # ---- movement ---------------------------------------------------------------------
    def reshape(self, *shape: Any) -> Tensor:
        return M.reshape(self, _shape_arg(shape))

    view = reshape

    def permute(self, *axes: Any) -> Tensor:
        return M.permute(self, _shape_arg(axes))

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        """Swap two axes (as ``torch.transpose``)."""
        axes = list(range(self.ndim))
        dim0, dim1 = _dim(dim0, self.ndim), _dim(dim1, self.ndim)
        if not axes:  # a 0-d tensor: dims 0 and -1 name it, and swapping them changes nothing
            return M.reshape(self, ())
        axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        return M.permute(self, tuple(axes))

    @property
    def T(self) -> Tensor:
        return M.permute(self, tuple(reversed(range(self.ndim))))

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        start, end = _dim(start_dim, self.ndim), _dim(end_dim, self.ndim)
        if self.ndim == 0:
            return self.reshape(1)
        if start > end:
            raise IndexError(f"flatten() has invalid args: start_dim {start_dim} cannot come "
                             f"after end_dim {end_dim} (of a {self.ndim}-D tensor)")
        # -1 (the graph shows it) unless the tensor is empty: then -1 cannot be inferred
        merged = math.prod(self.shape[start:end + 1]) if self.data.size == 0 else -1
        return M.reshape(self, self.shape[:start] + (merged,) + self.shape[end + 1:])

    def squeeze(self, dim: int | None = None, *, axis: int | None = None) -> Tensor:
        dim = _axis(axis, dim)
        if dim is None:
            return M.reshape(self, tuple(s for s in self.shape if s != 1))
        dim = dim % max(self.ndim, 1)
        if self.ndim == 0 or self.shape[dim] != 1:
            return self
        return M.reshape(self, self.shape[:dim] + self.shape[dim + 1:])

    def unsqueeze(self, dim: int | None = None, *, axis: int | None = None) -> Tensor:
        dim = _axis(axis, dim)
        if dim is None:
            raise TypeError("unsqueeze: pass the new axis as dim= (or axis=)")
        dim = dim % (self.ndim + 1)
        return M.reshape(self, self.shape[:dim] + (1,) + self.shape[dim:])

    def expand(self, *shape: Any) -> Tensor:
        """Broadcast to ``shape`` (as ``np.broadcast_to``; -1 keeps a size)."""
        shape = _shape_arg(shape)
        lead = len(shape) - self.ndim
        full = tuple(
            self.shape[i - lead] if s == -1 else s for i, s in enumerate(shape)
        )
        return M.broadcast_to(self, full)

    def expand_as(self, other: Tensor) -> Tensor:
        return self.expand(other.shape)

    def view_as(self, other: Tensor) -> Tensor:
        return self.reshape(other.shape)

    reshape_as = view_as

    def t(self) -> Tensor:
        """Transpose of a tensor of at most 2 dims (as ``torch.Tensor.t``)."""
        if self.ndim > 2:
            raise ValueError(f"t() expects a tensor with <= 2 dims, got shape {self.shape}; "
                             "use .transpose(dim0, dim1) or .permute(...)")
        return self if self.ndim < 2 else self.transpose(0, 1)

    def repeat(self, *sizes: Any) -> Tensor:
        """Tile the tensor ``sizes[i]`` times along dim i (as ``torch.Tensor.repeat``)."""
        return M.repeat(self, _shape_arg(sizes))

    def split(self, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
        """Pieces of ``split_size`` along ``dim`` (the last may be smaller), or of the listed
        sizes."""
        return M.split(self, split_size_or_sections, dim)

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        """``chunks`` pieces (fewer when the size does not allow) along ``dim``."""
        n = self.shape[_check_dim("chunk", self, dim)]
        return M.split(self, max(1, -(-n // chunks)), dim)

    def unbind(self, dim: int = 0) -> tuple[Tensor, ...]:
        """The slices along ``dim``, each without that dim."""
        return tuple(piece.squeeze(dim) for piece in M.split(self, 1, dim))

    # ---- in place (as PyTorch: same object and array; see ops.inplace) -----------------
    def add_(self, other: Any, *, alpha: Any = 1) -> Tensor:
        return I.update(self, _scaled(E.add, alpha), other)

    def sub_(self, other: Any, *, alpha: Any = 1) -> Tensor:
        return I.update(self, _scaled(E.sub, alpha), other)

    def mul_(self, other: Any) -> Tensor:
        return I.update(self, E.mul, other)

    def div_(self, other: Any) -> Tensor:
        return I.update(self, E.div, other)

    def pow_(self, exponent: Any) -> Tensor:
        return I.update(self, E.pow, exponent)

    def clamp_(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
        return I.update(self, lambda a: a.clamp(min, max))

    clip_ = clamp_

    def masked_fill_(self, mask: Any, value: Any) -> Tensor:
        return I.update(self, lambda a: a.masked_fill(mask, value))

    def zero_(self) -> Tensor:
        """Set every element to 0 in place; returns self."""
        return I.fill(self, 0)

    def fill_(self, value: Any) -> Tensor:
        """Set every element to ``value`` in place; returns self."""
        return I.fill(self, value)

    def copy_(self, src: Any) -> Tensor:
        """Copy ``src`` (broadcast and cast to this tensor) into it in place; returns self."""
        return I.copy(self, src)

    __iadd__ = add_
    __isub__ = sub_
    __imul__ = mul_
    __itruediv__ = div_


def _scaled(fn: Callable, alpha: Any) -> Callable:
    """fn(a, alpha * b), or fn itself when alpha is 1."""
    if isinstance(alpha, (int, float)) and alpha == 1:
        return fn
    return lambda a, b: fn(a, E.mul(b, alpha))


def _number(value: Any) -> Any:
    return value.item() if isinstance(value, Tensor) else value


def _correction(unbiased: bool | None, correction: float | None) -> float:
    if correction is not None:
        return correction
    return 0.0 if unbiased is False else 1.0


def _check_dim(name: str, t: Tensor, dim: int) -> int:
    n = max(t.ndim, 1)
    if not isinstance(dim, (int, np.integer)) or not -n <= dim < n:
        raise IndexError(f"{name}: dim {dim!r} is out of range for a tensor of shape {t.shape} "
                         f"(expected an int in [{-n}, {n - 1}])")
    return int(dim) % n


class device:  # noqa: N801 (PyTorch's name)
    """A device; the only one is ``device("cpu")``."""

    def __init__(self, kind: Any = "cpu") -> None:
        kind = str(kind)
        _check_device(kind)
        self.type = "cpu"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (device, str)) and str(other) == "cpu"

    def __hash__(self) -> int:
        return hash("cpu")

    def __str__(self) -> str:
        return "cpu"

    def __repr__(self) -> str:
        return "device(type='cpu')"


def parse_to_args(args: tuple, dtype: Any, device: Any) -> Any:
    """The dtype that ``to(*args, dtype=, device=)`` asks for (None: keep), after checking
    that any device named is the CPU. A Tensor argument stands for its dtype."""
    for arg in args:
        if isinstance(arg, Tensor):
            dtype = arg.dtype
        elif _is_device(arg):
            device = arg
        else:
            dtype = arg
    if device is not None:
        _check_device(device)
    return dtype


def _is_device(arg: Any) -> bool:
    return isinstance(arg, device) or (isinstance(arg, str) and arg.split(":")[0] in _DEVICES)


_DEVICES = ("cpu", "cuda", "mps", "xpu", "meta")


def _check_device(kind: Any) -> None:
    if str(kind).split(":")[0] != "cpu":
        raise RuntimeError(f"device {str(kind)!r} is not available: tinygrad_conv runs on the "
                           "CPU only; use 'cpu'")


CPU = device("cpu")

_TYPE_NAMES = {"float32": "torch.FloatTensor", "float64": "torch.DoubleTensor",
               "float16": "torch.HalfTensor", "int64": "torch.LongTensor",
               "int32": "torch.IntTensor", "int16": "torch.ShortTensor",
               "int8": "torch.CharTensor", "uint8": "torch.ByteTensor",
               "bool": "torch.BoolTensor"}


class RemovableHandle:
    """What ``register_hook`` returns: ``remove()`` (or calling it) takes the hook out;
    removing twice is harmless."""

    def __init__(self, hooks: list, fn: Callable) -> None:
        self._hooks, self._fn = hooks, fn

    def remove(self) -> None:
        if self._hooks is not None and self._fn in self._hooks:
            self._hooks.remove(self._fn)
        self._hooks = None

    __call__ = remove

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _axis(axis: Any, dim: Any) -> Any:
    if dim is not None:
        if axis is not None:
            raise TypeError("pass either axis= or dim=, not both")
        axis = dim
    return tuple(axis) if isinstance(axis, list) else axis


def _keep(keepdims: bool, keepdim: bool | None) -> bool:
    return bool(keepdims if keepdim is None else keepdim)


def _shape_arg(shape: tuple) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def clear_grads(tensors: Iterable[Tensor], set_to_none: bool = True) -> None:
    """Clear each tensor's ``.grad``: to None (PyTorch 2's default) or to zeros in place."""
    for t in tensors:
        if set_to_none:
            t.grad = None
        elif t.grad is not None:
            t.grad.data[...] = 0


def as_tensor(x: Any) -> Tensor:
    """``x`` if it is a Tensor, else a constant Tensor (no grad) made from it."""
    return x if isinstance(x, Tensor) else Tensor(x)


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """Same as ``Tensor(data, requires_grad, dtype)``."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def _dim(dim: Any, ndim: int) -> int:
    """``dim`` wrapped into 0..ndim-1; PyTorch's IndexError when it is out of range."""
    lo, hi = -max(ndim, 1), max(ndim, 1) - 1
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"a dimension must be an int, got {dim!r}")
    if not lo <= dim <= hi:
        raise IndexError(f"Dimension out of range (expected to be in range of [{lo}, {hi}], "
                         f"but got {dim})")
    return int(dim) % max(ndim, 1)


def _dims(shape: Sequence) -> tuple[int, ...]:
    return _shape_arg(tuple(shape))


def zeros(*shape: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """A tensor of zeros of the given shape (float32 unless ``dtype``)."""
    return Tensor(np.zeros(_dims(shape), dtype or DEFAULT_FLOAT), requires_grad, dtype)


def ones(*shape: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """A tensor of ones of the given shape (float32 unless ``dtype``)."""
    return Tensor(np.ones(_dims(shape), dtype or DEFAULT_FLOAT), requires_grad, dtype)


def zeros_like(t: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    return zeros(*np.shape(t), requires_grad=requires_grad, dtype=dtype or np.asarray(t).dtype)


def ones_like(t: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    return ones(*np.shape(t), requires_grad=requires_grad, dtype=dtype or np.asarray(t).dtype)


def randn(*shape: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """Standard normal samples from the generator ``manual_seed`` seeds (drawn directly in
    float32 or float64: no larger temporary than the result)."""
    from .rng import draw

    return Tensor._from_array(draw("standard_normal", _dims(shape), dtype)).requires_grad_(
        requires_grad)


def rand(*shape: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """Uniform samples in [0, 1) from the generator ``manual_seed`` seeds."""
    from .rng import draw

    return Tensor._from_array(draw("random", _dims(shape), dtype)).requires_grad_(requires_grad)


def arange(start: float, end: float | None = None, step: float = 1, *,
           requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """Values from start to end (exclusive), as ``torch.arange``: int64 for ints, else float32."""
    if end is None:
        start, end = 0, start
    data = np.arange(start, end, step)
    return Tensor(data, requires_grad, dtype)


def cat(tensors: Sequence[Tensor], axis: int = 0, *, dim: int | None = None) -> Tensor:
    """Join tensors along an existing axis."""
    return M.cat(tensors, axis if dim is None else dim)


def stack(tensors: Sequence[Tensor], axis: int = 0, *, dim: int | None = None) -> Tensor:
    """Join tensors along a new axis."""
    axis = axis if dim is None else dim
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("stack: expected a non-empty sequence of tensors")
    return M.cat([t.unsqueeze(axis) for t in tensors], axis)


engine.bind_tensor_class(Tensor)

from .ops import elementwise as E  # noqa: E402  (ops import Tensor from this module)
from .ops import inplace as I  # noqa: E402
from .ops import linalg as L  # noqa: E402
from .ops import loss as LS  # noqa: E402
from .ops import movement as M  # noqa: E402
from .ops import reduce as R  # noqa: E402
