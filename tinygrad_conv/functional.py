"""``tinygrad_conv.functional`` (imported as F): the neural-network functions.

Each function checks its arguments (errors name the function and the shapes received and
expected), then applies one op from ``tinygrad_conv.ops``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .ops import conv as conv_ops
from .ops import elementwise as E
from .ops import linalg, loss, pool
from .ops.movement import pad as _pad
from .tensor import Tensor, as_tensor

IntPair = int | tuple[int, int]


def _is_int(value: Any) -> bool:
    """An int or NumPy integer, but not a bool (True is no stride)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _pair(name: str, arg: str, value: Any) -> tuple[int, int]:
    """``value`` (an int or a pair of ints) as a pair of Python ints; TypeError otherwise."""
    if type(value) is int:  # the common cases first: this runs for every layer call
        return value, value
    if type(value) is tuple and len(value) == 2 and type(value[0]) is type(value[1]) is int:
        return value
    try:
        pair = (value, value) if _is_int(value) else tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(_is_int(v) for v in pair):
        raise TypeError(f"{name}: {arg} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _like(value: Any, x: Tensor) -> Tensor | None:
    """A non-Tensor operand as a Tensor; float arrays take x's float dtype (float64 stays exact)."""
    if value is None or isinstance(value, Tensor):
        return value
    arr = np.asarray(value)
    return Tensor(arr, dtype=x.dtype if arr.dtype.kind == x.dtype.kind == "f" else None)


def _require_4d(name: str, x: Tensor, what: str = "input") -> None:
    """ValueError unless ``x`` is 4-D (N, C, H, W); TypeError unless it is float."""
    if x.ndim != 4:
        raise ValueError(f"{name}: expected a 4-D {what} (N, C, H, W), got shape {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: expected a float {what}, got dtype {x.dtype}; use .float()")


def conv2d(x: Any, weight: Any, bias: Any = None, stride: IntPair = 1, padding: IntPair = 0,
           dilation: IntPair = 1, groups: int = 1) -> Tensor:
    """2-D convolution (cross-correlation, as PyTorch).

    x (N, C, H, W), weight (F, C // groups, HH, WW), bias (F,) -> (N, F, H', W') with
    H' = 1 + (H + 2*pad_h - dilation_h*(HH-1) - 1) // stride_h (same for W).
    """
    x = as_tensor(x)
    if weight is None:
        raise TypeError("conv2d: weight must be a Tensor or array (F, C // groups, HH, WW), "
                        "got None")
    if not _is_int(groups):
        raise TypeError(f"conv2d: groups must be an int, got {groups!r}")
    weight, bias = _like(weight, x), _like(bias, x)
    if weight.ndim == 4 and min(weight.shape[2:]) < 1:
        raise ValueError(f"conv2d: the kernel must be at least 1x1, got weight of shape "
                         f"{weight.shape}")
    settings = conv_ops.check_conv2d_args(
        x, weight, bias,
        _pair("conv2d", "stride", stride), _pair("conv2d", "padding", padding),
        _pair("conv2d", "dilation", dilation), groups,
    )
    inputs = (x, weight) if bias is None else (x, weight, bias)
    if x.size == 0 or weight.size == 0:
        return _empty_conv2d(inputs, settings)
    return conv_ops.Conv2d(**settings).apply(*inputs)


def _empty_conv2d(inputs: tuple[Tensor, ...], settings: dict[str, Any]) -> Tensor:
    """conv2d of a zero-size input or weight: bias alone (zero gradients for x and weight)."""
    x, weight, *bias = inputs
    shape = (x.shape[0], weight.shape[0], *settings["out_hw"])
    out = Tensor(np.zeros(shape, dtype=x.dtype)) + (x.sum() + weight.sum()) * 0
    return out + bias[0].reshape(-1, 1, 1) if bias else out



def _pool_settings(name: str, x: Tensor, kernel_size: IntPair, stride: IntPair | None,
                   padding: IntPair) -> dict[str, Any]:
    if x.ndim == 4 and 0 in x.shape[2:]:  # every window would hold padding only
        raise ValueError(f"{name}: input of shape {x.shape} has no pixels; H and W must be >= 1")
    kernel = _pair(name, "kernel_size", kernel_size)
    stride = None if stride is None else _pair(name, "stride", stride)
    return pool.check_pool_args(name, x, kernel, stride, _pair(name, "padding", padding))


def max_pool2d(x: Any, kernel_size: IntPair, stride: IntPair | None = None,
               padding: IntPair = 0) -> Tensor:
    """Max over windows; padding never wins. x (N, C, H, W) -> (N, C, H', W')."""
    x = as_tensor(x)
    settings = _pool_settings("max_pool2d", x, kernel_size, stride, padding)
    return pool.MaxPool2d(**settings).apply(x)


def avg_pool2d(x: Any, kernel_size: IntPair, stride: IntPair | None = None,
               padding: IntPair = 0) -> Tensor:
    """Mean over windows; zero padding counts in the average (PyTorch's default)."""
    x = as_tensor(x)
    settings = _pool_settings("avg_pool2d", x, kernel_size, stride, padding)
    return pool.AvgPool2d(**settings).apply(x)


def linear(x: Any, weight: Any, bias: Any = None) -> Tensor:
    """x (..., in_features) @ weight.T (weight (out, in)) + bias (out,) -> (..., out)."""
    x = as_tensor(x)
    if weight is None:
        raise TypeError("linear: weight must be a Tensor or array (out_features, in_features), "
                        "got None")
    weight = _like(weight, x)
    if weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input of shape {x.shape} needs last dim {weight.shape[-1]} to match "
            f"weight of shape {weight.shape} (out_features, in_features)"
        )
    if x.size == 0 or weight.size == 0:  # zero-size: the same sum, without the matmul kernel
        out = (x.unsqueeze(-2) * weight).sum(-1)
        return out if bias is None else out + _like(bias, x)
    if bias is None:
        return linalg.Linear().apply(x, weight)
    bias = _like(bias, x)
    if bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    return linalg.Linear().apply(x, weight, bias)


def relu(x: Any) -> Tensor:
    """max(x, 0)."""
    return E.relu(as_tensor(x))


def sigmoid(x: Any) -> Tensor:
    """1 / (1 + exp(-x)), computed without overflow."""
    return E.sigmoid(as_tensor(x))


def tanh(x: Any) -> Tensor:
    return E.tanh(as_tensor(x))


def _check_axis(name: str, x: Tensor, axis: int) -> int:
    if x.ndim == 0 and axis in (0, -1):  # a 0-d tensor has one axis for this, as in PyTorch
        return 0
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{name}: axis {axis} is out of range for shape {x.shape}")
    return axis % x.ndim


def softmax(x: Any, axis: int = -1, *, dim: int | None = None) -> Tensor:
    """exp(x) / sum(exp(x)) along ``axis``, shifted by the max so it never overflows."""
    x = as_tensor(x)
    axis = _check_axis("softmax", x, axis if dim is None else dim)
    if x.ndim == 0:  # as PyTorch: the softmax of one number is 1
        return softmax(x.reshape(1), 0).reshape(())
    if x.size == 0:
        return x * 0
    return loss.Softmax(axis=axis).apply(x)


def log_softmax(x: Any, axis: int = -1, *, dim: int | None = None) -> Tensor:
    """x - logsumexp(x) along ``axis``, stable for large values."""
    x = as_tensor(x)
    axis = _check_axis("log_softmax", x, axis if dim is None else dim)
    if x.ndim == 0:
        return log_softmax(x.reshape(1), 0).reshape(())
    if x.size == 0:
        return x * 0
    return loss.LogSoftmax(axis=axis).apply(x)


_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}  # by itemsize


def _class_targets(name: str, scores: Tensor, target: Any) -> np.ndarray:
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    if scores.ndim != 2:
        raise ValueError(f"{name}: expected scores of shape (N, K), got {scores.shape}")
    if t.dtype.kind not in "iu":
        raise TypeError(
            f"{name}: target must hold integer class indices, got dtype {t.dtype}; "
            "convert with .astype(np.int64)"
        )
    if t.shape != (scores.shape[0],):
        raise ValueError(
            f"{name}: target must have shape ({scores.shape[0]},) to match scores "
            f"{scores.shape}, got {t.shape}"
        )
    if not t.dtype.isnative:  # e.g. big-endian ints read from a file
        t = t.astype(t.dtype.newbyteorder("="))
    k = scores.shape[1]
    # one reduction checks both ends: viewed unsigned, a negative index is larger than any k
    unsigned = t.view(_UNSIGNED[t.dtype.itemsize]) if t.dtype.kind == "i" else t
    if t.size and np.maximum.reduce(unsigned) >= k:  # the mask only on error
        i = int(np.flatnonzero((t < 0) | (t >= k))[0])
        raise IndexError(
            f"{name}: target[{i}] = {int(t[i])} is out of range for {k} classes (0..{k - 1})"
        )
    return t.astype(np.int64, copy=False)


def _check_reduction(name: str, reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def nll_loss(log_probs: Any, target: Any, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood: log_probs (N, K), integer target (N,) -> scalar (or (N,))."""
    log_probs = as_tensor(log_probs)
    _check_reduction("nll_loss", reduction)
    t = _class_targets("nll_loss", log_probs, target)
    return _nll(log_probs, t, reduction)


def _nll(log_probs: Tensor, t: np.ndarray, reduction: str) -> Tensor:
    if len(t) == 0 and reduction == "mean":  # the mean of no losses is NaN, as in PyTorch
        return loss.NLLLoss(target=t, reduction="sum").apply(log_probs) * float("nan")
    return loss.NLLLoss(target=t, reduction=reduction).apply(log_probs)


def cross_entropy(logits: Any, target: Any, reduction: str = "mean") -> Tensor:
    """nll_loss(log_softmax(logits), target): logits (N, K), integer target (N,)."""
    logits = as_tensor(logits)
    _check_reduction("cross_entropy", reduction)
    t = _class_targets("cross_entropy", logits, target)
    return _nll(log_softmax(logits, axis=1), t, reduction)


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Mean (or sum, or none) of (input - target)**2; shapes must match."""
    input = as_tensor(input)
    target = _like(target, input)
    _check_reduction("mse_loss", reduction)
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input {input.shape} and target {target.shape} must match")
    diff = input - target
    sq = diff * diff
    if reduction == "mean" and sq.size == 0:  # the mean of nothing is NaN (no NumPy warning)
        return sq.sum() * float("nan")
    return sq.mean() if reduction == "mean" else sq.sum() if reduction == "sum" else sq


def dropout(x: Any, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each entry with probability p and scale the rest by 1/(1-p); identity in eval."""
    x = as_tensor(x)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return loss.Dropout(p=p).apply(x)


def pad(x: Any, pad_width: Any, value: float = 0) -> Tensor:
    """Constant padding; ``pad_width`` as ``np.pad`` takes it (a (before, after) pair per axis)."""
    return _pad(as_tensor(x), pad_width, value)


def batch_norm(x: Any, running_mean: Any, running_var: Any, weight: Any = None,
               bias: Any = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5) -> Tensor:
    """Batch normalisation over (N, H, W) per channel for x (N, C, ...) .

    Training: normalise with the batch mean and biased variance, and update the running
    statistics in place (with the unbiased variance), as PyTorch. Eval: use the running ones.
    """
    x = as_tensor(x)
    if x.ndim < 2:
        raise ValueError(f"batch_norm: expected input (N, C, ...), got shape {x.shape}")
    c = x.shape[1]
    stat_shape = (1, c) + (1,) * (x.ndim - 2)
    axes = (0,) + tuple(range(2, x.ndim))
    for label, arr in (("running_mean", running_mean), ("running_var", running_var),
                       ("weight", weight), ("bias", bias)):
        if arr is not None and np.shape(arr) != (c,):
            raise ValueError(f"batch_norm: {label} must have shape ({c},), got {np.shape(arr)}")
    if training:
        count = x.size // c
        if count < 2:
            raise ValueError(
                f"batch_norm: training needs more than 1 value per channel, got {x.shape}"
            )
        mean = x.mean(axes, keepdims=True)
        centered = x - mean
        var = (centered * centered).mean(axes, keepdims=True)
        if running_mean is not None:
            _update_running(running_mean, mean.data.reshape(c), momentum)
        if running_var is not None:
            _update_running(running_var, var.data.reshape(c) * (count / (count - 1)), momentum)
        normed = centered / (var + eps).sqrt()
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: eval mode needs running_mean and running_var")
        rm = np.asarray(running_mean.data if isinstance(running_mean, Tensor) else running_mean)
        rv = np.asarray(running_var.data if isinstance(running_var, Tensor) else running_var)
        scale = (1.0 / np.sqrt(rv + eps)).astype(x.dtype).reshape(stat_shape)
        normed = (x - rm.astype(x.dtype).reshape(stat_shape)) * scale
    if weight is not None:
        normed = normed * _like(weight, x).reshape(stat_shape)
    if bias is not None:
        normed = normed + _like(bias, x).reshape(stat_shape)
    return normed


def _update_running(stat: Any, batch_value: np.ndarray, momentum: float) -> None:
    arr = stat.data if isinstance(stat, Tensor) else stat
    arr *= 1 - momentum
    arr += momentum * batch_value.astype(arr.dtype)
