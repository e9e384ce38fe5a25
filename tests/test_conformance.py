"""Conformance with PyTorch: in-place updates, version counters, reductions with indices.

Each test runs the same snippet in tinygrad_conv and in PyTorch (``lib`` is either module)
and compares values, dtypes, grads and exception types. Skipped where torch is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest
from _conformance import assert_same, compare, same_error, to_numpy, torch

import tinygrad_conv as tc
from tinygrad_conv import nn, optim

rng = np.random.default_rng(0)
A = rng.standard_normal((3, 4))
B = rng.standard_normal((3, 4))
V = rng.standard_normal(4)


# ---- in place ----------------------------------------------------------------------------

def test_manual_sgd_step_under_no_grad_updates_the_weights_as_pytorch():
    x, y = rng.standard_normal((8, 5)), rng.integers(0, 3, 8)
    w0, b0 = rng.standard_normal((3, 5)), rng.standard_normal(3)
    losses = {}
    for lib, mod in ((tc, nn), (torch, torch.nn)):
        model = mod.Linear(5, 3).double()
        with lib.no_grad():
            model.weight.copy_(lib.tensor(w0, dtype=lib.float64))
            model.bias.copy_(lib.tensor(b0, dtype=lib.float64))
        xs, ys = lib.tensor(x, dtype=lib.float64), lib.tensor(y)
        weight_array = to_numpy(model.weight)
        run = []
        for _ in range(5):
            loss = mod.functional.cross_entropy(model(xs), ys)
            model.zero_grad()
            loss.backward()
            with lib.no_grad():
                for p in model.parameters():
                    p -= 0.5 * p.grad
            run.append(loss.item())
        assert model.weight.requires_grad and model.weight.is_leaf
        if lib is tc:  # the same array, changed in place
            assert model.weight.data is weight_array
        losses[lib.__name__] = run
    np.testing.assert_allclose(losses["tinygrad_conv"], losses["torch"], rtol=1e-10)
    assert losses["torch"][-1] < losses["torch"][0]


@pytest.mark.parametrize("op", ["+=", "-=", "*=", "/="])
def test_augmented_assignment_keeps_the_object_and_requires_grad(op):
    def step(lib):
        w = lib.tensor(A.copy(), dtype=lib.float64, requires_grad=True)
        before = w
        with lib.no_grad():
            exec(f"w {op} 2.0", {}, {"w": w})  # noqa: S102 (the operator under test)
        assert w is before and w.requires_grad and w.is_leaf and w.grad_fn is None
        return w

    assert_same(step(tc), step(torch))


@pytest.mark.parametrize("snippet", [
    lambda w: w.add_(1.0), lambda w: w.sub_(1.0), lambda w: w.mul_(2.0),
    lambda w: w.div_(2.0), lambda w: w.zero_(), lambda w: w.fill_(3.0),
    lambda w: w.clamp_(-0.5, 0.5), lambda w: w.copy_(w.detach() * 0),
])
def test_in_place_on_a_leaf_that_requires_grad_raises_outside_no_grad(snippet):
    def run(lib):
        w = lib.tensor(A.copy(), dtype=lib.float64, requires_grad=True)
        snippet(w)

    assert "leaf" in same_error(run)

    def allowed(lib):
        w = lib.tensor(A.copy(), dtype=lib.float64, requires_grad=True)
        with lib.no_grad():
            out = snippet(w)
        assert out is w and w.requires_grad
        return w

    assert_same(allowed(tc), allowed(torch))


def test_in_place_methods_values_without_grad():
    def run(lib):
        t = lib.tensor(A.copy(), dtype=lib.float64)
        b, v = lib.tensor(B, dtype=lib.float64), lib.tensor(V, dtype=lib.float64)
        t.add_(b, alpha=2.0).sub_(1.5, alpha=3).mul_(v).div_(4.0)
        t.clamp_(min=-1.0).masked_fill_(t > 2, 7.0)
        u = lib.tensor(A.copy(), dtype=lib.float64).fill_(2.5)
        z = lib.tensor(B.copy(), dtype=lib.float64).zero_()
        c = lib.tensor(A.copy(), dtype=lib.float64).copy_(lib.tensor(V, dtype=lib.float64))
        return t, u, z, c

    assert_same(run(tc), run(torch))


@pytest.mark.parametrize("snippet", [
    lambda lib, x, y: (x * 2).add_(y),
    lambda lib, x, y: (x * 2).sub_(y, alpha=3),
    lambda lib, x, y: (x + 0).mul_(y),
    lambda lib, x, y: (x * 1).div_(y * y + 1),
    lambda lib, x, y: (x * y).mul_(x),
    lambda lib, x, y: (x * y).clamp_(-0.3, 0.4),
    lambda lib, x, y: (x * y).masked_fill_(x > 0, 0.5),
    lambda lib, x, y: (x * y).zero_(),
    lambda lib, x, y: (x * 3).fill_(2.0) * y,
    lambda lib, x, y: (x * 3).copy_(y[0]),
    lambda lib, x, y: (x * 3).add_(x * 3),
    lambda lib, x, y: lib.zeros(3, 4, dtype=lib.float64).add_(x).mul_(y),
])
def test_in_place_on_a_non_leaf_is_recorded_with_the_right_gradient(snippet):
    compare(snippet, A, B)


def test_self_operand_and_chained_in_place_gradients():
    def run(lib, x):
        y = x * 1
        y += y
        y *= x
        y -= x
        y /= 3
        return y

    compare(run, A)


def test_augmented_assignment_on_a_non_leaf_keeps_the_graph():
    def run(lib, x, y):
        h = x * y
        before = h
        h += x
        h *= 2
        assert h is before and h.requires_grad and h.grad_fn is not None
        return h

    compare(run, A, B)


def test_in_place_dtype_and_shape_errors_match():
    same_error(lambda lib: lib.tensor([1, 2, 3]).add_(0.5))
    same_error(lambda lib: lib.tensor([1.0, 2.0, 3.0]).add_(lib.ones(2, 3)))
    assert_same(tc.tensor([1, 2, 3]).mul_(2), torch.tensor([1, 2, 3]).mul_(2))


def test_requires_grad_():
    for lib in (tc, torch):
        t = lib.tensor(A.copy(), dtype=lib.float64)
        assert t.requires_grad_() is t and t.requires_grad
        t.requires_grad_(False)
        assert not t.requires_grad


# ---- version counters --------------------------------------------------------------------

MODIFIED = "modified by an inplace operation"


@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_an_optimiser_step_between_two_backwards_raises(opt_name):
    x = rng.standard_normal((4, 3))

    def run(lib):
        mod, opts = (nn, optim) if lib is tc else (torch.nn, torch.optim)
        model = mod.Sequential(mod.Linear(3, 4), mod.Tanh(), mod.Linear(4, 2))
        opt = getattr(opts, opt_name)(model.parameters(), lr=0.1)
        out = model(lib.tensor(x, dtype=lib.float32))
        l1, l2 = out.sum(), (out * out).sum()
        l1.backward(retain_graph=True)
        opt.step()
        l2.backward()

    assert MODIFIED in same_error(run)


def test_changing_a_saved_tensor_in_place_raises_at_backward():
    def run(lib):
        x = lib.tensor(A.copy(), dtype=lib.float64, requires_grad=True)
        a = x * 2
        b = a * a  # saves a
        a.add_(1)
        b.sum().backward()

    assert MODIFIED in same_error(run)

    def saved_output(lib):
        x = lib.tensor(A.copy(), dtype=lib.float64, requires_grad=True)
        y = x.exp()  # saves its output
        with lib.no_grad():
            y.mul_(2)
        y.sum().backward()

    assert MODIFIED in same_error(saved_output)


def test_version_counts_in_place_changes():
    t = tc.zeros(3)
    assert t._version == 0
    t += 1
    t.mul_(2).zero_()
    assert t._version == 3
    p = nn.Parameter(tc.ones(2))
    p.grad = tc.ones(2)
    optim.SGD([p], lr=0.1).step()
    assert p._version == 1


def test_out_of_place_updates_after_backward_are_fine():
    def run(lib):
        x = lib.tensor(A.copy(), dtype=lib.float64, requires_grad=True)
        y = (x * x).sum()
        y.backward()
        with lib.no_grad():
            x -= 0.1 * x.grad
        x.grad = None
        (x * x).sum().backward()
        return x.grad

    assert_same(run(tc), run(torch))


# ---- reductions with indices ---------------------------------------------------------------

DISTINCT = rng.permutation(24).reshape(2, 3, 4) / 7.0


@pytest.mark.parametrize("snippet", [
    lambda lib, x: x.max(1), lambda lib, x: x.min(-1), lambda lib, x: x.max(dim=0, keepdim=True),
    lambda lib, x: x.max(), lambda lib, x: x.min(), lambda lib, x: lib.max(x, 2),
    lambda lib, x: x.sort(), lambda lib, x: x.sort(1, descending=True),
    lambda lib, x: x.topk(2), lambda lib, x: x.topk(2, dim=1, largest=False),
    lambda lib, x: lib.sort(x, dim=0), lambda lib, x: lib.topk(x, 3),
])
def test_reductions_with_indices(snippet):
    compare(snippet, DISTINCT)


def test_named_fields_and_unpacking():
    for lib in (tc, torch):
        out = lib.tensor(DISTINCT, dtype=lib.float64).max(1)
        values, indices = out
        assert out.values is values and out.indices is indices
        assert values.shape == (2, 4) and indices.dtype == lib.int64
        # a batch of 2: max(1) must not unpack the two rows
        two = lib.tensor(DISTINCT[:, :, 0], dtype=lib.float64)
        v, i = two.max(1)
        assert v.shape == (2,) and i.shape == (2,)
    ours, theirs = tc.tensor(DISTINCT, dtype=tc.float64), torch.tensor(DISTINCT)
    assert_same(ours.argsort(dim=1), theirs.argsort(dim=1))
    assert_same(ours.argsort(descending=True), theirs.argsort(descending=True))
    assert_same(ours.argmax(1, keepdim=True), theirs.argmax(1, keepdim=True))
    assert_same(ours.argmax(), theirs.argmax())
    assert_same(tc.argsort(ours, 0), torch.argsort(theirs, 0))


def test_max_with_ties_sends_the_gradient_to_one_index():
    compare(lambda lib, x: x.max(1).values, np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]]))
    compare(lambda lib, x: x.amax(1), np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]]))


def test_elementwise_max_and_min():
    compare(lambda lib, x, y: lib.maximum(x, y) + x.min(y), A, B)
