"""Each convolution algorithm of the fast backend, pass by pass: the measurements behind ``auto``.

    python benchmarks/bench_algorithms.py [--repeats N] [--warmup N] [--threads N] [--quick]

For 3x3 stride-1 convolutions of several sizes and channel counts (the reference CNN's two,
bench_conv.py's, and a sweep of channels and image sizes), each pass (forward, dX, dW) runs
by every algorithm that applies (im2col, Winograd F(2x2, 3x3), Winograd F(4x4, 3x3),
oneDNN's direct convolution where it is installed), round-robin. Columns: milliseconds
(median), the fastest, what the ``auto`` rule (backends/fast/autotune.py) picks, and how
much slower the rule's pick is than the fastest.
"""

from __future__ import annotations

from dataclasses import dataclass

import common

# (N, C, H, W, F), all 3x3, stride 1, padding 1
SHAPES = [
    (64, 1, 28, 28, 32), (64, 32, 14, 14, 64),      # the reference CNN at batch 64
    (128, 1, 28, 28, 32), (128, 32, 14, 14, 64),    # ... and 128
    (64, 3, 32, 32, 64), (32, 64, 56, 56, 64),      # bench_conv.py
    (64, 8, 28, 28, 8), (64, 16, 28, 28, 16), (64, 32, 28, 28, 32), (64, 64, 28, 28, 64),
    (64, 128, 7, 7, 128), (64, 64, 7, 7, 64), (64, 16, 14, 14, 16), (64, 128, 14, 14, 128),
]
QUICK_SHAPES = SHAPES[:2]
PASS_LABELS = {"conv2d_forward": "fwd", "conv2d_grad_input": "dX", "conv2d_grad_weight": "dW"}


@dataclass
class Row:
    shape: tuple[int, ...]
    pass_name: str
    ms: dict[str, float]
    rule: str

    @property
    def fastest(self) -> str:
        return min(self.ms, key=self.ms.get)


def measure(shape, args, np) -> list[Row]:
    """One Row per pass of this shape."""
    from tinygrad_conv.backends.fast import autotune
    from tinygrad_conv.backends.fast.conv import ALGORITHMS
    from tinygrad_conv.geometry import Window

    n, c, h, w, f = shape
    geo = Window((n, c, h, w), (3, 3), (1, 1), (1, 1), filters=f)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(geo.x_shape).astype(np.float32)
    wt = rng.standard_normal(geo.w_shape).astype(np.float32)
    dout = rng.standard_normal(geo.out_shape).astype(np.float32)
    args_of = {"conv2d_forward": (x, wt, None, geo), "conv2d_grad_input": (dout, wt, geo),
               "conv2d_grad_weight": (dout, x, None, geo)}
    usable = [a for a in ALGORITHMS.values() if a.applies(geo, np.dtype(np.float32))]
    rows = []
    for pass_name, pass_args in args_of.items():
        cases = {a.name: common.Case(lambda run=a.passes[pass_name], args=pass_args: run(*args))
                 for a in usable}
        timings = common.time_cases(cases, args.repeats, args.warmup, interleave=True)
        rows.append(Row(shape, pass_name, {k: t.median_ms for k, t in timings.items()},
                        autotune.rule(pass_name, geo)))
    return rows


def main() -> None:
    parser = common.make_parser(__doc__.split("\n")[0], repeats=9, warmup=2)
    args = common.resolve_counts(parser.parse_args())
    method = common.setup(args)
    import numpy as np

    print(common.header("conv2d algorithms, pass by pass", args, method, None))
    rows = []
    for shape in QUICK_SHAPES if args.quick else SHAPES:
        common.progress(f"algorithms on {shape} ...")
        rows += measure(shape, args, np)
    from tinygrad_conv.backends.fast.conv import ALGORITHMS

    names = [k for k in ALGORITHMS if any(k in r.ms for r in rows)]
    table = []
    for r in rows:
        n, c, h, w, f = r.shape
        table.append([f"({n},{c},{h},{w}) F={f}", PASS_LABELS[r.pass_name],
                      *[common.fmt(r.ms.get(k)) for k in names], r.fastest, r.rule,
                      f"{r.ms[r.rule] / r.ms[r.fastest]:.2f}x"])
    print(common.markdown_table(["shape (N,C,H,W)", "pass", *[f"{k} ms" for k in names],
                                 "fastest", "auto picks", "pick / fastest"], table))
    worst = max(rows, key=lambda r: r.ms[r.rule] / r.ms[r.fastest])
    print(f"\nThe rule's worst pick: {worst.rule} on {worst.shape} "
          f"{PASS_LABELS[worst.pass_name]}, {worst.ms[worst.rule] / worst.ms[worst.fastest]:.2f}x "
          "the fastest. All 3x3, stride 1, padding 1, float32.")


if __name__ == "__main__":
    main()
