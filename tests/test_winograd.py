"""Winograd's F(2x2, 3x3) and F(4x4, 3x3) on the fast backend, and the choice of algorithm.

Oracles: direct correlation in float64 for the matrices; the reference backend's im2col
formulas (and the naive loop convolution) for the three passes; finite differences are not
needed, the passes are compared with exact products.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _layouts import in_layout
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_conv as tc
import tinygrad_conv.functional as F
from tinygrad_conv import backends, naive, viz
from tinygrad_conv.backends.fast import autotune, compiled, onednn_conv, winograd
from tinygrad_conv.backends.fast.winograd_matrices import SIZES, matrices
from tinygrad_conv.geometry import Window

ROOT = Path(__file__).resolve().parents[1]
needs_numba = pytest.mark.skipif(not compiled.AVAILABLE,
                                 reason="Winograd's transforms are compiled with numba")
# float32 error of each algorithm relative to the largest |value| of the float64 result
# (docs/performance.md measures them on the benchmark shapes: these bounds leave room)
BOUND = {2: 2e-6, 4: 2e-5}


def relative_error(got: np.ndarray, exact: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - exact).max() / max(np.abs(exact).max(), 1e-30))


# ---- the matrices ----------------------------------------------------------------------


@pytest.mark.parametrize("m", SIZES)
def test_matrices_give_direct_correlation_in_float64(m):
    """Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A equals the 3x3 correlation of d with g, tile by tile."""
    bt, g, at = matrices(m)
    rng = np.random.default_rng(m)
    for _ in range(5):
        d = rng.standard_normal((m + 2, m + 2))
        k = rng.standard_normal((3, 3))
        y = at @ ((g @ k @ g.T) * (bt @ d @ bt.T)) @ at.T
        direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * k) for j in range(m)]
                           for i in range(m)])
        np.testing.assert_allclose(y, direct, rtol=1e-12, atol=1e-12)


def test_generated_transforms_are_current():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_winograd.py"),
                           "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# ---- the three passes against the reference ----------------------------------------------


@st.composite
def winograd_cases(draw):
    """(x, w, padding, layout) of a 3x3 stride-1 convolution that Winograd takes."""
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    h = draw(st.integers(max(1, 3 - 2 * padding[0]), 11))
    w = draw(st.integers(max(1, 3 - 2 * padding[1]), 11))
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    layout = draw(st.sampled_from(["contiguous", "channels last", "strided view"]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((f, c, 3, 3)).astype(np.float32)
    return in_layout(x, layout), weight, padding, rng


@needs_numba
@pytest.mark.parametrize("m", SIZES)
@settings(max_examples=40, deadline=None)
@given(case=winograd_cases())
def test_passes_match_direct_convolution_in_float64(m, case):
    x, w, padding, rng = case
    b = rng.standard_normal(w.shape[0]).astype(np.float32)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    exact = naive.conv2d(x64, w64, b.astype(np.float64), (1, 1), padding, (1, 1), 1)
    out = winograd.conv2d(x, w, b, padding, m)
    assert out.shape == exact.shape and out.dtype == np.float32
    assert relative_error(out, exact) < BOUND[m]

    dout = in_layout(rng.standard_normal(exact.shape).astype(np.float32), "channels last")
    geo = Window(x.shape, (3, 3), (1, 1), padding, filters=w.shape[0])
    ref = backends._load("reference")
    x_col = ref.im2col(x64, geo)
    dout_flat = dout.astype(np.float64).transpose(1, 0, 2, 3).reshape(1, w.shape[0], -1)
    dw_exact = (dout_flat @ x_col.transpose(0, 2, 1)).reshape(w.shape)
    dx_exact = ref.col2im(w64.reshape(1, w.shape[0], -1).transpose(0, 2, 1) @ dout_flat, geo)

    dx = winograd.conv2d_grad_input(dout, w, x.shape, padding, m)
    assert dx.shape == x.shape and relative_error(dx, dx_exact) < BOUND[m]
    dw = winograd.conv2d_grad_weight(dout, x, padding, m)
    assert dw.shape == w.shape and relative_error(dw, dw_exact) < BOUND[m]


@needs_numba
def test_batch_split_over_threads_sums_the_same(monkeypatch):
    """dW's per-thread partial sums are added in a fixed order: runs agree bit for bit."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16, 12, 12)).astype(np.float32)
    dout = rng.standard_normal((8, 8, 12, 12)).astype(np.float32)
    first = winograd.conv2d_grad_weight(dout, x, (1, 1), 4)
    for _ in range(3):
        np.testing.assert_array_equal(winograd.conv2d_grad_weight(dout, x, (1, 1), 4), first)


# ---- which convolutions it takes ---------------------------------------------------------


@needs_numba
def test_supports_only_float32_3x3_stride1_ungrouped():
    plain = Window((2, 4, 8, 8), (3, 3), (1, 1), (1, 1), filters=4)
    assert winograd.supports(plain, np.dtype(np.float32))
    assert not winograd.supports(plain, np.dtype(np.float64))
    for other in (Window((2, 4, 8, 8), (5, 5), (1, 1), (1, 1), filters=4),
                  Window((2, 4, 8, 8), (3, 3), (2, 2), (1, 1), filters=4),
                  Window((2, 4, 8, 8), (3, 3), (1, 1), (1, 1), (2, 2), filters=4),
                  Window((2, 4, 8, 8), (3, 3), (1, 1), (1, 1), groups=2, filters=4),
                  Window((2, 4, 8, 8), (3, 3), (1, 1), (3, 3), filters=4),
                  Window((0, 4, 8, 8), (3, 3), (1, 1), (1, 1), filters=4)):
        assert not winograd.supports(other, np.dtype(np.float32)), other


# ---- choosing the algorithm --------------------------------------------------------------


@pytest.fixture
def fresh_plans(monkeypatch):
    """An empty plan table and the default setting; both restored afterwards."""
    saved = dict(autotune._plans)
    autotune.forget_plans()
    with backends.use_conv_algorithm("auto"), backends.use_backend("fast"):
        yield
    autotune.forget_plans()
    autotune._plans.update(saved)


def conv_graph(shape=(2, 8, 10, 10), filters=8, kernel=3, stride=1, dtype=np.float32):
    rng = np.random.default_rng(1)
    x = tc.from_numpy(rng.standard_normal(shape).astype(dtype)).requires_grad_()
    w = tc.from_numpy(rng.standard_normal((filters, shape[1], kernel, kernel)).astype(dtype))
    b = tc.from_numpy(rng.standard_normal(filters).astype(dtype))
    w.requires_grad_(), b.requires_grad_()
    out = F.conv2d(x, w, b, stride=stride, padding=1)
    return x, w, b, out


@needs_numba
@pytest.mark.parametrize("name", ["im2col", "winograd2", "winograd4"])
def test_a_forced_algorithm_runs_and_shows_on_the_op(fresh_plans, name):
    with backends.use_conv_algorithm(name):
        x, w, b, out = conv_graph()
        (out * out).sum().backward()
    assert out.op.attrs["algorithm"] == name
    assert f"algorithm {name}" in viz.to_dot(out)
    with backends.use_backend("reference"):
        x2, w2, b2, out2 = conv_graph()
        (out2 * out2).sum().backward()
        assert out2.op.attrs["algorithm"] == "im2col"
    for got, want in ((out, out2), (x.grad, x2.grad), (w.grad, w2.grad), (b.grad, b2.grad)):
        scale = np.abs(want.numpy()).max()
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=BOUND[4] * scale * 4)


@needs_numba
def test_where_winograd_does_not_apply_im2col_runs(fresh_plans):
    with backends.use_conv_algorithm("winograd4"):
        assert conv_graph(kernel=5)[3].op.attrs["algorithm"] == "im2col"
        assert conv_graph(stride=2)[3].op.attrs["algorithm"] == "im2col"
        assert conv_graph(dtype=np.float64)[3].op.attrs["algorithm"] == "im2col"


@needs_numba
def test_auto_follows_the_rule_without_timing(fresh_plans):
    assert conv_graph(shape=(1, 2, 6, 6), filters=2)[3].op.attrs["algorithm"] == "im2col"
    few_channels = conv_graph(shape=(64, 3, 32, 32), filters=64)[3]
    assert few_channels.op.attrs["algorithm"] == "im2col"
    big = Window((16, 32, 28, 28), (3, 3), (1, 1), (1, 1), filters=32)
    assert autotune.rule("conv2d_forward", big) == "winograd4"  # 28 = 7 tiles of 4
    odd = Window((16, 32, 5, 5), (3, 3), (1, 1), (1, 1), filters=32)
    assert autotune.winograd_tile(odd) == "winograd2"  # 4x4 tiles: 8x8 computed for 5x5
    assert autotune.plans() == []


@needs_numba
def test_benchmark_times_large_convs_once_and_keeps_small_ones_on_im2col(fresh_plans,
                                                                          tmp_path):
    backends.set_conv_algorithm("benchmark")  # the fixture restores auto
    small = conv_graph(shape=(1, 2, 6, 6), filters=2)[3]
    assert small.op.attrs["algorithm"] == "im2col" and autotune.plans() == []
    large = conv_graph(shape=(16, 32, 14, 14), filters=32)[3]
    (plan,) = autotune.plans()
    assert plan["pass"] == "conv2d_forward" and plan["x_shape"] == (16, 32, 14, 14)
    with_onednn = {"onednn"} if onednn_conv.available() else set()
    assert set(plan["ms"]) == {"im2col", "winograd2", "winograd4"} | with_onednn
    assert plan["algorithm"] == min(plan["ms"], key=plan["ms"].get)
    assert large.op.attrs["algorithm"] == plan["algorithm"]
    conv_graph(shape=(16, 32, 14, 14), filters=32)  # the same shape: no new timing
    assert len(autotune.plans()) == 1

    path = backends.save_conv_plans(tmp_path / "plans.json")
    assert json.loads(path.read_text())["plans"][0]["algorithm"] == plan["algorithm"]
    autotune.forget_plans()
    assert backends.load_conv_plans(path) == 1 and autotune.plans() == [plan]


def test_a_plans_file_that_is_not_one_is_refused(tmp_path):
    bad = tmp_path / "plans.json"
    bad.write_text('{"plans": [{"pass": 1}]}')
    with pytest.raises(ValueError, match="not a file of convolution plans"):
        autotune.load_plans(bad)
    with pytest.raises(FileNotFoundError, match="no saved convolution plans"):
        autotune.load_plans(tmp_path / "missing.json")


def test_unknown_algorithm_names_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="choose one of auto, benchmark, im2col"):
        backends.set_conv_algorithm("fft")
    with pytest.raises(ValueError, match="choose one of"):
        backends.use_conv_algorithm("direct")
    code = "import tinygrad_conv.backends as b; b.conv_algorithm()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "TINYGRAD_CONV_ALGO": "fastest"})
    assert done.returncode != 0
    assert "TINYGRAD_CONV_ALGO='fastest' is not a convolution algorithm" in done.stderr


def test_use_conv_algorithm_restores_the_setting():
    before = backends.conv_algorithm()
    with backends.use_conv_algorithm("im2col"):
        assert backends.conv_algorithm() == "im2col"
    assert backends.conv_algorithm() == before
