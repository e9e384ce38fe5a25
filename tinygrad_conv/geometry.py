"""The geometry of a sliding window: one object, built once by the argument checks.

conv2d, its two gradient ops and the pools all slide a kernel over an (N, C, H, W) input.
Everything a kernel needs to know about that slide (sizes, stride, padding, dilation,
groups, and the output size that follows) is one frozen ``Window``, made by the checks in
``ops/conv.py`` and ``ops/pool.py`` and handed to every kernel of every backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

Pair = tuple[int, int]


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """PyTorch's rule: 1 + (size + 2*pad - dilation*(kernel-1) - 1) // stride (floored)."""
    return 1 + (size + 2 * pad - dilation * (kernel - 1) - 1) // stride


@dataclass(frozen=True)
class Window:
    """A kernel sliding over an input of shape ``x_shape`` (N, C, H, W).

    ``filters`` is F, the output channels of a convolution (0 for a pool, whose output has
    the input's C channels). ``out_hw`` is (H', W').
    """

    x_shape: tuple[int, int, int, int]
    kernel: Pair
    stride: Pair
    padding: Pair
    dilation: Pair = (1, 1)
    groups: int = 1
    filters: int = 0

    @cached_property
    def out_hw(self) -> Pair:
        """(H', W'): how many positions the kernel takes down and across."""
        h, w = self.x_shape[2], self.x_shape[3]
        return (conv_output_size(h, self.kernel[0], self.stride[0], self.padding[0],
                                 self.dilation[0]),
                conv_output_size(w, self.kernel[1], self.stride[1], self.padding[1],
                                 self.dilation[1]))

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        """A convolution's weight shape (F, C/groups, HH, WW)."""
        return (self.filters, self.x_shape[1] // self.groups) + tuple(self.kernel)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        """(N, F, H', W') for a convolution, (N, C, H', W') for a pool."""
        n, c = self.x_shape[:2]
        return (n, self.filters or c) + self.out_hw

    def settings(self) -> dict[str, object]:
        """The user's settings (what the graph drawing shows on the op)."""
        if self.filters:
            return dict(kernel=self.kernel, stride=self.stride, padding=self.padding,
                        dilation=self.dilation, groups=self.groups)
        return dict(kernel=self.kernel, stride=self.stride, padding=self.padding)
