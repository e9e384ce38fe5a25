"""conv2d beside the naive loop reference (tinygrad_conv.naive) on one shape.

    python benchmarks/bench_naive.py [--shape N C H W F k stride pad] [--repeats N]

The naive loops are the tests' oracle, not a contender: this shows what im2col + GEMM buys.
They run once (they are slow); ours is the median of --repeats runs after a warm-up.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tinygrad_conv as tc
import tinygrad_conv.functional as F
from tinygrad_conv import naive


def _ours(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int,
          repeats: int) -> tuple[float, float]:
    """Median seconds of forward, and of forward+backward (grads for x, w, b)."""
    def forward() -> tc.Tensor:
        return F.conv2d(tc.Tensor(x), tc.Tensor(w), tc.Tensor(b), stride=stride, padding=pad)

    def both() -> None:
        xt, wt, bt = (tc.Tensor(a, requires_grad=True) for a in (x, w, b))
        y = F.conv2d(xt, wt, bt, stride=stride, padding=pad)
        y.backward(np.ones(y.shape, dtype=np.float32))

    return _median(forward, repeats), _median(both, repeats)


def _median(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _naive(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int,
           pad: int) -> tuple[float, float]:
    """Seconds of one naive forward, and of forward + naive backward."""
    start = time.perf_counter()
    out = naive.conv2d(x, w, b, (stride, stride), (pad, pad))
    forward = time.perf_counter() - start
    naive.conv2d_backward(np.ones(out.shape), x, w, (stride, stride), (pad, pad))
    return forward, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=8, default=[64, 32, 14, 14, 64, 3, 1, 1],
                        metavar=("N", "C", "H", "W", "F", "k", "stride", "pad"))
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    n, c, h, w_, f, k, stride, pad = args.shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    w = rng.standard_normal((f, c, k, k)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    ours = _ours(x, w, b, stride, pad, args.repeats)
    slow = _naive(x, w, b, stride, pad)
    print(f"conv2d x {(n, c, h, w_)}, w {(f, c, k, k)}, stride {stride}, padding {pad}\n")
    print("| pass | tinygrad_conv (median) | naive loops (one run) | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for label, mine, ref in zip(("forward", "forward+backward"), ours, slow):
        print(f"| {label} | {mine * 1e3:.2f} ms | {ref:.2f} s | {ref / mine:,.0f}x |")


if __name__ == "__main__":
    main()
