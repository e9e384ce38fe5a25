"""cross_entropy, nll_loss and mse_loss against closed forms written here, with finite-
difference gradients; cross_entropy stays finite and exact for huge logits."""

import numpy as np
import pytest

import tinygrad_conv as tc
import tinygrad_conv.functional as F


def t64(a, requires_grad=True):
    return tc.Tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad,
                     dtype=np.float64)


def log_softmax_ref(z):
    """Closed form, in float64 with Python's own log/exp per row (independent of the library)."""
    out = np.empty_like(z, dtype=np.float64)
    for i, row in enumerate(np.asarray(z, dtype=np.float64)):
        m = max(row)
        lse = m + np.log(sum(np.exp(v - m) for v in row))
        out[i] = row - lse
    return out


def reduce_ref(losses, reduction):
    return {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction](losses)


# ---- cross_entropy ---------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_value_and_grad_closed_form(reduction, rng):
    z = rng.standard_normal((5, 4)) * 2
    target = np.array([0, 3, 1, 1, 2])
    logits = t64(z)
    loss = F.cross_entropy(logits, target, reduction=reduction)
    per_sample = -log_softmax_ref(z)[np.arange(5), target]
    np.testing.assert_allclose(loss.data, reduce_ref(per_sample, reduction), rtol=1e-12)
    upstream = rng.standard_normal(5) if reduction == "none" else 1.0
    loss.backward(upstream if reduction == "none" else None)
    softmax = np.exp(log_softmax_ref(z))
    onehot = np.eye(4)[target]
    scale = {"mean": 1 / 5, "sum": 1.0, "none": np.asarray(upstream).reshape(-1, 1)}[reduction]
    np.testing.assert_allclose(logits.grad.data, (softmax - onehot) * scale, rtol=1e-10)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_gradcheck(reduction, rng):
    logits = t64(rng.standard_normal((4, 3)))
    target = np.array([2, 0, 1, 2])
    assert tc.gradcheck(lambda z: F.cross_entropy(z, target, reduction), [logits])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_finite_and_exact_for_logits_of_1e4(dtype):
    z = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4], [-1e4, -1e4, -1e4]])
    target = np.array([1, 2, 0])
    logits = tc.Tensor(z, requires_grad=True, dtype=dtype)
    loss = F.cross_entropy(logits, target, reduction="none")
    assert loss.dtype == dtype and np.all(np.isfinite(loss.data))
    # by hand: row 0 loses 1e4 - 0; row 1 ties two classes, log 2; row 2 is uniform, log 3
    np.testing.assert_allclose(loss.data, [1e4, np.log(2), np.log(3)], rtol=1e-6)
    mean = F.cross_entropy(logits, target)
    np.testing.assert_allclose(mean.item(), (1e4 + np.log(2) + np.log(3)) / 3, rtol=1e-6)
    mean.backward()
    expected = np.array([[1.0, -1.0, 0.0], [0.0, 0.5, -0.5], [1 / 3 - 1, 1 / 3, 1 / 3]]) / 3
    assert np.all(np.isfinite(logits.grad.data))
    np.testing.assert_allclose(logits.grad.data, expected, atol=1e-6)


def test_cross_entropy_shift_invariance(rng):
    z = rng.standard_normal((3, 5))
    target = np.array([4, 0, 2])
    base = F.cross_entropy(t64(z), target).item()
    shifted = F.cross_entropy(t64(z + 1e3), target).item()
    np.testing.assert_allclose(shifted, base, rtol=1e-10)


def test_cross_entropy_accepts_tensor_list_and_int32_targets(rng):
    z = rng.standard_normal((3, 4))
    expected = -log_softmax_ref(z)[[0, 1, 2], [1, 3, 0]].mean()
    for target in (tc.Tensor([1, 3, 0]), [1, 3, 0], np.array([1, 3, 0], dtype=np.int32),
                   np.array([1, 3, 0], dtype=np.uint8)):
        np.testing.assert_allclose(F.cross_entropy(t64(z), target).item(), expected, rtol=1e-12)


def test_cross_entropy_equals_nll_of_log_softmax(rng):
    z = rng.standard_normal((6, 3))
    target = rng.integers(0, 3, 6)
    a, b = t64(z), t64(z)
    la = F.cross_entropy(a, target)
    lb = F.nll_loss(F.log_softmax(b, axis=1), target)
    np.testing.assert_allclose(la.data, lb.data, rtol=1e-12)
    la.backward()
    lb.backward()
    np.testing.assert_allclose(a.grad.data, b.grad.data, rtol=1e-10, atol=1e-15)


def test_cross_entropy_second_derivative(rng):
    z = t64(rng.standard_normal((2, 3)))
    target = np.array([1, 0])

    def grad_norm(x):
        F.cross_entropy(x, target).backward(create_graph=True)
        g = x.grad
        x.grad = None
        return (g * g).sum()

    assert tc.gradcheck(grad_norm, [z])


# ---- nll_loss --------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_value_grad_and_gradcheck(reduction, rng):
    lp = rng.standard_normal((4, 5))
    target = np.array([4, 0, 0, 2])
    x = t64(lp)
    loss = F.nll_loss(x, target, reduction=reduction)
    np.testing.assert_allclose(loss.data, reduce_ref(-lp[np.arange(4), target], reduction),
                               rtol=1e-12)
    loss.sum().backward()
    expected = np.zeros((4, 5))
    for i, t in enumerate(target):
        expected[i, t] = -(0.25 if reduction == "mean" else 1.0)
    np.testing.assert_array_equal(x.grad.data, expected)
    assert tc.gradcheck(lambda v: F.nll_loss(v, target, reduction), [t64(lp)])


def test_nll_loss_float32_keeps_dtype():
    x = tc.Tensor(np.log(np.full((2, 3), 1 / 3)), requires_grad=True)
    loss = F.nll_loss(x, np.array([0, 2]))
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss.item(), np.log(3), rtol=1e-6)
    loss.backward()
    assert x.grad.dtype == np.float32


# ---- mse_loss --------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_value_grad_and_gradcheck(reduction, rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    x, y = t64(a), t64(b)
    loss = F.mse_loss(x, y, reduction=reduction)
    np.testing.assert_allclose(loss.data, reduce_ref((a - b) ** 2, reduction), rtol=1e-12)
    loss.sum().backward()
    scale = 1 / 12 if reduction == "mean" else 1.0
    np.testing.assert_allclose(x.grad.data, 2 * (a - b) * scale, rtol=1e-12)
    np.testing.assert_allclose(y.grad.data, -2 * (a - b) * scale, rtol=1e-12)
    assert tc.gradcheck(lambda p, q: F.mse_loss(p, q, reduction), [t64(a), t64(b)])


def test_mse_loss_with_array_target_keeps_float64_exact():
    a = np.array([0.1, 0.2, 0.3])
    target = np.array([0.1000000001, 0.2, 0.3])  # differs from a below float32 resolution
    loss = F.mse_loss(t64(a), target)
    np.testing.assert_allclose(loss.item(), np.mean((a - target) ** 2), rtol=1e-6)
    assert loss.item() > 0
