"""dtype discipline: float32 in gives float32 out and float32 grads everywhere (no silent
float64), float64 stays float64 and exact, Python numbers and arrays adopt the Tensor's dtype."""

import numpy as np
import pytest

import tinygrad_conv as tc
import tinygrad_conv.functional as F
from tinygrad_conv.engine import topological_order


def record_grad_dtypes(root):
    """Hook every tensor in root's graph; return the list the grads' dtypes land in.

    Hooks see each grad before it is stored, so a float64 grad cannot hide behind the cast
    that accumulation into a leaf's .grad performs.
    """
    seen = []
    for node in topological_order(root):
        node.register_hook(lambda g, node=node: seen.append((node.op and node.op.name, g.dtype)))
    return seen


def small_cnn_loss(dtype, rng):
    as_t = lambda a, rg=True: tc.Tensor(a, requires_grad=rg, dtype=dtype)  # noqa: E731
    x = as_t(rng.standard_normal((4, 1, 8, 8)), rg=False)
    target = np.array([0, 2, 1, 2])
    params = {
        "w1": as_t(rng.standard_normal((4, 1, 3, 3)) * 0.3), "b1": as_t(np.zeros(4)),
        "gamma": as_t(np.ones(4)), "beta": as_t(np.zeros(4)),
        "w2": as_t(rng.standard_normal((6, 2, 3, 3)) * 0.3), "b2": as_t(np.zeros(6)),
        "w3": as_t(rng.standard_normal((3, 6 * 2 * 2)) * 0.3), "b3": as_t(np.zeros(3)),
    }
    running_mean, running_var = np.zeros(4, dtype), np.ones(4, dtype)
    p = params
    h = F.conv2d(x, p["w1"], p["b1"], padding=1)
    h = F.batch_norm(h, running_mean, running_var, p["gamma"], p["beta"], training=True)
    h = F.max_pool2d(F.relu(h), 2)  # (4, 4, 4, 4)
    h = F.conv2d(h, p["w2"], p["b2"], padding=1, groups=2, dilation=1).tanh()
    h = (1 - h * 0.5) ** 2 / 2 + 0.1 * h.sigmoid() - h.abs().sqrt() * 1e-3
    h = F.avg_pool2d(h, 2).flatten(1)  # (4, 24)
    tc.manual_seed(0)
    logits = F.dropout(F.linear(h, p["w3"], p["b3"]), p=0.25)
    loss = F.cross_entropy(logits, target)
    loss = loss + 0.1 * F.mse_loss(F.softmax(logits, axis=1), np.eye(3)[target])
    loss = loss + F.log_softmax(logits, axis=1).max() * 1e-2 + (logits.exp().mean() + 1).log()
    return loss, params, (running_mean, running_var)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_net_forward_and_backward_keep_the_dtype(dtype, rng):
    loss, params, running = small_cnn_loss(dtype, rng)
    nodes = topological_order(loss)
    assert len(nodes) > 30
    bad = [(n.op.name if n.op else "leaf", n.dtype) for n in nodes if n.dtype != dtype]
    assert bad == []  # every tensor in the graph, not just the loss
    seen = record_grad_dtypes(loss)
    loss.backward()
    assert len(seen) == len(nodes)
    assert [s for s in seen if s[1] != dtype] == []
    for name, param in params.items():
        assert param.grad is not None, name
        assert param.grad.dtype == dtype, name
        assert np.all(np.isfinite(param.grad.data)), name
    for stat in running:
        assert stat.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "fn",
    [lambda x: x + 1, lambda x: 1 + x, lambda x: x - 1.5, lambda x: 1 - x, lambda x: x * 0.5,
     lambda x: 0.5 * x, lambda x: x / 2, lambda x: 2 / x, lambda x: x ** 2, lambda x: x ** 0.5,
     lambda x: 2 ** x, lambda x: -x, lambda x: x.mean(), lambda x: x.sum() / 3,
     lambda x: x * np.float64(0.5), lambda x: x + np.ones(3), lambda x: x * np.ones(3, np.float32),
     lambda x: x @ np.ones((3, 2)), lambda x: np.ones((2, 2)) @ x.reshape(2, -1)[:, :2],
     lambda x: x.clip(0.5, 2.5), lambda x: (x > 1) * x, lambda x: F.pad(x, (1, 1), value=0.5)],
    ids=["x+1", "1+x", "x-1.5", "1-x", "x*0.5", "0.5*x", "x/2", "2/x", "x**2", "x**0.5", "2**x",
         "-x", "mean", "sum/3", "x*np.float64", "x+f64-array", "x*f32-array", "x@f64-array",
         "f64-array@x", "clip", "mask*x", "pad"],
)
def test_scalar_and_array_operands_adopt_the_tensor_dtype(fn, dtype):
    x = tc.Tensor([[1.0, 2.0, 3.0], [0.5, 1.5, 2.5]], requires_grad=True, dtype=dtype)
    out = fn(x)
    assert out.dtype == dtype
    seen = record_grad_dtypes(out)
    out.sum().backward()
    assert {d for _, d in seen} == {np.dtype(dtype)}
    assert x.grad.dtype == dtype


def test_float64_array_operands_are_not_rounded_through_float32():
    tiny = 1e-10  # invisible at float32 resolution next to 1
    x = tc.Tensor([1.0], dtype=np.float64)
    arr = np.array([1.0 + tiny])
    assert (arr - x).item() == pytest.approx(tiny, rel=1e-5)
    assert (x - arr).item() == pytest.approx(-tiny, rel=1e-5)
    assert (x @ arr).item() - 1.0 == pytest.approx(tiny, rel=1e-5)
    w = tc.Tensor(np.ones((1, 1, 1, 1)), dtype=np.float64)
    xi = tc.Tensor(np.ones((1, 1, 1, 1)), dtype=np.float64)
    conv = F.conv2d(xi, w, np.array([tiny]))
    assert conv.item() - 1.0 == pytest.approx(tiny, rel=1e-5)
    lin = F.linear(tc.Tensor([[1.0]], dtype=np.float64), np.array([[1.0 + tiny]]))
    assert lin.item() - 1.0 == pytest.approx(tiny, rel=1e-5)


def test_float32_tensor_with_float64_arrays_stays_float32():
    x = tc.Tensor(np.ones((1, 1, 3, 3)), requires_grad=True)
    out = F.conv2d(x, np.ones((2, 1, 2, 2)), np.zeros(2))
    assert out.dtype == np.float32
    assert F.linear(tc.ones(2, 3), np.ones((4, 3)), np.ones(4)).dtype == np.float32
    assert F.mse_loss(tc.ones(2), np.zeros(2)).dtype == np.float32
    bn = F.batch_norm(tc.ones(2, 2), np.zeros(2), np.ones(2), np.ones(2), np.zeros(2))
    assert bn.dtype == np.float32


def test_integer_tensors():
    i = tc.Tensor([1, 2, 3])
    assert (i + 1).dtype == np.int64 and (i * 2).dtype == np.int64
    np.testing.assert_array_equal((i + 1).data, [2, 3, 4])
    half = i + 0.5  # a Python float promotes to the default float, never float64
    assert half.dtype == np.float32
    np.testing.assert_array_equal(half.data, [1.5, 2.5, 3.5])
    assert (0.5 * i).dtype == np.float32
    assert (i > 1).dtype == np.bool_
    assert (i > 1).sum().dtype.kind == "i"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_integer_tensor_meeting_a_float_tensor_takes_its_dtype(dtype):
    i = tc.Tensor([1, 2, 3])
    f = tc.Tensor([0.5, 0.25, 2.0], requires_grad=True, dtype=dtype)
    for out, ref in ((i + f, [1.5, 2.25, 5.0]), (f * i, [0.5, 0.5, 6.0]), (i - f, [0.5, 1.75, 1.0]),
                     (i / f, [2.0, 8.0, 1.5]), (f ** i, [0.5, 0.0625, 8.0])):
        assert out.dtype == dtype
        np.testing.assert_allclose(out.data, ref)
    assert (i @ f).dtype == dtype and (i @ f).item() == pytest.approx(7.0)
    (i * f).sum().backward()
    assert f.grad.dtype == dtype
    np.testing.assert_array_equal(f.grad.data, [1.0, 2.0, 3.0])


def test_integer_division_gives_float32():
    i = tc.Tensor([1, 2, 3])
    for out in (i / 2, 6 / i, i / tc.Tensor([2, 4, 6]), (i > 1).sum() / 3):
        assert out.dtype == np.float32
    np.testing.assert_allclose((i / 2).data, [0.5, 1.0, 1.5])
    np.testing.assert_allclose((6 / i).data, [6.0, 3.0, 2.0])
    assert ((i > 1).sum() / 3).item() == pytest.approx(2 / 3)
    assert (i * np.float64(0.5)).dtype == np.float32


def test_gradcheck_accepts_float32_inputs_and_checks_in_float64():
    x = tc.Tensor([0.3, -0.2, 0.9], requires_grad=True)
    calls = []

    def fn(t):
        calls.append(t.dtype)
        return t.tanh() * t

    assert tc.gradcheck(fn, [x])
    assert set(calls) == {np.dtype(np.float64)}
    assert x.dtype == np.float32 and x.grad is None


def test_factories_default_to_float32():
    for t in (tc.zeros(2), tc.ones(2), tc.randn(2), tc.rand(2), tc.arange(0.0, 2.0),
              tc.zeros_like(tc.ones(2)), tc.Tensor(2.5)):
        assert t.dtype == np.float32
