"""conv2d: forward and backward against the loop references in tinygrad_conv.naive over
shapes, kernels, strides, paddings, dilations and groups; finite differences; the rotated-
kernel view of dX; second derivatives; float32 in, float32 out."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_conv as tc
import tinygrad_conv.functional as F
from tinygrad_conv import naive


def t64(a, requires_grad=True):
    return tc.Tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad,
                     dtype=np.float64)


def out_size(size, k, s, p, d):
    """The API's formula: H' = 1 + (H + 2*pad - dilation*(HH-1) - 1) // stride."""
    return 1 + (size + 2 * p - d * (k - 1) - 1) // s


@st.composite
def conv_cases(draw, max_groups=3, dilation=True):
    """A valid conv2d configuration (the dilated kernel fits the padded input)."""
    groups = draw(st.integers(1, max_groups))
    c = groups * draw(st.integers(1, 2))
    f = groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilation else (1, 1)
    hw = []
    for k, p, d in zip(kernel, padding, dil):
        span = d * (k - 1) + 1
        hw.append(max(1, span - 2 * p) + draw(st.integers(0, 3)))
    n = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**16))
    return dict(x_shape=(n, c, *hw), w_shape=(f, c // groups, *kernel), stride=stride,
                padding=padding, dilation=dil, groups=groups, seed=seed)


def _settings(case):
    return {k: case[k] for k in ("stride", "padding", "dilation", "groups")}


@given(case=conv_cases(), bias=st.booleans())
def test_conv2d_forward_and_backward_match_naive(case, bias):
    rng = np.random.default_rng(case["seed"])
    x_np, w_np = rng.standard_normal(case["x_shape"]), rng.standard_normal(case["w_shape"])
    b_np = rng.standard_normal(case["w_shape"][0]) if bias else None
    x, w = t64(x_np), t64(w_np)
    b = t64(b_np) if bias else None
    out = F.conv2d(x, w, b, **_settings(case))

    ref = naive.conv2d(x_np, w_np, b_np, **_settings(case))
    n, _, h, wd = case["x_shape"]
    f, _, kh, kw = case["w_shape"]
    (sh, sw), (ph, pw), (dh, dw) = case["stride"], case["padding"], case["dilation"]
    expected_shape = (n, f, out_size(h, kh, sh, ph, dh), out_size(wd, kw, sw, pw, dw))
    assert out.shape == ref.shape == expected_shape
    np.testing.assert_allclose(out.data, ref, rtol=1e-10, atol=1e-12)

    dout = rng.standard_normal(ref.shape)
    out.backward(dout)
    dx, dw_, db = naive.conv2d_backward(dout, x_np, w_np, **_settings(case))
    np.testing.assert_allclose(x.grad.data, dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w.grad.data, dw_, rtol=1e-10, atol=1e-12)
    if bias:
        np.testing.assert_allclose(b.grad.data, db, rtol=1e-10, atol=1e-12)


@given(case=conv_cases())
def test_conv2d_float32_matches_naive_and_stays_float32(case):
    rng = np.random.default_rng(case["seed"])
    x_np = rng.standard_normal(case["x_shape"]).astype(np.float32)
    w_np = rng.standard_normal(case["w_shape"]).astype(np.float32)
    b_np = rng.standard_normal(case["w_shape"][0]).astype(np.float32)
    x, w, b = (tc.Tensor(a, requires_grad=True) for a in (x_np, w_np, b_np))
    out = F.conv2d(x, w, b, **_settings(case))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, naive.conv2d(x_np, w_np, b_np, **_settings(case)),
                               rtol=1e-4, atol=1e-5)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(dout)
    dx, dw_, db = naive.conv2d_backward(dout, x_np, w_np, **_settings(case))
    for t, ref in ((x, dx), (w, dw_), (b, db)):
        assert t.grad.dtype == np.float32
        np.testing.assert_allclose(t.grad.data, ref, rtol=1e-4, atol=1e-4)


@given(case=conv_cases(max_groups=1, dilation=False))
def test_dx_equals_the_rotated_kernel_convolution(case):
    """dX = full convolution of the stride-dilated dout with the 180-degree-rotated kernel."""
    rng = np.random.default_rng(case["seed"])
    x_np, w_np = rng.standard_normal(case["x_shape"]), rng.standard_normal(case["w_shape"])
    x = t64(x_np)
    out = F.conv2d(x, t64(w_np, requires_grad=False), stride=case["stride"],
                   padding=case["padding"])
    dout = rng.standard_normal(out.shape)
    out.backward(dout)
    rotated = naive.conv2d_input_grad_rotated(dout, w_np, x_np.shape, case["stride"],
                                              case["padding"])
    np.testing.assert_allclose(x.grad.data, rotated, rtol=1e-10, atol=1e-12)


CONFIGS = [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=2, padding=1, dilation=1, groups=1),
    dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2), groups=1),
    dict(stride=1, padding=1, dilation=2, groups=2),
    dict(stride=(1, 3), padding=(1, 0), dilation=1, groups=4),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_conv2d_gradcheck_with_bias(cfg, rng):
    g = cfg["groups"]
    x = t64(rng.standard_normal((2, 4, 5, 5)))
    w = t64(rng.standard_normal((4, 4 // g, 3, 2)))
    b = t64(rng.standard_normal(4))
    assert tc.gradcheck(lambda x_, w_, b_: F.conv2d(x_, w_, b_, **cfg), [x, w, b])


def grad_norm(fn, *inputs):
    """||d sum(v * fn(inputs)) / d inputs||^2: its gradient needs fn's second derivatives."""

    def f(*xs):
        out = fn(*xs)
        v = np.random.default_rng(1).standard_normal(out.shape)
        (out * tc.Tensor(v, dtype=np.float64)).sum().backward(create_graph=True)
        grads = [x.grad for x in xs]
        for x in xs:
            x.grad = None
        total = (grads[0] * grads[0]).sum()
        for gr in grads[1:]:
            total = total + (gr * gr).sum()
        return total

    return f


@pytest.mark.parametrize("cfg", CONFIGS[1:4], ids=["stride2-pad1", "dilated", "groups2"])
def test_conv2d_second_derivatives(cfg, rng):
    g = cfg["groups"]
    x = t64(rng.standard_normal((1, 2, 5, 5)))
    w = t64(rng.standard_normal((2, 2 // g, 2, 3)))
    b = t64(rng.standard_normal(2))

    def bilinear(x_, w_, b_):
        return F.conv2d(x_, w_, b_, **cfg)

    def nonlinear(x_, w_):
        return F.conv2d(x_, w_, **cfg).tanh()

    assert tc.gradcheck(grad_norm(bilinear, x, w, b), [x, w, b])
    assert tc.gradcheck(grad_norm(nonlinear, x, w), [x, w])


def test_conv2d_int_and_pair_arguments_agree(rng):
    x, w = t64(rng.standard_normal((1, 2, 6, 7))), t64(rng.standard_normal((3, 2, 3, 3)))
    a = F.conv2d(x, w, stride=2, padding=1, dilation=1)
    b = F.conv2d(x, w, stride=(2, 2), padding=(1, 1), dilation=(1, 1))
    np.testing.assert_array_equal(a.data, b.data)


def test_conv2d_bias_none_equals_zero_bias(rng):
    x, w = t64(rng.standard_normal((2, 3, 4, 4))), t64(rng.standard_normal((2, 3, 2, 2)))
    np.testing.assert_allclose(F.conv2d(x, w).data, F.conv2d(x, w, np.zeros(2)).data)


def test_conv2d_hand_computed_example():
    # a 1x1x3x3 input and a 2x2 kernel: each output is the sum of a 2x2 patch times w
    x = t64(np.arange(9.0).reshape(1, 1, 3, 3))
    w = t64([[[[1.0, 2.0], [3.0, 4.0]]]])
    out = F.conv2d(x, w, t64([10.0]))
    # top-left patch [[0, 1], [3, 4]] -> 0 + 2 + 9 + 16 = 27, plus bias 10
    np.testing.assert_array_equal(out.data, [[[[37.0, 47.0], [67.0, 77.0]]]])
    out.sum().backward()
    # each pixel's grad is the sum of the kernel entries that ever touch it
    np.testing.assert_array_equal(x.grad.data[0, 0], [[1, 3, 2], [4, 10, 6], [3, 7, 4]])
    # dW[i, j] = sum of the input patch seen by kernel entry (i, j)
    np.testing.assert_array_equal(w.grad.data[0, 0], [[8.0, 12.0], [20.0, 24.0]])


@pytest.mark.parametrize("view", ["transposed", "flipped", "strided"])
def test_conv2d_accepts_non_contiguous_inputs(view, rng):
    base = rng.standard_normal((2, 3, 8, 8))
    make = {
        "transposed": lambda a: a.transpose(0, 1, 3, 2),
        "flipped": lambda a: a[:, ::-1, :, ::-1],
        "strided": lambda a: a[:, :, ::2, 1::2],
    }[view]
    x_np, w_np = make(base), make(rng.standard_normal((4, 3, 4, 4)))[:, :, :3, :3]
    x, w = t64(np.zeros(1)), t64(np.zeros(1))
    x.data, w.data = x_np, w_np  # keep the views as they are (the constructor would copy)
    out = F.conv2d(x, w, padding=1, stride=(1, 2))
    ref = naive.conv2d(x_np, w_np, padding=(1, 1), stride=(1, 2))
    np.testing.assert_allclose(out.data, ref, rtol=1e-10, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    out.backward(dout)
    dx, dw_, _ = naive.conv2d_backward(dout, x_np, w_np, padding=(1, 1), stride=(1, 2))
    np.testing.assert_allclose(x.grad.data, dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w.grad.data, dw_, rtol=1e-10, atol=1e-12)


def test_chained_convolutions_match_naive(rng):
    x_np = rng.standard_normal((2, 2, 7, 7))
    w1, w2 = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal((2, 2, 2, 2))
    b1, b2 = rng.standard_normal(4), rng.standard_normal(2)
    x = t64(x_np)
    h = F.conv2d(x, w1, b1, padding=1).relu()
    out = F.conv2d(h, w2, b2, stride=2, groups=2)
    ref_h = np.maximum(naive.conv2d(x_np, w1, b1, padding=(1, 1)), 0)
    ref = naive.conv2d(ref_h, w2, b2, stride=(2, 2), groups=2)
    np.testing.assert_allclose(out.data, ref, rtol=1e-10, atol=1e-12)
    params = [t64(a) for a in (w1, b1, w2, b2)]

    def net(x_, w1_, b1_, w2_, b2_):
        return F.conv2d(F.conv2d(x_, w1_, b1_, padding=1).tanh(), w2_, b2_, stride=2, groups=2)

    assert tc.gradcheck(net, [t64(rng.standard_normal((1, 2, 5, 5))), *params])


def test_conv2d_grads_only_for_inputs_that_require_them(rng):
    x = t64(rng.standard_normal((1, 2, 4, 4)))
    w = t64(rng.standard_normal((3, 2, 3, 3)), requires_grad=False)
    b = t64(rng.standard_normal(3), requires_grad=False)
    F.conv2d(x, w, b).sum().backward()
    assert x.grad is not None and w.grad is None and b.grad is None
    x2 = t64(rng.standard_normal((1, 2, 4, 4)), requires_grad=False)
    w2 = t64(rng.standard_normal((3, 2, 3, 3)))
    dout = rng.standard_normal((1, 3, 2, 2))
    F.conv2d(x2, w2).backward(dout)
    np.testing.assert_allclose(w2.grad.data, naive.conv2d_backward(dout, x2.data, w2.data)[1])


def test_conv2d_leaves_its_inputs_unchanged(rng):
    x_np, w_np = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((2, 1, 3, 3))
    x, w = t64(x_np.copy()), t64(w_np.copy())
    F.conv2d(x, w, padding=2, groups=2).sum().backward()
    np.testing.assert_array_equal(x.data, x_np)
    np.testing.assert_array_equal(w.data, w_np)


@pytest.mark.parametrize("channels", [1, 6])  # offset-major columns (a ones row), pixel-major
@pytest.mark.parametrize("weight_grad", [True, False])
def test_conv2d_bias_grad_summed_in_the_weight_pass_or_on_its_own(rng, channels, weight_grad):
    """db = dout.sum((0, 2, 3)) whether dW's pass sums it (weight needs a grad) or the
    conv2d_grad_bias op sums dout itself (it does not)."""
    x = tc.Tensor(rng.standard_normal((3, channels, 9, 8)).astype(np.float32))
    w = tc.Tensor(rng.standard_normal((5, channels, 3, 3)), requires_grad=weight_grad)
    b = tc.Tensor(rng.standard_normal(5), requires_grad=True)
    y = F.conv2d(x, w, b, padding=1)
    dout = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(dout)
    dx, dw, db = naive.conv2d_backward(dout, x.data, w.data, padding=(1, 1))
    np.testing.assert_allclose(b.grad.data, db, rtol=1e-5, atol=1e-4)
    if weight_grad:
        np.testing.assert_allclose(w.grad.data, dw, rtol=1e-5, atol=1e-4)
    else:
        assert w.grad is None


@pytest.mark.parametrize("block_bytes", [1, 12000, 1 << 20])  # a row, 2 to 4 rows, whole images
@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_blocks_of_image_rows_match_naive(monkeypatch, fast_backend, rng, block_bytes,
                                                 stride):
    """With blocks smaller than one image's columns, the fast backend makes X_col a few output
    rows of one image at a time (forward and dW); the result must not depend on the blocking."""
    from tinygrad_conv.backends.fast import kernels

    monkeypatch.setattr(kernels, "BLOCK_BYTES", block_bytes)
    x_np, w_np = rng.standard_normal((3, 8, 11, 9)), rng.standard_normal((4, 8, 3, 3))
    b_np = rng.standard_normal(4)
    x, w, b = t64(x_np), t64(w_np), t64(b_np)
    y = F.conv2d(x, w, b, stride=stride, padding=1)
    settings = dict(stride=(stride, stride), padding=(1, 1), dilation=(1, 1), groups=1)
    np.testing.assert_allclose(y.data, naive.conv2d(x_np, w_np, b_np, **settings), atol=1e-10)
    dout = rng.standard_normal(y.shape)
    y.backward(dout)
    dx, dw, db = naive.conv2d_backward(dout, x_np, w_np, **settings)
    np.testing.assert_allclose(w.grad.data, dw, atol=1e-10)
    np.testing.assert_allclose(x.grad.data, dx, atol=1e-10)
    np.testing.assert_allclose(b.grad.data, db, atol=1e-10)
