"""The autograd engine's own overhead: tiny-op graphs, and a training step's time outside kernels.

    python benchmarks/bench_engine.py [--repeats N] [--warmup N] [--threads N] [--quick]

(a) A chain of many elementwise ops (alternating ``y * a`` and ``y + b``) on 1-element
    tensors, forward and forward+backward, in microseconds per op, beside the same arithmetic
    done directly in NumPy (and in PyTorch when installed).
(b) A reference-CNN training step (SGD, lr 0.01) split by manual instrumentation into the time
    inside ops' NumPy forwards (the array kernels), inside optimizer.zero_grad()/step(), and
    everything else: the engine and Tensor/Module Python code. Then a cProfile breakdown of
    the same step by where the time goes. See benchmarks/README.md for the columns.
"""

from __future__ import annotations

import cProfile
import functools
import pstats
import statistics
import time
from dataclasses import dataclass

import common

CHAIN_OPS = 10_000
PROFILE_BATCHES = (64, 128)
SPLIT_STEPS_PER_REPEAT = 10  # a step's split varies by +-1% of the step: median over many
ENGINE_TARGET = 0.05  # engine overhead as a share of a step, at most

# --------------------------------------------------------------------------- (a) tiny ops


def numpy_chain(n: int, np):
    """(forward, forward+backward) callables doing the chain's arithmetic directly in NumPy.

    The backward is what autograd would compute: the grad through each ``* a`` is ``g * a``
    (``+ b`` passes it through), so n/2 multiplies.
    """
    x, a, b = (np.array([v], dtype=np.float32) for v in (0.5, 0.999, 0.001))

    def forward():
        y = x
        for _ in range(n // 2):
            y = y * a
            y = y + b
        return y

    def forward_backward():
        forward()
        g = np.ones(1, dtype=np.float32)
        for _ in range(n // 2):
            g = g * a
        return g

    return forward, forward_backward


def ours_chain(n: int):
    """(forward no_grad, forward recording the graph, forward+backward) callables."""
    import numpy as np

    import tinygrad_conv as tc

    x = tc.Tensor(np.array([0.5], dtype=np.float32), requires_grad=True)
    a = tc.Tensor(np.array([0.999], dtype=np.float32))
    b = tc.Tensor(np.array([0.001], dtype=np.float32))

    def forward():
        y = x
        for _ in range(n // 2):
            y = y * a
            y = y + b
        return y

    def forward_no_grad():
        with tc.no_grad():
            return forward()

    def forward_backward():
        x.grad = None
        forward().backward()

    return forward_no_grad, forward, forward_backward


def torch_chain(n: int, torch):
    """(forward, forward+backward) callables for the same chain in PyTorch."""
    x = torch.tensor([0.5], requires_grad=True)
    a, b = torch.tensor([0.999]), torch.tensor([0.001])

    def forward():
        y = x
        for _ in range(n // 2):
            y = y * a
            y = y + b
        return y

    def forward_backward():
        x.grad = None
        forward().backward()

    return forward, forward_backward


def bench_tiny_ops(n: int, args, np, torch) -> list[list[str]]:
    """Rows of the tiny-op table: variant, ms per chain, µs per op, ratio to NumPy."""
    np_fwd, np_fb = numpy_chain(n, np)
    ours_ng, ours_fwd, ours_fb = ours_chain(n)
    cases = {
        "NumPy directly: forward": np_fwd,
        "tinygrad_conv forward, no_grad": ours_ng,
        "tinygrad_conv forward, graph recorded": ours_fwd,
        "NumPy directly: forward + hand-written backward": np_fb,
        "tinygrad_conv forward + backward": ours_fb,
    }
    if torch is not None:
        t_fwd, t_fb = torch_chain(n, torch)
        cases["PyTorch forward, graph recorded"] = t_fwd
        cases["PyTorch forward + backward"] = t_fb
    timings = common.time_cases({k: common.Case(f) for k, f in cases.items()}, args.repeats,
                                args.warmup, args.interleave)
    rows = []
    for name, timing in timings.items():
        base = timings["NumPy directly: " + ("forward + hand-written backward" if "backward"
                                             in name else "forward")]
        rows.append([name, timing.ms(), common.fmt(timing.median / n * 1e6),
                     f"{common.fmt(timing.median / base.median)}x"])
    return rows


# --------------------------------------------------------------------------- (b) step split


class Stopwatch:
    """Accumulates the time spent inside wrapped callables (outermost calls only)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.calls = 0
        self._depth = 0

    def wrap(self, fn):
        """``fn`` timed into this stopwatch; nested wrapped calls are not counted twice."""

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - start
                self.calls += 1
                self._depth -= 1

        return timed

    def reset(self) -> None:
        self.total, self.calls = 0.0, 0


def op_classes() -> list[type]:
    """Every Op subclass that defines its own forward (registered or not)."""
    from tinygrad_conv.engine import Op

    found, stack = [], [Op]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            stack.append(sub)
            if "forward" in vars(sub):
                found.append(sub)
    return found


def instrument_forwards(watch: Stopwatch):
    """Wrap every op's ``forward`` (pure NumPy work) in ``watch``; returns an undo function."""
    originals = {cls: vars(cls)["forward"] for cls in op_classes()}
    for cls, fn in originals.items():
        cls.forward = watch.wrap(fn)

    def undo() -> None:
        for cls, fn in originals.items():
            cls.forward = fn

    return undo


@dataclass
class Split:
    """Per-step medians (seconds) of one instrumented training step's parts."""

    batch: int
    plain: float  # uninstrumented step
    total: float
    kernels: float
    optimizer: float
    engine: float  # median over steps of total - kernels - optimizer
    share: float  # median over steps of engine / total
    op_calls: int


def split_step(batch: int, args, np) -> Split:
    """Time a step plainly, then instrumented: op forwards, optimizer, and the rest.

    The instrumented step runs ``SPLIT_STEPS_PER_REPEAT * args.repeats`` times; the split
    is the median over those steps.
    """
    import bench_step

    model, opt = bench_step.make_ours("SGD")
    x, y = bench_step.synthetic_batch(batch, np)
    step = bench_step.ours_step_fn(model, opt, x, y)
    plain = common.time_fn(step, args.repeats, args.warmup).median
    kernels, optimizer = Stopwatch(), Stopwatch()
    opt.step, opt.zero_grad = optimizer.wrap(opt.step), optimizer.wrap(opt.zero_grad)
    undo = instrument_forwards(kernels)
    samples = []
    try:
        for i in range(args.warmup + args.repeats * SPLIT_STEPS_PER_REPEAT):
            kernels.reset()
            optimizer.reset()
            start = time.perf_counter()
            step()
            total = time.perf_counter() - start
            engine = total - kernels.total - optimizer.total
            if i >= args.warmup:
                samples.append((total, kernels.total, optimizer.total, engine, engine / total,
                                kernels.calls))
    finally:
        undo()
    medians = [statistics.median(column) for column in zip(*samples, strict=True)]
    return Split(batch, plain, *medians[:5], op_calls=int(medians[5]))


def split_rows(splits: list[Split]) -> list[list[str]]:
    """Rows of the step-split table."""
    rows = []
    for s in splits:
        share = s.share
        rows.append([
            str(s.batch), f"{common.fmt(s.plain * 1e3)}", f"{common.fmt(s.total * 1e3)}",
            str(s.op_calls), f"{common.fmt(s.kernels * 1e3)} ({s.kernels / s.total:.1%})",
            f"{common.fmt(s.optimizer * 1e3)} ({s.optimizer / s.total:.1%})",
            f"{common.fmt(s.engine * 1e3)} ({share:.1%})",
            f"{common.pass_miss(share < ENGINE_TARGET)} (<{ENGINE_TARGET:.0%})",
        ])
    return rows


SPLIT_HEADERS = ["batch", "step ms", "instrumented ms", "op forwards", "in op forwards (NumPy)",
                 "in optimizer", "engine + Tensor/Module Python", "target"]

# --------------------------------------------------------------------------- (b) cProfile


def category(key: tuple[str, int, str]) -> str:
    """Which part of the stack a cProfile entry (file, line, function) belongs to."""
    path, _, name = key
    if path == "~":
        is_numpy = any(s in name for s in ("numpy", "ndarray", "ufunc"))
        return "NumPy C functions called directly" if is_numpy else "Python built-ins"
    path = path.replace("\\", "/")
    if "/tinygrad_conv/" in path:
        rel = path.rsplit("/tinygrad_conv/", 1)[1]
        if rel.startswith("backends/"):
            return "tinygrad_conv/backends/ (incl. inline array operators)"
        if rel.startswith("ops/"):
            return "tinygrad_conv/ops/*.py (incl. inline array operators)"
        if rel in ("engine.py", "tensor.py"):
            return "tinygrad_conv/engine.py + tensor.py"
        return f"tinygrad_conv/{rel.split('/')[0]}" + ("" if rel.endswith(".py") else "/")
    if "/numpy/" in path:
        return "NumPy Python code"
    return "other Python (benchmark script, stdlib)"


def profile_step(batch: int, steps: int, np) -> pstats.Stats:
    """cProfile statistics of ``steps`` training steps (after two untimed ones)."""
    import bench_step

    model, opt = bench_step.make_ours("SGD")
    x, y = bench_step.synthetic_batch(batch, np)
    step = bench_step.ours_step_fn(model, opt, x, y)
    step()
    step()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    profiler.disable()
    return pstats.Stats(profiler)


def _where(key: tuple[str, int, str]) -> str:
    """A cProfile entry as "folder/file.py:line function" (or the built-in's name)."""
    path, line, name = key
    if path != "~":
        parts = path.replace("\\", "/").rsplit("/", 2)
        name = f"{'/'.join(parts[-2:])}:{line} {name}"
    return name.replace("|", "\\|")


def profile_rows(stats: pstats.Stats, steps: int) -> tuple[list[list[str]], list[list[str]]]:
    """(rows by category, rows of the top functions by own time), in ms per step."""
    by_cat: dict[str, float] = {}
    funcs = []
    for key, (_, ncalls, tottime, _, _) in stats.stats.items():
        cat = category(key)
        by_cat[cat] = by_cat.get(cat, 0.0) + tottime
        funcs.append((tottime, ncalls, key, cat))
    total = sum(by_cat.values())
    cat_rows = [[cat, common.fmt(t / steps * 1e3), f"{t / total:.1%}"]
                for cat, t in sorted(by_cat.items(), key=lambda kv: -kv[1])]
    top_rows = []
    for tottime, ncalls, key, _ in sorted(funcs, reverse=True)[:12]:
        top_rows.append([_where(key), str(ncalls // steps),
                         common.fmt(tottime / steps * 1e3), f"{tottime / total:.1%}"])
    return cat_rows, top_rows


# --------------------------------------------------------------------------- report

NOTES_A = """\
Chain: {n} ops alternating y * a and y + b on shape-(1,) float32 tensors; µs/op = chain time
/ {n}. The hand-written NumPy backward does the {half} multiplies autograd needs."""

NOTES_B_SPLIT = """\
Manual instrumentation: every Op subclass's forward (pure NumPy on arrays) is wrapped in a
timer; optimizer.zero_grad()/step() in another; the remainder of the step is the engine and
Tensor/Module Python code (graph recording, the backward walk, grad accumulation and copies,
argument checks, Module.__call__). That remainder is an upper bound on engine overhead; the
wrappers themselves add about a microsecond per op call (compare 'step ms' with
'instrumented ms'). Each share is the median over {steps} instrumented steps.
Target: engine overhead < 5% of a step."""

NOTES_B = """\
cProfile (own time, 'tottime', per step): NumPy's array operators (a @ b, a + b, slicing
assignments) and ufunc calls are not separate entries in cProfile: their time is charged to the
Python function that uses them, so backends/ and ops/*.py stand mostly for array work there.
Profiling inflates Python-heavy code, so these shares overstate the engine's share."""


def main() -> None:
    """Parse flags, set threads, run (a) and (b), print the tables."""
    args = common.make_parser(__doc__.splitlines()[0], repeats=7, warmup=2).parse_args()
    args = common.resolve_counts(args)
    method = common.setup(args)
    import numpy as np

    torch = common.import_torch(args.threads, args.no_torch)
    print(common.header("Engine overhead of tinygrad_conv", args, method, torch))
    common.progress("tiny-op chains ...")
    tiny = bench_tiny_ops(CHAIN_OPS, args, np, torch)
    print(f"### (a) {CHAIN_OPS:,} elementwise ops on 1-element tensors\n")
    print(common.markdown_table(["variant", "ms per chain", "µs per op", "vs NumPy"], tiny))
    print()
    print(NOTES_A.format(n=f"{CHAIN_OPS:,}", half=f"{CHAIN_OPS // 2:,}"))
    print()
    batches = PROFILE_BATCHES[:1] if args.quick else PROFILE_BATCHES
    splits = []
    for batch in batches:
        common.progress(f"instrumented step, batch {batch} ...")
        splits.append(split_step(batch, args, np))
    print("### (b) Where a training step's time goes (reference CNN, SGD)\n")
    print(common.markdown_table(SPLIT_HEADERS, split_rows(splits),
                                right=[True] * 7 + [False]))
    print()
    print(NOTES_B_SPLIT.format(steps=args.repeats * SPLIT_STEPS_PER_REPEAT))
    print()
    steps = args.repeats
    common.progress(f"cProfile of {steps} steps, batch {PROFILE_BATCHES[0]} ...")
    cat_rows, top_rows = profile_rows(profile_step(PROFILE_BATCHES[0], steps, np), steps)
    print(f"cProfile, batch {PROFILE_BATCHES[0]}, {steps} steps:\n")
    print(common.markdown_table(["where (own time)", "ms per step", "share"], cat_rows))
    print()
    print(common.markdown_table(["top functions by own time", "calls per step", "ms per step",
                                 "share"], top_rows))
    print()
    print(NOTES_B)


if __name__ == "__main__":
    main()
