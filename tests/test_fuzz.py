"""Hypothesis over the public functions' arguments: shapes (zero sizes included), dtypes,
memory layouts, strides, paddings and odd values. Every call either matches an independent
reference (``tinygrad_conv.naive`` loops, NumPy in float64) or raises an error of the kind the
docs promise (ValueError, TypeError, IndexError; ``CheckpointError`` for ``tc.load``); never
another exception, never a hang (each example runs under a SIGALRM timeout).

Fast under the default "core" profile; HYPOTHESIS_PROFILE=thorough runs 500 examples each.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import tinygrad_conv as tc
from tinygrad_conv import functional as F
from tinygrad_conv import naive, nn, serialization

ARGUMENT_ERRORS = (ValueError, TypeError, IndexError)
SECONDS_PER_EXAMPLE = 10


class Hang(Exception):
    """An example ran longer than SECONDS_PER_EXAMPLE."""


@contextlib.contextmanager
def time_limit(seconds: int = SECONDS_PER_EXAMPLE) -> Iterator[None]:
    """Raise Hang if the block runs longer than ``seconds`` (main thread, POSIX only)."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise Hang(f"an example ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def outcome(fn, *args, **kwargs):
    """fn's result, or the argument error it raised (any other exception fails the test)."""
    with time_limit():
        try:
            return fn(*args, **kwargs)
        except ARGUMENT_ERRORS as e:
            assert str(e), f"{type(e).__name__} without a message"
            return e


def tensor_in(x: np.ndarray, layout: str, requires_grad: bool = False):
    """A Tensor with x's values and dtype, in memory ``layout`` (made through public ops);
    also the leaf the gradient reaches and a function turning the leaf's grad into x's."""
    dtype = x.dtype
    if layout == "channels-last" and x.ndim == 4:
        leaf = tc.Tensor(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), requires_grad, dtype)
        return leaf.permute(0, 3, 1, 2), leaf, lambda g: g.transpose(0, 3, 1, 2)
    if layout == "strided" and x.ndim:
        wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype)
        wide[..., ::2] = x
        leaf = tc.Tensor(wide, requires_grad, dtype)
        return leaf[..., ::2], leaf, lambda g: g[..., ::2]
    if layout == "fortran" and x.ndim:
        x = np.asfortranarray(x)
    leaf = tc.Tensor(x, requires_grad, dtype)
    return leaf, leaf, lambda g: g


LAYOUTS = st.sampled_from(["contiguous", "channels-last", "strided", "fortran"])
FLOATS = st.sampled_from([np.float32, np.float64])
# mostly sensible values, sometimes an odd one (zero, negative, bool, float, None)
ODD = st.sampled_from([0, -1, True, 1.0, None, (1,), "1"])


def size(lo: int = 0, hi: int = 4) -> st.SearchStrategy[int]:
    return st.integers(lo, hi)


def pair_or_odd(lo: int, hi: int) -> st.SearchStrategy:
    good = st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi)))
    return st.one_of(good, good, good, ODD)


def rtol(dtype) -> float:
    return 1e-4 if dtype == np.float32 else 1e-10


def as_pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


# ---- convolution and pooling ----------------------------------------------------------------
@given(n=size(0, 2), cg=size(1, 2), fg=size(1, 2), groups=st.one_of(size(1, 2), ODD),
       h=size(0, 6), w=size(0, 6), kh=size(0, 3), kw=size(1, 3),
       stride=pair_or_odd(1, 3), padding=pair_or_odd(0, 2), dilation=pair_or_odd(1, 2),
       bias=st.booleans(), dtype=FLOATS, layout=LAYOUTS, seed=size(0, 1000))
def test_conv2d(n, cg, fg, groups, h, w, kh, kw, stride, padding, dilation, bias, dtype, layout,
                seed):
    g = groups if isinstance(groups, int) and not isinstance(groups, bool) and groups > 0 else 1
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cg * g, h, w)).astype(dtype)
    wt = rng.standard_normal((fg * g, cg, kh, kw)).astype(dtype)
    b = rng.standard_normal(fg * g).astype(dtype) if bias else None
    xt, x_leaf, x_grad = tensor_in(x, layout, requires_grad=True)
    wtt = tc.Tensor(wt, requires_grad=True, dtype=dtype)
    got = outcome(F.conv2d, xt, wtt, b, stride, padding, dilation, groups)
    if isinstance(got, Exception):
        return
    want = naive.conv2d(x, wt, b, as_pair(stride), as_pair(padding), as_pair(dilation), g)
    assert got.shape == want.shape and got.dtype == dtype
    np.testing.assert_allclose(got.data, want, rtol=rtol(dtype), atol=rtol(dtype))
    with time_limit():
        got.sum().backward()
    dx, dw, _ = naive.conv2d_backward(np.ones(want.shape), x, wt, as_pair(stride),
                                      as_pair(padding), as_pair(dilation), g)
    np.testing.assert_allclose(x_grad(x_leaf.grad.data), dx, rtol=rtol(dtype), atol=rtol(dtype))
    np.testing.assert_allclose(wtt.grad.data, dw, rtol=rtol(dtype), atol=rtol(dtype))


@given(kind=st.sampled_from(["max", "avg"]), n=size(0, 2), c=size(0, 2), h=size(0, 6),
       w=size(0, 6), kernel=pair_or_odd(1, 3), stride=st.one_of(st.none(), pair_or_odd(1, 3)),
       padding=pair_or_odd(0, 1), dtype=FLOATS, layout=LAYOUTS, seed=size(0, 1000))
def test_pooling(kind, n, c, h, w, kernel, stride, padding, dtype, layout, seed):
    x = np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(dtype)
    fn = F.max_pool2d if kind == "max" else F.avg_pool2d
    got = outcome(fn, tensor_in(x, layout)[0], kernel, stride, padding)
    if isinstance(got, Exception):
        return
    reference = naive.max_pool2d if kind == "max" else naive.avg_pool2d
    want = reference(x, as_pair(kernel), None if stride is None else as_pair(stride),
                     as_pair(padding))
    assert got.shape == want.shape and got.dtype == dtype
    np.testing.assert_allclose(got.data, want, rtol=rtol(dtype), atol=rtol(dtype))
    leaf = tc.Tensor(x, requires_grad=True, dtype=dtype)
    with time_limit():
        fn(leaf, kernel, stride, padding).sum().backward()
    assert leaf.grad.shape == x.shape and np.isfinite(leaf.grad.data).all()
    if kind == "max" or as_pair(padding) == (0, 0):  # each output's 1 lands on real pixels
        assert leaf.grad.data.sum() == pytest.approx(want.size, rel=1e-5)


@given(layer=st.sampled_from(["Conv2d", "MaxPool2d", "AvgPool2d"]), a=st.one_of(size(0, 3), ODD),
       b=st.one_of(size(0, 3), ODD), k=pair_or_odd(0, 3), stride=pair_or_odd(0, 2))
def test_layer_constructors(layer, a, b, k, stride):
    if layer == "Conv2d":
        made = outcome(nn.Conv2d, a, b, k, stride=stride)
    else:
        made = outcome(getattr(nn, layer), k, stride)
    if isinstance(made, Exception) or layer != "Conv2d":
        return
    assert made.weight.shape == (b, a) + as_pair(k)  # a layer that exists can run
    x = tc.zeros(1, a, 4, 4)
    result = outcome(made, x)
    assert isinstance(result, (tc.Tensor, Exception))


# ---- dense and elementwise -------------------------------------------------------------------
SHAPES = st.lists(size(0, 3), min_size=0, max_size=3).map(tuple)


@given(batch=SHAPES, fin=size(0, 4), fout=size(0, 4), wrong=st.booleans(), bias=st.booleans(),
       dtype=FLOATS, seed=size(0, 1000))
def test_linear(batch, fin, fout, wrong, bias, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(batch + (fin,)).astype(dtype)
    w = rng.standard_normal((fout, fin + wrong)).astype(dtype)
    b = rng.standard_normal(fout).astype(dtype) if bias else None
    got = outcome(F.linear, tc.Tensor(x, dtype=dtype), w, b)
    if wrong:
        assert isinstance(got, ValueError)
        return
    want = x.astype(np.float64) @ w.T.astype(np.float64) + (0 if b is None else b)
    assert got.shape == want.shape
    np.testing.assert_allclose(got.data, want, rtol=rtol(dtype), atol=rtol(dtype))


ODD_VALUES = st.sampled_from([0.0, -0.0, 1e30, -1e30, np.inf, -np.inf, np.nan, 1e-40])


@given(shape=SHAPES, fn=st.sampled_from(["relu", "sigmoid", "tanh"]), dtype=FLOATS,
       odd=st.lists(ODD_VALUES, max_size=3), layout=LAYOUTS, seed=size(0, 1000))
def test_elementwise(shape, fn, dtype, odd, layout, seed):
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    flat[:len(odd)] = odd[:flat.size]
    got = outcome(getattr(F, fn), tensor_in(x, layout)[0])
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        want = {"relu": lambda: np.where(np.isnan(x64), np.nan, np.maximum(x64, 0)),
                "sigmoid": lambda: 1 / (1 + np.exp(-x64)), "tanh": lambda: np.tanh(x64)}[fn]()
    assert got.shape == x.shape and got.dtype == dtype
    np.testing.assert_allclose(got.data, want, rtol=rtol(dtype), atol=1e-30)


@given(shape=SHAPES, axis=st.integers(-4, 3), log=st.booleans(), dtype=FLOATS,
       scale=st.sampled_from([1.0, 100.0, 1e4]), seed=size(0, 1000))
def test_softmax(shape, axis, log, dtype, scale, seed):
    x = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)
    got = outcome(F.log_softmax if log else F.softmax, tc.Tensor(x, dtype=dtype), axis)
    if isinstance(got, Exception):
        assert not -max(x.ndim, 1) <= axis < max(x.ndim, 1)
        return
    x64 = x.astype(np.float64)[None] if x.ndim == 0 else x.astype(np.float64)
    shifted = x64 - x64.max(axis=axis, keepdims=True) if x64.size else x64
    with np.errstate(divide="ignore"):  # exp underflows to 0 far below the max
        logs = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    want = (logs if log else np.exp(logs)).reshape(x.shape)
    assert got.shape == x.shape
    np.testing.assert_allclose(got.data, want, rtol=rtol(dtype) * 10, atol=rtol(dtype) * 10)


@given(n=size(0, 5), k=size(0, 5), target_dtype=st.sampled_from(
           ["int64", "int32", "int8", "uint8", ">i4", ">i8", "float32", "bool"]),
       off=st.sampled_from([0, 0, 0, -1, 1, 100]), reduction=st.sampled_from(
           ["mean", "sum", "none", "avg"]), short=st.booleans(), seed=size(0, 1000))
def test_cross_entropy(n, k, target_dtype, off, reduction, short, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, k)).astype(np.float32)
    t = rng.integers(0, max(k, 1), n) + (off if n else 0)
    if target_dtype.startswith(("uint", "bool")):
        t = np.abs(t)
    target = t[:n - short] if n and short else t
    with np.errstate(all="ignore"):
        target = target.astype(target_dtype)
    got = outcome(F.cross_entropy, tc.Tensor(logits), target, reduction)
    valid = (target_dtype not in ("float32", "bool") and reduction != "avg"
             and not (short and n) and k > 0 and np.all((t >= 0) & (t < k)))
    if not valid:
        assume(isinstance(got, Exception) or (n == 0 and reduction != "avg"))
        return
    z = logits.astype(np.float64)
    losses = -(z - np.log(np.exp(z).sum(1, keepdims=True)))[np.arange(n), t]
    want = {"mean": losses.mean() if n else np.nan, "sum": losses.sum(), "none": losses}
    np.testing.assert_allclose(got.data, want[reduction], rtol=1e-5, atol=1e-6)


@given(shape=SHAPES, other=st.one_of(st.none(), SHAPES), reduction=st.sampled_from(
           ["mean", "sum", "none", "total"]), dtype=FLOATS, seed=size(0, 1000))
def test_mse_loss(shape, other, reduction, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    y = rng.standard_normal(shape if other is None else other).astype(dtype)
    got = outcome(F.mse_loss, tc.Tensor(x, dtype=dtype), y, reduction)
    if reduction == "total" or y.shape != x.shape:
        assert isinstance(got, ValueError)
        return
    sq = (x.astype(np.float64) - y) ** 2
    with np.errstate(invalid="ignore"):
        want = {"mean": sq.mean() if sq.size else np.nan, "sum": sq.sum(), "none": sq}
    np.testing.assert_allclose(got.data, want[reduction], rtol=rtol(dtype) * 10, atol=1e-6)


@given(shape=SHAPES, p=st.one_of(st.floats(0, 1), st.sampled_from(
           [-0.1, 1.5, float("nan"), float("inf")])), training=st.booleans(), seed=size(0, 99))
def test_dropout(shape, p, training, seed):
    tc.manual_seed(seed)
    # + 5 before the cast: NumPy 1.x would promote a float32 scalar + 5 to float64
    x = np.asarray(np.random.default_rng(seed).standard_normal(shape) + 5, dtype=np.float32)
    got = outcome(F.dropout, tc.Tensor(x), p, training)
    if not 0 <= p <= 1:
        assert isinstance(got, ValueError)
        return
    assert got.shape == x.shape
    kept = got.data != 0
    if not training or p == 0:
        np.testing.assert_array_equal(got.data, x)
    elif p == 1:
        assert not kept.any()
    else:
        np.testing.assert_allclose(got.data[kept], x[kept] / (1 - p), rtol=1e-5)


@given(shape=SHAPES, d0=st.integers(-5, 5), d1=st.integers(-5, 5),
       op=st.sampled_from(["transpose", "flatten"]))
def test_dims(shape, d0, d1, op):
    x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    t = tc.Tensor(x)
    got = outcome(getattr(t, op), d0, d1)
    n = max(x.ndim, 1)
    in_range = -n <= d0 < n and -n <= d1 < n
    if not in_range:
        assert isinstance(got, IndexError) and "Dimension out of range" in str(got)
        return
    if op == "transpose":
        want = np.swapaxes(x, d0 % n, d1 % n) if x.ndim else x
    else:
        start, end = d0 % n, d1 % n
        if start > end:
            assert isinstance(got, IndexError)
            return
        merged = int(np.prod(x.shape[start:end + 1]))
        want = x.reshape(x.shape[:start] + (merged,) + x.shape[end + 1:]) if x.ndim else x[None]
    np.testing.assert_array_equal(got.data, want)


# ---- checkpoints -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "good.npz"
    tc.save({"w": np.arange(12, dtype=np.float32).reshape(3, 4), "step": 3, "name": "run",
             "t": tc.Tensor([1.0, 2.0], requires_grad=True), "opt": [(0.9, 0.999), None]}, path)
    return path.read_bytes()


@given(data=st.data())
def test_load_of_damaged_checkpoints(good_checkpoint, tmp_path_factory, data):
    """Flipped, cut and spliced bytes: tc.load returns something or raises CheckpointError."""
    raw = bytearray(good_checkpoint)
    how = data.draw(st.sampled_from(["flip", "cut", "splice", "random"]))
    if how == "flip":
        for at in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8)):
            raw[at] = data.draw(st.integers(0, 255))
    elif how == "cut":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "splice":
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.binary(max_size=64))
    else:
        raw = bytearray(b"PK\x03\x04" + data.draw(st.binary(max_size=200)))
    path = tmp_path_factory.mktemp("damaged") / "ck.npz"
    path.write_bytes(bytes(raw))
    with time_limit():
        try:
            tc.load(path)
        except serialization.CheckpointError as e:
            assert "ck.npz" in str(e)


def test_the_time_limit_stops_a_hang():
    with pytest.raises(Hang), time_limit(1):
        while True:
            pass
