"""Test helper: the same (N, C, H, W) values in another memory layout."""

from __future__ import annotations

import numpy as np


def in_layout(a: np.ndarray, kind: str) -> np.ndarray:
    """a as "contiguous", "channels last" memory, or a "strided view" (every other column)."""
    if kind == "channels last":
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if kind == "strided view":
        big = np.zeros(a.shape[:3] + (a.shape[3] * 2,), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    return a
