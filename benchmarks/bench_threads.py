"""Threads for the memory-bound kernels: the fast backend's thread pool beside numba's prange.

    python benchmarks/bench_threads.py [--repeats N] [--interleave] [--load] [--layer L]

``--layer`` picks numba's threading layer (one per process): ``omp`` (GNU OpenMP, whose
waiting threads spin; numba's choice where libgomp loads and TBB is not installed) or
``workqueue`` (numba's own, sleeping workers).

A measurement for issue 15 ("Threads done with a library"), run by hand; numba is not a
dependency of the project (``pip install numba`` into a scratch venv to run this).

The reference CNN's relu + 2x2 max-pool stages, at batch 64 and 128: conv1's output
(N, 32, 28, 28) and conv2's (N, 64, 14, 14), as (N, C, H, W) views of channels-last
(N, H, W, C) memory, the layout the fast backend hands on. Each kernel, forward and
backward, is timed for

- ``NumPy 1 thread``: the reference backend's kernel (plain NumPy, one core);
- ``pool``: the fast backend's kernel, the batch split over its thread pool
  (``parallel.over_batch``, ``--threads`` threads);
- ``numba``: numba ``njit(parallel=True, cache=True)`` loops over ``prange`` written below,
  one pass per NumPy pass of the unfused formula (relu, then its mask; the pool's max, then
  its winner), on ``--threads`` threads (``numba.set_num_threads``);
- ``numba fused``: the same with the passes fused: relu and its mask in one pass, the
  pool's max and winner in one pass, relu's backward fused into the pool's scatter.

Every candidate's outputs are asserted equal to the reference kernel's before timing.
The ``stage`` rows run a whole relu + pool forward (or pool + relu backward) as the
network does; the last table adds them up per training step. ``--load`` starts one
CPU-bound process (a Python busy loop) for the whole timing and kills it afterwards.
Numba's compile time (first call) is measured in this process, and its cache load time
(``cache=True``) in a second process started afterwards with the same cache folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

# numba reads its cache folder once, when imported: a fresh folder per run (unless given),
# so that the first call's time below is a real compile, not a load from an earlier run
_OWN_CACHE = "NUMBA_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_threads_numba_")
_IMPORT_START = time.perf_counter()
import numba  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _IMPORT_START
import common  # noqa: E402
import numpy as np  # noqa: E402
from numba import prange  # noqa: E402

BATCHES = (64, 128)
LAYERS = {"conv1": (32, 28, 28), "conv2": (64, 14, 14)}  # (C, H, W) of the relu's input
POOL = 2  # kernel and stride of the max pool
ZERO = np.float32(0)  # the kernels are float32: a float32 zero keeps them so
CANDIDATES = ("NumPy 1 thread", "pool", "numba", "numba fused")
LOAD_CODE = "while True:\n    pass\n"


# --------------------------------------------------------------------------- numba kernels
# All on channels-last memory: relu kernels on (N, H*W*C) rows, pool kernels on
# (N, H, W, C) inputs and (N, H', W', C) outputs; windows tile the input (stride = kernel,
# no padding). Each prange splits the batch, as parallel.over_batch does.

JIT = dict(parallel=True, cache=True)


@numba.njit(**JIT)
def nb_relu_values(a, out):
    """out = max(a, 0); a, out (N, M)."""
    for n in prange(a.shape[0]):
        for i in range(a.shape[1]):
            v = a[n, i]
            out[n, i] = v if v > ZERO else ZERO


@numba.njit(**JIT)
def nb_relu_mask(out, mask):
    """mask = out > 0 (a second pass, reading relu's output as the fast backend does)."""
    for n in prange(out.shape[0]):
        for i in range(out.shape[1]):
            mask[n, i] = out[n, i] > ZERO


@numba.njit(**JIT)
def nb_relu_fused(a, out, mask):
    """out = max(a, 0) and mask = a > 0 in one pass."""
    for n in prange(a.shape[0]):
        for i in range(a.shape[1]):
            v = a[n, i]
            positive = v > ZERO
            out[n, i] = v if positive else ZERO
            mask[n, i] = positive


@numba.njit(**JIT)
def nb_pool_max(x, kh, kw, out):
    """out[n, y, x, c] = the max of window (y, x); x (N, H, W, C), out (N, H', W', C)."""
    batch, ho, wo, c = out.shape
    for n in prange(batch):
        for y in range(ho):
            for xo in range(wo):
                for ch in range(c):
                    out[n, y, xo, ch] = x[n, y * kh, xo * kw, ch]
                for k in range(1, kh * kw):
                    row, col = y * kh + k // kw, xo * kw + k % kw
                    for ch in range(c):
                        v = x[n, row, col, ch]
                        if v > out[n, y, xo, ch]:
                            out[n, y, xo, ch] = v


@numba.njit(**JIT)
def nb_pool_winner(x, out, kh, kw, won):
    """won = the first window offset whose entry equals the max (a second pass)."""
    batch, ho, wo, c = out.shape
    for n in prange(batch):
        for y in range(ho):
            for xo in range(wo):
                for k in range(kh * kw - 1, -1, -1):  # downwards: the first maximum is left
                    row, col = y * kh + k // kw, xo * kw + k % kw
                    for ch in range(c):
                        if x[n, row, col, ch] == out[n, y, xo, ch]:
                            won[n, y, xo, ch] = k


@numba.njit(**JIT)
def nb_pool_fused(x, kh, kw, out, won):
    """The max of each window and its winner (first maximum) in one pass."""
    batch, ho, wo, c = out.shape
    for n in prange(batch):
        for y in range(ho):
            for xo in range(wo):
                for ch in range(c):
                    out[n, y, xo, ch] = x[n, y * kh, xo * kw, ch]
                    won[n, y, xo, ch] = 0
                for k in range(1, kh * kw):
                    row, col = y * kh + k // kw, xo * kw + k % kw
                    for ch in range(c):
                        v = x[n, row, col, ch]
                        if v > out[n, y, xo, ch]:
                            out[n, y, xo, ch] = v
                            won[n, y, xo, ch] = k


@numba.njit(**JIT)
def nb_pool_scatter(dout, won, kh, kw, dx):
    """dx = each window's dout at its winner, 0 elsewhere; dout, won (N, H', W', C)."""
    batch, ho, wo, c = dout.shape
    for n in prange(batch):
        for y in range(ho):
            for xo in range(wo):
                for k in range(kh * kw):
                    row, col = y * kh + k // kw, xo * kw + k % kw
                    for ch in range(c):
                        hit = won[n, y, xo, ch] == k
                        dx[n, row, col, ch] = dout[n, y, xo, ch] if hit else ZERO


@numba.njit(**JIT)
def nb_relu_backward(g, mask, out):
    """out = g where mask, else 0; (N, M) rows."""
    for n in prange(g.shape[0]):
        for i in range(g.shape[1]):
            out[n, i] = g[n, i] if mask[n, i] else ZERO


@numba.njit(**JIT)
def nb_scatter_relu_backward(dout, won, mask, kh, kw, dx):
    """The pool's scatter and relu's backward in one pass: dx = scatter(dout) * mask."""
    batch, ho, wo, c = dout.shape
    for n in prange(batch):
        for y in range(ho):
            for xo in range(wo):
                for k in range(kh * kw):
                    row, col = y * kh + k // kw, xo * kw + k % kw
                    for ch in range(c):
                        hit = won[n, y, xo, ch] == k and mask[n, row, col, ch]
                        dx[n, row, col, ch] = dout[n, y, xo, ch] if hit else ZERO


JITTED = (nb_relu_values, nb_relu_mask, nb_relu_fused, nb_pool_max, nb_pool_winner,
          nb_pool_fused, nb_pool_scatter, nb_relu_backward, nb_scatter_relu_backward)


# --------------------------------------------------------------------------- the candidates
# Each takes and returns what the backends' kernels do: (N, C, H, W) views of
# channels-last memory; a winner is (N, C, H', W') over uint8 channels-last memory.


def cl(a: np.ndarray) -> np.ndarray:
    """(N, C, H, W) view -> its (N, H, W, C) memory."""
    return a.transpose(0, 2, 3, 1)


def cf(a: np.ndarray) -> np.ndarray:
    """(N, H, W, C) memory -> the (N, C, H, W) view of it."""
    return a.transpose(0, 3, 1, 2)


def _rows(a: np.ndarray) -> np.ndarray:
    """An (N, C, H, W) view of channels-last memory as (N, H*W*C) rows (no copy)."""
    memory = cl(a)
    assert memory.flags.c_contiguous, "numba kernels expect channels-last memory"
    return memory.reshape(len(memory), -1)


def numba_relu(a: np.ndarray, fused: bool) -> tuple[np.ndarray, np.ndarray]:
    """(max(a, 0), a > 0) with numba, in two passes or one."""
    out, mask = np.empty_like(a), np.empty_like(a, dtype=bool)  # keep a's layout
    if fused:
        nb_relu_fused(_rows(a), _rows(out), _rows(mask))
    else:
        nb_relu_values(_rows(a), _rows(out))
        nb_relu_mask(_rows(out), _rows(mask))
    return out, mask


def numba_max_pool(x: np.ndarray, fused: bool) -> tuple[np.ndarray, np.ndarray]:
    """(the max of each POOL x POOL window, its winner) with numba, in two passes or one."""
    n, c, h, w = x.shape
    out = np.empty((n, h // POOL, w // POOL, c), x.dtype)
    won = np.empty(out.shape, np.uint8)
    if fused:
        nb_pool_fused(cl(x), POOL, POOL, out, won)
    else:
        nb_pool_max(cl(x), POOL, POOL, out)
        nb_pool_winner(cl(x), out, POOL, POOL, won)
    return cf(out), cf(won)


def numba_pool_backward(dout: np.ndarray, won: np.ndarray, x_shape: tuple[int, ...],
                        mask: np.ndarray | None = None) -> np.ndarray:
    """The pool's scatter, with relu's backward fused in when ``mask`` is given."""
    n, c, h, w = x_shape
    dx = np.empty((n, h, w, c), dout.dtype)
    if mask is None:
        nb_pool_scatter(cl(dout), cl(won), POOL, POOL, dx)
    else:
        nb_scatter_relu_backward(cl(dout), cl(won), cl(mask), POOL, POOL, dx)
    return cf(dx)


def numba_relu_backward(g: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """g where mask, else 0, with numba."""
    out = np.empty_like(g)
    nb_relu_backward(_rows(g), _rows(mask), _rows(out))
    return out


# --------------------------------------------------------------------------- one layer


def channels_last_random(rng: np.random.Generator, n: int, c: int, h: int, w: int) -> np.ndarray:
    """A standard normal float32 (N, C, H, W) view of (N, H, W, C) memory."""
    return cf(rng.standard_normal((n, h, w, c), dtype=np.float32))


def layer_cases(batch: int, shape: tuple[int, int, int], ref, fast, geometry) -> dict:
    """{row name: {candidate: zero-argument callable}} for one layer, outputs checked."""
    c, h, w = shape
    rng = np.random.default_rng(batch + c)
    a = channels_last_random(rng, batch, c, h, w)         # conv's output, relu's input
    dout = channels_last_random(rng, batch, c, h // POOL, w // POOL)  # the pool's upstream grad
    geo = geometry(x_shape=(batch, c, h, w), kernel=(POOL, POOL), stride=(POOL, POOL),
                   padding=(0, 0))
    r_out, r_mask = ref.relu(a, True)
    r_pool, r_won = ref.max_pool(r_out, geo)
    r_dx = ref.max_pool_backward(dout, r_won, geo)
    r_da = ref.relu_backward(r_dx, r_mask)
    f_out, f_mask = fast.relu(a, True)
    f_won = fast.max_pool(f_out, geo)[1]
    f_dx = fast.max_pool_backward(dout, f_won, geo)  # channels-last, as relu's backward gets it
    n_out, n_mask = numba_relu(a, fused=True)
    n_won = numba_max_pool(n_out, fused=True)[1]
    n_dx = numba_pool_backward(dout, n_won, geo.x_shape)
    rows = {
        "relu + mask": (
            (r_out, r_mask), lambda: ref.relu(a, True), lambda: fast.relu(a, True),
            lambda: numba_relu(a, False), lambda: numba_relu(a, True)),
        "max pool (max + winner)": (
            (r_pool, r_won), lambda: ref.max_pool(r_out, geo),
            lambda: fast.max_pool(f_out, geo), lambda: numba_max_pool(n_out, False),
            lambda: numba_max_pool(n_out, True)),
        "stage fwd: relu, pool": (
            (r_pool, r_won), lambda: ref.max_pool(ref.relu(a, True)[0], geo),
            lambda: fast.max_pool(fast.relu(a, True)[0], geo),
            lambda: numba_max_pool(numba_relu(a, False)[0], False),
            lambda: numba_max_pool(numba_relu(a, True)[0], True)),
        "max pool scatter": (
            (r_dx,), lambda: ref.max_pool_backward(dout, r_won, geo),
            lambda: fast.max_pool_backward(dout, f_won, geo),
            lambda: numba_pool_backward(dout, n_won, geo.x_shape), None),
        "relu backward (mask multiply)": (
            (r_da,), lambda: ref.relu_backward(f_dx, r_mask),
            lambda: fast.relu_backward(f_dx, f_mask),
            lambda: numba_relu_backward(n_dx, n_mask), None),
        "stage bwd: scatter, relu bwd": (
            (r_da,), lambda: ref.relu_backward(ref.max_pool_backward(dout, r_won, geo), r_mask),
            lambda: fast.relu_backward(fast.max_pool_backward(dout, f_won, geo), f_mask),
            lambda: numba_relu_backward(numba_pool_backward(dout, n_won, geo.x_shape), n_mask),
            lambda: numba_pool_backward(dout, n_won, geo.x_shape, mask=n_mask)),
    }
    checked = {}
    for name, (expected, *fns) in rows.items():
        for candidate, fn in zip(CANDIDATES, fns):
            if fn is not None:
                _check_equal(fn(), expected, f"{name}, {candidate}, batch {batch} {shape}")
        checked[name] = {cand: fn for cand, fn in zip(CANDIDATES, fns) if fn is not None}
    return checked


def _check_equal(got: object, expected: tuple, what: str) -> None:
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expected), what
    for g, e in zip(got, expected):
        assert g.shape == e.shape, f"{what}: shape {g.shape} != {e.shape}"
        assert np.array_equal(np.asarray(g), np.asarray(e)), f"{what}: values differ"


# --------------------------------------------------------------------------- compile times


def first_calls() -> dict[str, float]:
    """Seconds of each jitted kernel's first call on small arrays of the timed types (a
    compile here; a load from numba's cache in a second process)."""
    x = channels_last_random(np.random.default_rng(0), 2, 4, 4, 4)
    rows, mask, out = _rows(x), np.empty((2, 64), bool), np.empty((2, 64), np.float32)
    pooled, won = np.empty((2, 2, 2, 4), np.float32), np.zeros((2, 2, 2, 4), np.uint8)
    dx, mask4 = np.empty((2, 4, 4, 4), np.float32), np.ones((2, 4, 4, 4), bool)
    calls = {
        nb_relu_values: (rows, out), nb_relu_mask: (out, mask), nb_relu_fused: (rows, out, mask),
        nb_pool_max: (cl(x), POOL, POOL, pooled),
        nb_pool_winner: (cl(x), pooled, POOL, POOL, won),
        nb_pool_fused: (cl(x), POOL, POOL, pooled, won),
        nb_pool_scatter: (pooled, won, POOL, POOL, dx),
        nb_relu_backward: (out, mask, out.copy()),
        nb_scatter_relu_backward: (pooled, won, mask4, POOL, POOL, dx),
    }
    assert set(calls) == set(JITTED)
    seconds = {}
    for fn, fn_args in calls.items():
        start = time.perf_counter()
        fn(*fn_args)
        seconds[fn.__name__] = time.perf_counter() - start
    return seconds


def cache_hits() -> dict[str, tuple[int, int]]:
    """(cache hits, cache misses) of each jitted kernel in this process."""
    return {fn.__name__: (sum(fn.stats.cache_hits.values()), sum(fn.stats.cache_misses.values()))
            for fn in JITTED}


def probe_second_process(layer: str) -> dict:
    """First-call times in a fresh process sharing this one's numba cache folder."""
    done = subprocess.run([sys.executable, __file__, "--probe-cache", "--layer", layer],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def compile_table(here: dict[str, float], there: dict) -> str:
    """First call in this process (compile) beside a second process's (cache load)."""
    hits = there["cache"]
    rows = [[name, common.fmt(here[name] * 1e3), common.fmt(there["seconds"][name] * 1e3),
             f"{hits[name][0]} / {hits[name][1]}"] for name in here]
    rows.append(["total", common.fmt(sum(here.values()) * 1e3),
                 common.fmt(sum(there["seconds"].values()) * 1e3), ""])
    rows.append(["import numba", common.fmt(IMPORT_SECONDS * 1e3),
                 common.fmt(there["import_seconds"] * 1e3), ""])
    return common.markdown_table(
        ["numba kernel", "first call, this process (compile) ms",
         "first call, second process (cache) ms", "second process cache hits / misses"],
        rows)


# --------------------------------------------------------------------------- timing tables


def time_rows(batch: int, layer: str, cases: dict, args: argparse.Namespace) -> list[dict]:
    """Time every candidate of every row of one layer."""
    rows = []
    for name, fns in cases.items():
        common.progress(f"threads: batch {batch}, {layer}, {name} ...")
        timings = common.time_cases({k: common.Case(fn) for k, fn in fns.items()},
                                    args.repeats, args.warmup, args.interleave)
        rows.append(dict(batch=batch, layer=layer, name=name, timings=timings))
    return rows


TIME_HEADERS = ["batch", "layer", "kernel", *(f"{c} ms" for c in CANDIDATES),
                "NumPy/pool", "numba/pool", "fused/pool"]


def time_row(row: dict) -> list[str]:
    t = row["timings"]
    pool = t["pool"].median

    def ratio(c: str) -> str:
        return f"{t[c].median / pool:.2f}x" if c in t else "n/a"

    return [str(row["batch"]), row["layer"], row["name"],
            *(t[c].ms() if c in t else "n/a" for c in CANDIDATES),
            ratio("NumPy 1 thread"), ratio("numba"), ratio("numba fused")]


def step_rows(rows: list[dict]) -> list[list[str]]:
    """Per batch: the stage rows of both layers added up (the relu + pool share of a step)."""
    out = []
    for batch in BATCHES:
        stages = [r["timings"] for r in rows
                  if r["batch"] == batch and r["name"].startswith("stage")]
        total = {c: sum(t[c].median for t in stages) * 1e3 for c in CANDIDATES}
        out.append([str(batch), *(common.fmt(total[c]) for c in CANDIDATES),
                    *(f"{total[c] - total['pool']:+.2f}" for c in CANDIDATES if c != "pool")])
    return out


STEP_HEADERS = ["batch", *(f"{c} ms" for c in CANDIDATES),
                *(f"{c} - pool ms" for c in CANDIDATES if c != "pool")]


# --------------------------------------------------------------------------- main


def start_load(enabled: bool) -> subprocess.Popen | None:
    """One competing CPU-bound process (a Python busy loop), or None."""
    return subprocess.Popen([sys.executable, "-c", LOAD_CODE]) if enabled else None


def parse_args() -> argparse.Namespace:
    parser = common.make_parser(__doc__.splitlines()[0], repeats=10, warmup=3)
    parser.add_argument("--load", action="store_true",
                        help="run one CPU-bound busy-loop process during the timing")
    parser.add_argument("--layer", default="default", choices=("default", "omp", "tbb",
                                                                "workqueue"),
                        help="numba's threading layer (default: numba's choice)")
    parser.add_argument("--probe-cache", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(no_torch=True)
    return parser.parse_args()


def main() -> None:
    """Check every candidate against the reference, time them, print the tables."""
    args = parse_args()
    numba.config.THREADING_LAYER = args.layer  # before the first parallel call
    if args.probe_cache:  # the second process: first calls load from the cache
        seconds = first_calls()
        print(json.dumps(dict(seconds=seconds, cache=cache_hits(),
                              import_seconds=IMPORT_SECONDS)))
        return
    args = common.resolve_counts(args, quick_repeats=3)
    method = common.setup(args)  # TINYGRAD_CONV_THREADS, BLAS threads
    numba.set_num_threads(args.threads)
    try:
        run(args, method)
    finally:
        if _OWN_CACHE:
            shutil.rmtree(os.environ["NUMBA_CACHE_DIR"], ignore_errors=True)


def run(args: argparse.Namespace, method: str) -> None:
    from tinygrad_conv.backends import fast, reference
    from tinygrad_conv.geometry import Window

    common.progress("threads: compiling the numba kernels ...")
    compiled = first_calls()
    there = probe_second_process(args.layer)
    cases = {(b, name): layer_cases(b, shape, reference, fast, Window)
             for b in BATCHES for name, shape in LAYERS.items()}
    print(common.header("Memory-bound kernels: NumPy, the thread pool, numba prange", args,
                        method, None))
    print(f"- numba {numba.__version__}, threading layer {numba.threading_layer()}, "
          f"{numba.get_num_threads()} threads; fast backend pool: "
          f"{fast.parallel.thread_count()} threads")
    load = start_load(args.load)
    print("- competing load during timing: "
          + (f"one Python busy loop (pid {load.pid})" if load else "none started (--load not "
             "given; other processes may be running: see the load average)"))
    print("- every candidate's outputs asserted equal to the reference kernel's\n")
    try:
        rows = [r for (b, name), c in cases.items() for r in time_rows(b, name, c, args)]
    finally:
        if load is not None:
            load.kill()
            load.wait()
    print(common.markdown_table(TIME_HEADERS, [time_row(r) for r in rows],
                                right=[True, False, False] + [True] * 7))
    print("\nx/pool: a candidate's median over the pool's in the same run (below 1: faster "
          "than the pool). NumPy 1 thread is the reference backend's kernel.")
    print("\nPer training step (both layers' stage fwd + stage bwd medians added up):\n")
    print(common.markdown_table(STEP_HEADERS, step_rows(rows)))
    print("\nnumba compile (before the timing, without --load's process):\n")
    print(compile_table(compiled, there))


if __name__ == "__main__":
    main()
