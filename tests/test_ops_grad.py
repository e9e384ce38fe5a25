"""Every op: forward against a NumPy closed form, gradients against finite differences
(tc.gradcheck, float64), plus hand-computed corner cases (kinks, ties, repeats)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_conv as tc
import tinygrad_conv.functional as F


def t64(a, requires_grad=True):
    return tc.Tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad,
                     dtype=np.float64)


def grads_of(fn, *arrays, weights=None):
    """Run fn on float64 leaves and backward sum(weights * out); return (out, grads)."""
    leaves = [t64(a) for a in arrays]
    out = fn(*leaves)
    w = np.ones(out.shape) if weights is None else weights
    (out * tc.Tensor(w, dtype=np.float64)).sum().backward()
    return out, [leaf.grad.data for leaf in leaves]


# ---- binary ops with broadcasting -------------------------------------------------------

BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
    "pow": (lambda a, b: a ** b, np.power),
}

BROADCAST_PAIRS = [((3, 4), (3, 4)), ((3, 4), (4,)), ((4,), (3, 4)), ((2, 1, 4), (3, 1)),
                   ((), (2, 3)), ((2, 3), ()), ((1,), (2, 3)), ((2, 3, 1), (1, 1, 5))]


def _operands(name, sa, sb, rng):
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    if name == "pow":  # positive base so a ** b and its log are defined
        a = np.abs(a) + 0.5
    if name == "div":  # keep the divisor away from 0
        b = np.sign(b) * (np.abs(b) + 0.5) + (b == 0)
    return a, b


@pytest.mark.parametrize("name", list(BINARY))
@pytest.mark.parametrize("sa, sb", BROADCAST_PAIRS)
def test_binary_forward_and_broadcast_gradients(name, sa, sb, rng):
    op, ref = BINARY[name]
    a, b = _operands(name, sa, sb, rng)
    x, y = t64(a), t64(b)
    out = op(x, y)
    assert out.op.name == name and out.dtype == np.float64
    np.testing.assert_allclose(out.data, ref(a, b), rtol=1e-12)
    x.grad = y.grad = None
    assert tc.gradcheck(op, [x, y])
    out.sum().backward()
    assert x.grad.shape == sa and y.grad.shape == sb  # summed back to each input's shape


def test_binary_gradients_closed_form(rng):
    a = rng.standard_normal((2, 3))
    b = np.abs(rng.standard_normal((3,))) + 0.5
    _, (ga, gb) = grads_of(lambda x, y: x * y, a, b)
    np.testing.assert_allclose(ga, np.broadcast_to(b, a.shape))
    np.testing.assert_allclose(gb, a.sum(axis=0))
    _, (ga, gb) = grads_of(lambda x, y: x / y, a, b)
    np.testing.assert_allclose(ga, np.broadcast_to(1 / b, a.shape))
    np.testing.assert_allclose(gb, (-a / b ** 2).sum(axis=0))
    _, (ga, gb) = grads_of(lambda x, y: x - y, a, b)
    np.testing.assert_allclose(ga, np.ones_like(a))
    np.testing.assert_allclose(gb, np.full(3, -2.0))
    base = np.abs(a) + 0.5
    _, (ga, gb) = grads_of(lambda x, y: x ** y, base, b)
    np.testing.assert_allclose(ga, b * base ** (b - 1))
    np.testing.assert_allclose(gb, (base ** b * np.log(base)).sum(axis=0))


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3),
       name=st.sampled_from(list(BINARY)), seed=st.integers(0, 2**16))
def test_binary_broadcasting_property(shapes, name, seed):
    sa, sb = shapes.input_shapes
    op, ref = BINARY[name]
    a, b = _operands(name, sa, sb, np.random.default_rng(seed))
    x, y = t64(a), t64(b)
    out = op(x, y)
    assert out.shape == shapes.result_shape
    np.testing.assert_allclose(out.data, ref(a, b), rtol=1e-12)
    assert tc.gradcheck(op, [x, y])


@pytest.mark.parametrize(
    "fn, ref",
    [(lambda x: x + 2, lambda a: a + 2), (lambda x: 2 + x, lambda a: 2 + a),
     (lambda x: 2 - x, lambda a: 2 - a), (lambda x: x * -1.5, lambda a: a * -1.5),
     (lambda x: 3 / x, lambda a: 3 / a), (lambda x: x / 4, lambda a: a / 4),
     (lambda x: x ** 3, lambda a: a ** 3), (lambda x: x ** 0.5, np.sqrt),
     (lambda x: x ** -1, lambda a: 1 / a), (lambda x: 2 ** x, lambda a: 2 ** a),
     (lambda x: -x, lambda a: -a)],
    ids=["x+2", "2+x", "2-x", "x*-1.5", "3/x", "x/4", "x**3", "x**0.5", "x**-1", "2**x", "-x"],
)
def test_python_scalar_operands(fn, ref, rng):
    a = np.abs(rng.standard_normal((2, 3))) + 0.5
    x = t64(a)
    np.testing.assert_allclose(fn(x).data, ref(a), rtol=1e-12)
    assert tc.gradcheck(fn, [x])


def test_pow_tensor_exponent_at_zero_base_has_zero_exponent_grad():
    base, expo = t64([0.0, 2.0]), t64([2.0, 3.0])
    (base ** expo).sum().backward()
    np.testing.assert_allclose(base.grad.data, [0.0, 12.0])  # b * a**(b-1)
    np.testing.assert_allclose(expo.grad.data, [0.0, 8 * np.log(2.0)])  # a**b * log(a); 0 at a=0


def test_pow_negative_base_with_integer_scalar_exponent():
    x = t64([-2.0, -0.5])
    (x ** 3).sum().backward()
    np.testing.assert_allclose(x.grad.data, [12.0, 0.75])


# ---- unary ops -------------------------------------------------------------------------


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


UNARY = {
    "neg": (lambda x: -x, np.negative, False),
    "exp": (lambda x: x.exp(), np.exp, False),
    "log": (lambda x: x.log(), np.log, True),
    "sqrt": (lambda x: x.sqrt(), np.sqrt, True),
    "abs": (lambda x: x.abs(), np.abs, False),
    "relu": (lambda x: x.relu(), lambda a: np.maximum(a, 0), False),
    "sigmoid": (lambda x: x.sigmoid(), _sigmoid, False),
    "tanh": (lambda x: x.tanh(), np.tanh, False),
    "clip": (lambda x: x.clip(-0.5, 0.7), lambda a: np.minimum(np.maximum(a, -0.5), 0.7), False),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_forward_and_gradcheck(name, rng):
    fn, ref, positive = UNARY[name]
    a = rng.choice([-1.0, 1.0], (3, 4)) * rng.uniform(0.1, 2.0, (3, 4))  # not near 0
    near_bound = (np.abs(a + 0.5) < 0.05) | (np.abs(a - 0.7) < 0.05)
    a = np.where(near_bound, a + 0.2, a)  # nor near clip's bounds
    if positive:
        a = np.abs(a) + 0.1
    x = t64(a)
    out = fn(x)
    assert out.op.name == name and out.shape == a.shape
    np.testing.assert_allclose(out.data, ref(a), rtol=1e-12, atol=1e-15)
    assert tc.gradcheck(fn, [x])


def test_unary_gradients_closed_form(rng):
    a = rng.standard_normal(6)
    for fn, deriv in [
        (lambda x: x.exp(), np.exp), (lambda x: x.tanh(), lambda v: 1 - np.tanh(v) ** 2),
        (lambda x: x.sigmoid(), lambda v: _sigmoid(v) * (1 - _sigmoid(v))),
        (lambda x: x.abs(), np.sign), (lambda x: x.relu(), lambda v: (v > 0) * 1.0),
    ]:
        _, (g,) = grads_of(fn, a)
        np.testing.assert_allclose(g, deriv(a), rtol=1e-12)
    pos = np.abs(a) + 0.1
    _, (g,) = grads_of(lambda x: x.log(), pos)
    np.testing.assert_allclose(g, 1 / pos)
    _, (g,) = grads_of(lambda x: x.sqrt(), pos)
    np.testing.assert_allclose(g, 0.5 / np.sqrt(pos))


def test_relu_and_abs_gradient_at_zero_is_zero():
    _, (g,) = grads_of(lambda x: x.relu(), [-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(g, [0.0, 0.0, 1.0])
    _, (g,) = grads_of(lambda x: F.relu(x), [0.0])
    np.testing.assert_array_equal(g, [0.0])
    _, (g,) = grads_of(lambda x: x.abs(), [-2.0, 0.0, 3.0])
    np.testing.assert_array_equal(g, [-1.0, 0.0, 1.0])


def test_clip_gradient_is_one_inside_and_at_bounds_zero_outside():
    out, (g,) = grads_of(lambda x: x.clip(-1.0, 1.0), [-2.0, -1.0, 0.0, 1.0, 3.0])
    np.testing.assert_array_equal(out.data, [-1.0, -1.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(g, [0.0, 1.0, 1.0, 1.0, 0.0])
    out, (g,) = grads_of(lambda x: x.clip(lo=0.0), [-1.0, 5.0])
    np.testing.assert_array_equal(out.data, [0.0, 5.0])
    np.testing.assert_array_equal(g, [0.0, 1.0])
    out, (g,) = grads_of(lambda x: x.clip(hi=0.0), [-1.0, 5.0])
    np.testing.assert_array_equal(out.data, [-1.0, 0.0])
    np.testing.assert_array_equal(g, [1.0, 0.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_finite_for_large_inputs(dtype):
    a = np.array([-1e4, -800.0, -50.0, 0.0, 50.0, 800.0, 1e4])
    x = tc.Tensor(a, requires_grad=True, dtype=dtype)
    with np.errstate(over="raise", invalid="raise"):
        y = x.sigmoid()
        y.sum().backward()
    assert y.dtype == dtype
    assert np.all(np.isfinite(y.data)) and np.all(np.isfinite(x.grad.data))
    np.testing.assert_array_equal(y.data[[0, 1, 3, 5, 6]], [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(y.data[[2, 4]], [np.exp(-50.0), 1.0], rtol=1e-6)
    np.testing.assert_allclose(x.grad.data[3], 0.25)
    assert np.all(x.grad.data[[0, 1, 5, 6]] == 0)


def test_tanh_saturates_without_nan():
    x = t64([-1e3, 1e3])
    y = x.tanh()
    y.sum().backward()
    np.testing.assert_array_equal(y.data, [-1.0, 1.0])
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.0])


# ---- reductions ------------------------------------------------------------------------

REDUCTIONS = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min}
AXES = [None, 0, 1, -1, (0, 2), (0, 1, 2), ()]


@pytest.mark.parametrize("name", list(REDUCTIONS))
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions_forward_and_gradcheck(name, axis, keepdims, rng):
    a = rng.permutation(24).reshape(2, 3, 4) / 7.0  # distinct values: no ties for max/min
    x = t64(a)

    def fn(t):
        return getattr(t, {"max": "amax", "min": "amin"}.get(name, name))(axis, keepdims=keepdims)

    out = fn(x)
    ref = REDUCTIONS[name](a, axis=axis, keepdims=keepdims)
    assert out.shape == np.shape(ref)
    np.testing.assert_allclose(out.data, ref, rtol=1e-12)
    assert tc.gradcheck(fn, [x])


def test_sum_and_mean_gradients_closed_form(rng):
    a = rng.standard_normal((2, 3, 4))
    w = rng.standard_normal((2, 4))
    _, (g,) = grads_of(lambda t: t.sum(1), a, weights=w)
    np.testing.assert_allclose(g, np.broadcast_to(w[:, None, :], a.shape))
    _, (g,) = grads_of(lambda t: t.mean(1), a, weights=w)
    np.testing.assert_allclose(g, np.broadcast_to(w[:, None, :], a.shape) / 3)
    _, (g,) = grads_of(lambda t: t.mean(), a)
    np.testing.assert_allclose(g, np.full(a.shape, 1 / 24))


def test_max_min_ties_split_the_gradient_evenly():
    a = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    _, (g,) = grads_of(lambda t: t.amax(axis=1), a)
    np.testing.assert_allclose(g, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    _, (g,) = grads_of(lambda t: t.max(), a)
    np.testing.assert_allclose(g, [[0, 0.5, 0.5], [0, 0, 0]])
    _, (g,) = grads_of(lambda t: t.amin(axis=0, keepdims=True), a)
    np.testing.assert_allclose(g, [[1, 0, 0], [0, 1, 1]])
    _, (g,) = grads_of(lambda t: t.min(), a)
    np.testing.assert_allclose(g, [[1, 0, 0], [0, 0, 0]])
    _, (g,) = grads_of(lambda t: t.max(axis=(0, 1)), np.full((2, 2), 5.0))
    np.testing.assert_allclose(g, np.full((2, 2), 0.25))


# ---- movement ops ----------------------------------------------------------------------

MOVEMENT = [
    ("reshape", lambda t: t.reshape(4, 6), lambda a: a.reshape(4, 6)),
    ("reshape-1", lambda t: t.reshape(-1, 3), lambda a: a.reshape(-1, 3)),
    ("reshape-tuple", lambda t: t.reshape((24,)), lambda a: a.reshape(24)),
    ("view", lambda t: t.view(2, 12), lambda a: a.reshape(2, 12)),
    ("permute", lambda t: t.permute(2, 0, 1), lambda a: a.transpose(2, 0, 1)),
    ("permute-tuple", lambda t: t.permute((1, 2, 0)), lambda a: a.transpose(1, 2, 0)),
    ("transpose", lambda t: t.transpose(0, 2), lambda a: np.swapaxes(a, 0, 2)),
    ("transpose-neg", lambda t: t.transpose(-1, -2), lambda a: np.swapaxes(a, -1, -2)),
    ("T", lambda t: t.T, lambda a: a.T),
    ("flatten", lambda t: t.flatten(), lambda a: a.reshape(-1)),
    ("flatten-1", lambda t: t.flatten(1), lambda a: a.reshape(2, -1)),
    ("flatten-0-1", lambda t: t.flatten(0, 1), lambda a: a.reshape(6, 4)),
    ("unsqueeze", lambda t: t.unsqueeze(1), lambda a: a[:, None]),
    ("unsqueeze-neg", lambda t: t.unsqueeze(-1), lambda a: a[..., None]),
    ("expand", lambda t: t.unsqueeze(0).expand(5, 2, 3, 4),
     lambda a: np.broadcast_to(a, (5, 2, 3, 4))),
    ("expand-1", lambda t: t[:, :1].expand(-1, 3, -1), lambda a: np.repeat(a[:, :1], 3, 1)),
]


@pytest.mark.parametrize("fn, ref", [m[1:] for m in MOVEMENT], ids=[m[0] for m in MOVEMENT])
def test_movement_forward_and_gradcheck(fn, ref, rng):
    a = rng.standard_normal((2, 3, 4))
    x = t64(a)
    out = fn(x)
    np.testing.assert_array_equal(out.data, ref(a))
    assert tc.gradcheck(fn, [x])


def test_squeeze():
    a = np.arange(6.0).reshape(1, 2, 1, 3)
    x = t64(a)
    assert x.squeeze().shape == (2, 3)
    assert x.squeeze(0).shape == (2, 1, 3)
    assert x.squeeze(2).shape == (1, 2, 3)
    assert x.squeeze(-2).shape == (1, 2, 3)
    assert x.squeeze(1) is x  # size 2: nothing to squeeze, as torch
    assert tc.gradcheck(lambda t: t.squeeze() * 2, [x])


def test_expand_gradient_sums_over_the_broadcast():
    w = np.arange(12.0).reshape(4, 3)
    _, (g,) = grads_of(lambda t: t.expand(4, 3), [[1.0, 2.0, 3.0]], weights=w)
    np.testing.assert_array_equal(g, w.sum(axis=0, keepdims=True))


# ---- indexing --------------------------------------------------------------------------

INDICES = [
    ("int", 1), ("neg-int", -1), ("slice", slice(1, 3)), ("step", slice(None, None, -2)),
    ("tuple", (slice(None), 2)), ("ellipsis", (Ellipsis, 1)), ("newaxis", (None, 0)),
    ("int-array-repeats", np.array([0, 2, 2, 0, 0])), ("list", [3, 3, 1]),
    ("2d-int-array", np.array([[0, 1], [1, 1]])),
    ("bool-mask-rows", np.array([True, False, True, True])),
    ("pair-of-arrays", (np.array([0, 0, 3]), np.array([1, 1, 2]))),
    ("array-and-slice", (slice(1, None), np.array([2, 0, 2]))),
    ("bool-mask-full", np.arange(12).reshape(4, 3) % 3 == 0),
]


@pytest.mark.parametrize("index", [i[1] for i in INDICES], ids=[i[0] for i in INDICES])
def test_indexing_forward_and_gradcheck(index, rng):
    a = rng.standard_normal((4, 3))
    x = t64(a)
    out = x[index]
    np.testing.assert_array_equal(out.data, a[index])
    assert out.op.name == "getitem"
    assert tc.gradcheck(lambda t: t[index], [x])


def test_integer_array_index_with_repeats_accumulates():
    _, (g,) = grads_of(lambda t: t[[0, 0, 2, 0]], [10.0, 20.0, 30.0])
    np.testing.assert_array_equal(g, [3.0, 0.0, 1.0])
    w = np.array([1.0, 2.0, 4.0])
    _, (g,) = grads_of(lambda t: t[np.array([1, 1, 1])], [10.0, 20.0, 30.0], weights=w)
    np.testing.assert_array_equal(g, [0.0, 7.0, 0.0])


def test_integer_tensor_index():
    a = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    idx = tc.Tensor([2, 0, 2])
    out, (g,) = grads_of(lambda t: t[idx], a)
    np.testing.assert_array_equal(out.data, a[[2, 0, 2]])
    np.testing.assert_array_equal(g, [[1.0, 1.0], [0.0, 0.0], [2.0, 2.0]])


def test_boolean_mask_from_a_comparison():
    a = np.array([[1.0, -2.0, 3.0], [-4.0, 5.0, 0.0]])
    x = t64(a)
    out = x[x > 0]
    np.testing.assert_array_equal(out.data, [1.0, 3.0, 5.0])
    (out * tc.Tensor([10.0, 20.0, 30.0], dtype=np.float64)).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [[10.0, 0.0, 20.0], [0.0, 30.0, 0.0]])


def test_slice_gradient_is_zero_outside_and_basic_slices_sum():
    out, (g,) = grads_of(lambda t: t[1:3] * 2 + t[3:], np.arange(5.0))
    np.testing.assert_array_equal(out.data, [2 * 1 + 3, 2 * 2 + 4])
    np.testing.assert_array_equal(g, [0.0, 2.0, 2.0, 1.0, 1.0])


# ---- cat / stack / pad -----------------------------------------------------------------


def test_cat_stack_gradcheck(rng):
    a, b, c = (t64(rng.standard_normal(s)) for s in ((2, 3), (2, 1), (2, 2)))
    assert tc.gradcheck(lambda p, q, r: tc.cat([p, q, r], axis=1), [a, b, c])
    assert tc.gradcheck(lambda p, q: tc.cat([p, q], axis=-1) ** 2, [a, b])
    d = t64(rng.standard_normal((2, 3)))
    assert tc.gradcheck(lambda p, q: tc.stack([p, q], axis=1), [a, d])
    assert tc.gradcheck(lambda p, q: tc.stack([p, q * p]), [a, d])


@pytest.mark.parametrize(
    "pad_width, value",
    [(((1, 2), (0, 3)), 0), (((0, 0), (2, 2)), -1.5), (1, 0.0), ((2, 1), 7)],
)
def test_pad_forward_and_gradcheck(pad_width, value, rng):
    a = rng.standard_normal((2, 3))
    x = t64(a)
    out = F.pad(x, pad_width, value=value)
    np.testing.assert_array_equal(out.data, np.pad(a, pad_width, constant_values=value))
    assert out.op.name == "pad"
    assert tc.gradcheck(lambda t: F.pad(t, pad_width, value), [x])
    _, (g,) = grads_of(lambda t: F.pad(t, pad_width, value), a)
    np.testing.assert_array_equal(g, np.ones_like(a))


# ---- matmul / linear -------------------------------------------------------------------

MATMUL_SHAPES = [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                 ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
                 ((2, 3, 4), (2, 4, 1)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,))]


@pytest.mark.parametrize("sa, sb", MATMUL_SHAPES, ids=str)
def test_matmul_forward_and_gradcheck(sa, sb, rng):
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    x, y = t64(a), t64(b)
    out = x @ y
    ref = np.matmul(a, b)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.data, ref, rtol=1e-12)
    assert tc.gradcheck(lambda p, q: p @ q, [x, y])
    x.grad = y.grad = None
    out.sum().backward()
    assert x.grad.shape == sa and y.grad.shape == sb


def test_matmul_gradients_closed_form(rng):
    a, b, w = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal((3, 2))
    _, (ga, gb) = grads_of(lambda p, q: p @ q, a, b, weights=w)
    np.testing.assert_allclose(ga, w @ b.T)
    np.testing.assert_allclose(gb, a.T @ w)


@pytest.mark.parametrize("xshape", [(5, 3), (3,), (2, 4, 3)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward_and_gradcheck(xshape, bias, rng):
    a, w, b = rng.standard_normal(xshape), rng.standard_normal((4, 3)), rng.standard_normal(4)
    x, wt, bt = t64(a), t64(w), t64(b)
    out = F.linear(x, wt, bt if bias else None)
    np.testing.assert_allclose(out.data, a @ w.T + (b if bias else 0), rtol=1e-12)
    if bias:
        assert tc.gradcheck(F.linear, [x, wt, bt])
    else:
        assert tc.gradcheck(F.linear, [x, wt])


def test_linear_grad_weight_op_and_its_own_gradients(rng):
    """linear_grad_weight(g, x) = g.T @ x, and its backward (x @ u.T, g @ u) by gradcheck."""
    from tinygrad_conv.ops.linalg import LinearGradWeight

    g, x = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    out = LinearGradWeight().apply(t64(g), t64(x))
    np.testing.assert_allclose(out.data, g.T @ x, rtol=1e-12)
    assert tc.gradcheck(lambda a, b: LinearGradWeight().apply(a, b), [t64(g), t64(x)])


def test_linear_second_derivative_with_batch_dims(rng):
    """Linear on (2, 4, 3) input: its backward reshapes to rows, so check d(grad)/d(inputs)."""
    a, w, b = (t64(rng.standard_normal(s)) for s in ((2, 4, 3), (5, 3), (5,)))

    def grad_norm(a, w, b):
        v = tc.Tensor(np.random.default_rng(1).standard_normal((2, 4, 5)), dtype=np.float64)
        (F.linear(a, w, b).tanh() * v).sum().backward(create_graph=True)
        grads = [t.grad for t in (a, w, b)]
        for t in (a, w, b):
            t.grad = None
        return sum((gr * gr).sum() for gr in grads)

    assert tc.gradcheck(grad_norm, [a, w, b])


def test_linear_gradients_closed_form(rng):
    a, w, b = rng.standard_normal((5, 3)), rng.standard_normal((4, 3)), rng.standard_normal(4)
    g = rng.standard_normal((5, 4))
    _, (ga, gw, gb) = grads_of(F.linear, a, w, b, weights=g)
    np.testing.assert_allclose(ga, g @ w)
    np.testing.assert_allclose(gw, g.T @ a)
    np.testing.assert_allclose(gb, g.sum(0))


# ---- softmax / log_softmax -------------------------------------------------------------


def _softmax_ref(a, axis):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_and_log_softmax(axis, rng):
    a = rng.standard_normal((3, 4)) * 3
    x = t64(a)
    sm = F.softmax(x, axis=axis)
    np.testing.assert_allclose(sm.data, _softmax_ref(a, axis), rtol=1e-12)
    np.testing.assert_allclose(sm.data.sum(axis=axis), 1.0)
    np.testing.assert_allclose(F.log_softmax(x, axis).data, np.log(_softmax_ref(a, axis)),
                               rtol=1e-12)
    assert tc.gradcheck(lambda t: F.softmax(t, axis), [x])
    assert tc.gradcheck(lambda t: F.log_softmax(t, axis), [x])


def test_softmax_gradient_closed_form(rng):
    a, w = rng.standard_normal(4), rng.standard_normal(4)
    s = _softmax_ref(a, 0)
    jacobian = np.diag(s) - np.outer(s, s)
    _, (g,) = grads_of(lambda t: F.softmax(t, 0), a, weights=w)
    np.testing.assert_allclose(g, jacobian.T @ w)
    _, (g,) = grads_of(lambda t: F.log_softmax(t, 0), a, weights=w)
    np.testing.assert_allclose(g, w - s * w.sum())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_large_logits_stay_finite(dtype):
    x = tc.Tensor([[1e4, 0.0, -1e4], [1e4, 1e4, 0.0]], requires_grad=True, dtype=dtype)
    sm = F.softmax(x, axis=1)
    np.testing.assert_allclose(sm.data, [[1, 0, 0], [0.5, 0.5, 0]], atol=1e-7)
    ls = F.log_softmax(x, axis=1)
    log2 = np.log(2)
    np.testing.assert_allclose(ls.data, [[0, -1e4, -2e4], [-log2, -log2, -1e4 - log2]], rtol=1e-6)
    ls.sum().backward()
    assert np.all(np.isfinite(x.grad.data))


# ---- dropout ---------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_keeps_about_one_minus_p_and_scales(p):
    tc.manual_seed(7)
    x = tc.Tensor(np.linspace(1.0, 2.0, 20000), requires_grad=True)
    out = F.dropout(x, p=p)
    kept = out.data != 0
    # 20000 Bernoulli draws: the kept fraction is within 4 standard deviations of 1 - p
    assert abs(kept.mean() - (1 - p)) < 4 * np.sqrt(p * (1 - p) / kept.size)
    np.testing.assert_allclose(out.data[kept], x.data[kept] / (1 - p), rtol=1e-6)
    w = np.random.default_rng(0).standard_normal(x.shape)
    (out * w).sum().backward()
    np.testing.assert_allclose(x.grad.data, w * kept / (1 - p), rtol=1e-6)


def test_dropout_is_seeded_and_eval_is_identity():
    x = tc.ones(1000)
    tc.manual_seed(3)
    first = F.dropout(x, 0.5).data
    tc.manual_seed(3)
    np.testing.assert_array_equal(F.dropout(x, 0.5).data, first)
    assert not np.array_equal(F.dropout(x, 0.5).data, first)
    assert F.dropout(x, 0.5, training=False) is x
    np.testing.assert_array_equal(F.dropout(x, 0.0).data, x.data)
    np.testing.assert_array_equal(F.dropout(x, 1.0).data, np.zeros(1000))


# ---- batch_norm ------------------------------------------------------------------------


def test_batch_norm_training_normalises_with_biased_batch_variance(rng):
    a = rng.standard_normal((4, 3, 2, 5)) * 2 + 1
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = np.array([0.5, -1.0, 2.0]), np.array([1.0, 2.0, 0.5])
    rm0, rv0 = rm.copy(), rv.copy()
    x = t64(a)
    out = F.batch_norm(x, rm, rv, t64(gamma), t64(beta), training=True, momentum=0.3, eps=1e-5)
    mean = a.mean(axis=(0, 2, 3))
    var = a.var(axis=(0, 2, 3))  # biased (ddof=0) for normalising
    shape = (1, 3, 1, 1)
    ref = (a - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + 1e-5)
    np.testing.assert_allclose(out.data, ref * gamma.reshape(shape) + beta.reshape(shape),
                               rtol=1e-10)
    # PyTorch: running = (1 - momentum) * running + momentum * batch stat, var unbiased
    n = a.size // 3
    np.testing.assert_allclose(rm, 0.7 * rm0 + 0.3 * mean)
    np.testing.assert_allclose(rv, 0.7 * rv0 + 0.3 * var * n / (n - 1))
    np.testing.assert_allclose(rv, 0.7 * rv0 + 0.3 * a.var(axis=(0, 2, 3), ddof=1))


def test_batch_norm_running_stats_in_tensors_update_in_place(rng):
    a = rng.standard_normal((6, 2))
    rm, rv = tc.zeros(2, dtype=np.float64), tc.ones(2, dtype=np.float64)
    F.batch_norm(t64(a, requires_grad=False), rm, rv, training=True)
    np.testing.assert_allclose(rm.data, 0.1 * a.mean(0))
    np.testing.assert_allclose(rv.data, 0.9 + 0.1 * a.var(0, ddof=1))


def test_batch_norm_eval_uses_running_stats(rng):
    a = rng.standard_normal((3, 2, 2, 2))
    rm, rv = np.array([0.3, -0.2]), np.array([2.0, 0.5])
    gamma, beta = np.array([1.5, -1.0]), np.array([0.1, 0.2])
    out = F.batch_norm(t64(a), rm.copy(), rv.copy(), t64(gamma), t64(beta), training=False)
    s = (1, 2, 1, 1)
    ref = (a - rm.reshape(s)) / np.sqrt(rv.reshape(s) + 1e-5) * gamma.reshape(s) + beta.reshape(s)
    np.testing.assert_allclose(out.data, ref, rtol=1e-10)


def test_batch_norm_gradcheck(rng):
    a = rng.standard_normal((4, 2, 3, 3))
    gamma, beta = rng.standard_normal(2), rng.standard_normal(2)

    def train(x, g, b):
        return F.batch_norm(x, None, None, g, b, training=True)

    def evaluate(x, g, b):
        return F.batch_norm(x, np.array([0.1, -0.3]), np.array([1.5, 0.7]), g, b,
                            training=False)

    assert tc.gradcheck(train, [t64(a), t64(gamma), t64(beta)])
    assert tc.gradcheck(evaluate, [t64(a), t64(gamma), t64(beta)])


def test_batch_norm_training_gradient_closed_form(rng):
    # for y = (x - mean) / sqrt(var + eps) per channel, dL/dx =
    # (g - mean(g) - y * mean(g * y)) / sqrt(var + eps)
    a, w = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    out, (g,) = grads_of(lambda x: F.batch_norm(x, None, None, training=True), a, weights=w)
    y = out.data
    ref = (w - w.mean(0) - y * (w * y).mean(0)) / np.sqrt(a.var(0) + 1e-5)
    np.testing.assert_allclose(g, ref, rtol=1e-8)


@pytest.mark.parametrize("axes,keepdims", [((0, 2, 3), False), ((0, 2, 3), True), ((0,), False),
                                           ((0, 1, 2, 3), False), ((1,), False)])
def test_large_sums_over_outer_memory_axes_match_float64(fast_backend, axes, keepdims):
    """Big float32 sums whose kept axes are innermost in memory go through a GEMV in the fast
    backend (conv's bias gradient on channels-last memory); every layout must give np.sum's
    answer."""
    from tinygrad_conv.backends.fast import kernels as reduce

    rng = np.random.default_rng(5)
    nhwc = rng.standard_normal((16, 12, 12, 24)).astype(np.float32)
    for data in (nhwc.transpose(0, 3, 1, 2), np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))):
        assert data.size >= reduce.ROW_SUM_MIN_ELEMENTS
        out = tc.Tensor(data).sum(axes, keepdims=keepdims)
        expected = data.astype(np.float64).sum(axes, keepdims=keepdims)
        assert out.dtype == np.float32 and out.shape == expected.shape
        np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-3)
