"""In-place updates, version counters and the top-level namespace, checked against closed
forms (these run where PyTorch is not installed; test_conformance*.py compares with it)."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_conv as tc
from tinygrad_conv import nn, optim


def test_manual_update_changes_the_same_array_and_keeps_the_leaf():
    w = tc.tensor([1.0, 2.0], requires_grad=True)
    array = w.data
    (w * w).sum().backward()
    with tc.no_grad():
        w -= 0.25 * w.grad
    assert w.data is array and w.requires_grad and w.is_leaf
    np.testing.assert_allclose(w.data, [0.5, 1.0])
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w += 1


def test_recorded_in_place_gradient_closed_form():
    x = tc.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = x * 2
    y += 1
    y *= x  # y = (2x + 1) x, dy/dx = 4x + 1
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, 4 * x.data + 1)


def test_version_check_names_the_op_and_versions():
    x = tc.tensor([1.0, 2.0], requires_grad=True)
    a = x * 2
    b = a * a
    a.add_(1)
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation.*'mul'.*version 1"):
        b.sum().backward()


def test_two_losses_with_a_step_between_raise():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    opt = optim.SGD(model.parameters(), lr=0.1)
    out = model(tc.ones(2, 3))
    l1, l2 = out.sum(), (out * out).sum()
    l1.backward(retain_graph=True)
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        l2.backward()


def test_max_with_dim_is_values_and_indices():
    t = tc.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 7.0]], requires_grad=True)
    values, indices = t.max(1)
    assert values.tolist() == [5.0, 7.0] and indices.tolist() == [1, 0]
    values.sum().backward()
    np.testing.assert_array_equal(t.grad.data, [[0, 1, 0], [1, 0, 0]])  # first of ties
    assert t.max().shape == () and t.max().item() == 7.0


def test_autograd_grad_second_derivative_closed_form():
    x = tc.tensor([0.5, -1.0], dtype=tc.float64, requires_grad=True)
    (g,) = tc.autograd.grad((x ** 3).sum(), x, create_graph=True)
    (h,) = tc.autograd.grad(g.sum(), x)
    np.testing.assert_allclose(g.data, 3 * x.data ** 2)
    np.testing.assert_allclose(h.data, 6 * x.data)
    assert x.grad is None


def test_star_import_does_not_shadow_builtins():
    namespace: dict = {}
    exec("from tinygrad_conv import *", namespace)  # noqa: S102
    assert "float32" in namespace and "Tensor" in namespace and "where" in namespace
    assert not {"sum", "max", "min", "abs", "pow", "bool", "float", "int"} & set(namespace)
    assert tc.sum(tc.ones(3)).item() == 3.0 and tc.bool == np.dtype(bool)
