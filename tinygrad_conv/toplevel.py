"""The top-level functions a PyTorch script calls as ``torch.*``: dtypes, tensor creation,
math on tensors, and grad-mode switches. Thin wrappers over Tensor methods and the ops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import engine
from .ops import elementwise as E
from .ops import linalg as L
from .tensor import DEFAULT_FLOAT, Tensor, _dims, rand, randn
from .tensor import as_tensor as _tensor_of

float32 = float_ = np.dtype(np.float32)
float64 = double = np.dtype(np.float64)
float16 = half = np.dtype(np.float16)
int64 = long = np.dtype(np.int64)
int32 = int_ = np.dtype(np.int32)
int16 = short = np.dtype(np.int16)
int8 = np.dtype(np.int8)
uint8 = np.dtype(np.uint8)
bool_ = np.dtype(np.bool_)


__all__ = [
    "float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool_",
    "float_", "double", "half", "long", "int_", "short",
    "from_numpy", "as_tensor", "empty", "full", "full_like", "empty_like", "randn_like",
    "rand_like", "randint", "linspace", "eye", "where", "exp", "log", "sqrt", "abs", "sigmoid",
    "tanh", "relu", "clamp", "maximum", "minimum", "matmul", "mm", "softmax", "log_softmax",
    "sum", "mean", "max", "min", "amax", "amin", "argmax", "argmin", "sort", "argsort", "topk",
    "var", "std", "flatten", "reshape", "squeeze", "unsqueeze", "transpose", "permute",
    "split", "chunk", "gather", "numel", "norm", "pow", "masked_fill", "t", "clone", "detach",
    "allclose", "equal", "is_tensor", "enable_grad", "inference_mode",
]


# ---- creation ----------------------------------------------------------------------------

def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor that shares ``array``'s memory (changes show in both) and keeps its dtype."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected an np.ndarray, got {type(array).__name__}")
    if array.dtype.kind not in "fiub":
        raise TypeError(f"from_numpy: cannot hold dtype {array.dtype}; use numbers")
    return Tensor._from_array(array)


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Tensor:
    """``data`` as a tensor without a copy when it already is one (or an ndarray of the
    asked dtype, whose memory is then shared); otherwise as ``tensor(data, dtype)``."""
    if isinstance(data, Tensor):
        return data if dtype is None or data.dtype == np.dtype(dtype) else data.to(dtype)
    if isinstance(data, np.ndarray) and (dtype is None or data.dtype == np.dtype(dtype)):
        return from_numpy(data)
    return Tensor(data, dtype=dtype)


def _leaf(array: np.ndarray, requires_grad: bool) -> Tensor:
    """A leaf holding ``array`` in its own dtype (float64 stays float64)."""
    return Tensor(array, requires_grad, array.dtype)


def _float_dtype(dtype: Any) -> np.dtype:
    return np.dtype(dtype or DEFAULT_FLOAT)


def empty(*size: Any, dtype: Any = None, requires_grad: bool = False, device: Any = None
          ) -> Tensor:
    """An uninitialised tensor of ``size`` (float32 unless ``dtype``)."""
    return _leaf(np.empty(_dims(size), _float_dtype(dtype)), requires_grad)


def full(size: Any, fill_value: Any, dtype: Any = None, requires_grad: bool = False,
         device: Any = None) -> Tensor:
    """A tensor of ``size`` filled with ``fill_value``; the dtype follows the value as
    PyTorch's (bool, int64, float32) unless given."""
    if dtype is None:
        dtype = (np.bool_ if isinstance(fill_value, (bool, np.bool_)) else
                 np.int64 if isinstance(fill_value, (int, np.integer)) else DEFAULT_FLOAT)
    return _leaf(np.full(_dims((size,)), fill_value, dtype), requires_grad)


def _like(t: Any, dtype: Any) -> tuple[tuple[int, ...], np.dtype]:
    return tuple(np.shape(t)), np.dtype(dtype or np.asarray(t).dtype)


def full_like(t: Any, fill_value: Any, dtype: Any = None, requires_grad: bool = False
              ) -> Tensor:
    shape, dt = _like(t, dtype)
    return _leaf(np.full(shape, fill_value, dt), requires_grad)


def empty_like(t: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    shape, dt = _like(t, dtype)
    return _leaf(np.empty(shape, dt), requires_grad)


def randn_like(t: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples shaped like ``t`` (its float dtype unless ``dtype``)."""
    shape, dt = _like(t, dtype)
    return randn(*shape, dtype=dt, requires_grad=requires_grad)


def rand_like(t: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    shape, dt = _like(t, dtype)
    return rand(*shape, dtype=dt, requires_grad=requires_grad)


def randint(low: int, high: int | None = None, size: Any = None, *, dtype: Any = None,
            requires_grad: bool = False) -> Tensor:
    """Integers uniform in [low, high) (int64); ``randint(high, size)`` starts at 0."""
    from .rng import generator

    if size is None:  # randint(high, size)
        if high is None:
            raise TypeError("randint: pass (low, high, size) or (high, size)")
        low, high, size = 0, low, high
    elif high is None:
        low, high = 0, low
    data = generator().integers(low, high, size=_dims((size,)), dtype=np.int64)
    return _leaf(data.astype(dtype or np.int64), requires_grad)


def linspace(start: float, end: float, steps: int, *, dtype: Any = None,
             requires_grad: bool = False) -> Tensor:
    """``steps`` evenly spaced values from start to end inclusive (float32 by default)."""
    return Tensor(np.linspace(start, end, steps), requires_grad, _float_dtype(dtype))


def eye(n: int, m: int | None = None, *, dtype: Any = None, requires_grad: bool = False
        ) -> Tensor:
    """The (n, m) identity matrix (m = n by default)."""
    return _leaf(np.eye(n, m, dtype=_float_dtype(dtype)), requires_grad)


# ---- math ----------------------------------------------------------------------------------

def where(condition: Any, input: Any = None, other: Any = None) -> Any:  # noqa: A002
    """``input`` where ``condition`` holds, else ``other``; with only a condition, the
    tuple of index tensors where it holds (as ``torch.where``)."""
    if input is None and other is None:
        cond = _tensor_of(condition).data
        return tuple(Tensor._from_array(i) for i in np.nonzero(cond))
    return E.where(condition, input, other)


def exp(x: Any) -> Tensor:
    return E.exp(_tensor_of(x))


def log(x: Any) -> Tensor:
    return E.log(_tensor_of(x))


def sqrt(x: Any) -> Tensor:
    return E.sqrt(_tensor_of(x))


def abs(x: Any) -> Tensor:  # noqa: A001
    return E.abs(_tensor_of(x))


def sigmoid(x: Any) -> Tensor:
    return E.sigmoid(_tensor_of(x))


def tanh(x: Any) -> Tensor:
    return E.tanh(_tensor_of(x))


def relu(x: Any) -> Tensor:
    return E.relu(_tensor_of(x))


def clamp(x: Any, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
    return _tensor_of(x).clamp(min, max)


def maximum(a: Any, b: Any) -> Tensor:
    return E.maximum(a, b)


def minimum(a: Any, b: Any) -> Tensor:
    return E.minimum(a, b)


def matmul(a: Any, b: Any) -> Tensor:
    """``a @ b`` (np.matmul's rules, batch dims broadcast)."""
    return L.matmul(a, b)


mm = matmul


def softmax(x: Any, dim: int) -> Tensor:
    return _tensor_of(x).softmax(dim)


def log_softmax(x: Any, dim: int) -> Tensor:
    return _tensor_of(x).log_softmax(dim)


def _method(name: str) -> Callable[..., Any]:
    def fn(x: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(_tensor_of(x), name)(*args, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"``x.{name}(...)`` as a function (see Tensor.{name})."
    return fn


sum = _method("sum")  # noqa: A001
mean = _method("mean")
max = _method("max")  # noqa: A001
min = _method("min")  # noqa: A001
amax = _method("amax")
amin = _method("amin")
argmax = _method("argmax")
argmin = _method("argmin")
sort = _method("sort")
argsort = _method("argsort")
topk = _method("topk")
var = _method("var")
std = _method("std")
flatten = _method("flatten")
reshape = _method("reshape")
squeeze = _method("squeeze")
unsqueeze = _method("unsqueeze")
transpose = _method("transpose")
permute = _method("permute")
split = _method("split")
chunk = _method("chunk")
gather = _method("gather")
norm = _method("norm")
pow = _method("pow")  # noqa: A001
masked_fill = _method("masked_fill")
t = _method("t")
clone = _method("clone")
detach = _method("detach")


def allclose(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-8,
             equal_nan: bool = False) -> bool:
    """True when |a - b| <= atol + rtol * |b| everywhere (shapes broadcast)."""
    return bool(np.allclose(_tensor_of(a).data, _tensor_of(b).data, rtol, atol, equal_nan))


def equal(a: Any, b: Any) -> bool:
    """True when both have the same shape and values."""
    return _tensor_of(a).equal(b)


def numel(x: Any) -> int:
    return _tensor_of(x).numel()


def is_tensor(x: Any) -> bool:
    return isinstance(x, Tensor)


# ---- grad modes --------------------------------------------------------------------------

class enable_grad(engine.set_grad_enabled):  # noqa: N801 (PyTorch's name)
    """``with tc.enable_grad():`` records again inside a ``no_grad`` block; also a
    decorator."""

    def __init__(self) -> None:
        super().__init__(True)

    def __call__(self, fn: Callable) -> Callable:
        return _decorated(fn, enable_grad)


class inference_mode(engine.set_grad_enabled):  # noqa: N801
    """``with tc.inference_mode():`` as ``no_grad`` (``inference_mode(False)`` records);
    also a decorator."""

    def __init__(self, mode: bool = True) -> None:
        super().__init__(not mode)
        self._inference = mode

    def __call__(self, fn: Callable) -> Callable:
        return _decorated(fn, lambda: inference_mode(self._inference))


def _decorated(fn: Callable, make: Callable[[], Any]) -> Callable:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with make():
            return fn(*args, **kwargs)

    wrapper.__name__ = getattr(fn, "__name__", "wrapper")
    wrapper.__doc__ = getattr(fn, "__doc__", None)
    return wrapper
