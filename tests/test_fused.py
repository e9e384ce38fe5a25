"""relu followed by max pooling as one op (ops/fused.py): the same values and gradients as
relu then max_pool2d, on both backends and both fast kernels (compiled, NumPy); the fast
backend's fused kernels against the reference formulas; and when nn.Sequential fuses."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinygrad_conv as tc
import tinygrad_conv.functional as F
from tinygrad_conv import autograd, backends, nn
from tinygrad_conv.engine import topological_order
from tinygrad_conv.geometry import Window
from tinygrad_conv.models import reference_cnn

reference = backends._load("reference")
fast = backends._load("fast")
SUITED = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
pytestmark = pytest.mark.usefixtures("fusing")  # whatever TINYGRAD_CONV_FUSE says


@pytest.fixture(params=["reference", "fast compiled", "fast numpy"])
def each_backend(request, monkeypatch):
    """The test runs on the reference backend, then on the fast one with its compiled
    kernels (where numba is installed) and with its NumPy kernels."""
    from tinygrad_conv.backends.fast import compiled

    if request.param == "fast compiled" and not compiled.AVAILABLE:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(compiled, "AVAILABLE", request.param == "fast compiled")
    monkeypatch.setattr(backends, "_active", reference if request.param == "reference" else fast)
    return request.param


@st.composite
def pool_inputs(draw):
    """(x, kernel, stride, padding, ceil_mode) with the values that test the corners: ties,
    zeros, windows all negative, NaN; float32 or float64; any memory layout."""
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    ceil_mode = draw(st.booleans())
    if draw(st.booleans()):  # windows that tile x: the fast backend's compiled case
        stride, padding, ceil_mode = kernel, (0, 0), False
        h, w = kernel[0] * draw(st.integers(1, 3)), kernel[1] * draw(st.integers(1, 3))
    else:
        h = draw(st.integers(max(1, kernel[0] - 2 * padding[0]), 7))
        w = draw(st.integers(max(1, kernel[1] - 2 * padding[1]), 7))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), h, w)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal(shape) + draw(st.sampled_from([0.0, -1.5]))  # -1.5: most windows <= 0
    if draw(st.booleans()):  # ties and exact zeros
        x = np.round(x)
    if draw(st.booleans()):  # a NaN wins its windows
        x.flat[draw(st.integers(0, x.size - 1))] = np.nan
    x = x.astype(draw(st.sampled_from([np.float32, np.float64])))
    if draw(st.booleans()):
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return x, kernel, stride, padding, ceil_mode


def _run(fn, x, dout):
    """fn(x) and the gradient dout reaches x with."""
    t = tc.tensor(x, requires_grad=True, dtype=x.dtype)
    out = fn(t)
    out.backward(tc.tensor(dout, dtype=dout.dtype))
    return out.data, t.grad.data


@SUITED
@given(pool_inputs())
def test_fused_op_equals_relu_then_max_pool(each_backend, case):
    """Values and gradients equal exactly: the same entries are picked and the same upstream
    gradients summed, NaN included."""
    x, kernel, stride, padding, ceil_mode = case
    settings_ = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode)
    unfused = F.max_pool2d(F.relu(tc.tensor(x, dtype=x.dtype)), **settings_).data
    dout = np.random.default_rng(1).standard_normal(unfused.shape).astype(x.dtype)
    out, dx = _run(lambda t: F.relu_max_pool2d(t, **settings_), x, dout)
    out_ref, dx_ref = _run(lambda t: F.max_pool2d(F.relu(t), **settings_), x, dout)
    assert out.dtype == dx.dtype == x.dtype and out.shape == out_ref.shape
    np.testing.assert_array_equal(out, out_ref)
    np.testing.assert_array_equal(dx, dx_ref)


def test_the_corners_by_hand(each_backend):
    """One 2x2 window each: all negative, zeros and negatives, a tie of positives, a NaN."""
    x = np.array([[[[-3.0, -1.0, 0.0, -2.0, 2.0, 2.0, 1.0, np.nan],
                    [-2.0, -5.0, -1.0, 0.0, 1.0, -1.0, 5.0, 3.0]]]], np.float32)
    out, dx = _run(lambda t: F.relu_max_pool2d(t, 2), x, np.full((1, 1, 1, 4), 7, np.float32))
    np.testing.assert_array_equal(out, [[[[0.0, 0.0, 2.0, np.nan]]]])
    expected = np.zeros_like(x)
    expected[0, 0, 0, 4] = 7  # the first of the tied maxima; nothing through 0, -1, NaN
    np.testing.assert_array_equal(dx, expected)


def test_second_derivatives_equal_the_unfused_ones(each_backend):
    """The backward op is linear in the upstream gradient; differentiating it again (its
    adjoint: gather at the winners, then relu's mask) matches the unfused graph."""
    rng = np.random.default_rng(2)
    x = np.round(rng.standard_normal((2, 3, 5, 6)) * 2)
    v = rng.standard_normal(x.shape)
    results = []
    for fn in (lambda t: F.relu_max_pool2d(t, 2, stride=1, padding=1),
               lambda t: F.max_pool2d(F.relu(t), 2, stride=1, padding=1)):
        t = tc.tensor(x, requires_grad=True, dtype=tc.float64)
        out = fn(t)
        g = tc.tensor(rng.standard_normal(out.shape), requires_grad=True, dtype=tc.float64)
        (dx,) = autograd.grad(out, t, grad_outputs=g, create_graph=True)
        (dx * tc.tensor(v, dtype=tc.float64)).sum().backward()
        results.append(g.grad.data)
    np.testing.assert_array_equal(*results)
    assert np.count_nonzero(results[0]) > 0


def test_an_empty_batch(each_backend):
    x, dout = np.zeros((0, 3, 4, 4), np.float32), np.zeros((0, 3, 2, 2), np.float32)
    for layout in (x, x.transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2)):
        out, dx = _run(lambda t: F.relu_max_pool2d(t, 2), layout, dout)
        assert out.shape == (0, 3, 2, 2) and dx.shape == x.shape


def test_gradcheck_in_float64(each_backend):
    x = np.random.default_rng(3).permutation(2 * 3 * 6 * 7).reshape(2, 3, 6, 7) / 20.0 - 3.0
    t = tc.tensor(x, requires_grad=True, dtype=tc.float64)  # distinct values, none within eps of 0
    assert tc.gradcheck(lambda a: F.relu_max_pool2d(a, (2, 3), stride=(2, 1), padding=1), [t])
    assert tc.gradcheck(lambda a: F.relu_max_pool2d(a, 3, stride=2, ceil_mode=True), [t])


def test_switching_backend_between_forward_and_backward():
    """The winner and mask one backend's forward saved serve the other's backward."""
    x = np.ascontiguousarray(np.round(np.random.default_rng(7).standard_normal((3, 6, 4, 4))
                                      .transpose(0, 2, 3, 1) * 2)).transpose(0, 3, 1, 2)
    dout = np.random.default_rng(8).standard_normal((3, 6, 2, 2))
    grads = {}
    for first, second in (("fast", "reference"), ("reference", "fast"), ("fast", "fast")):
        t = tc.tensor(x, requires_grad=True, dtype=tc.float64)
        with tc.use_backend(first):
            out = F.relu_max_pool2d(t, 2)
        with tc.use_backend(second):
            out.backward(tc.tensor(dout, dtype=tc.float64))
        grads[first, second] = t.grad.data
    for dx in grads.values():
        np.testing.assert_array_equal(dx, grads["fast", "fast"])


def test_without_grad_nothing_is_kept():
    with tc.no_grad():
        out = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))(tc.tensor(X, requires_grad=True))
    assert out.op is None and not out.requires_grad
    np.testing.assert_array_equal(out.data, F.max_pool2d(F.relu(tc.tensor(X)), 2).data)


def test_argument_errors_name_the_function():
    with pytest.raises(ValueError, match="relu_max_pool2d: padding"):
        F.relu_max_pool2d(tc.zeros(1, 1, 4, 4), 2, padding=2)
    with pytest.raises(TypeError, match="relu_max_pool2d: input must be float"):
        F.relu_max_pool2d(tc.zeros(1, 1, 4, 4, dtype=tc.int64), 2)


# ---- the fast backend's fused kernels against the reference formulas ---------------------


@st.composite
def tiled_windows(draw):
    """(window, x) for the compiled case (windows tiling x) and, now and then, another one."""
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    h, w = kernel[0] * draw(st.integers(1, 3)), kernel[1] * draw(st.integers(1, 3))
    stride = kernel if draw(st.integers(0, 3)) else (1, 1)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = np.round(rng.standard_normal((n, c, h, w)) * 2) - draw(st.sampled_from([0.0, 1.0]))
    if draw(st.booleans()):
        x.flat[draw(st.integers(0, x.size - 1))] = np.nan
    x = x.astype(draw(st.sampled_from([np.float32, np.float64])))
    if draw(st.booleans()):  # what the fast conv2d hands on: channels-last memory
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return Window(x.shape, kernel, stride, (0, 0)), x


@pytest.fixture(params=["compiled", "numpy"])
def fast_kernels(request, monkeypatch):
    from tinygrad_conv.backends.fast import compiled

    if request.param == "compiled" and not compiled.AVAILABLE:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(compiled, "AVAILABLE", request.param == "compiled")


@SUITED
@given(tiled_windows())
def test_fast_fused_kernels_match_the_reference_formulas(fast_kernels, case):
    window, x = case
    out, winner, mask = fast.fused("relu_max_pool2d", window)(x, window)
    pooled, ref_winner = reference.max_pool(x, window)
    ref_out, ref_mask = reference.relu(pooled, want_mask=True)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(winner, ref_winner)  # ties: the same first maximum
    np.testing.assert_array_equal(mask, ref_mask)
    assert out.dtype == x.dtype and mask.dtype == np.bool_
    dout = np.random.default_rng(4).standard_normal(out.shape).astype(x.dtype)
    expected = reference.max_pool_backward(reference.relu_backward(dout, ref_mask), ref_winner,
                                           window)
    backward = fast.fused("relu_max_pool2d_backward", window)
    for w, m in ((winner, mask), (ref_winner, ref_mask)):  # either backend's saved arrays
        dx = backward(dout, w, m, window)
        assert dx.dtype == x.dtype
        np.testing.assert_array_equal(dx, expected)


def test_backends_answer_the_fused_names():
    window = Window((2, 3, 4, 4), (2, 2), (2, 2), (0, 0))
    for name in ("relu_max_pool2d", "relu_max_pool2d_backward"):
        assert name in backends.FUSED
        assert reference.fused(name, window) is None
        assert callable(fast.fused(name, window))


# ---- where nn.Sequential fuses ----------------------------------------------------------


def _op_names(out: tc.Tensor) -> list[str]:
    return [t.op.name for t in topological_order(out) if t.op is not None]


class _KeptConv2d(nn.Conv2d):
    """A Conv2d that keeps its output, and that output's gradient after backward."""

    def forward(self, x):
        self.out = super().forward(x)
        self.out.retain_grad()
        return self.out


def _pair_net(relu: nn.Module | None = None, pool: nn.Module | None = None) -> nn.Sequential:
    tc.manual_seed(0)
    return nn.Sequential(_KeptConv2d(2, 3, 3, padding=1), relu or nn.ReLU(),
                         pool or nn.MaxPool2d(2), nn.Flatten())


X = np.random.default_rng(5).standard_normal((2, 2, 6, 6)).astype(np.float32)


def _forward_backward(net: nn.Sequential) -> tuple[list[str], np.ndarray, np.ndarray,
                                                     np.ndarray]:
    """The op names, the output, the pair's input gradient and the conv's weight gradient."""
    net.zero_grad()
    out = net(tc.tensor(X))
    names = _op_names(out)
    out.backward(tc.ones(*out.shape))
    return names, out.data, net[0].out.grad.data, net[0].weight.grad.data


class _MyReLU(nn.ReLU):
    def forward(self, x):
        return super().forward(x) * 2


@pytest.mark.parametrize("change, fuses", [
    ("none", True),
    ("inplace ReLU", True),  # inplace=True makes a new tensor here too: nothing to undo
    ("ceil_mode and padding", True),
    ("forward replaced", False),  # what tc.summary does to watch a layer
    ("ReLU subclass", False),
    ("switched off", False),
    ("avg pool", False),
])
def test_sequential_fuses_a_relu_and_max_pool_only_when_exact(change, fuses):
    relu, pool = nn.ReLU(inplace=change == "inplace ReLU"), nn.MaxPool2d(2)
    if change == "ceil_mode and padding":
        pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    elif change == "ReLU subclass":
        relu = _MyReLU()
    elif change == "avg pool":
        pool = nn.AvgPool2d(2)
    net = _pair_net(relu, pool)
    if change == "forward replaced":
        object.__setattr__(relu, "forward", lambda x: F.relu(x) * 2)
    if change == "switched off":
        net.fuse_relu_pool = False
    names, out, grad, grad_w = _forward_backward(net)
    assert ("relu_max_pool2d" in names) == fuses
    assert ("relu" not in names) == fuses
    net.fuse_relu_pool = False
    names_off, out_off, grad_off, grad_w_off = _forward_backward(net)
    assert "relu_max_pool2d" not in names_off
    np.testing.assert_array_equal(out, out_off)
    np.testing.assert_array_equal(grad, grad_off)  # what the pair hands back: bit for bit
    # the conv's dW = dout_flat @ X_col.T from the same values; the two paths may leave them
    # in different memory layouts, and a GEMM may then add in another order (a few ulps)
    np.testing.assert_allclose(grad_w, grad_w_off, rtol=1e-5, atol=1e-6)


def test_sequential_does_not_fuse_what_the_layers_would_reject():
    net = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))
    for bad, error in ((tc.zeros(4, 4), ValueError), (tc.zeros(1, 1, 4, 4, dtype=tc.int64),
                                                      TypeError)):
        with pytest.raises(error) as fused_error:
            net(bad)
        with pytest.raises(error) as layer_error:
            net[1](net[0](bad))
        assert str(fused_error.value) == str(layer_error.value)
    with pytest.raises(ValueError, match="^max_pool2d: kernel"):  # the layer's own name
        nn.Sequential(nn.ReLU(), nn.MaxPool2d(5))(tc.zeros(1, 1, 3, 3))


def test_the_fused_op_is_recorded_in_the_pool_layer():
    net = _pair_net()
    out = net(tc.tensor(X, requires_grad=True))
    op = out.op.inputs[0].op  # flatten's input
    assert op.name == "relu_max_pool2d"
    assert op.scope == (net, net[2])
    from tinygrad_conv import viz

    text = viz.to_dot(out.sum(), model=net, group_modules=True)
    assert "<b>2: MaxPool2d</b>" in text and "1: ReLU" not in text


def test_the_switch_reads_the_environment():
    code = "import tinygrad_conv.nn as nn; print(nn.Sequential.fuse_relu_pool)"
    for value, expected in (("0", "False"), ("1", "True")):
        env = dict(os.environ, TINYGRAD_CONV_FUSE=value)
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        assert run.stdout.strip() == expected


def _graph_bytes(out: tc.Tensor) -> int:
    """The bytes of every array the graph behind ``out`` holds: tensors and saved arrays."""
    seen: dict[int, int] = {}
    for t in topological_order(out, every_input=True):
        seen[id(t.data)] = t.data.nbytes
        if t.op is not None:
            for value in vars(t.op).values():
                if isinstance(value, np.ndarray):
                    seen[id(value)] = value.nbytes
    return sum(seen.values())


def test_the_fused_graph_holds_less_memory():
    """Unfused, the graph keeps relu's full-size output and mask; fused, a winner and a mask
    per window."""
    net = _pair_net()
    x = tc.tensor(np.ones((8, 2, 6, 6), np.float32), requires_grad=True)
    fused_bytes = _graph_bytes(net(x))
    net.fuse_relu_pool = False
    unfused_bytes = _graph_bytes(net(x))
    relu_out = 8 * 3 * 6 * 6
    assert unfused_bytes - fused_bytes >= relu_out * (4 + 1) - 8 * 3 * 3 * 3 * 2


@pytest.mark.slow
def test_training_the_reference_cnn_fused_and_unfused_gives_the_same_parameters():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    params = []
    for fuse in (True, False):
        tc.manual_seed(0)
        model = reference_cnn()
        model.fuse_relu_pool = fuse
        opt = tc.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            opt.zero_grad()
            loss = F.cross_entropy(model(tc.tensor(x)), tc.tensor(y))
            loss.backward()
            opt.step()
        assert ("relu_max_pool2d" in _op_names(loss)) == fuse
        params.append([p.data for p in model.parameters()])
    for fused_p, unfused_p in zip(*params):
        np.testing.assert_array_equal(fused_p, unfused_p)
