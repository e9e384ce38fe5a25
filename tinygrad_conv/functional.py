"""``tinygrad_conv.functional`` (imported as F): the neural-network functions.

Each function checks its arguments (errors name the function and the shapes received and
expected), then applies one op from ``tinygrad_conv.ops``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .geometry import Window
from .ops import conv as conv_ops
from .ops import dropout as dropout_ops
from .ops import elementwise as E
from .ops import fused as fused_ops
from .ops import linalg, loss, norm, pool
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
    window = conv_ops.check_conv2d_args(
        x, weight, bias,
        _pair("conv2d", "stride", stride), _pair("conv2d", "padding", padding),
        _pair("conv2d", "dilation", dilation), groups,
    )
    inputs = (x, weight) if bias is None else (x, weight, bias)
    if x.numel() == 0 or weight.numel() == 0:
        return _empty_conv2d(inputs, window)
    return conv_ops.Conv2d(window).apply(*inputs)


def _empty_conv2d(inputs: tuple[Tensor, ...], window: Window) -> Tensor:
    """conv2d of a zero-size input or weight: bias alone (zero gradients for x and weight)."""
    x, weight, *bias = inputs
    out = Tensor(np.zeros(window.out_shape, dtype=x.dtype)) + (x.sum() + weight.sum()) * 0
    return out + bias[0].reshape(-1, 1, 1) if bias else out


def _pool_window(name: str, x: Tensor, kernel_size: IntPair, stride: IntPair | None,
                 padding: IntPair) -> Window:
    if x.ndim == 4 and 0 in x.shape[2:]:  # every window would hold padding only
        raise ValueError(f"{name}: input of shape {x.shape} has no pixels; H and W must be >= 1")
    kernel = _pair(name, "kernel_size", kernel_size)
    stride = None if stride is None else _pair(name, "stride", stride)
    return pool.check_pool_args(name, x, kernel, stride, _pair(name, "padding", padding))


def max_pool2d(x: Any, kernel_size: IntPair, stride: IntPair | None = None,
               padding: IntPair = 0, ceil_mode: bool = False) -> Tensor:
    """Max over windows; padding never wins. x (N, C, H, W) -> (N, C, H', W').

    ``ceil_mode`` rounds H' and W' up (a last, partial window), as PyTorch: a window must
    start inside the input or its left padding.
    """
    return _max_pool(pool.MaxPool2d, "max_pool2d", x, kernel_size, stride, padding, ceil_mode)


def relu_max_pool2d(x: Any, kernel_size: IntPair, stride: IntPair | None = None,
                    padding: IntPair = 0, ceil_mode: bool = False) -> Tensor:
    """``max_pool2d(relu(x), ...)`` as one op, ``relu_max_pool2d`` (tinygrad_conv's own, not a
    PyTorch function): the same values and gradients, with relu run on the pooled result.
    x (N, C, H, W) -> (N, C, H', W'). ``nn.Sequential`` uses it for a ReLU followed by a
    MaxPool2d."""
    return _max_pool(fused_ops.ReluMaxPool2d, "relu_max_pool2d", x, kernel_size, stride,
                     padding, ceil_mode)


def _max_pool(op: type, name: str, x: Any, kernel_size: IntPair, stride: IntPair | None,
              padding: IntPair, ceil_mode: bool) -> Tensor:
    """Check a max pooling call named ``name``, then apply ``op`` (a max pool op class)."""
    x = as_tensor(x)
    window = _pool_window(name, x, kernel_size, stride, padding)
    if ceil_mode:
        x = _ceil_mode_padded(x, window)
        window = pool.check_pool_args(name, x, window.kernel, window.stride, (0, 0))
    return op(window).apply(x)


def avg_pool2d(x: Any, kernel_size: IntPair, stride: IntPair | None = None,
               padding: IntPair = 0) -> Tensor:
    """Mean over windows; zero padding counts in the average (PyTorch's default)."""
    x = as_tensor(x)
    return pool.AvgPool2d(_pool_window("avg_pool2d", x, kernel_size, stride, padding)).apply(x)


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
    if x.numel() == 0:
        return x * 0
    return loss.Softmax(axis=axis).apply(x)


def log_softmax(x: Any, axis: int = -1, *, dim: int | None = None) -> Tensor:
    """x - logsumexp(x) along ``axis``, stable for large values."""
    x = as_tensor(x)
    axis = _check_axis("log_softmax", x, axis if dim is None else dim)
    if x.ndim == 0:
        return log_softmax(x.reshape(1), 0).reshape(())
    if x.numel() == 0:
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


def nll_loss(log_probs: Any, target: Any, weight: Any = None, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood: log_probs (N, K), integer target (N,) -> scalar (or (N,)).

    Targets equal to ``ignore_index`` count for nothing (the mean is over the others).
    """
    weight, reduction = _no_weight("nll_loss", weight, reduction)
    log_probs = as_tensor(log_probs)
    _check_reduction("nll_loss", reduction)
    return _nll(log_probs, target, reduction, ignore_index, 0.0, "nll_loss")


def cross_entropy(logits: Any, target: Any, weight: Any = None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """nll_loss(log_softmax(logits), target): logits (N, K) and integer targets (N,), or
    class probabilities (N, K).

    ``label_smoothing`` e mixes each target with the uniform distribution:
    (1 - e) * target + e / K. Targets equal to ``ignore_index`` count for nothing.
    """
    weight, reduction = _no_weight("cross_entropy", weight, reduction)
    logits = as_tensor(logits)
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got "
                         f"{label_smoothing}")
    log_probs = log_softmax(logits, axis=1) if logits.ndim == 2 else logits
    if np.shape(target) == logits.shape and logits.ndim == 2:  # class probabilities
        return _soft_cross_entropy(log_probs, target, reduction, label_smoothing)
    return _nll(log_probs, target, reduction, ignore_index, label_smoothing, "cross_entropy")


def _no_weight(name: str, weight: Any, reduction: str) -> tuple[None, str]:
    if isinstance(weight, str):  # the older call nll_loss(x, target, "sum")
        return None, weight
    if weight is not None:
        raise NotImplementedError(f"{name}: class weights (weight=) are not supported")
    return None, reduction


def _nll(log_probs: Tensor, target: Any, reduction: str, ignore_index: int,
         smoothing: float, name: str) -> Tensor:
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    ignored = (t == ignore_index) if t.dtype.kind in "iu" else np.zeros(t.shape, bool)
    if smoothing == 0.0 and len(t) and not ignored.any():  # the common case: one op
        t = _class_targets(name, log_probs, t)
        return loss.NLLLoss(target=t, reduction=reduction).apply(log_probs)
    t = _class_targets(name, log_probs, np.where(ignored, 0, t) if t.dtype.kind in "iu" else t)
    n, k = log_probs.shape
    weights = np.zeros((n, k), dtype=log_probs.dtype)
    weights[np.arange(n), t] = 1.0 - smoothing
    if smoothing:
        weights += smoothing / k
    weights[ignored] = 0.0
    per_sample = -(log_probs * Tensor._from_array(weights)).sum(1)
    return _reduce_loss(per_sample, reduction, int((~ignored).sum()))


def _soft_cross_entropy(log_probs: Tensor, target: Any, reduction: str,
                        smoothing: float) -> Tensor:
    """-sum(p * log_probs) per sample for class probabilities p (N, K)."""
    p = _like(target, log_probs)
    if p.dtype.kind != "f":
        raise TypeError(f"cross_entropy: a target of the input's shape {log_probs.shape} "
                        f"holds class probabilities and must be float, got {p.dtype}")
    if smoothing:
        p = p * (1.0 - smoothing) + smoothing / log_probs.shape[1]
    return _reduce_loss(-(log_probs * p).sum(1), reduction, log_probs.shape[0])


def _reduce_loss(per_sample: Tensor, reduction: str, count: int) -> Tensor:
    if reduction == "none":
        return per_sample
    total = per_sample.sum()
    if reduction == "sum":
        return total
    with np.errstate(invalid="ignore", divide="ignore"):  # an empty batch: nan, as PyTorch
        return total / float(count)


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Mean (or sum, or none) of (input - target)**2; shapes must match."""
    input = as_tensor(input)
    target = _like(target, input)
    _check_reduction("mse_loss", reduction)
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input {input.shape} and target {target.shape} must match")
    diff = input - target
    sq = diff * diff
    if reduction == "mean" and sq.numel() == 0:  # the mean of nothing is NaN (no NumPy warning)
        return sq.sum() * float("nan")
    return sq.mean() if reduction == "mean" else sq.sum() if reduction == "sum" else sq


def dropout(x: Any, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each entry with probability p and scale the rest by 1/(1-p); identity in eval."""
    x = as_tensor(x)
    trivial = _dropout_without_op("dropout", x, p, training)
    return trivial if trivial is not None else dropout_ops.Dropout(p=p).apply(x)


def dropout2d(x: Any, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero whole channels of x (N, C, H, W) or (C, H, W) with probability p, scale the rest
    by 1/(1-p); identity in eval."""
    x = as_tensor(x)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout2d: p must be in [0, 1], got {p}")
    if x.ndim not in (3, 4):
        raise ValueError(f"dropout2d: expected (N, C, H, W) or (C, H, W), got shape {x.shape}")
    trivial = _dropout_without_op("dropout2d", x, p, training)
    return trivial if trivial is not None else dropout_ops.Dropout2d(p=p).apply(x)


def _dropout_without_op(name: str, x: Tensor, p: float, training: bool) -> Tensor | None:
    """Check p; x itself in eval or at p = 0, zeros at p = 1, else None (an op is needed)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return None


def pad(x: Any, pad_width: Any, value: float = 0) -> Tensor:
    """Constant padding; ``pad_width`` as ``np.pad`` takes it (a (before, after) pair per axis)."""
    return _pad(as_tensor(x), pad_width, value)


def batch_norm(x: Any, running_mean: Any, running_var: Any, weight: Any = None,
               bias: Any = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5) -> Tensor:
    """Batch normalisation per channel of x (N, C, ...): one ``batch_norm`` op.

    Training: normalise with the batch mean and biased variance, and update the running
    statistics in place as ``(1 - momentum) * running + momentum * batch`` (the variance
    unbiased, times m / (m - 1) for the m values per channel), as PyTorch. Eval: use the
    running ones. ``weight`` and ``bias`` (C,) scale and shift; either may be None.
    """
    x = as_tensor(x)
    if x.ndim < 2:
        raise ValueError(f"batch_norm: expected input (N, C, ...), got shape {x.shape}")
    c = x.shape[1]
    for label, arr in (("running_mean", running_mean), ("running_var", running_var),
                       ("weight", weight), ("bias", bias)):
        if arr is not None and np.shape(arr) != (c,):
            raise ValueError(f"batch_norm: {label} must have shape ({c},) for input with {c} "
                             f"channels {x.shape}, got {np.shape(arr)}")
    count = x.data.size // c
    if training and count < 2:
        raise ValueError(f"batch_norm: training needs more than 1 value per channel, got input "
                         f"shape {x.shape}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: eval mode (training=False) needs running_mean and "
                         "running_var")
    stats = {} if training else {"running_mean": _array_of(running_mean),
                                 "running_var": _array_of(running_var)}
    op = norm.BatchNorm(training=bool(training), eps=float(eps),
                        affine=(weight is not None, bias is not None), **stats)
    params = [_like(p, x) for p in (weight, bias) if p is not None]
    out = op.apply(x, *params)
    if training:
        if running_mean is not None:
            _update_running(running_mean, op.batch_mean, momentum)
        if running_var is not None:
            _update_running(running_var, op.batch_var * (count / (count - 1)), momentum)
    return out


def _array_of(stat: Any) -> np.ndarray:
    return np.asarray(stat.data if isinstance(stat, Tensor) else stat)


def _update_running(stat: Any, batch_value: np.ndarray, momentum: float) -> None:
    arr = stat.data if isinstance(stat, Tensor) else stat
    arr *= 1 - momentum
    arr += momentum * batch_value.astype(arr.dtype)


# ---- activations and losses added for PyTorch parity -----------------------------------

def _ceil_mode_padded(x: Tensor, window: Window) -> Tensor:
    """x padded with -inf so that a plain max pool of it gives PyTorch's ceil_mode output: the
    output size rounds up, but the last window must start inside the input or its left
    padding."""
    (kh, kw), (sh, sw), (ph, pw) = window.kernel, window.stride, window.padding
    extra = []
    for size, k, stride, p in ((x.shape[2], kh, sh, ph), (x.shape[3], kw, sw, pw)):
        out = -(-(size + 2 * p - k) // stride) + 1
        if (out - 1) * stride >= size + p:
            out -= 1
        extra.append(max(0, (out - 1) * stride + k - (size + 2 * p)))
    widths = ((0, 0), (0, 0), (ph, ph + extra[0]), (pw, pw + extra[1]))
    return _pad(x, widths, value=-np.inf)


def one_hot(tensor: Any, num_classes: int = -1) -> Tensor:
    """Integer classes (...) -> int64 (..., num_classes) with a 1 at each class;
    ``num_classes`` defaults to the largest class + 1."""
    t = tensor.data if isinstance(tensor, Tensor) else np.asarray(tensor)
    if t.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expected integer class indices, got dtype {t.dtype}")
    if num_classes == -1:
        if t.size == 0:
            raise RuntimeError("one_hot: cannot infer num_classes of an empty tensor")
        num_classes = int(t.max()) + 1
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise RuntimeError(f"one_hot: class values must be in [0, {num_classes}), got "
                           f"[{int(t.min())}, {int(t.max())}]")
    return Tensor._from_array((t[..., None] == np.arange(num_classes)).astype(np.int64))


def leaky_relu(x: Any, negative_slope: float = 0.01) -> Tensor:
    """x where x > 0, else negative_slope * x."""
    x = as_tensor(x)
    return E.where(x.data > 0, x, x * negative_slope)


def elu(x: Any, alpha: float = 1.0) -> Tensor:
    """x where x > 0, else alpha * (exp(x) - 1)."""
    x = as_tensor(x)
    negative = E.where(x.data > 0, x * 0.0, x)  # exp of the negative part only: no overflow
    return E.where(x.data > 0, x, (negative.exp() - 1.0) * alpha)


def gelu(x: Any, approximate: str = "none") -> Tensor:
    """x * Phi(x) (Phi the standard normal CDF); ``approximate="tanh"`` uses
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3)))."""
    x = as_tensor(x)
    if approximate == "tanh":
        inner = (x + x * x * x * 0.044715) * float(np.sqrt(2.0 / np.pi))
        return x * 0.5 * (inner.tanh() + 1.0)
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return x * 0.5 * (E.erf(x * float(1.0 / np.sqrt(2.0))) + 1.0)


def silu(x: Any) -> Tensor:
    """x * sigmoid(x)."""
    x = as_tensor(x)
    return x * x.sigmoid()


def _adaptive_bins(size: int, out: int, dtype: np.dtype) -> np.ndarray:
    """(out, size) averaging matrix: bin i covers floor(i*size/out) .. ceil((i+1)*size/out)."""
    matrix = np.zeros((out, size), dtype=dtype)
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool2d(x: Any, output_size: Any) -> Tensor:
    """Average over bins that split H and W into ``output_size`` (an int or a pair; None
    keeps that size): x (N, C, H, W) -> (N, C, out_h, out_w)."""
    x = as_tensor(x)
    _require_4d("adaptive_avg_pool2d", x)
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * 2
    out_h, out_w = (x.shape[2 + i] if s is None else int(s) for i, s in enumerate(sizes))
    if out_h < 1 or out_w < 1:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be positive, got "
                         f"{output_size}")
    rows = Tensor._from_array(_adaptive_bins(x.shape[2], out_h, x.dtype))
    cols = Tensor._from_array(_adaptive_bins(x.shape[3], out_w, x.dtype).T.copy())
    return linalg.matmul(linalg.matmul(rows, x), cols)


def binary_cross_entropy_with_logits(input: Any, target: Any, weight: Any = None,  # noqa: A002
                                     reduction: str = "mean", pos_weight: Any = None
                                     ) -> Tensor:
    """-(y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))) computed stably from logits x;
    same shapes. ``weight`` scales each element."""
    input = as_tensor(input)
    target = _like(target, input)
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    if pos_weight is not None:
        raise NotImplementedError("binary_cross_entropy_with_logits: pos_weight is not "
                                  "supported")
    if input.shape != target.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: target size {target.shape} must "
                         f"be the same as input size {input.shape}")
    per_element = loss.BinaryCrossEntropyWithLogits().apply(input, target)
    if weight is not None:
        per_element = per_element * _like(weight, input)
    if reduction == "none":
        return per_element
    return per_element.sum() if reduction == "sum" else per_element.mean()
