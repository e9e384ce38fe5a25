"""The layers: thin Modules over ``tinygrad_conv.functional``.

Each layer checks its input's shape (errors name the layer, e.g. ``Conv2d(1, 32, ...)``, the
shape it expects and the shape it got), then calls one F function, so a layer shows up in the
graph as the op(s) of that function.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import functional as F
from ..tensor import Tensor, as_tensor
from . import init
from .module import Module, Parameter

IntPair = int | tuple[int, int]


def _empty(*shape: int) -> Parameter:
    return Parameter(np.zeros(shape, dtype=np.float32))


def _reset_weight_and_bias(weight: Parameter, bias: Parameter | None) -> None:
    """PyTorch's default: weight kaiming_uniform_(a=sqrt(5)), bias U(-1/sqrt(fan_in), ...)."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        init.uniform_(bias, -bound, bound)


def _conv_settings(in_channels: Any, out_channels: Any, kernel_size: Any, stride: Any,
                   padding: Any, dilation: Any, groups: Any) -> tuple[tuple[int, int], ...]:
    """Conv2d's arguments checked as PyTorch checks them; (kernel, stride, padding, dilation)
    as pairs. TypeError for a non-int (bools included), ValueError for a bad value."""
    for arg, value in (("in_channels", in_channels), ("out_channels", out_channels),
                       ("groups", groups)):
        if not F._is_int(value):
            raise TypeError(f"Conv2d: {arg} must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"Conv2d: {arg} must be positive, got {value}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"Conv2d: groups={groups} must divide in_channels ({in_channels}) and "
                         f"out_channels ({out_channels})")
    pairs = {arg: F._pair("Conv2d", arg, value) for arg, value in (
        ("kernel_size", kernel_size), ("stride", stride), ("padding", padding),
        ("dilation", dilation))}
    for arg, least in (("kernel_size", 1), ("stride", 1), ("padding", 0), ("dilation", 1)):
        if min(pairs[arg]) < least:
            raise ValueError(f"Conv2d: {arg} must be >= {least}, got {pairs[arg]}")
    return pairs["kernel_size"], pairs["stride"], pairs["padding"], pairs["dilation"]


class Conv2d(Module):
    """2-D convolution: input (N, in_channels, H, W) -> (N, out_channels, H', W').

    ``weight`` (out_channels, in_channels // groups, kH, kW), ``bias`` (out_channels,);
    ``kernel_size``, ``stride``, ``padding`` and ``dilation`` are kept as pairs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair,
                 stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = _conv_settings(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.weight = _empty(out_channels, in_channels // groups, *self.kernel_size)
        self.register_parameter("bias", _empty(out_channels) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw the weights with PyTorch's default initialisation."""
        _reset_weight_and_bias(self.weight, self.bias)

    def forward(self, x: Any) -> Tensor:
        x = as_tensor(x)
        c = self.in_channels
        if x.ndim != 4 or x.shape[1] != c:
            raise ValueError(
                f"Conv2d({c}, {self.out_channels}, ...): expected input with {c} channels "
                f"(N, {c}, H, W), got shape {x.shape}"
            )
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Linear(Module):
    """y = x @ weight.T + bias: input (..., in_features) -> (..., out_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _empty(out_features, in_features)
        self.register_parameter("bias", _empty(out_features) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw the weights with PyTorch's default initialisation."""
        _reset_weight_and_bias(self.weight, self.bias)

    def forward(self, x: Any) -> Tensor:
        x = as_tensor(x)
        k = self.in_features
        if x.ndim == 0 or x.shape[-1] != k:
            hint = ""
            if x.ndim > 2 and math.prod(x.shape[1:]) == k:
                hint = "; flatten it first (nn.Flatten())"
            raise ValueError(
                f"Linear({k}, {self.out_features}): expected input with {k} features in the "
                f"last dim (N, {k}), got shape {x.shape}{hint}"
            )
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class ReLU(Module):
    """max(x, 0), elementwise; any shape."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()  # inplace is accepted for PyTorch code; the result is a new tensor

    def forward(self, x: Any) -> Tensor:
        return F.relu(x)


class Sigmoid(Module):
    """1 / (1 + exp(-x)), elementwise; any shape."""

    def forward(self, x: Any) -> Tensor:
        return F.sigmoid(x)


class Tanh(Module):
    """tanh(x), elementwise; any shape."""

    def forward(self, x: Any) -> Tensor:
        return F.tanh(x)


class _Pool2d(Module):
    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None,
                 padding: IntPair = 0, ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = ceil_mode

    def extra_repr(self) -> str:
        s = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        return s + (", ceil_mode=True" if self.ceil_mode else "")

    def _checked(self, x: Any) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:  # the layer's name is formatted only for the error
            F._require_4d(f"{type(self).__name__}({self.extra_repr()})", x)
        return x


class MaxPool2d(_Pool2d):
    """Max over windows: (N, C, H, W) -> (N, C, H', W'); stride defaults to kernel_size."""

    def forward(self, x: Any) -> Tensor:
        return F.max_pool2d(self._checked(x), self.kernel_size, self.stride, self.padding,
                            self.ceil_mode)


class AvgPool2d(_Pool2d):
    """Mean over windows (zero padding counts): (N, C, H, W) -> (N, C, H', W')."""

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None,
                 padding: IntPair = 0) -> None:
        super().__init__(kernel_size, stride, padding)

    def forward(self, x: Any) -> Tensor:
        return F.avg_pool2d(self._checked(x), self.kernel_size, self.stride, self.padding)


class Flatten(Module):
    """Merge dims ``start_dim..end_dim``: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Any) -> Tensor:
        return as_tensor(x).flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(Module):
    """In training, zero each entry with probability p and scale the rest by 1/(1-p);
    the identity in eval mode. Any shape."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be between 0 and 1, got {p}")
        self.p = p

    def forward(self, x: Any) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class CrossEntropyLoss(Module):
    """``F.cross_entropy``: logits (N, K) and integer targets (N,) or class probabilities
    (N, K) -> scalar (or (N,) with ``reduction="none"``)."""

    def __init__(self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        if isinstance(weight, str):  # the older CrossEntropyLoss("sum")
            weight, reduction = None, weight
        self.weight, self.ignore_index = weight, ignore_index
        self.reduction, self.label_smoothing = reduction, label_smoothing

    def forward(self, input: Any, target: Any) -> Tensor:  # noqa: A002
        return F.cross_entropy(input, target, self.weight, self.ignore_index, self.reduction,
                               self.label_smoothing)


class MSELoss(Module):
    """``F.mse_loss``: mean of (input - target)**2 over matching shapes -> scalar."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, input: Any, target: Any) -> Tensor:  # noqa: A002
        return F.mse_loss(input, target, self.reduction)
