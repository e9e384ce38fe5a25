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

    def backward(self, g):
        return (g * Tensor._from_array(self.scale_mask),)
