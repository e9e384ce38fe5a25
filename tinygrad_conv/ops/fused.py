"""relu followed by max pooling as one op, with the op that is its backward.

relu is monotone and max pooling picks one entry of each window, so the two commute:

    max_pool(relu(x)) = relu(max_pool(x))

and the relu can run on the pooled result, a quarter of x's size for 2x2 windows. The
formulas, on the kernels of the backend in use (``tinygrad_conv.backends``):

    pooled, winner = max_pool(x)           each window's max and which offset held it
    out, mask      = relu(pooled)          mask = pooled > 0, one entry per window
    dx             = max_pool_backward(relu_backward(dout, mask), winner)

The gradients agree with those of relu then max_pool2d too. Where a window's max is > 0, the
winner holds the same positive value in x and in relu(x) (so it is the same first maximum),
and its gradient flows; where the max is <= 0 (zeros, all-negative windows) relu's mask
stops it either way; a NaN wins its window and its mask is not set, in both. A backend may
run each formula as one pass (``fused("relu_max_pool2d", window)`` and
``fused("relu_max_pool2d_backward", window)``); the reference backend runs them step by
step.

``nn.Sequential`` runs an ``nn.ReLU`` followed by an ``nn.MaxPool2d`` as this op
(nn/module.py says when), saving relu's full-size output and mask and its backward pass.
"""

from __future__ import annotations

from ..backends import kernels
from ..engine import register
from .conv import _ConvOp
from .elementwise import _masked
from .pool import MaxPool2dGather


@register("relu_max_pool2d")
class ReluMaxPool2d(_ConvOp):
    """relu(max_pool2d(x)), equal to max_pool2d(relu(x)): x (N, C, H, W) -> (N, C, H', W')."""

    def forward(self, x):
        K, window, keep = kernels(), self.window, any(self.needs_grad)
        fused = K.fused("relu_max_pool2d", window)
        if fused is not None:
            out, winner, mask = fused(x, window)
        else:
            pooled, winner = K.max_pool(x, window)     # the window's max and its winner
            out, mask = K.relu(pooled, want_mask=keep)  # relu on the pooled, mask pooled > 0
        self.winner, self.mask = (winner, mask) if keep else (None, None)
        return out

    def backward(self, grad):
        return (ReluMaxPool2dBackward(self.window, winner=self.winner,
                                      mask=self.mask).apply(grad),)


@register("relu_max_pool2d_backward")
class ReluMaxPool2dBackward(_ConvOp):
    """Each window's upstream gradient goes to its winner where the window's max was > 0."""

    def forward(self, grad):
        K, window = kernels(), self.window
        fused = K.fused("relu_max_pool2d_backward", window)
        if fused is not None:
            return fused(grad, self.winner, self.mask, window)
        return K.max_pool_backward(K.relu_backward(grad, self.mask), self.winner, window)

    def backward(self, grad):
        # linear in grad: its adjoint gathers at the winners, then applies the mask
        gathered = MaxPool2dGather(self.window, winner=self.winner).apply(grad)
        return (_masked(gathered, self.mask),)
