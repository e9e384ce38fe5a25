"""Which algorithm runs each pass of a convolution, chosen per shape.

The setting (``tinygrad_conv.backends.conv_algorithm()``, ``TINYGRAD_CONV_ALGO``):

- ``auto`` (the default): ``rule``, a fixed rule drawn from measurements
  (benchmarks/bench_algorithms.py, docs/performance.md). Fixed, so that the same run gives
  the same numbers every time (a resumed training run continues bit for bit);
- ``benchmark`` (PyTorch's ``cudnn.benchmark``): the first time a (pass, shape, stride,
  padding, dilation, dtype, threads) is seen, every algorithm that applies runs on random
  inputs of that shape and the fastest is kept. Convolutions under ``SMALL_FLOPS`` run
  im2col untimed. Timings vary from run to run, and so may the choice and the last bits
  of the results;
- ``im2col``, ``winograd2``, ``winograd4``, ``onednn``: that algorithm wherever it applies,
  im2col elsewhere; ``winograd``: Winograd where it applies, with the rule's tile size.

The timed choices ("plans") live for the process. ``TINYGRAD_CONV_ALGO_CACHE=path`` loads
them from a JSON file when the backend loads and saves each new one there (atomically);
``save_plans(path)`` and ``load_plans(path)`` do the same by hand, so a run can start with
the choices an earlier run measured (and repeat its numbers).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path

import numpy as np

from ... import backends
from ..._files import write_atomic
from ...geometry import Window
from . import parallel
from .conv import ALGORITHMS, PASSES, Algorithm

SMALL_FLOPS = 20e6  # a forward under this many multiply-adds runs im2col (auto, benchmark)
WINOGRAD_MIN_CHANNELS = 16  # fewer input or output channels: the transforms cost more than
                            # the multiplies they save
ONEDNN_MIN_FLOPS = 4e6  # oneDNN's convolutions from this many multiply-adds (each new shape
                        # costs a plan, about a millisecond; below it im2col is as fast)
# input channels from which oneDNN's pass beat im2col's (bench_algorithms.py, and the
# reference CNN's step for its one-channel first layer, whose dW was 0.93-1.23 ms on oneDNN
# against 0.67-0.82 on im2col there): for 3x3 stride-1 windows, im2col's best case, and for
# the others (a 5x5 window over one channel: forward 4x faster on oneDNN)
ONEDNN_MIN_CHANNELS = {
    "3x3": {"conv2d_forward": 4, "conv2d_grad_weight": 2, "conv2d_grad_input": 8},
    "other": {"conv2d_forward": 1, "conv2d_grad_weight": 1, "conv2d_grad_input": 8},
}
TILE4_GAIN = 0.75  # F(4x4) when its multiplies per output are at most this times F(2x2)'s
TIMED_RUNS = 2  # timed calls per candidate (after one warm-up call); the fastest counts

_plans: dict[tuple, dict] = {}  # key -> {"algorithm": name, "ms": {name: milliseconds}}
_lock = threading.Lock()
_cache_file = os.environ.get("TINYGRAD_CONV_ALGO_CACHE", "").strip() or None


def choose(pass_name: str, geo: Window, dtype: np.dtype) -> Algorithm:
    """The algorithm to run ``pass_name`` (one of conv.PASSES) of this convolution with."""
    setting = backends.conv_algorithm()
    candidates = [a for a in ALGORITHMS.values() if a.applies(geo, dtype)]
    names = [a.name for a in candidates]
    if setting in ALGORITHMS:
        return ALGORITHMS[setting] if setting in names else ALGORITHMS["im2col"]
    if len(candidates) <= 1:
        return ALGORITHMS["im2col"]
    if setting == "winograd":
        return ALGORITHMS[winograd_tile(geo) if "winograd4" in names else "im2col"]
    if setting == "benchmark" and _flops(geo) >= SMALL_FLOPS:
        return ALGORITHMS[_plan(pass_name, geo, dtype, candidates)]
    return ALGORITHMS[rule(pass_name, geo, names)]


def rule(pass_name: str, geo: Window, names: list[str] | None = None) -> str:
    """``auto``'s choice among the algorithms ``names`` that apply to this float32
    convolution (by default: those that do here) (measured: docs/performance.md).

    Winograd for 3x3 stride-1 convolutions of SMALL_FLOPS multiply-adds and up with at
    least WINOGRAD_MIN_CHANNELS channels on both sides: F(4x4) where its multiplies per
    output (counting the tiles cut off at the edges) are clearly fewer than F(2x2)'s, F(2x2)
    otherwise (its error is im2col's size; F(4x4)'s is ten times larger). Elsewhere, from
    ONEDNN_MIN_FLOPS, oneDNN's direct convolutions (1.2x to 4x faster than im2col) where
    the input has ONEDNN_MIN_CHANNELS channels for that pass; im2col for the rest.
    """
    if names is None:
        names = [a.name for a in ALGORITHMS.values() if a.applies(geo, np.dtype(np.float32))]
    c, f = geo.x_shape[1], geo.filters
    flops = _flops(geo)
    if flops >= SMALL_FLOPS and "winograd4" in names and min(c, f) >= WINOGRAD_MIN_CHANNELS:
        return winograd_tile(geo)
    window = "3x3" if geo.kernel == (3, 3) and geo.stride == (1, 1) else "other"
    enough = c >= ONEDNN_MIN_CHANNELS[window][pass_name]
    if flops >= ONEDNN_MIN_FLOPS and "onednn" in names and enough:
        return "onednn"
    return "im2col"


def winograd_tile(geo: Window) -> str:
    """winograd4 or winograd2, by multiplies per output pixel counting edge waste."""
    ho, wo = geo.out_hw

    def multiplies(m: int) -> float:
        return math.ceil(ho / m) * math.ceil(wo / m) * (m + 2) ** 2 / (ho * wo)

    return "winograd4" if multiplies(4) <= TILE4_GAIN * multiplies(2) else "winograd2"


def _flops(geo: Window) -> float:
    n, (ho, wo) = geo.x_shape[0], geo.out_hw
    return float(n * ho * wo) * math.prod(geo.w_shape)


def _key(pass_name: str, geo: Window, dtype: np.dtype, names: list[str]) -> tuple:
    return (pass_name, geo.x_shape, geo.w_shape, geo.stride, geo.padding, geo.dilation,
            np.dtype(dtype).name, parallel.thread_count(), tuple(names))


def _plan(pass_name: str, geo: Window, dtype: np.dtype, candidates: list[Algorithm]) -> str:
    """The fastest candidate's name, timed on first use of this key and remembered."""
    key = _key(pass_name, geo, dtype, [a.name for a in candidates])
    plan = _plans.get(key)
    if plan is None:
        times = {a.name: _time(a, pass_name, geo, dtype) for a in candidates}
        plan = {"algorithm": min(times, key=times.get), "ms": times}
        with _lock:
            _plans[key] = plan
        if _cache_file:
            save_plans(_cache_file)
    return plan["algorithm"]


def _time(algorithm: Algorithm, pass_name: str, geo: Window, dtype: np.dtype) -> float:
    """The fastest of TIMED_RUNS calls of the pass on random inputs, in milliseconds."""
    rng = np.random.default_rng(0)
    x, w, dout = (rng.standard_normal(shape).astype(dtype)
                  for shape in (geo.x_shape, geo.w_shape, geo.out_shape))
    args = {"conv2d_forward": (x, w, None, geo), "conv2d_grad_input": (dout, w, geo),
            "conv2d_grad_weight": (dout, x, None, geo)}[pass_name]
    run = algorithm.passes[pass_name]
    run(*args)  # warm-up: compiled code loaded, buffers touched
    best = math.inf
    for _ in range(TIMED_RUNS):
        start = time.perf_counter()
        run(*args)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def plans() -> list[dict]:
    """The choices made so far, one dict per (pass, shape, ...): the JSON of save_plans."""
    with _lock:
        items = list(_plans.items())
    fields = ("pass", "x_shape", "w_shape", "stride", "padding", "dilation", "dtype",
              "threads", "candidates")
    return [dict(zip(fields, key), **plan) for key, plan in items]


def save_plans(path: str | os.PathLike) -> Path:
    """Write the choices made so far to ``path`` as JSON (atomically)."""
    text = json.dumps({"tinygrad_conv_conv_plans": 1, "plans": plans()}, indent=1)
    return write_atomic(path, text.encode())


def load_plans(path: str | os.PathLike) -> int:
    """Read choices saved by ``save_plans``; returns how many were read. Entries naming an
    algorithm this version does not have are skipped."""
    try:
        data = json.loads(Path(path).read_text())
        entries = data["plans"]
        loaded = {}
        for e in entries:
            if e["algorithm"] not in ALGORITHMS or e["pass"] not in PASSES:
                continue
            key = (e["pass"], tuple(e["x_shape"]), tuple(e["w_shape"]), tuple(e["stride"]),
                   tuple(e["padding"]), tuple(e["dilation"]), e["dtype"], e["threads"],
                   tuple(e["candidates"]))
            loaded[key] = {"algorithm": e["algorithm"], "ms": dict(e.get("ms", {}))}
    except FileNotFoundError:
        raise FileNotFoundError(f"no saved convolution plans at {path}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a file of convolution plans written by save_plans "
                         f"({type(error).__name__}: {error})") from None
    with _lock:
        _plans.update(loaded)
    return len(loaded)


def forget_plans() -> None:
    """Drop every choice made or loaded (the next use of each shape times again)."""
    with _lock:
        _plans.clear()


if _cache_file and Path(_cache_file).exists():
    load_plans(_cache_file)
