"""Conformance with PyTorch: the everyday Tensor surface, top-level functions, autograd.grad
and hooks. ``lib`` is tinygrad_conv or torch; see _conformance.py."""

from __future__ import annotations

import numpy as np
import pytest
from _conformance import assert_same, compare, same_error, torch

import tinygrad_conv as tc

rng = np.random.default_rng(1)
A = rng.standard_normal((3, 4))
B = rng.standard_normal((3, 4))
POS = rng.uniform(0.5, 2.0, (3, 4))
IDX = np.array([[0, 2, 1, 3], [3, 3, 0, 1], [1, 0, 2, 2]])


def f64(lib, a, grad=False):
    return lib.tensor(np.array(a, copy=True), dtype=lib.float64, requires_grad=grad)


# ---- the Tensor surface ------------------------------------------------------------------

def test_shape_queries():
    for lib in (tc, torch):
        t = lib.zeros(2, 3, 4)
        assert tuple(t.size()) == (2, 3, 4) and t.size(1) == 3 and t.size(-1) == 4
        assert tuple(t.shape) == (2, 3, 4) and t.dim() == 3 and t.ndim == 3
        assert t.numel() == 24 and str(t.device) == "cpu"
        assert sum(p.numel() for p in [t, lib.ones(5)]) == 29
    same_error(lambda lib: lib.zeros(2, 3).size(2))


@pytest.mark.parametrize("cast", ["float", "double", "long", "int", "bool"])
def test_casts(cast):
    compare(lambda lib, x: getattr(x * 3, cast)(), A)


def test_to_and_type():
    for lib in (tc, torch):
        t = lib.ones(2)
        assert t.to(lib.float64).dtype == lib.float64
        assert t.to("cpu") is t and t.cpu() is t
        assert t.to(lib.zeros(1, dtype=lib.int64)).dtype == lib.int64
        assert t.to("cpu", lib.float64).dtype == lib.float64
        assert t.type() == "torch.FloatTensor" and t.long().type() == "torch.LongTensor"
        assert t.type(lib.float64).dtype == lib.float64
        assert t.contiguous() is t
    compare(lambda lib, x: x.t().contiguous() * 2, A)


@pytest.mark.parametrize("snippet", [
    lambda lib, x: x.t(), lambda lib, x: x.T, lambda lib, x: x.repeat(2, 3),
    lambda lib, x: x.repeat(2, 1, 2), lambda lib, x: x[:, :1].expand(3, 5),
    lambda lib, x: x[0].expand(2, 4), lambda lib, x: x.split(2, dim=1),
    lambda lib, x: x.split([1, 2]), lambda lib, x: x.chunk(2), lambda lib, x: x.chunk(3, 1),
    lambda lib, x: x.clamp(min=-0.5), lambda lib, x: x.clamp(max=0.2),
    lambda lib, x: x.clamp(-0.3, 0.3), lambda lib, x: x.pow(2), lambda lib, x: x.abs().pow(0.5),
    lambda lib, x: x.std(), lambda lib, x: x.var(), lambda lib, x: x.std(1),
    lambda lib, x: x.var(0, keepdim=True), lambda lib, x: x.var(1, unbiased=False),
    lambda lib, x: x.std(dim=1, correction=0), lambda lib, x: x.softmax(1),
    lambda lib, x: x.log_softmax(dim=0), lambda lib, x: x.masked_fill(x > 0, 0.5),
    lambda lib, x: x.where(x > 0, x * 3), lambda lib, x: x.detach() // 0.5,
    lambda lib, x: x % 0.7,
    lambda lib, x: 2.0 % (x.detach().abs() + 1), lambda lib, x: x.detach(),
    lambda lib, x: x.clone(),
    lambda lib, x: x.gather(1, lib.tensor(IDX)), lambda lib, x: x.unbind(1),
    lambda lib, x: x.view_as(x.t()), lambda lib, x: x.norm(), lambda lib, x: x.square(),
    lambda lib, x: x.neg(), lambda lib, x: x.amin(0),
])
def test_tensor_methods(snippet):
    compare(snippet, A)


@pytest.mark.parametrize("name", ["eq", "ne", "lt", "le", "gt", "ge"])
def test_comparison_methods_and_operators(name):
    compare(lambda lib, x, y: getattr(x, name)(y), A, np.where(IDX > 1, A, B))
    compare(lambda lib, x: getattr(x, name)(0.1), A)
    compare(lambda lib, x, y: (x < y, x <= y, x > y, x >= y, x == y, x != y), A, B)


def test_integer_floor_division_and_remainder():
    a, b = np.array([5, -5, 7, -7]), np.array([2, 2, -3, -3])
    compare(lambda lib, x, y: (x // y, x % y, x // 2, x % 3, -7 // x, 7 % x), a, b)


def test_python_conversions_and_format():
    for lib in (tc, torch):
        t = lib.tensor(2.71828)
        assert float(t) == pytest.approx(2.71828) and int(lib.tensor(3.7)) == 3
        assert bool(lib.tensor(1.0)) and not bool(lib.tensor([0.0]))
        assert f"{t:.2f}" == "2.72" and f"{lib.tensor(7):>3}" == "  7"
        assert lib.tensor([[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]
        assert lib.tensor(5).tolist() == 5 and lib.tensor([1.5]).item() == 1.5
    same_error(lambda lib: f"{lib.ones(2):.2f}")
    same_error(lambda lib: bool(lib.ones(2)))
    same_error(lambda lib: float(lib.ones(2)))


def test_grad_fn_data_numpy_detach_clone():
    x = tc.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    assert x.grad_fn is None and y.grad_fn is not None and y.grad_fn.name == "mul"
    assert isinstance(y.numpy(), np.ndarray) and y.numpy() is y.data
    d = y.detach()
    assert d.grad_fn is None and not d.requires_grad and d.data is y.data
    c = y.clone()
    assert c.data is not y.data and c.requires_grad


# ---- top level ---------------------------------------------------------------------------

def test_dtypes_are_usable_wherever_a_dtype_is_taken():
    for name in ("float32", "float64", "int64", "bool", "int32", "long", "double", "float"):
        ours, theirs = getattr(tc, name), getattr(torch, name)
        assert tc.zeros(2, dtype=ours).dtype == ours
        assert str(theirs).replace("torch.", "") in str(np.dtype(ours)) or name in (
            "long", "double", "float", "bool")
        assert_same(tc.ones(2, dtype=ours), torch.ones(2, dtype=theirs))
        assert_same(tc.tensor([1, 0]).to(ours), torch.tensor([1, 0]).to(theirs))


def test_from_numpy_shares_memory_and_as_tensor():
    a = np.arange(4.0)
    for lib in (tc, torch):
        t = lib.from_numpy(a)
        a[0] = 9.0
        assert t[0].item() == 9.0 and t.dtype == lib.float64
        a[0] = 0.0
        assert lib.as_tensor(a).dtype == lib.float64
        assert lib.as_tensor([1, 2]).dtype == lib.int64
        assert lib.as_tensor([1.0, 2.0], dtype=lib.float64).dtype == lib.float64
    assert tc.as_tensor(a).data is a


def test_creation_functions():
    for lib in (tc, torch):
        assert tuple(lib.empty(2, 3).shape) == (2, 3) and lib.empty(2, 3).dtype == lib.float32
        lib.manual_seed(0)
        r = lib.rand(1000)
        assert 0 <= r.min().item() and r.max().item() < 1 and r.dtype == lib.float32
        i = lib.randint(2, 5, (1000,))
        assert i.dtype == lib.int64 and set(i.tolist()) == {2, 3, 4}
        assert lib.randint(3, (4,)).max().item() < 3
        for d in (lib.float64, lib.float32):
            for t in (lib.empty(2, dtype=d), lib.eye(2, dtype=d), lib.full((2,), 1, dtype=d),
                      lib.randn(2, dtype=d), lib.rand(2, dtype=d),
                      lib.linspace(0, 1, 3, dtype=d), lib.empty_like(lib.ones(2), dtype=d),
                      lib.full_like(lib.ones(2), 3, dtype=d)):
                assert t.dtype == d
        like = lib.randn_like(lib.zeros(2, 3, dtype=lib.float64))
        assert like.dtype == lib.float64 and tuple(like.shape) == (2, 3)
    assert_same(tc.full((2, 3), 7), torch.full((2, 3), 7))
    assert_same(tc.full((2,), 1.5), torch.full((2,), 1.5))
    assert_same(tc.full((2,), True), torch.full((2,), True))
    assert_same(tc.zeros_like(tc.ones(2, 3, dtype=tc.int64)),
                torch.zeros_like(torch.ones(2, 3, dtype=torch.int64)))
    assert_same(tc.ones_like(tc.zeros(2)), torch.ones_like(torch.zeros(2)))
    assert_same(tc.arange(5), torch.arange(5))
    assert_same(tc.arange(1.0, 2.0, 0.25), torch.arange(1.0, 2.0, 0.25))
    assert_same(tc.linspace(-1, 1, 7), torch.linspace(-1, 1, 7))
    assert_same(tc.eye(3), torch.eye(3))
    assert_same(tc.eye(2, 4), torch.eye(2, 4))


@pytest.mark.parametrize("snippet", [
    lambda lib, x, y: lib.where(x > 0, x, y), lambda lib, x, y: lib.exp(x),
    lambda lib, x, y: lib.log(y.abs() + 1), lambda lib, x, y: lib.matmul(x, y.t()),
    lambda lib, x, y: lib.softmax(x, dim=1), lambda lib, x, y: lib.argmax(x, dim=1),
    lambda lib, x, y: lib.argmax(x), lambda lib, x, y: lib.flatten(x.reshape(3, 2, 2), 1),
    lambda lib, x, y: lib.flatten(x), lambda lib, x, y: lib.cat([x, y], dim=1),
    lambda lib, x, y: lib.stack([x, y], dim=1), lambda lib, x, y: lib.sum(x, 1),
    lambda lib, x, y: lib.mean(x), lambda lib, x, y: lib.clamp(x, min=0),
    lambda lib, x, y: lib.maximum(x, y), lambda lib, x, y: lib.sqrt(x * x + 1),
    lambda lib, x, y: lib.log_softmax(x, 0), lambda lib, x, y: lib.std(x, 1),
])
def test_top_level_functions(snippet):
    compare(snippet, A, B)


def test_allclose_and_grad_modes():
    for lib in (tc, torch):
        assert lib.allclose(lib.ones(3), lib.ones(3) + 1e-9)
        assert not lib.allclose(lib.ones(3), lib.ones(3) + 1e-3)
        x = lib.ones(2, requires_grad=True)
        with lib.no_grad():
            with lib.enable_grad():
                assert (x * 2).requires_grad
            assert not (x * 2).requires_grad
        with lib.inference_mode():
            assert not (x * 2).requires_grad
        with lib.inference_mode(False):
            assert (x * 2).requires_grad

        @lib.inference_mode()
        def f(t):
            return t * 2

        assert not f(x).requires_grad


# ---- autograd.grad -------------------------------------------------------------------------

def test_autograd_grad_first_and_second_order():
    def run(lib):
        x, y = f64(lib, A, True), f64(lib, B, True)
        z = (x * x * y).sum()
        gx, gy = lib.autograd.grad(z, [x, y], create_graph=True)
        (hxx,) = lib.autograd.grad(gx.sum(), x, retain_graph=True)
        (hxy,) = lib.autograd.grad(gx.sum(), [y])
        assert x.grad is None and y.grad is None
        return gx, gy, hxx, hxy

    assert_same(run(tc), run(torch))


def test_autograd_grad_outputs_and_errors():
    def run(lib):
        x = f64(lib, A, True)
        y = x * 3
        w = f64(lib, B)
        (g,) = lib.autograd.grad(y, x, grad_outputs=w, retain_graph=True)
        (g2,) = lib.autograd.grad([y.sum(), (x * x).sum()], [x])
        return g, g2

    assert_same(run(tc), run(torch))

    def unused(lib):
        x, y = f64(lib, A, True), f64(lib, B, True)
        return lib.autograd.grad((x * 2).sum(), [x, y])

    same_error(unused)

    def allowed(lib):
        x, y = f64(lib, A, True), f64(lib, B, True)
        return lib.autograd.grad((x * 2).sum(), [x, y], allow_unused=True)[1]

    assert allowed(tc) is None and allowed(torch) is None

    def twice(lib):
        x = f64(lib, A, True)
        z = (x * x).sum()
        lib.autograd.grad(z, x)
        lib.autograd.grad(z, x)

    same_error(twice)


# ---- hooks -------------------------------------------------------------------------------

def test_hooks_replace_the_grad_and_removal_is_idempotent():
    def run(lib):
        x = f64(lib, A, True)
        y = x * 2
        handle = y.register_hook(lambda g: g * 10)
        y.sum().backward(retain_graph=True)
        first = x.grad.clone()
        handle.remove()
        handle.remove()
        x.grad = None
        y.sum().backward()
        return first, x.grad

    assert_same(run(tc), run(torch))


def test_a_hook_returning_a_wrong_shape_raises():
    def run(lib):
        x = f64(lib, A, True)
        y = x * 2
        y.register_hook(lambda g: g.sum(0))
        y.sum().backward()

    same_error(run)
