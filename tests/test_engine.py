"""Autograd engine semantics: accumulation, shared subgraphs, retain_graph, seeds, hooks,
retain_grad, no_grad, detach, graph bookkeeping, deep graphs, higher-order gradients and
tc.gradcheck itself."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_conv as tc
import tinygrad_conv.functional as F
from tinygrad_conv.engine import Op


def t64(a, requires_grad=True):
    return tc.Tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad,
                     dtype=np.float64)


# ---- accumulation and graph shapes ------------------------------------------------------


def test_grads_accumulate_across_backward_calls():
    x = tc.Tensor([1.0, -2.0], requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [2.0, -4.0])
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [5.0, -1.0])
    x.grad = None
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [3.0, 3.0])


def test_diamond_x_used_twice():
    x = tc.Tensor([3.0, -1.0, 0.5], requires_grad=True)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad.data, 2 * x.data + 1)


def test_diamond_through_a_shared_intermediate():
    a = np.array([0.3, -0.7])
    x = t64(a)
    u = x * 2  # shared by three consumers
    y = u * u + u.exp() + u.tanh()
    y.sum().backward()
    u_ = 2 * a
    np.testing.assert_allclose(x.grad.data, 2 * (2 * u_ + np.exp(u_) + 1 - np.tanh(u_) ** 2))


def test_nested_diamonds_hand_computed():
    # a = 2x, b = 3a, c = a + b = 8x, d = c * a = 16 x^2: every path must arrive before use
    x = t64([0.5, -1.5])
    a = x * 2
    b = a * 3
    c = a + b
    d = c * a
    d.sum().backward()
    np.testing.assert_allclose(d.data, 16 * x.data ** 2)
    np.testing.assert_allclose(x.grad.data, 32 * x.data)


@st.composite
def random_graphs(draw):
    """A random DAG over two leaves: each node combines two earlier nodes."""
    steps = []
    for k in range(draw(st.integers(1, 12))):
        available = 2 + k
        steps.append((draw(st.sampled_from(["add", "sub", "mul", "tanh", "scale"])),
                      draw(st.integers(0, available - 1)), draw(st.integers(0, available - 1))))
    return steps


@given(steps=random_graphs(), seed=st.integers(0, 2**16))
def test_random_graphs_match_finite_differences(steps, seed):
    ops = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
           "tanh": lambda a, b: (a * b).tanh(), "scale": lambda a, b: a * 0.5}

    def build(x, y):
        nodes = [x, y]
        for op, i, j in steps:
            nodes.append(ops[op](nodes[i], nodes[j]))
        return nodes[-1] + nodes[-2] * 0.5 if len(nodes) > 2 else nodes[-1]

    rng = np.random.default_rng(seed)
    x, y = t64(rng.uniform(-1, 1, 3)), t64(rng.uniform(-1, 1, 3))
    assert tc.gradcheck(build, [x, y])


def test_hook_sees_the_total_grad_once_in_a_diamond():
    x = tc.Tensor([2.0], requires_grad=True)
    h = x * 1.0
    seen = []
    h.register_hook(lambda g: seen.append(g.item()))
    h.retain_grad()
    (h * h + h * 3).sum().backward()
    assert seen == [2 * 2.0 + 3]
    assert h.grad.item() == 7.0 and x.grad.item() == 7.0


def test_backward_on_a_leaf_itself():
    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    x.backward(np.array([3.0, 4.0]))
    np.testing.assert_array_equal(x.grad.data, [3.0, 4.0])


def test_two_leaves_and_a_constant():
    x, y, c = t64([2.0]), t64([5.0]), t64([7.0], requires_grad=False)
    (x * y + c * x / y).sum().backward()
    np.testing.assert_allclose(x.grad.data, [5.0 + 7.0 / 5.0])
    np.testing.assert_allclose(y.grad.data, [2.0 - 7.0 * 2.0 / 25.0])
    assert c.grad is None


def test_grad_dtype_matches_leaf_and_non_leaves_keep_no_grad():
    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    h.sum().backward()
    assert x.grad.dtype == np.float32 and x.grad.shape == x.shape
    assert h.grad is None
    assert x.grad.requires_grad is False and x.grad.op is None


# ---- retain_graph ----------------------------------------------------------------------


def test_second_backward_without_retain_graph_raises():
    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_retain_graph_allows_a_second_backward_and_grads_double():
    a = np.array([1.0, 2.0])
    x = t64(a)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.data.copy()
    np.testing.assert_allclose(first, np.exp(a) * (1 + a))
    y.backward()
    np.testing.assert_allclose(x.grad.data, 2 * first)
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


# ---- seeds: implied, grad=, errors -----------------------------------------------------


def test_backward_on_non_scalar_without_grad_raises_naming_the_shape():
    x = tc.Tensor([[1.0, 2.0]], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"\(1, 2\)"):
        (x * 2).backward()


def test_backward_on_one_element_non_scalar_implies_one():
    x = tc.Tensor([[3.0]], requires_grad=True)
    (x * x).backward()
    np.testing.assert_array_equal(x.grad.data, [[6.0]])


def test_grad_argument_seeds_the_walk():
    a = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    seed = np.array([[1.0, 0.0, -1.0], [2.0, 0.5, 3.0]])
    x = t64(a)
    (x * x).backward(grad=seed)
    np.testing.assert_allclose(x.grad.data, 2 * a * seed)
    x.grad = None
    (x * 3).backward(tc.Tensor(seed, dtype=np.float64))
    np.testing.assert_allclose(x.grad.data, 3 * seed)


def test_grad_argument_of_the_wrong_shape_raises():
    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"\(3,\).*\(2,\)"):
        (x * 2).backward(np.ones(3))


def test_backward_on_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="requires_grad"):
        (tc.Tensor([1.0]) * 2).backward()


# ---- hooks -----------------------------------------------------------------------------


def test_hook_receives_the_grad():
    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    seen = []
    h.register_hook(lambda g: seen.append(g.data.copy()))
    (h * np.array([5.0, 7.0])).sum().backward()
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], [5.0, 7.0])
    np.testing.assert_array_equal(x.grad.data, [15.0, 21.0])


def test_hook_return_value_replaces_the_grad():
    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    h.register_hook(lambda g: g * 10)
    h.sum().backward()
    np.testing.assert_array_equal(x.grad.data, [30.0, 30.0])


def test_hook_on_a_leaf_changes_what_accumulates():
    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    x.register_hook(lambda g: g * 0 + 1)
    (x * 5).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [1.0, 1.0])


def test_hook_removal_handle():
    x = tc.Tensor([1.0], requires_grad=True)
    h = x * 2
    calls = []
    remove = h.register_hook(lambda g: calls.append(1) or g * 100)
    remove()
    h.sum().backward()
    assert calls == []
    np.testing.assert_array_equal(x.grad.data, [2.0])


def test_register_hook_without_grad_raises():
    with pytest.raises(RuntimeError, match="register_hook"):
        tc.Tensor([1.0]).register_hook(lambda g: g)


# ---- retain_grad -----------------------------------------------------------------------


def test_non_leaf_grad_only_with_retain_grad():
    a = np.array([1.0, -2.0])
    x = t64(a)
    h = x * x
    k = h * 3
    h.retain_grad()
    (k * k).sum().backward()
    np.testing.assert_allclose(h.grad.data, 2 * 3 * (3 * a * a))  # d(9h^2)/dh = 18h
    assert k.grad is None
    np.testing.assert_allclose(x.grad.data, 18 * a * a * 2 * a)


def test_retain_grad_requires_grad():
    with pytest.raises(RuntimeError, match="retain_grad"):
        tc.Tensor([1.0]).retain_grad()


# ---- no_grad, detach, requires_grad_ ---------------------------------------------------


def test_no_grad_records_nothing():
    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    assert tc.is_grad_enabled()
    with tc.no_grad():
        assert not tc.is_grad_enabled()
        y = (x * 2).exp().sum()
    assert tc.is_grad_enabled()
    assert y.op is None and y.requires_grad is False
    np.testing.assert_allclose(y.item(), np.exp(2.0) + np.exp(4.0), rtol=1e-6)


def test_no_grad_restores_mode_after_an_exception_and_nests():
    with pytest.raises(ZeroDivisionError):
        with tc.no_grad():
            raise ZeroDivisionError
    assert tc.is_grad_enabled()
    with pytest.raises(ZeroDivisionError):
        with tc.set_grad_enabled(False):
            raise ZeroDivisionError
    assert tc.is_grad_enabled()
    with tc.no_grad():
        with tc.set_grad_enabled(True):
            assert tc.is_grad_enabled()
        assert not tc.is_grad_enabled()
    assert tc.is_grad_enabled()


def test_no_grad_as_a_decorator():
    @tc.no_grad()
    def double(t):
        return t * 2

    y = double(tc.Tensor([1.0], requires_grad=True))
    assert y.op is None and not y.requires_grad and tc.is_grad_enabled()


def test_ops_on_tensors_without_grad_are_not_recorded():
    y = tc.Tensor([1.0]) * tc.Tensor([2.0])
    assert y.op is None and not y.requires_grad


def test_detach_cuts_the_graph_and_shares_data():
    x = tc.Tensor([2.0, 3.0], requires_grad=True)
    d = x.detach()
    assert d.op is None and not d.requires_grad
    assert np.shares_memory(d.data, x.data)
    (x * x.detach()).sum().backward()
    # not 2x: the detached factor is a constant
    np.testing.assert_array_equal(x.grad.data, [2.0, 3.0])


def test_requires_grad_returns_self():
    x = tc.Tensor([1.0])
    assert x.requires_grad_() is x and x.requires_grad
    assert x.requires_grad_(False) is x and not x.requires_grad
    y = tc.Tensor([1.0], requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="detach"):
        y.requires_grad_(False)


# ---- graph bookkeeping -----------------------------------------------------------------


def test_op_name_and_parents():
    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    y = tc.Tensor([3.0, 4.0])
    z = x * y
    assert z.op.name == "mul"
    assert len(z.parents) == 2 and z.parents[0] is x and z.parents[1] is y
    assert x.op is None and x.parents == ()
    assert (z + 1).op.name == "add" and (z + 1).parents[0] is z
    assert z.sum().op.name == "sum" and z.exp().op.name == "exp"


def test_conv_with_bias_is_one_op_and_linear_is_one_op():
    x = tc.randn(1, 2, 4, 4, requires_grad=True)
    w, b = tc.randn(3, 2, 3, 3, requires_grad=True), tc.randn(3, requires_grad=True)
    out = F.conv2d(x, w, b)
    assert out.op.name == "conv2d"
    assert tuple(map(id, out.parents)) == (id(x), id(w), id(b))
    lin = F.linear(tc.randn(2, 3), tc.randn(4, 3, requires_grad=True), tc.randn(4))
    assert lin.op.name == "linear" and len(lin.parents) == 3


def test_long_chain_backward_has_no_recursion_limit():
    x = tc.Tensor([0.5], requires_grad=True)
    y = x * 3.0
    for _ in range(100_000 - 1):
        y = -y  # an odd number of negations
    y.backward()
    np.testing.assert_array_equal(x.grad.data, [-3.0])
    del y  # tearing down a 100k-deep graph must not overflow either


# ---- higher order ----------------------------------------------------------------------


def test_create_graph_second_and_third_derivative_of_cube():
    a = np.array([1.5, -2.0, 0.0])
    x = t64(a)
    (x ** 3).sum().backward(create_graph=True)
    g1 = x.grad
    assert g1.requires_grad and g1.op is not None
    np.testing.assert_allclose(g1.data, 3 * a ** 2)
    x.grad = None
    g1.sum().backward(create_graph=True)
    g2 = x.grad
    np.testing.assert_allclose(g2.data, 6 * a)
    x.grad = None
    g2.sum().backward()
    np.testing.assert_allclose(x.grad.data, [6.0, 6.0, 6.0])


def test_grads_without_create_graph_are_plain():
    x = tc.Tensor([2.0], requires_grad=True)
    (x ** 3).sum().backward()
    assert x.grad.op is None and not x.grad.requires_grad


def test_mixed_second_derivative():
    x, y = t64([2.0]), t64([3.0])
    (x * x * y).sum().backward(create_graph=True)
    gx = x.grad  # 2xy
    x.grad = y.grad = None
    gx.sum().backward()
    np.testing.assert_allclose(x.grad.data, [2 * 3.0])  # d(2xy)/dx = 2y
    np.testing.assert_allclose(y.grad.data, [2 * 2.0])  # d(2xy)/dy = 2x


def grad_norm(fn, *inputs):
    """||d sum(w * fn(inputs)) / d inputs||^2, a function whose gradient needs second
    derivatives of fn. The inputs' .grad is cleared so the outer backward starts fresh."""

    def f(*xs):
        out = fn(*xs)
        weights = np.random.default_rng(1).standard_normal(out.shape)
        (out * tc.Tensor(weights, dtype=np.float64)).sum().backward(create_graph=True)
        grads = [x.grad for x in xs]
        for x in xs:
            x.grad = None
        total = None
        for g in grads:
            term = (g * g).sum()
            total = term if total is None else total + term
        return total

    return f


@pytest.mark.parametrize(
    "fn",
    [lambda x: x.tanh(), lambda x: F.softmax(x, axis=1), lambda x: F.log_softmax(x, axis=0),
     lambda x: x.sigmoid(), lambda x: (x * x).exp().sqrt(), lambda x: x ** 3 / (x * x + 1),
     lambda x: F.cross_entropy(x, np.array([0, 2]))],
    ids=["tanh", "softmax", "log_softmax", "sigmoid", "exp-sqrt", "pow-div", "cross_entropy"],
)
def test_second_derivatives_by_gradcheck(fn, rng):
    x = t64(rng.standard_normal((2, 3)))
    assert tc.gradcheck(grad_norm(fn, x), [x], atol=1e-5, rtol=1e-4)


def test_second_derivative_of_matmul_and_linear(rng):
    a, w, b = t64(rng.standard_normal((2, 3))), t64(rng.standard_normal((4, 3))), t64(
        rng.standard_normal(4))
    assert tc.gradcheck(grad_norm(lambda a, w: (a @ w.T).tanh(), a, w), [a, w])
    assert tc.gradcheck(grad_norm(lambda a, w, b: F.linear(a, w, b).tanh(), a, w, b), [a, w, b])


# ---- tc.gradcheck itself ---------------------------------------------------------------


class _WrongSquare(Op):
    """x**2 with a deliberately wrong backward (missing the factor 2)."""

    name = "wrong_square"

    def forward(self, a):
        return a * a

    def backward(self, g):
        return (g * self.inputs[0],)


def test_gradcheck_passes_correct_and_catches_wrong_gradients():
    x = tc.Tensor([[0.5, -1.0], [2.0, 3.0]], requires_grad=True)
    assert tc.gradcheck(lambda t: t * t, [x]) is True
    message = r"input 0 \(shape \(2, 2\)\) at index \(\d, \d\): analytic"
    with pytest.raises(AssertionError, match=message):
        tc.gradcheck(lambda t: _WrongSquare().apply(t), [x])
    assert tc.gradcheck(lambda t: _WrongSquare().apply(t), [x], raise_exception=False) is False


def test_gradcheck_names_the_failing_input():
    x = tc.Tensor([1.0, 2.0], requires_grad=True)
    y = tc.Tensor([3.0, 4.0], requires_grad=True)
    with pytest.raises(AssertionError, match="input 1"):
        tc.gradcheck(lambda a, b: a + _WrongSquare().apply(b), [x, y])


def test_gradcheck_leaves_its_inputs_untouched_and_skips_constants():
    x = tc.Tensor(np.asfortranarray(np.arange(6.0).reshape(2, 3) / 6), requires_grad=True)
    before = x.data.copy()
    c = tc.Tensor([1.0, 2.0, 3.0])
    assert tc.gradcheck(lambda a, k: (a * k).exp(), [x, c])
    np.testing.assert_array_equal(x.data, before)
    assert x.grad is None and c.grad is None


def test_gradcheck_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="requires_grad"):
        tc.gradcheck(lambda t: t * 2, [tc.Tensor([1.0])])


def test_leaf_grads_never_alias_each_other_or_the_seed():
    # add passes its upstream grad on unchanged, so both leaves (and the seed) see one array
    a = tc.tensor([1.0, 2.0], requires_grad=True)
    b = tc.tensor([3.0, 4.0], requires_grad=True)
    seed = tc.tensor([1.0, 1.0])
    (a + b).backward(seed)
    a.grad.data *= 10  # an in-place change to one grad (as an optimiser might make)
    np.testing.assert_array_equal(b.grad.data, [1.0, 1.0])
    np.testing.assert_array_equal(seed.data, [1.0, 1.0])
    assert a.grad.data.flags.writeable and b.grad.data.flags.writeable


def test_retained_grad_and_leaf_grad_do_not_alias():
    x = tc.tensor([1.0, 2.0], requires_grad=True)
    y = x + 1.0
    y.retain_grad()
    (y * 2.0).sum().backward()
    y.grad.data[:] = 0
    np.testing.assert_array_equal(x.grad.data, [2.0, 2.0])


def test_broadcast_grad_reaching_a_leaf_is_writable():
    x = tc.tensor(3.0, requires_grad=True)
    y = tc.zeros(4).sum() * 0 + x  # the grad of x comes through a broadcast (read-only) view
    (y.expand(2, 2) * 1.0).sum().backward()
    x.grad.data += 1  # must not raise "assignment destination is read-only"
    assert x.grad.item() == 5.0
