"""conv2d forward and forward+backward: tinygrad_conv beside NumPy's GEMM rate and PyTorch CPU.

    python benchmarks/bench_conv.py [--repeats N] [--warmup N] [--threads N] [--quick]

For each shape (N, C, H, W, F, k, stride, pad) it prints, for the forward (no graph recorded)
and the forward+backward (grads for x, w and b, upstream grad a fixed random array):
milliseconds, GFLOP/s, that rate as a fraction of np.matmul's float32 rate on the forward GEMM
of the same size, torch's milliseconds, our/torch time ratio and the largest difference from
torch's results. See benchmarks/README.md for the column definitions.
"""

from __future__ import annotations

from dataclasses import dataclass

import common

# (N, C, H, W, F, k, stride, pad)
SHAPES = [
    (64, 1, 28, 28, 32, 3, 1, 1),
    (64, 32, 14, 14, 64, 3, 1, 1),
    (64, 3, 32, 32, 64, 3, 1, 1),
    (32, 64, 56, 56, 64, 3, 1, 1),
    (64, 16, 28, 28, 32, 5, 2, 2),
    (128, 1, 28, 28, 8, 5, 1, 0),
]
# targets, ours/torch time in the same run: fwd+bwd at most TARGET_SHAPES_RATIO on these
# shapes, no pass of any shape over ANY_SHAPE_RATIO
TARGET_SHAPES = {(64, 32, 14, 14, 64, 3, 1, 1), (32, 64, 56, 56, 64, 3, 1, 1)}
TARGET_SHAPES_RATIO = 1.0
ANY_SHAPE_RATIO = 1.2


@dataclass(frozen=True)
class ConvShape:
    """One benchmark case and the sizes derived from it."""

    n: int
    c: int
    h: int
    w: int
    f: int
    k: int
    stride: int
    pad: int

    @property
    def out_hw(self) -> tuple[int, int]:
        ho = (self.h + 2 * self.pad - self.k) // self.stride + 1
        wo = (self.w + 2 * self.pad - self.k) // self.stride + 1
        return ho, wo

    @property
    def gemm(self) -> tuple[int, int, int]:
        """(M, K, P) of the forward GEMM (F, C*k*k) @ (C*k*k, N*H'*W')."""
        ho, wo = self.out_hw
        return self.f, self.c * self.k * self.k, self.n * ho * wo

    @property
    def forward_flops(self) -> int:
        """2*N*F*H'*W'*C*k*k (multiply-adds of the forward, counted as two FLOPs)."""
        m, k, p = self.gemm
        return 2 * m * k * p

    def label(self) -> str:
        return (f"({self.n},{self.c},{self.h},{self.w}) F={self.f} k={self.k} "
                f"s={self.stride} p={self.pad}")

    def as_tuple(self) -> tuple[int, ...]:
        return (self.n, self.c, self.h, self.w, self.f, self.k, self.stride, self.pad)


@dataclass
class Arrays:
    """float32 inputs shared by both frameworks: x, w, b and the upstream gradient."""

    x: object
    w: object
    b: object
    dout: object


def make_arrays(shape: ConvShape, np) -> Arrays:
    """Random float32 inputs (weights scaled like Kaiming so values stay O(1))."""
    rng = np.random.default_rng(0)
    ho, wo = shape.out_hw
    fan_in = shape.c * shape.k * shape.k
    x = rng.standard_normal((shape.n, shape.c, shape.h, shape.w), dtype=np.float32)
    w = rng.standard_normal((shape.f, shape.c, shape.k, shape.k), dtype=np.float32)
    w *= np.float32(fan_in ** -0.5)
    b = rng.standard_normal(shape.f, dtype=np.float32)
    dout = rng.standard_normal((shape.n, shape.f, ho, wo), dtype=np.float32)
    return Arrays(x, w, b, dout)


GEMM_CASES = ("numpy F@X", "numpy X@F", "ours F@X", "ours X@F")


def gemm_case(shape: ConvShape, np, name: str) -> common.Case:
    """The forward's product into a preallocated output, F@X = (F, K) @ (K, P) or its
    transpose X@F = (P, K) @ (K, F) (the orientation our forward runs), by np.matmul
    ("numpy") or by tinygrad_conv's own GEMM on its threads ("ours": parallel.matmul)."""
    from tinygrad_conv.backends.fast import parallel

    m, k, p = shape.gemm
    rng = np.random.default_rng(1)
    rows, cols = (p, m) if name.endswith("X@F") else (m, p)
    a = rng.standard_normal((rows, k), dtype=np.float32)
    b = rng.standard_normal((k, cols), dtype=np.float32)
    out = np.empty((rows, cols), dtype=np.float32)
    if name.startswith("numpy"):
        return common.Case(lambda: np.matmul(a, b, out=out))
    return common.Case(lambda: parallel.matmul(a, b))


# --------------------------------------------------------------------------- tinygrad_conv


def ours_forward(shape: ConvShape, arr: Arrays):
    """A zero-argument callable running our conv2d forward without recording a graph."""
    import tinygrad_conv as tc
    import tinygrad_conv.functional as F

    x, w, b = tc.Tensor(arr.x), tc.Tensor(arr.w), tc.Tensor(arr.b)

    def run():
        with tc.no_grad():
            return F.conv2d(x, w, b, stride=shape.stride, padding=shape.pad)

    return run


def ours_forward_backward(shape: ConvShape, arr: Arrays):
    """(run, clear, tensors): run does forward + backward(dout); clear resets the grads."""
    import tinygrad_conv as tc
    import tinygrad_conv.functional as F

    x = tc.Tensor(arr.x, requires_grad=True)
    w = tc.Tensor(arr.w, requires_grad=True)
    b = tc.Tensor(arr.b, requires_grad=True)
    dout = tc.Tensor(arr.dout)

    def run():
        F.conv2d(x, w, b, stride=shape.stride, padding=shape.pad).backward(dout)

    def clear():
        x.grad = w.grad = b.grad = None

    return run, clear, (x, w, b)


# --------------------------------------------------------------------------- torch


def torch_forward(shape: ConvShape, arr: Arrays, torch):
    """A zero-argument callable running torch's conv2d forward under no_grad."""
    x, w, b = (torch.from_numpy(a) for a in (arr.x, arr.w, arr.b))

    def run():
        with torch.no_grad():
            return torch.nn.functional.conv2d(x, w, b, stride=shape.stride, padding=shape.pad)

    return run


def torch_forward_backward(shape: ConvShape, arr: Arrays, torch):
    """(run, clear, tensors), as :func:`ours_forward_backward`."""
    x, w, b = (torch.from_numpy(a.copy()).requires_grad_() for a in (arr.x, arr.w, arr.b))
    dout = torch.from_numpy(arr.dout)

    def run():
        torch.nn.functional.conv2d(x, w, b, stride=shape.stride, padding=shape.pad).backward(dout)

    def clear():
        x.grad = w.grad = b.grad = None

    return run, clear, (x, w, b)


# --------------------------------------------------------------------------- checks


def max_abs_diff(ours, theirs, np) -> tuple[float, float]:
    """(max |ours - theirs|, that divided by max |theirs|) over pairs of arrays."""
    worst, scale = 0.0, 0.0
    for a, t in zip(ours, theirs, strict=True):
        a, t = np.asarray(a, dtype=np.float64), np.asarray(t, dtype=np.float64)
        worst = max(worst, float(np.max(np.abs(a - t))))
        scale = max(scale, float(np.max(np.abs(t))))
    return worst, worst / scale if scale else 0.0


def check_forward(our_run, torch_run, np) -> tuple[float, float]:
    """Compare the forward outputs."""
    return max_abs_diff([our_run().numpy()], [torch_run().numpy()], np)


def check_backward(ours, theirs, np) -> tuple[float, float]:
    """Compare dx, dw, db after one forward+backward in each framework."""
    for run, clear, _ in (ours, theirs):
        clear()
        run()
    our_grads = [t.grad.numpy() for t in ours[2]]
    torch_grads = [t.grad.numpy() for t in theirs[2]]
    return max_abs_diff(our_grads, torch_grads, np)


# --------------------------------------------------------------------------- one shape


@dataclass
class Row:
    """Measurements of one (shape, pass) pair."""

    shape: ConvShape
    kind: str  # "fwd" or "fwd+bwd"
    flops: int
    ours: common.Timing
    numpy_gemm_gflops: float  # the faster np.matmul orientation: the reference
    gemm_gflops: float  # the fastest of all four GEMM runs
    torch: common.Timing | None = None
    diff: tuple[float, float] | None = None
    gemm_rates: dict[str, float] | None = None  # GFLOP/s by GEMM_CASES name (fwd rows)
    algorithm: str = ""  # what the fast backend ran: "fwd" or "fwd / dX / dW"

    @property
    def gflops(self) -> float:
        return self.flops / self.ours.median / 1e9

    @property
    def numpy_gemm_fraction(self) -> float:
        return self.gflops / self.numpy_gemm_gflops

    @property
    def gemm_fraction(self) -> float:
        return self.gflops / self.gemm_gflops

    @property
    def torch_gflops(self) -> float | None:
        """torch's rate on the same FLOPs."""
        return self.flops / self.torch.median / 1e9 if self.torch else None

    def target(self) -> str:
        """PASS/MISS for the ours/torch targets: at most 1.0x (fwd+bwd, the two target
        shapes), at most 1.2x (every other row)."""
        if self.torch is None:
            return ""
        strict = self.kind == "fwd+bwd" and self.shape.as_tuple() in TARGET_SHAPES
        bound = TARGET_SHAPES_RATIO if strict else ANY_SHAPE_RATIO
        ok = self.ours.median / self.torch.median <= bound
        return f"{common.pass_miss(ok)} (≤{bound:.1f}x)"


def bench_shape(shape: ConvShape, args, np, torch) -> tuple[dict, tuple | None, tuple | None]:
    """Time the forward and forward+backward of one shape in both frameworks, then compare
    the results with torch's: (timings by case, forward diff, backward diff)."""
    arr = make_arrays(shape, np)
    ours_fb = ours_forward_backward(shape, arr)
    cases = {"fwd": common.Case(ours_forward(shape, arr)),
             "fwd+bwd": common.Case(ours_fb[0], ours_fb[1])}
    if torch is not None:
        torch_fb = torch_forward_backward(shape, arr, torch)
        cases["torch fwd"] = common.Case(torch_forward(shape, arr, torch))
        cases["torch fwd+bwd"] = common.Case(torch_fb[0], torch_fb[1])
    t = common.time_cases(cases, args.repeats, args.warmup, args.interleave)
    if torch is None:
        return t, None, None
    return (t, check_forward(ours_forward(shape, arr), cases["torch fwd"].fn, np),
            check_backward(ours_fb, torch_fb, np))


def bench_gemms(shape: ConvShape, args, np) -> dict[str, float]:
    """GFLOP/s of the forward's product by np.matmul (its BLAS at ``args.threads`` threads,
    whatever the backend set) and by our GEMM. Run after every convolution: NumPy's
    OpenBLAS threads spin for about 0.1 s after a product, on the cores the next case
    would use."""
    from threadpoolctl import threadpool_limits

    cases = {name: gemm_case(shape, np, name) for name in GEMM_CASES}
    with threadpool_limits(limits=args.threads, user_api="blas"):
        t = common.time_cases(cases, args.repeats, args.warmup, args.interleave)
    m, k, p = shape.gemm
    return {name: 2 * m * k * p / t[name].median / 1e9 for name in GEMM_CASES}


def make_rows(shape: ConvShape, timed: tuple, gemm_rates: dict[str, float], np,
              torch) -> list[Row]:
    """The fwd and fwd+bwd rows of one shape."""
    t, fwd_diff, fb_diff = timed
    # the reference: the fastest of the four, the best this machine does on this product
    gemm_gflops = max(gemm_rates.values())
    numpy_gflops = max(gemm_rates["numpy F@X"], gemm_rates["numpy X@F"])
    chosen = algorithms(shape, np)
    fwd = Row(shape, "fwd", shape.forward_flops, t["fwd"], numpy_gflops, gemm_gflops,
              gemm_rates=gemm_rates, algorithm=chosen[0])
    fb = Row(shape, "fwd+bwd", 3 * shape.forward_flops, t["fwd+bwd"], numpy_gflops, gemm_gflops,
             algorithm=" / ".join(chosen))
    if torch is not None:
        fwd.torch, fb.torch = t["torch fwd"], t["torch fwd+bwd"]
        fwd.diff, fb.diff = fwd_diff, fb_diff
    return [fwd, fb]


def algorithms(shape: ConvShape, np) -> list[str]:
    """The algorithms the backend in use runs for the forward, dX and dW of this shape."""
    from tinygrad_conv import backends
    from tinygrad_conv.geometry import Window

    geo = Window((shape.n, shape.c, shape.h, shape.w), (shape.k, shape.k),
                 (shape.stride, shape.stride), (shape.pad, shape.pad), filters=shape.f)
    names = ("conv2d_forward", "conv2d_grad_input", "conv2d_grad_weight")
    fused = [backends.kernels().fused(name, geo, np.dtype(np.float32)) for name in names]
    return [getattr(f, "algorithm", "im2col") for f in fused]


# --------------------------------------------------------------------------- report

HEADERS = ["shape (N,C,H,W) F k s p", "pass", "algorithm", "ours ms", "GFLOP/s", "of NumPy GEMM",
           "of best GEMM", "torch ms", "torch GFLOP/s", "ours/torch", "max abs diff (rel)",
           "target"]


def table_row(row: Row) -> list[str]:
    """One Markdown row."""
    torch_ms = row.torch.ms() if row.torch else "n/a"
    ratio = common.fmt(row.ours.median / row.torch.median) + "x" if row.torch else "n/a"
    diff = f"{common.fmt_sci(row.diff[0])} ({common.fmt_sci(row.diff[1])})" if row.diff else "n/a"
    torch_rate = common.fmt(row.torch_gflops) if row.torch else "n/a"
    return [row.shape.label(), row.kind, row.algorithm, row.ours.ms(), common.fmt(row.gflops),
            f"{row.numpy_gemm_fraction:.0%}", f"{row.gemm_fraction:.0%}", torch_ms, torch_rate,
            ratio, diff, row.target()]


def main() -> None:
    """Parse flags, set threads, run every shape and print the report."""
    args = common.make_parser(__doc__.splitlines()[0], repeats=7, warmup=2).parse_args()
    args = common.resolve_counts(args)
    method = common.setup(args)
    import numpy as np

    torch = common.import_torch(args.threads, args.no_torch)
    print(common.header("conv2d: tinygrad_conv vs NumPy GEMM vs PyTorch", args, method, torch))
    shapes = [ConvShape(*values) for values in SHAPES]
    timed = []
    for shape in shapes:
        common.progress(f"conv {shape.label()} ...")
        timed.append(bench_shape(shape, args, np, torch))
    rows: list[Row] = []
    for shape, conv_times in zip(shapes, timed):  # the GEMMs last (see bench_gemms)
        common.progress(f"GEMM {shape.gemm} ...")
        rows.extend(make_rows(shape, conv_times, bench_gemms(shape, args, np), np, torch))
    print(common.markdown_table(HEADERS, [table_row(r) for r in rows],
                                right=[False, False, False] + [True] * 8 + [False]))
    print()
    from tinygrad_conv.backends.fast import gemm

    print(f"GEMM rates on the forward's product, GFLOP/s (ours: tinygrad_conv's GEMM, backend "
          f"{gemm.backend()!r}, on its {args.threads} threads):")
    print()
    print(common.markdown_table(
        ["shape (N,C,H,W) F k s p", "(M, K, P)", *GEMM_CASES],
        [[r.shape.label(), str(r.shape.gemm), *(common.fmt(r.gemm_rates[n]) for n in GEMM_CASES)]
         for r in rows if r.gemm_rates], right=[False, False] + [True] * len(GEMM_CASES)))
    print()
    print("FLOPs: forward 2*N*F*H'*W'*C*k*k, forward+backward 3x that. The GEMM rates are "
          "float32 runs of the forward's product in this run (table above): F@X = (F, C*k*k) "
          "@ (C*k*k, N*H'*W') or X@F = its transpose, by np.matmul or by tinygrad_conv's own "
          "GEMM. 'of NumPy GEMM' = our GFLOP/s / the faster np.matmul run (the target's "
          "reference); 'of best GEMM' = the same against the fastest of all four (our own "
          "GEMM, when it beats NumPy's); with Winograd (fewer multiplies than the FLOPs "
          "counted) the rate can pass the GEMM's. Targets: ours/torch at most 1.0x for "
          "fwd+bwd on (64,32,14,14,64,3,1,1) and (32,64,56,56,64,3,1,1), at most 1.2x on "
          "every other row. algorithm: what the fast backend ran (fwd, or fwd / dX / dW). max "
          "abs diff: fwd output, or the worst of dx, dw, db (rel = divided by the largest "
          "|torch value|).")


if __name__ == "__main__":
    main()
