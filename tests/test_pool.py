"""max_pool2d and avg_pool2d against the loop references in tinygrad_conv.naive (forward) and
loop references written here (backward), over kernels, strides (overlapping windows too) and
paddings; finite differences; padding never wins a max; second derivatives; float32."""

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


def _windows(x_shape, kernel, stride, padding):
    """Yield (i, j, rows, cols): output pixel (i, j) and its window in padded coordinates."""
    h, w = x_shape[2] + 2 * padding[0], x_shape[3] + 2 * padding[1]
    for i in range((h - kernel[0]) // stride[0] + 1):
        for j in range((w - kernel[1]) // stride[1] + 1):
            top, left = i * stride[0], j * stride[1]
            yield i, j, slice(top, top + kernel[0]), slice(left, left + kernel[1])


def max_pool_backward_ref(dout, x, kernel, stride, padding):
    """Each window's gradient goes to its maximum; the first one in row-major order on ties."""
    (ph, pw), (n, c, h, w) = padding, x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    dxp = np.zeros(xp.shape)
    for i, j, rows, cols in _windows(x.shape, kernel, stride, padding):
        for b in range(n):
            for ch in range(c):
                a, e = np.unravel_index(np.argmax(xp[b, ch, rows, cols]), kernel)
                dxp[b, ch, rows.start + a, cols.start + e] += dout[b, ch, i, j]
    return dxp[:, :, ph:ph + h, pw:pw + w]


def avg_pool_backward_ref(dout, x, kernel, stride, padding):
    """Each window's gradient, divided by the window size, to every pixel of the window."""
    (ph, pw), (n, c, h, w) = padding, x.shape
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    for i, j, rows, cols in _windows(x.shape, kernel, stride, padding):
        dxp[:, :, rows, cols] += dout[:, :, i, j, None, None] / (kernel[0] * kernel[1])
    return dxp[:, :, ph:ph + h, pw:pw + w]


POOLS = {
    "max": (F.max_pool2d, naive.max_pool2d, max_pool_backward_ref),
    "avg": (F.avg_pool2d, naive.avg_pool2d, avg_pool_backward_ref),
}


@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))  # < kernel: overlapping
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    hw = [max(1, k - 2 * p) + draw(st.integers(0, 4)) for k, p in zip(kernel, padding)]
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *hw)
    return dict(shape=shape, kernel=kernel, stride=stride, padding=padding,
                seed=draw(st.integers(0, 2**16)), ties=draw(st.booleans()))


@pytest.mark.parametrize("kind", list(POOLS))
@given(case=pool_cases())
def test_pool_forward_and_backward_match_references(kind, case):
    fn, ref_forward, ref_backward = POOLS[kind]
    rng = np.random.default_rng(case["seed"])
    if case["ties"]:  # few distinct values: many tied maxima, first one must win
        x_np = rng.integers(-2, 2, case["shape"]).astype(np.float64)
    else:
        x_np = rng.standard_normal(case["shape"])
    k, s, p = case["kernel"], case["stride"], case["padding"]
    x = t64(x_np)
    out = fn(x, k, s, p)
    ref = ref_forward(x_np, k, s, p)
    assert out.shape == ref.shape
    assert out.op.name == f"{kind}_pool2d"
    np.testing.assert_allclose(out.data, ref, rtol=1e-12, atol=1e-15)
    dout = rng.standard_normal(ref.shape)
    out.backward(dout)
    np.testing.assert_allclose(x.grad.data, ref_backward(dout, x_np, k, s, p),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", list(POOLS))
@pytest.mark.parametrize(
    "kernel, stride, padding",
    [(2, None, 0), (3, 1, 1), ((2, 3), (1, 2), (1, 0)), (3, 2, 1), (2, 3, 0)],
    ids=["2", "3-s1-p1", "2x3-s1x2-p1x0", "3-s2-p1", "2-s3"],
)
def test_pool_gradcheck(kind, kernel, stride, padding, rng):
    fn = POOLS[kind][0]
    # distinct values 0.01 apart: a perturbation of 1e-6 never changes a window's winner
    x = t64(rng.permutation(2 * 2 * 5 * 6).reshape(2, 2, 5, 6) / 100.0)
    assert tc.gradcheck(lambda t: fn(t, kernel, stride, padding), [x])


@pytest.mark.parametrize("kind", list(POOLS))
def test_stride_defaults_to_kernel_size(kind, rng):
    fn, ref, _ = POOLS[kind]
    x_np = rng.standard_normal((1, 2, 6, 7))
    out = fn(t64(x_np), 3)
    assert out.shape == (1, 2, 2, 2)
    np.testing.assert_allclose(out.data, ref(x_np, (3, 3), (3, 3)), rtol=1e-12)


def test_max_pool_padding_never_wins():
    rng = np.random.default_rng(0)
    x_np = -1.0 - rng.random((2, 3, 4, 5))  # every value in [-2, -1): padding 0 would win
    x = t64(x_np)
    out = F.max_pool2d(x, 3, stride=1, padding=1)
    assert np.all(out.data < -1.0 + 1e-12)
    np.testing.assert_allclose(out.data, naive.max_pool2d(x_np, (3, 3), (1, 1), (1, 1)))
    # corner window: only the real 2x2 corner competes
    np.testing.assert_allclose(out.data[:, :, 0, 0], x_np[:, :, :2, :2].max(axis=(2, 3)))
    out.sum().backward()
    # every window's gradient lands on a real pixel: nothing is lost to the padding
    np.testing.assert_allclose(x.grad.data.sum(), out.numel())


def test_max_pool_ties_go_to_the_first_maximum():
    x = t64(np.ones((1, 1, 2, 4)))
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad.data[0, 0], [[1, 0, 1, 0], [0, 0, 0, 0]])


def test_max_pool_overlapping_windows_accumulate_on_a_shared_winner():
    x_np = np.zeros((1, 1, 3, 3))
    x_np[0, 0, 1, 1] = 5.0  # the centre is the max of all four 2x2 windows
    x = t64(x_np)
    out = F.max_pool2d(x, 2, stride=1)
    np.testing.assert_array_equal(out.data[0, 0], [[5, 5], [5, 5]])
    out.backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    expected = np.zeros((3, 3))
    expected[1, 1] = 10.0
    np.testing.assert_array_equal(x.grad.data[0, 0], expected)


def test_avg_pool_counts_padding_in_the_average():
    x = t64(np.ones((1, 1, 2, 2)))
    out = F.avg_pool2d(x, 2, stride=1, padding=1)
    # corner windows see one real pixel and three zeros of padding
    np.testing.assert_allclose(out.data[0, 0], [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5],
                                                [0.25, 0.5, 0.25]])
    out.sum().backward()
    np.testing.assert_allclose(x.grad.data, np.ones((1, 1, 2, 2)))  # 4 windows x 1/4 each


@pytest.mark.parametrize("kind", list(POOLS))
def test_pool_float32_stays_float32(kind, rng):
    fn, ref, ref_back = POOLS[kind]
    x_np = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    x = tc.Tensor(x_np, requires_grad=True)
    out = fn(x, 3, 2, 1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, ref(x_np, (3, 3), (2, 2), (1, 1)), rtol=1e-6, atol=1e-6)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    seen = []
    x.register_hook(lambda g: seen.append(g.dtype))
    out.backward(dout)
    assert seen == [np.float32] and x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.data, ref_back(dout, x_np, (3, 3), (2, 2), (1, 1)),
                               rtol=1e-5, atol=1e-6)


def grad_norm(fn, x):
    """||d sum(v * fn(x)) / dx||^2, whose gradient needs fn's second derivatives."""

    def f(x_):
        out = fn(x_)
        v = np.random.default_rng(1).standard_normal(out.shape)
        (out * tc.Tensor(v, dtype=np.float64)).sum().backward(create_graph=True)
        g = x_.grad
        x_.grad = None
        return (g * g).sum()

    return f


@pytest.mark.parametrize(
    "fn",
    [lambda t: F.max_pool2d(t, 2) ** 2, lambda t: F.max_pool2d(t.tanh(), 3, 1, 1) ** 3,
     lambda t: F.avg_pool2d(t, 2) ** 2, lambda t: F.avg_pool2d(t.tanh(), 3, 2, 1) ** 3,
     lambda t: F.avg_pool2d(F.max_pool2d(t, 2, 1) ** 2, 2, 1)],
    ids=["max", "max-overlap-pad", "avg", "avg-overlap-pad", "max-then-avg"],
)
def test_pool_second_derivatives(fn, rng):
    x = t64(rng.permutation(2 * 5 * 5).reshape(1, 2, 5, 5) / 25.0 - 1)
    assert tc.gradcheck(grad_norm(fn, x), [x])


def test_pool_on_conv_output_and_back(rng):
    """Pools reading a conv's output (a strided view, not C-contiguous) still match naive."""
    x_np, w_np = rng.standard_normal((2, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3))
    x, w = t64(x_np), t64(w_np)
    y = F.conv2d(x, w, padding=1)
    out = F.avg_pool2d(F.max_pool2d(y, 2, 1), 2, 2, 1)
    y_ref = naive.conv2d(x_np, w_np, padding=(1, 1))
    ref = naive.avg_pool2d(naive.max_pool2d(y_ref, (2, 2), (1, 1)), (2, 2), (2, 2), (1, 1))
    np.testing.assert_allclose(out.data, ref, rtol=1e-10, atol=1e-12)
    assert tc.gradcheck(lambda a, b: F.avg_pool2d(F.max_pool2d(F.conv2d(a, b, padding=1), 2, 1),
                                                  2, 2, 1),
                        [t64(x_np[:1]), t64(w_np)])


def test_max_pool_2x2_tiles_every_tie_pattern():
    """All 16 patterns of 0/1 in a 2x2 window, plus random values: forward and the first
    maximum taking the gradient, against the loops."""
    patterns = np.array([[(p >> 3) & 1, (p >> 2) & 1, (p >> 1) & 1, p & 1] for p in range(16)])
    tiles = patterns.reshape(16, 2, 2).astype(np.float64)  # (window, 2, 2)
    x_np = np.zeros((2, 16, 4, 6))  # 2 images, each channel one pattern, 2x3 windows
    x_np[0] = np.tile(tiles, (1, 2, 3))
    x_np[1] = np.random.default_rng(7).standard_normal((16, 4, 6))
    x = t64(x_np)
    out = F.max_pool2d(x, 2)
    np.testing.assert_array_equal(out.data, naive.max_pool2d(x_np, (2, 2), (2, 2), (0, 0)))
    dout = np.random.default_rng(8).standard_normal(out.shape)
    out.backward(dout)
    expected = max_pool_backward_ref(dout, x_np, (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(x.grad.data, expected)


def test_max_pool_2x2_tiles_second_derivatives(rng):
    x = t64(rng.permutation(2 * 6 * 4).reshape(1, 2, 6, 4) / 25.0 - 1)
    assert tc.gradcheck(grad_norm(lambda t: F.max_pool2d(t, 2) ** 2, x), [x])
    assert tc.gradcheck(grad_norm(lambda t: F.max_pool2d(t.tanh(), 2) ** 3, x), [x])
