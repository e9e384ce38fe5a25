"""conv2d and the two ops its backward is made of.

Forward (im2col, then one GEMM per group):
    X_col = im2col(x)                      (C*HH*WW, N*H'*W')
    out   = W_row @ X_col + b              (F, N*H'*W') -> (N, F, H', W')
Backward, exactly the im2col formulas:
    db = dout.sum((0, 2, 3))               (conv2d_grad_bias)
    dW = dout_flat @ X_col.T               (conv2d_grad_weight)
    dX = col2im(W_flat.T @ dout_flat)      (conv2d_grad_input)
For few input channels (a network's first layer) X_col carries a row of ones for the bias,
so dW's product also gives db (dout_flat @ ones) without another pass over dout; it is
handed to conv2d_grad_bias.

conv2d is bilinear in (x, W), so each backward op is bilinear too and its own backward is
made of conv2d and the other backward op: that is what gives second derivatives.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .. import kernels, parallel
from ..engine import Op, register
from ..tensor import Tensor
from .reduce import _expand_back, _sum_outer_axes


def _geometry(attrs: dict[str, Any]) -> dict[str, Any]:
    keys = ("kernel", "stride", "padding", "dilation")
    return {k: attrs[k] for k in keys}


def _blocks(m: np.ndarray, groups: int) -> list[np.ndarray]:
    """Split a matrix's rows into one block per group (views)."""
    return np.split(m, groups) if groups > 1 else [m]


@register("conv2d")
class Conv2d(Op):
    """x (N, C, H, W), weight (F, C/groups, HH, WW), optional bias (F,) -> (N, F, H', W')."""

    def forward(self, x, w, b=None):
        groups, geometry = self.attrs["groups"], _geometry(self.attrs)
        w_flat = kernels.weight_rows(w)  # (F, K/G)
        if groups == 1:
            # out = W_flat @ X_col + b, computed as X_col.T @ W_flat.T so it lands pixel-major;
            # X_col is made a block at a time and not kept: dW makes it again the same way,
            # from the padded x kept here
            out_t, columns = kernels.im2col_matmul(x, w_flat, b, **geometry)  # (P, F)
            if len(self.needs_grad) > 1 and self.needs_grad[1]:
                self.padded_x = columns
        else:
            x_col = kernels.im2col(x, **geometry, groups=groups)
            out_t = np.concatenate(
                [parallel.matmul(xc.T, wf.T)
                 for wf, xc in zip(_blocks(w_flat, groups), _blocks(x_col, groups))], axis=1)
            if b is not None:
                out_t += b
            if len(self.needs_grad) > 1 and self.needs_grad[1]:
                self.x_col = x_col  # reused by dW = dout_flat @ X_col.T
        n, (ho, wo) = x.shape[0], self.attrs["out_hw"]
        return kernels.channels_first(out_t.reshape(n, ho, wo, w.shape[0]))

    def backward(self, g):
        x, w = self.inputs[0], self.inputs[1]
        # dX and dW both read dout_flat: lay it out once (a copy unless g is channels-last)
        g_flat = kernels.flat_pixels(g.data) if all(self.needs_grad[:2]) else None
        gx = None
        if self.needs_grad[0]:
            gx = conv2d_grad_input(g, w, x.shape, self.attrs, dout_flat=g_flat)
        wants_db = len(self.inputs) == 3 and self.needs_grad[2]
        gw, db_summed = None, None
        if self.needs_grad[1]:
            op = _grad_weight_op(w.shape, self.attrs, getattr(self, "x_col", None), g_flat,
                                 getattr(self, "padded_x", None), bias_wanted=wants_db)
            gw = op.apply(g, x)
            db_summed = op.__dict__.pop("bias_grad", None)  # summed in dW's pass, if it was
        grads = (gx, gw)
        if len(self.inputs) == 3:
            grads += (conv2d_grad_bias(g, summed=db_summed) if wants_db else None,)
        return grads


@register("conv2d_grad_input")
class Conv2dGradInput(Op):
    """dX = col2im(W_flat.T @ dout_flat): inputs (dout, weight) -> x-shaped."""

    dout_flat: np.ndarray | None = None  # flat_pixels(dout) when the caller has it already

    def forward(self, dout, w):
        groups = self.attrs["groups"]
        dout_flat, w_flat = _take_flat(self, dout), kernels.weight_rows(w)
        geometry = _geometry(self.attrs)
        if groups == 1:
            return kernels.col2im_of_product(w_flat, dout_flat, self.attrs["x_shape"], **geometry)
        # W_flat.T @ dout_flat per group, computed as (dout_flat.T @ W_flat) so it lands
        # pixel-major, the layout col2im reads
        pairs = zip(_blocks(dout_flat, groups), _blocks(w_flat, groups))
        dx_col_t = np.concatenate([parallel.matmul(d.T, wf) for d, wf in pairs], axis=1)  # (P, K)
        return kernels.col2im(dx_col_t.T, self.attrs["x_shape"], **geometry, groups=groups)

    def backward(self, g):
        dout, w = self.inputs
        settings = _conv_settings(self.attrs)
        g_dout = Conv2d(**settings).apply(g, w) if self.needs_grad[0] else None
        g_w = conv2d_grad_weight(dout, g, w.shape, self.attrs) if self.needs_grad[1] else None
        return g_dout, g_w


@register("conv2d_grad_weight")
class Conv2dGradWeight(Op):
    """dW = dout_flat @ X_col.T: inputs (dout, x) -> weight-shaped."""

    x_col: np.ndarray | None = None
    dout_flat: np.ndarray | None = None  # flat_pixels(dout) when the caller has it already
    padded_x: kernels.Columns | None = None  # the forward's x, padded
    bias_wanted = False  # db too, in self.bias_grad, where X_col has a ones row (no groups)

    def forward(self, dout, x):
        groups, geometry = self.attrs["groups"], _geometry(self.attrs)
        dout_flat = _take_flat(self, dout)  # (F, P)
        if groups == 1:
            columns, self.padded_x = self.padded_x, None  # used once, then freed
            dw_flat, db = kernels.im2col_grad_weight(dout_flat, x, **geometry, columns=columns,
                                                     bias=self.bias_wanted)
            if db is not None:
                self.bias_grad = db
        else:
            x_col = self.x_col
            if x_col is None:
                x_col = kernels.im2col(x, **geometry, groups=groups)
            self.x_col = None  # the forward's X_col is used once, then freed
            pairs = zip(_blocks(dout_flat, groups), _blocks(x_col, groups))
            dw_flat = np.concatenate([parallel.matmul(d, xc.T) for d, xc in pairs])  # (F, K/G)
        return kernels.weight_from_rows(dw_flat, self.attrs["w_shape"])

    def backward(self, g):
        dout, x = self.inputs
        settings = _conv_settings(self.attrs)
        g_dout = Conv2d(**settings).apply(x, g) if self.needs_grad[0] else None
        g_x = conv2d_grad_input(dout, g, x.shape, self.attrs) if self.needs_grad[1] else None
        return g_dout, g_x


@register("conv2d_grad_bias")
class Conv2dGradBias(Op):
    """db = dout.sum((0, 2, 3)): input dout (N, F, H', W') -> (F,).

    ``summed`` is that sum when conv2d's backward has made it already, in dW's pass.
    """

    summed: np.ndarray | None = None

    def forward(self, dout):
        summed, self.summed = self.summed, None
        if summed is not None:
            return summed
        fast = _sum_outer_axes(dout, (0, 2, 3))  # a GEMV on channels-last memory
        return dout.sum(axis=(0, 2, 3)) if fast is None else fast

    def backward(self, gg):
        return (_expand_back(gg, self.inputs[0].shape, (0, 2, 3), keepdims=False),)


def conv2d_grad_bias(dout: Tensor, summed: np.ndarray | None = None) -> Tensor:
    """The bias gradient of conv2d for upstream ``dout``: dout.sum((0, 2, 3)), an op of its
    own; ``summed`` is that sum if already made."""
    op = Conv2dGradBias()
    op.summed = summed
    return op.apply(dout)


def _take_flat(op: Op, dout: np.ndarray) -> np.ndarray:
    """dout_flat (F, N*H'*W') for a grad op: the one handed to it (then dropped) or made now."""
    flat, op.dout_flat = op.dout_flat, None
    return kernels.flat_pixels(dout) if flat is None else flat


def _conv_settings(attrs: dict[str, Any]) -> dict[str, Any]:
    return dict(kernel=attrs["kernel"], stride=attrs["stride"], padding=attrs["padding"],
                dilation=attrs["dilation"], groups=attrs["groups"], out_hw=attrs["out_hw"])


def conv2d_grad_input(dout: Tensor, w: Tensor, x_shape: tuple[int, ...],
                      settings: dict[str, Any], dout_flat: np.ndarray | None = None) -> Tensor:
    """The input gradient of conv2d for upstream ``dout``: col2im(W_flat.T @ dout_flat).

    ``dout_flat`` is ``kernels.flat_pixels(dout.data)`` when the caller has made it already.
    """
    op = Conv2dGradInput(**_conv_settings(settings), x_shape=tuple(x_shape))
    op.dout_flat = dout_flat
    return op.apply(dout, w)


def conv2d_grad_weight(dout: Tensor, x: Tensor, w_shape: tuple[int, ...],
                       settings: dict[str, Any], x_col: np.ndarray | None = None,
                       dout_flat: np.ndarray | None = None,
                       padded_x: kernels.Columns | None = None) -> Tensor:
    """The weight gradient of conv2d for upstream ``dout``: dout_flat @ X_col.T.

    ``x_col`` is the forward's X_col when available (it is then not recomputed), ``padded_x``
    its padded input (grouped and ungrouped convs respectively); ``dout_flat`` as in
    :func:`conv2d_grad_input`.
    """
    return _grad_weight_op(w_shape, settings, x_col, dout_flat, padded_x).apply(dout, x)


def _grad_weight_op(w_shape: tuple[int, ...], settings: dict[str, Any],
                    x_col: np.ndarray | None, dout_flat: np.ndarray | None,
                    padded_x: kernels.Columns | None,
                    bias_wanted: bool = False) -> Conv2dGradWeight:
    """A conv2d_grad_weight op handed what the caller has already (see conv2d_grad_weight);
    with ``bias_wanted`` it leaves db in ``op.bias_grad`` where dW's pass can make it."""
    op = Conv2dGradWeight(**_conv_settings(settings), w_shape=tuple(w_shape))
    op.x_col, op.dout_flat, op.padded_x, op.bias_wanted = x_col, dout_flat, padded_x, bias_wanted
    return op


def check_conv2d_args(x: Tensor, w: Tensor, b: Tensor | None, stride: tuple[int, int],
                      padding: tuple[int, int], dilation: tuple[int, int],
                      groups: int) -> dict[str, Any]:
    """Validate conv2d's arguments; return the op's settings (with the output size)."""
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    b_shape = None if b is None else b.shape
    settings = _conv2d_settings(x.shape, w.shape, b_shape, stride, padding, dilation,
                                int(groups))
    for label, t in (("input", x), ("weight", w)):
        if t.dtype.kind != "f":
            raise TypeError(f"conv2d: {label} must be float, got dtype {t.dtype}; use .float()")
    return dict(settings)


@functools.lru_cache(maxsize=256)  # a model calls it with the same few shapes every step
def _conv2d_settings(x_shape: tuple[int, ...], w_shape: tuple[int, ...],
                     b_shape: tuple[int, ...] | None, stride: tuple[int, int],
                     padding: tuple[int, int], dilation: tuple[int, int],
                     groups: int) -> dict[str, Any]:
    """check_conv2d_args's shape checks and settings (callers copy the returned dict)."""
    if len(x_shape) != 4:
        raise ValueError(f"conv2d: expected a 4-D input (N, C, H, W), got shape {x_shape}")
    if len(w_shape) != 4:
        raise ValueError(
            f"conv2d: expected a 4-D weight (F, C/groups, HH, WW), got shape {w_shape}"
        )
    n, c, h, wd = x_shape
    f, c_per_group, kh, kw = w_shape
    if c % groups or f % groups:
        raise ValueError(
            f"conv2d: groups={groups} must divide both the input channels ({c}) and the "
            f"output channels ({f})"
        )
    if c_per_group * groups != c:
        raise ValueError(
            f"conv2d: input of shape {x_shape} has {c} channels but weight of shape {w_shape} "
            f"expects {c_per_group * groups} (weight.shape[1] * groups = {c_per_group} * "
            f"{groups}); expected input (N, {c_per_group * groups}, H, W)"
        )
    if b_shape is not None and b_shape != (f,):
        raise ValueError(f"conv2d: bias must have shape ({f},) for weight {w_shape}, got {b_shape}")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(
            f"conv2d: stride and dilation must be >= 1 and padding >= 0, got stride={stride}, "
            f"padding={padding}, dilation={dilation}"
        )
    span = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    padded = (h + 2 * padding[0], wd + 2 * padding[1])
    if span[0] > padded[0] or span[1] > padded[1]:
        raise ValueError(
            f"conv2d: kernel {kh}x{kw} (dilation {dilation}, so spanning {span[0]}x{span[1]}) "
            f"is larger than the padded input {padded[0]}x{padded[1]} (input {x_shape}, "
            f"padding {padding})"
        )
    out_hw = tuple(
        kernels.conv_output_size(s, k, st, p, d)
        for s, k, st, p, d in zip((h, wd), (kh, kw), stride, padding, dilation)
    )
    return dict(kernel=(kh, kw), stride=stride, padding=padding, dilation=dilation,
                groups=groups, out_hw=out_hw)
