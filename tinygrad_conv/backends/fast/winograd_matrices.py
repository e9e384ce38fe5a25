"""The matrices of Winograd's F(2x2, 3x3) and F(4x4, 3x3) (Lavin and Gray's choice of points).

For an m x m output tile of a 3x3 correlation, with a = m + 2:
    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A,   Bᵀ (a, a), G (a, 3), Aᵀ (m, a).
Kept apart from the kernels: scripts/gen_winograd.py reads them to write the unrolled
transforms (winograd_transforms.py), and the tests check them against direct correlation.
"""

from __future__ import annotations

from fractions import Fraction as Q

import numpy as np

SIZES = (2, 4)  # the output tile sizes m provided


def matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Bᵀ (a, a), G (a, 3), Aᵀ (m, a)) of F(m x m, 3 x 3), a = m + 2, as float64."""
    if m == 2:  # interpolation points 0, 1, -1, infinity
        bt = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
        g = [[1, 0, 0], [Q(1, 2)] * 3, [Q(1, 2), Q(-1, 2), Q(1, 2)], [0, 0, 1]]
        at = [[1, 1, 1, 0], [0, 1, -1, -1]]
    elif m == 4:  # points 0, 1, -1, 2, -2, infinity
        bt = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
              [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
        g = [[Q(1, 4), 0, 0], [Q(-1, 6)] * 3, [Q(-1, 6), Q(1, 6), Q(-1, 6)],
             [Q(1, 24), Q(1, 12), Q(1, 6)], [Q(1, 24), Q(-1, 12), Q(1, 6)], [0, 0, 1]]
        at = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
              [0, 1, -1, 8, -8, 1]]
    else:
        raise ValueError(f"Winograd F({m}x{m}, 3x3) is not provided: m is 2 or 4")
    as_float = np.float64
    return (np.array(bt, as_float), np.array([[float(v) for v in row] for row in g], as_float),
            np.array(at, as_float))
