"""Dropout: zero entries at random in training and scale the rest, so the expected value
is unchanged."""

from __future__ import annotations

import numpy as np

from ..engine import Op, register
from ..tensor import Tensor


@register("dropout")
class Dropout(Op):
    def forward(self, x):
        from ..rng import generator

        p = self.attrs["p"]
        keep = generator().random(x.shape, dtype=np.float32) >= p
        self.scale_mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
        return x * self.scale_mask

    def backward(self, grad):
        return (grad * Tensor._from_array(self.scale_mask),)


@register("dropout2d")
class Dropout2d(Op):
    """Zero whole channels: one keep/drop draw per (sample, channel), the kept ones scaled
    by 1/(1-p). x (N, C, H, W) or (C, H, W)."""

    def forward(self, x):
        from ..rng import generator

        p = self.attrs["p"]
        channels = x.shape[:2] if x.ndim == 4 else x.shape[:1]
        draw_shape = channels + (1,) * (x.ndim - len(channels))
        keep = generator().random(draw_shape, dtype=np.float32) >= p
        self.scale_mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
        return x * self.scale_mask

    def backward(self, grad):
        return (grad * Tensor._from_array(self.scale_mask),)
