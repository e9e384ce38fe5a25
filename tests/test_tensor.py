"""The Tensor API: construction and dtype rules, attributes, conversions, comparisons,
operators with arrays and numbers, factories, seeding, cat/stack and the dim=/axis= aliases."""

import numpy as np
import pytest

import tinygrad_conv as tc
import tinygrad_conv.functional as F

# ---- construction and dtype rules ------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [1.5, [1.0, 2.0], [[1.0], [2.5]], np.array([1.0, 2.0]), np.array([1.0], dtype=np.float16)],
    ids=["py-float", "list", "nested-list", "float64-array", "float16-array"],
)
def test_float_data_becomes_float32(data):
    t = tc.Tensor(data)
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t.data, np.asarray(data, dtype=np.float32))


def test_dtype_float64_is_kept_when_asked():
    t = tc.Tensor([0.1, 0.2], dtype=np.float64)
    assert t.dtype == np.float64
    assert t.data[0] == 0.1  # exactly the float64 value, never rounded through float32
    assert tc.Tensor(np.array([0.1]), dtype=np.float64).dtype == np.float64


@pytest.mark.parametrize(
    "data, kind",
    [(3, "i"), ([1, 2, 3], "i"), (np.array([1, 2], dtype=np.int32), "i"),
     (np.array([1], dtype=np.uint8), "u"), ([True, False], "b")],
)
def test_integer_and_bool_data_stay_as_they_are(data, kind):
    t = tc.Tensor(data)
    assert t.dtype.kind == kind
    if isinstance(data, np.ndarray):
        assert t.dtype == data.dtype
    np.testing.assert_array_equal(t.data, np.asarray(data))


def test_requires_grad_on_integer_data_raises():
    with pytest.raises(RuntimeError, match="floating-point"):
        tc.Tensor([1, 2], requires_grad=True)
    with pytest.raises(RuntimeError, match="int64"):
        tc.Tensor([1, 2]).requires_grad_()


def test_constructor_copies_its_input():
    arr = np.array([1.0, 2.0], dtype=np.float32)
    t = tc.Tensor(arr)
    arr[0] = 100.0
    assert t.data[0] == 1.0
    u = tc.Tensor(t)
    t.data[1] = -5.0
    assert u.data[1] == 2.0


def test_tensor_function_is_the_constructor():
    t = tc.tensor([1.0, 2.0], requires_grad=True, dtype=np.float64)
    assert isinstance(t, tc.Tensor)
    assert t.requires_grad and t.dtype == np.float64
    np.testing.assert_array_equal(t.data, [1.0, 2.0])


def test_non_numeric_data_is_rejected():
    with pytest.raises(TypeError, match="Tensor"):
        tc.Tensor(["a", "b"])


# ---- attributes and conversions --------------------------------------------------------


def test_attributes():
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    t = tc.Tensor(arr)
    assert isinstance(t.data, np.ndarray)
    assert t.grad is None and t.requires_grad is False
    assert t.shape == (2, 3, 4) and isinstance(t.shape, tuple)
    assert t.ndim == 3
    assert isinstance(t.dtype, np.dtype) and t.dtype == np.float32
    assert t.numel() == 24 and t.size() == (2, 3, 4) and t.size(-1) == 4 and t.dim() == 3
    assert len(t) == 2
    assert t.op is None and t.parents == () and t.is_leaf


def test_len_of_0d_tensor_raises():
    with pytest.raises(TypeError, match="0-d"):
        len(tc.Tensor(1.0))


def test_numpy_conversions():
    arr = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    t = tc.Tensor(arr)
    np.testing.assert_array_equal(np.asarray(t), arr)
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    assert np.shares_memory(t.numpy(), t.data)  # numpy() shares, as torch's does
    assert t.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert tc.Tensor([[2.5]]).item() == 2.5
    assert isinstance(tc.Tensor([7]).item(), int)
    with pytest.raises(RuntimeError, match=r"\(2, 2\)"):
        t.item()


def test_op_results_hold_ndarrays_even_for_scalars():
    x = tc.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    for t in (x.sum(), x.mean(), x.max(), x[0], F.mse_loss(x, tc.zeros(3))):
        assert isinstance(t.data, np.ndarray) and t.shape == ()
        assert isinstance(t.numpy(), np.ndarray)


def test_repr_shows_values_dtype_and_graph():
    assert repr(tc.Tensor([1.0, 2.5])) == "tensor([1. , 2.5])"
    leaf = tc.Tensor([1.0], requires_grad=True)
    assert "requires_grad=True" in repr(leaf)
    assert "op=mul" in repr(leaf * 2)
    assert "dtype=float64" in repr(tc.Tensor([1.0], dtype=np.float64))
    assert "dtype=int64" in repr(tc.Tensor([1, 2]))


def test_bool_of_one_element_and_ambiguity():
    assert bool(tc.Tensor([3.0]) > 2)
    assert not bool(tc.Tensor(0.0))
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(tc.Tensor([1.0, 2.0]))


def test_astype_float_double():
    x = tc.Tensor([1.5, 2.5], requires_grad=True)
    y = x.double()
    assert y.dtype == np.float64 and y.op.name == "cast"
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.data, [3.0, 5.0])
    assert y.float().dtype == np.float32
    assert x.astype(np.float32) is x


# ---- comparisons -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, ref",
    [("__eq__", np.equal), ("__ne__", np.not_equal), ("__lt__", np.less),
     ("__le__", np.less_equal), ("__gt__", np.greater), ("__ge__", np.greater_equal)],
)
def test_comparisons_give_bool_tensors_without_grad(name, ref):
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], dtype=np.float32)
    b = np.array([2.0, 2.0, 2.0], dtype=np.float32)
    x = tc.Tensor(a, requires_grad=True)
    for other, other_ref in ((tc.Tensor(b), b), (b, b), (2.0, 2.0)):
        out = getattr(x, name)(other)
        assert out.dtype == np.bool_
        assert out.requires_grad is False and out.op is None
        np.testing.assert_array_equal(out.data, ref(a, other_ref))


def test_tensors_hash_by_identity():
    a, b = tc.Tensor([1.0]), tc.Tensor([1.0])
    assert len({a, b}) == 2
    assert {a: 1}[a] == 1


# ---- operators with arrays and Python numbers on either side -----------------------------


def test_operators_with_numbers_and_arrays_on_either_side():
    a = np.array([[1.0, 2.0], [4.0, 0.5]], dtype=np.float32)
    arr = np.array([2.0, 3.0], dtype=np.float32)
    x = tc.Tensor(a)
    cases = [
        (x + 2, a + 2), (2 + x, 2 + a), (x - 2, a - 2), (2 - x, 2 - a),
        (x * 3, a * 3), (3 * x, 3 * a), (x / 4, a / 4), (4 / x, 4 / a),
        (x ** 2, a ** 2), (2 ** x, 2 ** a), (-x, -a),
        (arr + x, arr + a), (x - arr, a - arr), (arr - x, arr - a), (arr / x, arr / a),
        (arr * x, arr * a), (arr ** x, arr ** a),
        (x @ arr, a @ arr), (arr @ x, arr @ a),
    ]
    for out, ref in cases:
        assert isinstance(out, tc.Tensor)
        np.testing.assert_allclose(out.data, ref, rtol=1e-6)


# ---- argmax / argmin -------------------------------------------------------------------


def test_argmax_argmin_match_numpy_and_carry_no_grad(rng):
    a = rng.standard_normal((3, 5))
    x = tc.Tensor(a, requires_grad=True)
    for axis in (None, 0, 1, -1):
        am = x.argmax(axis)
        assert am.requires_grad is False and am.op is None
        np.testing.assert_array_equal(am.data, np.argmax(a, axis=axis))
        np.testing.assert_array_equal(x.argmin(axis).data, np.argmin(a, axis=axis))
    np.testing.assert_array_equal(x.argmax(dim=1).data, np.argmax(a, axis=1))


# ---- factories -------------------------------------------------------------------------


@pytest.mark.parametrize("factory, value", [(tc.zeros, 0.0), (tc.ones, 1.0)])
def test_zeros_ones(factory, value):
    for t in (factory(2, 3), factory((2, 3)), factory([2, 3])):
        assert t.shape == (2, 3) and t.dtype == np.float32
        assert np.all(t.data == value)
        assert t.requires_grad is False
    t = factory(4, requires_grad=True, dtype=np.float64)
    assert t.shape == (4,) and t.dtype == np.float64 and t.requires_grad
    assert factory(2, dtype=np.int64).dtype == np.int64


@pytest.mark.parametrize("factory, value", [(tc.zeros_like, 0.0), (tc.ones_like, 1.0)])
def test_zeros_ones_like(factory, value):
    src = tc.Tensor(np.full((2, 5), 7.0), dtype=np.float64)
    t = factory(src)
    assert t.shape == (2, 5) and t.dtype == np.float64 and np.all(t.data == value)
    assert factory(np.zeros((3,), dtype=np.int32)).dtype == np.int32
    t = factory(src, requires_grad=True, dtype=np.float32)
    assert t.dtype == np.float32 and t.requires_grad


def test_randn_rand_shapes_dtypes_and_ranges():
    tc.manual_seed(0)
    n = tc.randn(200, 100)
    assert n.shape == (200, 100) and n.dtype == np.float32
    assert abs(float(n.data.mean())) < 0.02 and abs(float(n.data.std()) - 1) < 0.02
    u = tc.rand(200, 100)
    assert u.dtype == np.float32 and u.data.min() >= 0 and u.data.max() < 1
    assert abs(float(u.data.mean()) - 0.5) < 0.01
    t = tc.randn((3, 2), requires_grad=True, dtype=np.float64)
    assert t.shape == (3, 2) and t.dtype == np.float64 and t.requires_grad
    assert tc.rand(4, requires_grad=True).requires_grad


def test_arange():
    t = tc.arange(5)
    assert t.dtype.kind == "i"
    np.testing.assert_array_equal(t.data, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(tc.arange(2, 8, 3).data, [2, 5])
    f = tc.arange(0.0, 1.0, 0.25)
    assert f.dtype == np.float32
    np.testing.assert_array_equal(f.data, [0.0, 0.25, 0.5, 0.75])
    g = tc.arange(3, dtype=np.float64, requires_grad=True)
    assert g.dtype == np.float64 and g.requires_grad


def test_manual_seed_reproducible():
    tc.manual_seed(42)
    a, b = tc.randn(5).data, tc.rand(5).data
    tc.manual_seed(42)
    np.testing.assert_array_equal(tc.randn(5).data, a)
    np.testing.assert_array_equal(tc.rand(5).data, b)
    tc.manual_seed(43)
    assert not np.array_equal(tc.randn(5).data, a)


def test_manual_seed_rejects_non_int():
    with pytest.raises(TypeError, match="manual_seed"):
        tc.manual_seed(1.5)


# ---- cat / stack -----------------------------------------------------------------------


def test_cat_and_stack_values(rng):
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    ta, tb = tc.Tensor(a, dtype=np.float64), tc.Tensor(b, dtype=np.float64)
    for axis in (0, 1, -1):
        np.testing.assert_array_equal(tc.cat([ta, tb], axis).data, np.concatenate([a, b], axis))
    for axis in (0, 1, 2, -1):
        np.testing.assert_array_equal(tc.stack([ta, tb], axis).data, np.stack([a, b], axis))
    c = tc.cat([ta, tc.Tensor(np.ones((1, 3)), dtype=np.float64)])
    np.testing.assert_array_equal(c.data, np.concatenate([a, np.ones((1, 3))]))


def test_cat_and_stack_gradients_route_to_each_input():
    a = tc.Tensor([[1.0, 2.0]], requires_grad=True)
    b = tc.Tensor([[3.0, 4.0], [5.0, 6.0]], requires_grad=True)
    weights = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    (tc.cat([a, b]) * weights).sum().backward()
    np.testing.assert_array_equal(a.grad.data, [[1.0, 2.0]])
    np.testing.assert_array_equal(b.grad.data, [[3.0, 4.0], [5.0, 6.0]])
    c, d = tc.Tensor([1.0, 2.0], requires_grad=True), tc.Tensor([3.0, 4.0], requires_grad=True)
    (tc.stack([c, d], axis=1) * np.array([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    np.testing.assert_array_equal(c.grad.data, [1.0, 3.0])
    np.testing.assert_array_equal(d.grad.data, [2.0, 4.0])


def test_cat_only_grads_for_inputs_that_require_them():
    a = tc.Tensor([1.0, 2.0], requires_grad=True)
    b = tc.Tensor([3.0])
    (tc.cat([a, b]) * 2).sum().backward()
    np.testing.assert_array_equal(a.grad.data, [2.0, 2.0])
    assert b.grad is None


# ---- dim= and axis= are both accepted --------------------------------------------------


def test_dim_and_axis_are_both_accepted(rng):
    a = rng.standard_normal((2, 3, 1))
    x = tc.Tensor(a, dtype=np.float64)
    for name, ref in (("sum", np.sum), ("mean", np.mean), ("amax", np.max), ("amin", np.min)):
        by_axis = getattr(x, name)(axis=1, keepdims=True)
        by_dim = getattr(x, name)(dim=1, keepdim=True)
        np.testing.assert_allclose(by_axis.data, ref(a, axis=1, keepdims=True))
        np.testing.assert_allclose(by_dim.data, by_axis.data)
    np.testing.assert_array_equal(x.argmax(axis=0).data, x.argmax(dim=0).data)
    np.testing.assert_allclose(F.softmax(x, dim=0).data, F.softmax(x, axis=0).data)
    np.testing.assert_allclose(F.log_softmax(x, dim=1).data, F.log_softmax(x, axis=1).data)
    assert tc.cat([x, x], dim=1).shape == tc.cat([x, x], axis=1).shape == (2, 6, 1)
    assert tc.stack([x, x], dim=2).shape == tc.stack([x, x], axis=2).shape == (2, 3, 2, 1)
    assert x.squeeze(dim=2).shape == x.squeeze(axis=2).shape == (2, 3)
    assert x.unsqueeze(dim=0).shape == x.unsqueeze(axis=0).shape == (1, 2, 3, 1)


def test_passing_both_dim_and_axis_raises():
    x = tc.ones(2, 3)
    with pytest.raises(TypeError, match="axis= or dim="):
        x.sum(axis=0, dim=1)
