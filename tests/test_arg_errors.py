"""Argument gaps from issue 17: each case raises a clear error of the documented kind, or gives
PyTorch's answer (0-d relu and softmax, big-endian targets), instead of a stray exception."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import tinygrad_conv as tc
from tinygrad_conv import functional as F
from tinygrad_conv import nn

X = np.arange(2 * 3 * 5 * 5, dtype=np.float32).reshape(2, 3, 5, 5) / 10
W = np.ones((4, 3, 3, 3), dtype=np.float32)


# ---- conv2d and nn.Conv2d ----------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, message", [
    ({"stride": True}, TypeError, "stride must be an int or a pair of ints, got True"),
    ({"stride": (1, False)}, TypeError, "stride must be an int or a pair of ints"),
    ({"padding": np.bool_(True)}, TypeError, "padding must be an int or a pair of ints"),
    ({"dilation": 1.0}, TypeError, "dilation must be an int or a pair of ints, got 1.0"),
    ({"groups": True}, TypeError, "groups must be an int, got True"),
    ({"groups": 1.0}, TypeError, "groups must be an int, got 1.0"),
])
def test_conv2d_refuses_bools_and_floats_as_ints(kwargs, error, message):
    with pytest.raises(error, match=message):
        F.conv2d(X, W, **kwargs)


def test_conv2d_with_a_0x0_kernel_or_no_weight():
    with pytest.raises(ValueError, match=r"kernel must be at least 1x1, got weight of shape "
                                         r"\(4, 3, 0, 0\)"):
        F.conv2d(X, np.ones((4, 3, 0, 0), np.float32))
    with pytest.raises(TypeError, match="conv2d: weight must be a Tensor or array"):
        F.conv2d(X, None)
    with pytest.raises(TypeError, match="linear: weight must be a Tensor or array"):
        F.linear(X[0, 0], None)


@pytest.mark.parametrize("args, kwargs, error, message", [
    ((1, 2, 0), {}, ValueError, r"kernel_size must be >= 1, got \(0, 0\)"),
    ((1, 2, (3, 0)), {}, ValueError, r"kernel_size must be >= 1, got \(3, 0\)"),
    ((1, 2, 3), {"stride": 0}, ValueError, r"stride must be >= 1, got \(0, 0\)"),
    ((1, 2, 3), {"padding": -1}, ValueError, r"padding must be >= 0"),
    ((1, 2, 3), {"dilation": 0}, ValueError, r"dilation must be >= 1"),
    ((0, 2, 3), {}, ValueError, "in_channels must be positive, got 0"),
    ((1, 0, 3), {}, ValueError, "out_channels must be positive, got 0"),
    ((1, 2, 3), {"stride": True}, TypeError, "stride must be an int or a pair of ints"),
    ((1, 2, 3), {"groups": True}, TypeError, "groups must be an int, got True"),
    ((True, 2, 3), {}, TypeError, "in_channels must be an int, got True"),
    ((1.5, 2, 3), {}, TypeError, "in_channels must be an int, got 1.5"),
    ((2, 4, 3), {"groups": 3}, ValueError, r"groups=3 must divide in_channels \(2\)"),
    ((1, 2, "3"), {}, TypeError, "kernel_size must be an int or a pair of ints, got '3'"),
])
def test_conv2d_layer_is_checked_at_construction(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        nn.Conv2d(*args, **kwargs)


def test_conv2d_layer_keeps_numpy_ints_as_python_ints():
    layer = nn.Conv2d(np.int64(3), 4, (np.int32(3), 3), stride=np.int64(2))
    assert layer.kernel_size == (3, 3) and layer.stride == (2, 2)
    assert all(type(v) is int for v in layer.kernel_size + layer.stride)
    assert layer(tc.Tensor(X)).shape == (2, 4, 2, 2)


# ---- dims --------------------------------------------------------------------------------
def test_transpose_out_of_range_says_so_as_pytorch():
    with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range "
                                         r"of \[-2, 1\], but got 5\)"):
        tc.zeros(2, 3).transpose(0, 5)
    assert tc.zeros(2, 3, 4).transpose(-1, 0).shape == (4, 3, 2)


def test_flatten_of_a_1d_input_is_an_error_as_in_pytorch():
    with pytest.raises(IndexError, match=r"in range of \[-1, 0\], but got 1"):
        nn.Flatten()(tc.zeros(5))
    assert nn.Flatten()(tc.zeros(2, 3, 4)).shape == (2, 12)
    assert tc.zeros(2, 3, 4).flatten().shape == (24,)
    assert tc.zeros(5).flatten().shape == (5,)
    assert tc.tensor(2.0).flatten().shape == (1,)
    with pytest.raises(IndexError, match="start_dim 2 cannot come after end_dim 1"):
        tc.zeros(2, 3, 4).flatten(2, 1)


# ---- 0-d tensors ----------------------------------------------------------------------------
@pytest.mark.parametrize("value, grad", [(-4.0, 0.0), (3.0, 2.0)])
def test_relu_of_a_0d_tensor(value, grad):
    x = tc.tensor(value, requires_grad=True)
    y = (x * 2).relu()
    y.backward()
    assert y.shape == () and y.item() == max(2 * value, 0.0)
    assert x.grad.item() == grad


def test_softmax_of_a_0d_tensor_is_one():
    x = tc.tensor(3.0, requires_grad=True)
    y = F.softmax(x, 0)
    assert y.shape == () and y.item() == 1.0
    assert F.log_softmax(x, dim=-1).item() == 0.0
    (y * 5).backward()
    assert x.grad.item() == 0.0  # d softmax / dx of a single number is 0
    with pytest.raises(ValueError, match="axis 1 is out of range"):
        F.softmax(x, 1)


# ---- targets and memory --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [">i8", ">i4", ">u2", "<i8"])
def test_cross_entropy_with_non_native_integer_targets(dtype):
    logits = tc.Tensor(np.linspace(-1, 1, 15, dtype=np.float32).reshape(3, 5))
    target = np.array([1, 4, 0], dtype=dtype)
    got = F.cross_entropy(logits, target).item()
    z = logits.data.astype(np.float64)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    assert got == pytest.approx(-log_p[[0, 1, 2], [1, 4, 0]].mean(), rel=1e-6)
    with pytest.raises(IndexError, match=r"target\[1\] = 7 is out of range for 5 classes"):
        F.cross_entropy(logits, np.array([1, 7, 0], dtype=dtype))


@pytest.mark.parametrize("factory", [tc.randn, tc.rand])
def test_random_factories_use_no_more_memory_than_their_result(factory):
    tc.manual_seed(0)
    tracemalloc.start()
    try:
        t = factory(1000, 1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert t.dtype == np.float32 and t.data.nbytes == 4_000_000
    assert peak < 1.1 * t.data.nbytes
    assert factory(3, dtype=np.float64).dtype == np.float64
    with pytest.raises(RuntimeError, match="only floating-point"):
        factory(3, dtype=np.int32, requires_grad=True)


def test_randn_is_standard_normal_and_follows_the_seed():
    tc.manual_seed(7)
    a = tc.randn(200_000).data
    tc.manual_seed(7)
    assert np.array_equal(a, tc.randn(200_000).data)
    assert abs(a.mean()) < 0.01 and abs(a.std() - 1) < 0.01


# ---- grad mode of generators, and the environment ----------------------------------------------
def test_no_grad_decorates_a_generator_function():
    @tc.no_grad()
    def doubled(xs):
        for x in xs:
            yield x * 2

    x = tc.tensor([1.0, 2.0], requires_grad=True)
    results = list(doubled([x, x]))
    assert all(not r.requires_grad for r in results)
    assert tc.is_grad_enabled()
    suspended = doubled([x, x])
    assert not next(suspended).requires_grad
    assert tc.is_grad_enabled()  # the caller's mode while the generator waits
    assert (x * 2).requires_grad and not next(suspended).requires_grad


def _run_with_env(name: str, value: str, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, name: value, "TINYGRAD_CONV_BACKEND": "fast"}  # the fast one reads them
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)


CONV = ("import tinygrad_conv as tc; from tinygrad_conv import functional as F; "
        "F.conv2d(tc.randn(64, 8, 16, 16), tc.randn(8, 8, 3, 3)).sum().item()")


@pytest.mark.parametrize("name, value, message", [
    ("TINYGRAD_CONV_THREADS", "abc", "TINYGRAD_CONV_THREADS must be a positive integer"),
    ("TINYGRAD_CONV_THREADS", "0", "TINYGRAD_CONV_THREADS must be a positive integer"),
    ("TINYGRAD_CONV_GEMM", "bogus", "TINYGRAD_CONV_GEMM must be"),
])
def test_bad_environment_settings_are_named(name, value, message):
    result = _run_with_env(name, value, CONV)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: ") and message in last and repr(value) in last
