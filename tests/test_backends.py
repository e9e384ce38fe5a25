"""The backend seam: every fast kernel equals its reference twin, the import rule holds, and a
model gives the same graph and numbers under both backends.

The kernels are compared directly (not through the ops) over Hypothesis-drawn shapes,
strides, paddings, dilations, groups and memory layouts; the fused conv2d formulas of the
fast backend are compared with the same formulas run step by step on reference kernels.
"""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinygrad_conv as tc
import tinygrad_conv.functional as F
from tinygrad_conv import backends, naive
from tinygrad_conv.geometry import Window
from tinygrad_conv.ops.conv import flat_pixels, image_of, weight_rows

PACKAGE = pathlib.Path(tc.__file__).parent
reference = backends._load("reference")
fast = backends._load("fast")


# ---- drawing cases ------------------------------------------------------------------------


def layouts(a: np.ndarray, kind: str) -> np.ndarray:
    """The same (N, C, H, W) values in another memory layout."""
    if kind == "channels last":
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if kind == "strided view":
        big = np.zeros(a.shape[:2] + (a.shape[2] * 2, a.shape[3] + 1), a.dtype)
        big[:, :, ::2, :-1] = a
        return big[:, :, ::2, :-1]
    return np.ascontiguousarray(a)


@st.composite
def conv_cases(draw, groups_max: int = 3):
    """(window, x) for a convolution that fits: any stride, padding, dilation and groups."""
    groups = draw(st.integers(1, groups_max))
    c = groups * draw(st.integers(1, 3))
    f = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    h = draw(st.integers(max(1, span[0] - 2 * padding[0]), 9))
    w = draw(st.integers(max(1, span[1] - 2 * padding[1]), 9))
    n = draw(st.integers(1, 4))
    window = Window((n, c, h, w), kernel, stride, padding, dilation, groups, filters=f)
    seed = draw(st.integers(0, 2**16))
    x = np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)
    return window, layouts(x, draw(st.sampled_from(["contiguous", "channels last",
                                                    "strided view"])))


@st.composite
def pool_cases(draw):
    """(window, x) for a pool: padding at most half the kernel, as PyTorch requires."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    h = draw(st.integers(max(1, kernel[0] - 2 * padding[0]), 9))
    w = draw(st.integers(max(1, kernel[1] - 2 * padding[1]), 9))
    if draw(st.booleans()):  # windows that tile the input (the fast backend's compiled case)
        stride, padding = kernel, (0, 0)
        h, w = kernel[0] * draw(st.integers(1, 3)), kernel[1] * draw(st.integers(1, 3))
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    if draw(st.booleans()):  # ties: the first maximum must win in both backends
        x = np.round(x)
    if draw(st.booleans()):  # a NaN is the maximum of its windows, as np.argmax has it
        x.flat[draw(st.integers(0, x.size - 1))] = np.nan
    window = Window((n, c, h, w), kernel, stride, padding)
    return window, layouts(x, draw(st.sampled_from(["contiguous", "channels last"])))


@pytest.fixture(params=["compiled", "numpy"])
def fast_kernels(request, monkeypatch):
    """The fast backend's memory-bound kernels compiled (numba, where installed) or as NumPy
    passes: both are held to the reference."""
    from tinygrad_conv.backends.fast import compiled

    if request.param == "compiled" and not compiled.AVAILABLE:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(compiled, "AVAILABLE", request.param == "compiled")


def close(a: np.ndarray, b: np.ndarray, scale: float = 1.0) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * scale)


# ---- kernel by kernel -------------------------------------------------------------------


@given(conv_cases())
def test_im2col_and_col2im_match_reference(case):
    window, x = case
    cols = reference.im2col(x, window)
    n, c = x.shape[:2]
    assert cols.shape == (window.groups, c // window.groups * np.prod(window.kernel),
                          n * np.prod(window.out_hw))
    np.testing.assert_array_equal(fast.im2col(x, window), cols)
    back = np.random.default_rng(0).standard_normal(cols.shape).astype(np.float32)
    close(fast.col2im(back, window), reference.col2im(back, window), scale=10)


@given(conv_cases())
def test_reference_im2col_is_the_convolution(case):
    """W_row @ X_col + b on reference kernels is the naive loop convolution (the oracle the
    fast kernels are held to is itself held to the loops)."""
    window, x = case
    rng = np.random.default_rng(1)
    w = rng.standard_normal(window.w_shape).astype(np.float32)
    b = rng.standard_normal(window.filters).astype(np.float32)
    out = reference.matmul(weight_rows(w, window.groups), reference.im2col(x, window))
    out = image_of(out + b.reshape(window.groups, -1, 1), window)
    expected = naive.conv2d(x, w, b, window.stride, window.padding, window.dilation,
                            window.groups)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@given(conv_cases(groups_max=1))
def test_fused_conv2d_formulas_match_the_step_by_step_ones(case):
    window, x = case
    rng = np.random.default_rng(2)
    w = rng.standard_normal(window.w_shape).astype(np.float32)
    b = rng.standard_normal(window.filters).astype(np.float32)
    dout = layouts(rng.standard_normal(window.out_shape).astype(np.float32), "channels last")
    x_col = reference.im2col(x, window)
    w_row = weight_rows(w, 1)

    out, saved = fast.fused("conv2d_forward", window)(x, w, b, window)
    close(out, image_of(reference.matmul(w_row, x_col) + b.reshape(1, -1, 1), window), 10)

    dw = reference.matmul(flat_pixels(dout, 1), x_col.transpose(0, 2, 1)).reshape(w.shape)
    for kept in (saved, None):  # from the forward's padded x, or from x alone
        close(fast.fused("conv2d_grad_weight", window)(dout, x, kept, window), dw, 100)

    dx = reference.col2im(reference.matmul(w_row.transpose(0, 2, 1), flat_pixels(dout, 1)),
                          window)
    close(fast.fused("conv2d_grad_input", window)(dout, w, window), dx, 10)


def test_fast_backend_fuses_ungrouped_convs_only_and_reference_nothing():
    grouped = Window((1, 4, 5, 5), (3, 3), (1, 1), (1, 1), groups=2, filters=4)
    plain = Window((1, 4, 5, 5), (3, 3), (1, 1), (1, 1), filters=4)
    for name in backends.FUSED:
        assert fast.fused(name, plain) is not None
        assert reference.fused(name, plain) is None
        if name.startswith("conv2d"):
            assert fast.fused(name, grouped) is None


@pytest.mark.parametrize("shapes", [((7, 5), (5, 3)), ((1, 300), (300, 2)), ((3, 4, 5), (3, 5, 2)),
                                    ((0, 3), (3, 4))])
def test_matmul_matches_reference(shapes):
    rng = np.random.default_rng(3)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    close(fast.matmul(a, b), reference.matmul(a, b), scale=10)


@given(st.sampled_from([(0, 2, 3), (0,), (1, 2), (0, 1, 2, 3), (3,)]), st.booleans(),
       st.sampled_from(["contiguous", "channels last"]))
def test_sum_axes_matches_reference(axes, keepdims, layout):
    a = layouts(np.random.default_rng(4).standard_normal((16, 12, 12, 24)).astype(np.float32),
                layout)  # big enough for the fast backend's GEMV
    close(fast.sum_axes(a, axes, keepdims), reference.sum_axes(a, axes, keepdims), scale=100)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # set once, read only
@given(st.sampled_from([(), (5,), (3, 4), (2, 3, 4, 5), (0, 3)]), st.booleans(),
       st.sampled_from(["contiguous", "channels last"]))
def test_relu_and_its_backward_match_reference(fast_kernels, shape, want_mask, layout):
    a = np.round(np.random.default_rng(5).standard_normal(shape) * 2).astype(np.float32)
    if len(shape) == 4:
        a = layouts(a, layout)
    out, mask = fast.relu(a, want_mask)
    ref_out, ref_mask = reference.relu(a, want_mask)
    np.testing.assert_array_equal(out, ref_out)
    assert (mask is None) == (not want_mask)
    if want_mask:
        np.testing.assert_array_equal(mask, ref_mask)
        g = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(fast.relu_backward(g, mask), reference.relu_backward(g, mask))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # set once, read only
@given(pool_cases())
def test_max_pool_kernels_match_reference(fast_kernels, case):
    window, x = case
    out, winner = fast.max_pool(x, window)
    ref_out, ref_winner = reference.max_pool(x, window)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(winner, ref_winner)  # ties: the same first maximum
    np.testing.assert_array_equal(out, naive.max_pool2d(x, window.kernel, window.stride,
                                                        window.padding))
    dout = np.random.default_rng(7).standard_normal(out.shape).astype(np.float32)
    for w1, w2 in ((winner, ref_winner), (ref_winner, winner)):  # the winners interchange
        close(fast.max_pool_backward(dout, w1, window),
              reference.max_pool_backward(dout, w2, window), scale=10)
        close(fast.max_pool_gather(x, w1, window), reference.max_pool_gather(x, w2, window))


@given(pool_cases())
def test_avg_pool_kernels_match_reference(case):
    window, x = case
    out = reference.avg_pool(x, window)
    close(fast.avg_pool(x, window), out)
    np.testing.assert_allclose(out, naive.avg_pool2d(x, window.kernel, window.stride,
                                                     window.padding), rtol=1e-5, atol=1e-6)
    dout = np.random.default_rng(8).standard_normal(out.shape).astype(np.float32)
    close(fast.avg_pool_backward(dout, window), reference.avg_pool_backward(dout, window))


# ---- the two backends through the whole library -----------------------------------------


def small_cnn_step(name: str) -> tuple[list[str], float, list[np.ndarray]]:
    """One training step of a small CNN on backend ``name``: (op names in graph order, loss,
    parameter gradients)."""
    from tinygrad_conv import nn
    from tinygrad_conv.engine import topological_order

    with tc.use_backend(name):
        tc.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.ReLU(),
                              nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6 * 2 * 2, 3))
        x = tc.tensor(np.random.default_rng(9).standard_normal((5, 1, 8, 8)).astype(np.float32))
        loss = F.cross_entropy(model(x), tc.tensor([0, 1, 2, 1, 0]))
        names = [t.op.name for t in topological_order(loss) if t.op is not None]
        loss.backward()
        return names, loss.item(), [p.grad.data for p in model.parameters()]


@pytest.mark.usefixtures("fusing")
def test_same_graph_and_results_under_both_backends():
    names_ref, loss_ref, grads_ref = small_cnn_step("reference")
    names_fast, loss_fast, grads_fast = small_cnn_step("fast")
    assert names_ref == names_fast and "conv2d" in names_ref
    assert names_ref.count("relu_max_pool2d") == 1  # the core fuses, on either backend
    assert abs(loss_ref - loss_fast) < 1e-5
    for a, b in zip(grads_ref, grads_fast):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_switching_backend_between_forward_and_backward():
    """What the forward saved (X_col, a pool's winners) serves the other backend's backward."""
    rng = np.random.default_rng(10)
    x = tc.tensor(rng.standard_normal((2, 3, 6, 6)).astype(np.float32), requires_grad=True)
    w = tc.tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), requires_grad=True)
    grads = {}
    for first, second in (("fast", "reference"), ("reference", "fast"), ("fast", "fast")):
        x.grad = w.grad = None
        with tc.use_backend(first):
            y = F.max_pool2d(F.conv2d(x, w, padding=1).relu(), 2).sum()
        with tc.use_backend(second):
            y.backward()
        grads[first, second] = (x.grad.data, w.grad.data)
    for pair in grads.values():
        for a, b in zip(pair, grads["fast", "fast"]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_backend_choice_is_visible_and_checked(monkeypatch):
    with tc.use_backend("reference"):
        assert tc.backend() == "reference"
        with tc.use_backend("fast"):
            assert tc.backend() == "fast"
        assert tc.backend() == "reference"
    with pytest.raises(ValueError, match="unknown backend 'gpu'.*reference, fast"):
        tc.set_backend("gpu")
    monkeypatch.setattr(backends, "_active", None)
    monkeypatch.setenv("TINYGRAD_CONV_BACKEND", "cuda")
    with pytest.raises(ValueError, match="TINYGRAD_CONV_BACKEND='cuda' is not a backend"):
        tc.zeros(2).relu()


def test_a_backend_missing_a_kernel_is_refused(monkeypatch):
    import types

    partial = types.ModuleType("partial_backend")
    partial.NAME = "partial"
    partial.im2col = reference.im2col
    monkeypatch.setitem(sys.modules, "partial_backend", partial)
    monkeypatch.setitem(backends.BACKENDS, "partial", "partial_backend")
    with pytest.raises(TypeError, match="lacks kernels: .*'col2im'"):
        tc.set_backend("partial")


# ---- what may import what -----------------------------------------------------------------


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module a file imports, written as absolute dotted names."""
    package = ".".join(("tinygrad_conv",) + path.relative_to(PACKAGE).parent.parts)
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_engine_and_ops_never_import_a_backend():
    """The core reads as the math: engine.py, tensor.py and ops/ reach array kernels only
    through tinygrad_conv.backends (the seam), never a backend module."""
    core = [PACKAGE / "engine.py", PACKAGE / "tensor.py", *sorted((PACKAGE / "ops").glob("*.py"))]
    backend_modules = set(backends.BACKENDS.values())
    assert "tinygrad_conv.backends.fast" in backend_modules
    for path in core:
        for name in imported_modules(path):
            assert not any(name == m or name.startswith(m + ".") for m in backend_modules), (
                path.name, name)
    # and the rule is live: the seam is what the ops do import
    assert "tinygrad_conv.backends.kernels" in imported_modules(PACKAGE / "ops" / "conv.py")


def test_importing_the_package_loads_no_backend_and_tunes_nothing():
    code = (
        "import sys, tinygrad_conv as tc\n"
        "from tinygrad_conv import backends\n"
        "assert backends._active is None\n"
        "assert not any(m.startswith('tinygrad_conv.backends.') for m in sys.modules)\n"
        "tc.zeros(2).relu()\n"
        "print(tc.backend())\n"
    )
    env = {**os.environ, "TINYGRAD_CONV_BACKEND": ""}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fast"
