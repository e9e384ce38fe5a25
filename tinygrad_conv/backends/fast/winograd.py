"""Winograd's minimal filtering for 3x3, stride-1 convolutions: F(2x2, 3x3) and F(4x4, 3x3).

Direct convolution spends 9 m² multiplies per (input channel, filter) pair on an m x m
output tile. Winograd's form of the same tile,

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A,        d: the (m+2) x (m+2) input tile, g: the 3x3 filter,

spends (m+2)² instead: 16 for 36 (m = 2, 2.25x fewer) or 36 for 144 (m = 4, 4x fewer). Summed
over input channels the elementwise product becomes one GEMM per tile position ξ:

    V[ξ] (tiles, C) = Bᵀ d B,   U[ξ] (C, F) = G g Gᵀ,   M[ξ] (tiles, F) = V[ξ] @ U[ξ],
    Y = Aᵀ M A, tile by tile.

The three passes of conv2d all take this form:

- forward: the above;
- dX: a stride-1 3x3 conv of dout with the filters flipped and in/out swapped, padding 2 - p;
- dW: the adjoint of the forward. dM = A dY Aᵀ tile by tile, dU[ξ] = V[ξ]ᵀ @ dM[ξ] summed over
  tiles, dW = Gᵀ dU G.

Memory. V and M are made for a block of tiles at a time, in per-thread buffers sized to stay
in cache, and never for the whole batch: the transforms are compiled loops (numba) over the
channels, the products go to the GEMM. The filter transforms are tiny and run in float64.

The error is larger than im2col's: the transforms' entries grow with m (F(4x4) has 4, 5, 8
in Bᵀ and Aᵀ), and so does the rounding of the sums (docs/performance.md has the measured
bounds). Only float32 3x3 stride-1 undilated ungrouped convolutions are taken here.
"""

from __future__ import annotations

import math

import numpy as np

from ...geometry import Window
from . import compiled, winograd_transforms
from .kernels import channels_first, channels_last
from .parallel import blas_single_threaded, over_batch
from .winograd_matrices import matrices

F64 = np.float64
_CACHE_BYTES = 1 << 20  # V and M of one block of tiles aim to fit this (one core's L2)
_MIN_TILES = 64  # ... but a block has at least this many tiles (the GEMMs' call overhead)


class Plan:
    """F(m x m, 3x3) for one convolution's geometry: tile counts, padding, block size."""

    def __init__(self, m: int, x_shape: tuple[int, int, int, int], padding: tuple[int, int],
                 filters: int) -> None:
        self.m, self.a = m, m + 2
        self.bt, self.g, self.at = matrices(m)
        # vec(G g Gᵀ) = (G ⊗ G) vec(g) for row-major vec: the filter transforms are one GEMM
        self.g_kron = np.kron(self.g, self.g)  # (a², 9) float64
        n, c, h, w = x_shape
        ph, pw = padding
        self.out_hw = (h + 2 * ph - 2, w + 2 * pw - 2)
        self.tiles_h, self.tiles_w = (math.ceil(s / m) for s in self.out_hw)
        self.tiles_per_image = self.tiles_h * self.tiles_w
        self.padding, self.channels, self.filters = padding, c, filters
        per_tile = self.a * self.a * (c + filters) * 4
        self.block = max(_MIN_TILES, _CACHE_BYTES // per_tile)

    def input_tiles(self, xl: np.ndarray, first: int, count: int, v: np.ndarray) -> None:
        """V of tiles first .. first+count-1 of xl (n, H, W, C) into v[:, :count]."""
        ph, pw = self.padding
        _transforms(self.m)[0](xl, ph, pw, self.tiles_h, self.tiles_w, first, count, v)

    def output_tiles(self, mm: np.ndarray, bias: np.ndarray, first: int, count: int,
                     out: np.ndarray) -> None:
        """Aᵀ M A + bias of tiles first .. first+count-1 into out (n, H', W', F)."""
        _transforms(self.m)[1](mm, bias, self.tiles_h, self.tiles_w, first, count, out)

    def adjoint_tiles(self, dy: np.ndarray, first: int, count: int, dm: np.ndarray) -> None:
        """A dY Aᵀ of tiles first .. first+count-1 of dy (n, H', W', F) into dm[:, :count]."""
        _transforms(self.m)[2](dy, self.tiles_h, self.tiles_w, first, count, dm)

    def filters_transformed(self, w: np.ndarray) -> np.ndarray:
        """U = G g Gᵀ for each filter: w (F, C, 3, 3) -> (a², C, F) float32."""
        f, c = w.shape[:2]
        taps = w.reshape(f, c, 9).transpose(2, 1, 0).astype(F64).reshape(9, c * f)
        return (self.g_kron @ taps).astype(np.float32).reshape(-1, c, f)

    def filters_from_transformed(self, du: np.ndarray) -> np.ndarray:
        """dW = Gᵀ dU G: du (a², C, F) -> (F, C, 3, 3) float32."""
        c, f = du.shape[1:]
        taps = self.g_kron.T @ du.reshape(-1, c * f).astype(F64)  # (9, C*F)
        return np.ascontiguousarray(taps.reshape(3, 3, c, f).transpose(3, 2, 0, 1),
                                    dtype=np.float32)

    def tile_blocks(self, images: int) -> list[tuple[int, int]]:
        """(first tile, tile count) blocks covering ``images`` images' tiles."""
        total = images * self.tiles_per_image
        return [(t, min(self.block, total - t)) for t in range(0, total, self.block)]

    def scratch(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-thread buffers: V (a², block, C) and M (a², block, width)."""
        a2 = self.a * self.a
        return (np.empty((a2, self.block, self.channels), np.float32),
                np.empty((a2, self.block, width), np.float32))


def _channels_last(a: np.ndarray) -> np.ndarray:
    """a (N, C, H, W) as contiguous (N, H, W, C) float32: a view when it is laid out so
    (what the other kernels hand out), else one copy (made by each thread for its slice)."""
    return np.ascontiguousarray(channels_last(a), dtype=np.float32)


def supports(geo: Window, dtype: np.dtype) -> bool:
    """Whether F(m x m, 3x3) here can run this convolution's three passes."""
    return (compiled.AVAILABLE and dtype == np.float32 and geo.kernel == (3, 3)
            and geo.stride == (1, 1) and geo.dilation == (1, 1) and geo.groups == 1
            and max(geo.padding) <= 2 and min(geo.x_shape) > 0)


def _transforms(m: int) -> tuple:
    """The compiled (input, output, adjoint) tile transforms of F(m x m, 3x3)."""
    t = winograd_transforms
    return (getattr(t, f"input_tiles_{m}"), getattr(t, f"output_tiles_{m}"),
            getattr(t, f"adjoint_tiles_{m}"))


def conv2d(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, padding: tuple[int, int],
           m: int) -> np.ndarray:
    """x (N, C, H, W) float32, w (F, C, 3, 3) -> (N, F, H', W'), stride 1, by F(m x m, 3x3).

    The result is a channels-first view of channels-last memory, as the other kernels'.
    The tiles read x in place (no padded copy): edge tiles fill in the zeros themselves.
    """
    plan = Plan(m, x.shape, padding, w.shape[0])
    u = plan.filters_transformed(w)
    b = np.zeros(w.shape[0], np.float32) if bias is None else bias.astype(np.float32)
    f = w.shape[0]
    out = np.empty((len(x), *plan.out_hw, f), np.float32)

    def work(s: slice) -> None:
        v, mm = plan.scratch(f)
        xs = _channels_last(x[s])  # each thread lays out its own images, if they need it
        for first, count in plan.tile_blocks(s.stop - s.start):
            plan.input_tiles(xs, first, count, v)
            np.matmul(v[:, :count], u, out=mm[:, :count])  # a² GEMMs (count, C) @ (C, F)
            plan.output_tiles(mm, b, first, count, out[s])

    with blas_single_threaded():
        over_batch(work, len(x), x.size * f)
    return channels_first(out)


def conv2d_grad_input(dout: np.ndarray, w: np.ndarray, x_shape: tuple[int, int, int, int],
                      padding: tuple[int, int], m: int) -> np.ndarray:
    """dX (N, C, H, W) of a stride-1 3x3 conv: the same conv of dout with w flipped in
    space, filters and channels swapped, and padding 2 - p."""
    flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    return conv2d(dout, flipped, None, (2 - padding[0], 2 - padding[1]), m)


def conv2d_grad_weight(dout: np.ndarray, x: np.ndarray, padding: tuple[int, int],
                       m: int) -> np.ndarray:
    """dW (F, C, 3, 3) = Gᵀ (Σ over tiles of V[ξ]ᵀ @ (A dY Aᵀ)[ξ]) G, block by block."""
    f = dout.shape[1]
    plan = Plan(m, x.shape, padding, f)
    partial_sums: dict[int, np.ndarray] = {}  # by first image: summed in a fixed order

    def work(s: slice) -> None:
        v, dm = plan.scratch(f)
        du = np.zeros((plan.a * plan.a, plan.channels, f), np.float32)
        xs, gs = _channels_last(x[s]), _channels_last(dout[s])
        for first, count in plan.tile_blocks(s.stop - s.start):
            plan.input_tiles(xs, first, count, v)
            plan.adjoint_tiles(gs, first, count, dm)
            du += np.matmul(v[:, :count].transpose(0, 2, 1), dm[:, :count])
        partial_sums[s.start] = du

    with blas_single_threaded():
        over_batch(work, len(x), x.size * f)
    du = sum(partial_sums[start] for start in sorted(partial_sums))
    return plan.filters_from_transformed(du)
