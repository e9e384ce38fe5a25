"""Batch normalisation layers: ``nn.BatchNorm1d`` and ``nn.BatchNorm2d``, as PyTorch's.

Both call ``F.batch_norm`` (one ``batch_norm`` op in the graph). In training they normalise
with the batch's statistics and update the buffers ``running_mean``, ``running_var`` and
``num_batches_tracked``; in eval they use the running ones. ``momentum=None`` makes the running
statistics a plain average over all batches seen. Without ``track_running_stats`` there are no
buffers and the batch's statistics are used in eval too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ..tensor import Tensor, as_tensor
from .module import Module, Parameter


class _BatchNorm(Module):
    ranks: tuple[int, ...] = ()  # the input ranks the layer takes
    layout = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True) -> None:
        super().__init__()
        if int(num_features) != num_features or num_features < 1:
            raise ValueError(f"{type(self).__name__}: num_features must be a positive int, "
                             f"got {num_features!r}")
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        c = self.num_features
        self.register_parameter("weight", Parameter(np.ones(c, dtype=np.float32)) if affine
                                else None)
        self.register_parameter("bias", Parameter(np.zeros(c, dtype=np.float32)) if affine
                                else None)
        stats = track_running_stats
        self.register_buffer("running_mean", np.zeros(c, dtype=np.float32) if stats else None)
        self.register_buffer("running_var", np.ones(c, dtype=np.float32) if stats else None)
        self.register_buffer("num_batches_tracked",
                             np.array(0, dtype=np.int64) if stats else None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches tracked."""
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def forward(self, x: Any) -> Tensor:
        x = as_tensor(x)
        c = self.num_features
        if x.ndim not in self.ranks or x.shape[1] != c:
            raise ValueError(f"{type(self).__name__}({c}): expected input {self.layout} with "
                             f"{c} channels (C = {c}), got shape {x.shape}")
        use_batch_stats = self.training or not self.track_running_stats
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
            if momentum is None:  # a cumulative average over the batches seen
                momentum = 1.0 / float(self.num_batches_tracked.data)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            use_batch_stats, 0.0 if momentum is None else momentum, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) per channel C -> the same shape."""

    ranks, layout = (2, 3), "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) per channel C -> the same shape."""

    ranks, layout = (4,), "(N, C, H, W)"
