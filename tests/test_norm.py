"""Batch norm as one op: gradients by finite differences in float64, values against PyTorch."""

import numpy as np
import pytest

import tinygrad_conv as tc
import tinygrad_conv.functional as F
from tinygrad_conv import nn
from tinygrad_conv.engine import topological_order


def t64(a, requires_grad=True):
    return tc.Tensor(np.asarray(a), dtype=np.float64, requires_grad=requires_grad)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5), (2, 3, 4, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_every_input(rng, shape, training):
    c = shape[1]
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    x = t64(rng.standard_normal(shape) * 2 + 1)
    w, b = t64(rng.standard_normal(c)), t64(rng.standard_normal(c))

    def fn(x, w, b):
        return F.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training)

    assert tc.gradcheck(fn, [x, w, b])


@pytest.mark.parametrize("affine", [(True, False), (False, True), (False, False)])
def test_gradcheck_without_weight_or_bias(rng, affine):
    x = t64(rng.standard_normal((5, 2, 3)))
    params = [t64(rng.standard_normal(2)) if on else None for on in affine]
    given = [p for p in params if p is not None]

    def fn(x, *ps):
        it = iter(ps)
        w, b = (next(it) if on else None for on in affine)
        return F.batch_norm(x, None, None, w, b, training=True)

    assert tc.gradcheck(fn, [x, *given])


def test_second_derivative_matches_finite_differences(rng):
    """create_graph=True records the backward itself: d/dx of sum((dL/dx)**2)."""
    a, w, up = (rng.standard_normal(s) for s in ((4, 2, 3), 2, (4, 2, 3)))

    def input_grad(xa, create_graph):
        x = t64(xa)
        y = F.batch_norm(x, None, None, t64(w), None, training=True)
        (y * t64(up, requires_grad=False)).sum().backward(create_graph=create_graph)
        return x, x.grad

    x, gx = input_grad(a, create_graph=True)
    x.grad = None
    (gx * gx).sum().backward()
    analytic = x.grad.data

    def scalar(xa):
        g = input_grad(xa, create_graph=False)[1].data
        return float((g * g).sum())

    numeric = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        plus, minus = a.copy(), a.copy()
        plus[i] += 1e-6
        minus[i] -= 1e-6
        numeric[i] = (scalar(plus) - scalar(minus)) / 2e-6
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_one_op_in_the_graph():
    bn = nn.BatchNorm2d(3)
    x = tc.randn(2, 3, 4, 4, requires_grad=True)
    y = bn(x)
    ops = [t.op.name for t in topological_order(y) if t.op is not None]
    assert ops == ["batch_norm"]


def test_running_stats_by_hand(rng):
    """momentum 0.1 and the unbiased variance of the batch; momentum=None averages them all."""
    batches = [rng.standard_normal((4, 2, 3, 3)).astype(np.float32) * (i + 1) for i in range(3)]
    bn, cumulative = nn.BatchNorm2d(2), nn.BatchNorm2d(2, momentum=None)
    mean, var = np.zeros(2), np.ones(2)
    for b in batches:
        bn(b)
        cumulative(b)
        mean = 0.9 * mean + 0.1 * b.mean(axis=(0, 2, 3))
        var = 0.9 * var + 0.1 * b.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.running_mean.data, mean, rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.data, var, rtol=1e-5)
    assert int(bn.num_batches_tracked.data) == 3
    stacked_means = np.mean([b.mean(axis=(0, 2, 3)) for b in batches], axis=0)
    np.testing.assert_allclose(cumulative.running_mean.data, stacked_means, rtol=1e-5)


def test_eval_normalises_with_running_stats(rng):
    bn = nn.BatchNorm1d(3)
    bn.running_mean.data[...] = [1.0, -2.0, 0.5]
    bn.running_var.data[...] = [4.0, 1.0, 0.25]
    bn.weight.data[...] = [2.0, 1.0, -1.0]
    x = rng.standard_normal((5, 3)).astype(np.float32)
    out = bn.eval()(x).data
    expected = (x - [1.0, -2.0, 0.5]) / np.sqrt(np.array([4.0, 1.0, 0.25]) + 1e-5) * [2, 1, -1]
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert out.dtype == np.float32


def test_no_running_stats_and_no_affine():
    bn = nn.BatchNorm2d(2, affine=False, track_running_stats=False).eval()
    assert list(bn.state_dict()) == [] and list(bn.parameters()) == []
    x = np.arange(16, dtype=np.float32).reshape(2, 2, 2, 2)
    out = bn(x).data  # eval without running stats: the batch's statistics
    m = x.mean(axis=(0, 2, 3), keepdims=True)
    v = x.var(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(out, (x - m) / np.sqrt(v + 1e-5), rtol=1e-5, atol=1e-6)


def test_state_dict_keys_and_bad_input():
    bn = nn.BatchNorm1d(4)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                     "num_batches_tracked"]
    with pytest.raises(ValueError, match=r"BatchNorm1d\(4\).*\(2, 3\)"):
        bn(tc.zeros(2, 3))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(4\).*\(2, 4, 3, 3\)"):
        bn(tc.zeros(2, 4, 3, 3))


@pytest.mark.parametrize("cls, shape", [("BatchNorm1d", (6, 3)), ("BatchNorm1d", (4, 3, 5)),
                                        ("BatchNorm2d", (4, 3, 5, 5))])
@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"affine": False},
                                    {"track_running_stats": False}])
def test_against_pytorch(rng, cls, shape, kwargs):
    torch = pytest.importorskip("torch")
    ours, theirs = getattr(nn, cls)(3, **kwargs), getattr(torch.nn, cls)(3, **kwargs)
    if ours.affine:
        w, b = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
        ours.weight.data[...], ours.bias.data[...] = w, b
        with torch.no_grad():
            theirs.weight.copy_(torch.from_numpy(w))
            theirs.bias.copy_(torch.from_numpy(b))
    for step in range(3):
        a = (rng.standard_normal(shape) * (step + 1) + step).astype(np.float32)
        up = rng.standard_normal(shape).astype(np.float32)
        x, tx = tc.Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
        y, ty = ours(x), theirs(tx)
        (y * tc.Tensor(up)).sum().backward()
        (ty * torch.from_numpy(up)).sum().backward()
        np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-3, atol=1e-4)
    if ours.affine:
        np.testing.assert_allclose(ours.weight.grad.data, theirs.weight.grad.numpy(), rtol=1e-4,
                                   atol=1e-4)
        np.testing.assert_allclose(ours.bias.grad.data, theirs.bias.grad.numpy(), rtol=1e-4,
                                   atol=1e-4)
    state = theirs.state_dict()
    assert list(ours.state_dict()) == list(state)
    for key, value in ours.state_dict().items():
        np.testing.assert_allclose(value, state[key].numpy(), rtol=1e-5, atol=1e-6)
    ours.eval()
    theirs.eval()
    a = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(ours(a).data, theirs(torch.from_numpy(a)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)


def test_empty_batch_in_eval_mode_as_pytorch():
    """N = 0 through BatchNorm in eval mode gives an empty output and an empty gradient (as
    PyTorch); in training mode there are no values to take statistics of: an error."""
    for layer, shape in ((nn.BatchNorm2d(3), (0, 3, 4, 4)), (nn.BatchNorm1d(3), (0, 3))):
        x = tc.zeros(*shape, requires_grad=True)
        y = layer.eval()(x)
        y.sum().backward()
        assert y.shape == shape and x.grad.shape == shape
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            layer.train()(tc.zeros(*shape))
