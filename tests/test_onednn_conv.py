"""oneDNN's direct convolutions (backends/fast/onednn_conv.py), the algorithm ``onednn``.

Oracles: the naive loop convolution in float64 for the forward; the reference backend's
im2col formulas in float64 for dX and dW.
"""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
from _layouts import in_layout
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_conv as tc
import tinygrad_conv.functional as F
from tinygrad_conv import backends, naive
from tinygrad_conv.backends.fast import autotune, conv, onednn_conv
from tinygrad_conv.geometry import Window

pytestmark = pytest.mark.skipif(not onednn_conv.available(),
                                reason="needs oneDNN (onednn-cpu-gomp) as the GEMM backend")
BOUND = 1e-5  # float32 error relative to the largest |value| of the float64 result


def relative_error(got: np.ndarray, exact: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - exact).max() / max(np.abs(exact).max(), 1e-30))


@st.composite
def geometries(draw):
    """(x, w, window, rng): any kernel, stride, padding and dilation, any input layout."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    h = draw(st.integers(max(1, (kh - 1) * dilation[0] + 1 - 2 * padding[0]), 12))
    w = draw(st.integers(max(1, (kw - 1) * dilation[1] + 1 - 2 * padding[1]), 12))
    n, c, f = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = in_layout(rng.standard_normal((n, c, h, w)).astype(np.float32),
                  draw(st.sampled_from(["contiguous", "channels last", "strided view"])))
    weight = rng.standard_normal((f, c, kh, kw)).astype(np.float32)
    return x, weight, Window(x.shape, (kh, kw), stride, padding, dilation, filters=f), rng


@settings(max_examples=40, deadline=None)
@given(case=geometries())
def test_passes_match_the_references_in_float64(case):
    x, w, geo, rng = case
    b = rng.standard_normal(w.shape[0]).astype(np.float32)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    exact = naive.conv2d(x64, w64, b.astype(np.float64), geo.stride, geo.padding, geo.dilation)
    out = onednn_conv.conv2d(x, w, b, geo)
    assert out.shape == exact.shape and out.dtype == np.float32
    assert relative_error(out, exact) < BOUND

    dout = in_layout(rng.standard_normal(exact.shape).astype(np.float32), "channels last")
    ref = backends._load("reference")
    x_col = ref.im2col(x64, geo)
    dout_flat = dout.astype(np.float64).transpose(1, 0, 2, 3).reshape(1, w.shape[0], -1)
    dw_exact = (dout_flat @ x_col.transpose(0, 2, 1)).reshape(w.shape)
    dx_exact = ref.col2im(w64.reshape(1, w.shape[0], -1).transpose(0, 2, 1) @ dout_flat, geo)
    dx = onednn_conv.conv2d_grad_input(dout, w, geo)
    assert dx.shape == x.shape and relative_error(dx, dx_exact) < BOUND
    dw = onednn_conv.conv2d_grad_weight(dout, x, geo)
    assert dw.shape == w.shape and relative_error(dw, dw_exact) < BOUND


def test_weight_gradient_is_the_same_bits_every_call():
    """Each thread's dW over its images, added in a fixed order: runs agree bit for bit."""
    rng = np.random.default_rng(0)
    geo = Window((8, 6, 13, 13), (5, 5), (2, 2), (2, 2), filters=7)
    x = rng.standard_normal(geo.x_shape).astype(np.float32)
    dout = rng.standard_normal(geo.out_shape).astype(np.float32)
    first = onednn_conv.conv2d_grad_weight(dout, x, geo)
    for _ in range(3):
        np.testing.assert_array_equal(onednn_conv.conv2d_grad_weight(dout, x, geo), first)


def test_the_rule_picks_onednn_per_pass_where_it_was_measured_faster():
    def picks(geo):
        return [autotune.rule(name, geo) for name in conv.PASSES]  # fwd, dX, dW

    strided = Window((64, 16, 28, 28), (5, 5), (2, 2), (2, 2), filters=32)
    assert picks(strided) == ["onednn", "onednn", "onednn"]
    one_channel = Window((128, 1, 28, 28), (5, 5), (1, 1), (0, 0), filters=8)
    assert picks(one_channel) == ["onednn", "im2col", "onednn"]  # dX: im2col's col2im
    first_layer = Window((64, 1, 28, 28), (3, 3), (1, 1), (1, 1), filters=32)
    assert picks(first_layer) == ["im2col"] * 3  # one channel, 3x3: im2col's best case
    three = Window((64, 3, 32, 32), (3, 3), (1, 1), (1, 1), filters=64)
    assert picks(three) == ["im2col", "im2col", "onednn"]
    wide = Window((64, 32, 14, 14), (3, 3), (1, 1), (1, 1), filters=64)
    assert picks(wide) == ["winograd4"] * 3
    assert picks(Window((2, 3, 8, 8), (5, 5), (2, 2), (2, 2), filters=4)) == ["im2col"] * 3


def test_forced_onednn_in_a_graph_matches_the_reference_backend():
    rng = np.random.default_rng(3)
    x_np = rng.standard_normal((3, 4, 11, 9)).astype(np.float32)
    w_np = rng.standard_normal((5, 4, 5, 3)).astype(np.float32)
    results = []
    for backend, algorithm in (("fast", "onednn"), ("reference", "auto")):
        with backends.use_backend(backend), backends.use_conv_algorithm(algorithm):
            x = tc.tensor(x_np, requires_grad=True)
            w = tc.tensor(w_np, requires_grad=True)
            out = F.conv2d(x, w, stride=(2, 1), padding=(2, 1), dilation=(1, 2))
            (out * out).sum().backward()
            results.append((out.op.attrs["algorithm"], out.numpy(), x.grad.numpy(),
                            w.grad.numpy()))
    assert results[0][0] == "onednn" and results[1][0] == "im2col"
    for got, want in zip(results[0][1:], results[1][1:]):
        np.testing.assert_allclose(got, want, atol=BOUND * np.abs(want).max() * 10)


def _conv_in_child(queue) -> None:
    rng = np.random.default_rng(1)
    geo = Window((4, 3, 12, 12), (5, 5), (2, 2), (1, 1), filters=4)
    x = rng.standard_normal(geo.x_shape).astype(np.float32)
    w = rng.standard_normal(geo.w_shape).astype(np.float32)
    queue.put(onednn_conv.conv2d(x, w, None, geo).sum())


def test_a_forked_child_runs_it_after_the_parent_did():
    """No OpenMP team is ever started (one thread per call), so a fork does not hang."""
    queue = multiprocessing.get_context("fork").Queue()
    _conv_in_child(queue)
    parent = queue.get(timeout=30)
    child = multiprocessing.get_context("fork").Process(target=_conv_in_child, args=(queue,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == parent
