"""The float32 error of each convolution algorithm, against the same convolution in float64.

    python benchmarks/conv_error.py [--quick] [--seeds N]

For every shape of bench_conv.py and each pass (forward, dX, dW), each algorithm of the fast
backend that applies (Winograd: 3x3 stride 1; oneDNN's: where it is installed) runs on
float32 standard-normal inputs; the exact result is the im2col formulas in float64 on the
same (float32-valued) inputs. The error is max |float32 result - exact| / max |exact|, the
worst over --seeds draws; "/ im2col" is that error over im2col's on the same pass and shape.
"""

from __future__ import annotations

import common
from bench_conv import SHAPES

ALGORITHMS = ("im2col", "winograd2", "winograd4", "onednn")
PASS_NAMES = {"conv2d_forward": "fwd", "conv2d_grad_input": "dX", "conv2d_grad_weight": "dW"}


def exact_passes(x, w, dout, geo, reference):
    """(out, dx, dw) in float64 by the reference backend's im2col formulas."""
    import numpy as np

    x64, w64, d64 = (a.astype(np.float64) for a in (x, w, dout))
    x_col = reference.im2col(x64, geo)
    w_row = w64.reshape(1, w.shape[0], -1)
    d_flat = d64.transpose(1, 0, 2, 3).reshape(1, w.shape[0], -1)
    n, f, ho, wo = geo.out_shape
    out = (w_row @ x_col).reshape(f, n, ho, wo).transpose(1, 0, 2, 3)
    dw = (d_flat @ x_col.transpose(0, 2, 1)).reshape(w.shape)
    dx = reference.col2im(w_row.transpose(0, 2, 1) @ d_flat, geo)
    return {"conv2d_forward": out, "conv2d_grad_input": dx, "conv2d_grad_weight": dw}


def errors(shape, seeds: int) -> dict[tuple[str, str], float]:
    """Worst relative error per (pass, algorithm) over ``seeds`` random draws."""
    import numpy as np

    from tinygrad_conv import backends
    from tinygrad_conv.backends.fast.conv import ALGORITHMS as FAST
    from tinygrad_conv.geometry import Window

    n, c, h, w, f, k, s, p = shape
    geo = Window((n, c, h, w), (k, k), (s, s), (p, p), filters=f)
    reference = backends._load("reference")
    worst: dict[tuple[str, str], float] = {}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(geo.x_shape).astype(np.float32)
        wt = rng.standard_normal(geo.w_shape).astype(np.float32)
        dout = rng.standard_normal(geo.out_shape).astype(np.float32)
        exact = exact_passes(x, wt, dout, geo, reference)
        args = {"conv2d_forward": (x, wt, None, geo), "conv2d_grad_input": (dout, wt, geo),
                "conv2d_grad_weight": (dout, x, None, geo)}
        for name in ALGORITHMS:
            if not FAST[name].applies(geo, np.dtype(np.float32)):
                continue
            for pass_name, pass_args in args.items():
                got = FAST[name].passes[pass_name](*pass_args)
                got = got[0] if isinstance(got, tuple) else got
                err = float(np.abs(got - exact[pass_name]).max()
                            / np.abs(exact[pass_name]).max())
                key = (pass_name, name)
                worst[key] = max(worst.get(key, 0.0), err)
    return worst


def main() -> None:
    parser = common.make_parser(__doc__.split("\n")[0], repeats=1, warmup=0)
    parser.add_argument("--seeds", type=int, default=3, help="random draws per shape")
    args = parser.parse_args()
    common.setup(args)
    shapes = list(SHAPES)
    if args.quick:
        shapes, args.seeds = shapes[:2], 1
    rows = []
    for shape in shapes:
        common.progress(f"errors of {shape} ...")
        worst = errors(shape, args.seeds)
        for pass_name, label in PASS_NAMES.items():
            base = worst[(pass_name, "im2col")]
            for name in ALGORITHMS:
                err = worst.get((pass_name, name))
                if err is None:
                    continue
                rows.append([f"({','.join(map(str, shape[:4]))}) F={shape[4]} k={shape[5]} "
                             f"s={shape[6]}", label, name,
                             f"{err:.2e}", f"{err / base:.1f}x"])
    print(common.markdown_table(["shape (N,C,H,W)", "pass", "algorithm", "rel. error",
                                 "/ im2col"], rows))
    print(f"\nrelative error = max |float32 - float64| / max |float64|, worst of {args.seeds} "
          "standard-normal draws per shape.")


if __name__ == "__main__":
    main()
