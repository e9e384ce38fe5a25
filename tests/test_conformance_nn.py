"""Conformance with PyTorch: nn layers and containers, F functions, losses, gradient
clipping, optimisers and schedulers, empty batches. ``lib`` is tinygrad_conv or torch."""

from __future__ import annotations

import numpy as np
import pytest
from _conformance import assert_same, compare, same_error, to_numpy, torch

import tinygrad_conv as tc
from tinygrad_conv import data, nn, optim

rng = np.random.default_rng(2)
X = rng.standard_normal((4, 5))
IMG = rng.standard_normal((2, 3, 7, 9))
TARGET = np.array([1, 0, 4, 2])


def mod(lib):
    return nn if lib is tc else torch.nn


def fn(lib):
    return tc.functional if lib is tc else torch.nn.functional


# ---- activations, pooling, F ---------------------------------------------------------------

@pytest.mark.parametrize("layer", [
    lambda m: m.LeakyReLU(), lambda m: m.LeakyReLU(0.2), lambda m: m.ELU(), lambda m: m.ELU(0.5),
    lambda m: m.GELU(), lambda m: m.GELU(approximate="tanh"), lambda m: m.SiLU(),
    lambda m: m.Softmax(dim=1), lambda m: m.LogSoftmax(dim=0), lambda m: m.Identity(),
    lambda m: m.Sigmoid(), lambda m: m.Tanh(), lambda m: m.ReLU(inplace=True),
    lambda m: m.Dropout(0.3, inplace=True).eval(),
])
def test_activation_layers(layer):
    x = np.concatenate([X, np.zeros((1, 5))])  # includes exact zeros
    compare(lambda lib, t: layer(mod(lib))(t * 1), x, rtol=2e-6, atol=1e-7)  # inplace: non-leaf


@pytest.mark.parametrize("snippet", [
    lambda F, x: F.leaky_relu(x, 0.1), lambda F, x: F.gelu(x), lambda F, x: F.silu(x),
    lambda F, x: F.elu(x * 30), lambda F, x: F.softmax(x, dim=1),
])
def test_functional_activations(snippet):
    compare(lambda lib, t: snippet(fn(lib), t), X, rtol=2e-6, atol=1e-7)


def test_one_hot():
    for t in (np.array([0, 2, 1]), np.array([[1, 3], [0, 0]])):
        assert_same(tc.functional.one_hot(tc.tensor(t)),
                    torch.nn.functional.one_hot(torch.tensor(t)))
    assert_same(tc.functional.one_hot(tc.tensor([1]), num_classes=4),
                torch.nn.functional.one_hot(torch.tensor([1]), num_classes=4))
    same_error(lambda lib: fn(lib).one_hot(lib.tensor([3]), num_classes=2))


@pytest.mark.parametrize("size", [(1, 1), (3, 3), (2, 4), 5, (None, 2), (7, 9)])
def test_adaptive_avg_pool2d(size):
    compare(lambda lib, t: mod(lib).AdaptiveAvgPool2d(size)(t), IMG)
    compare(lambda lib, t: fn(lib).adaptive_avg_pool2d(t, size), IMG)


@pytest.mark.parametrize("args", [(2, 2, 0), (3, 2, 1), (2, 3, 0), (3, 3, 1), (2, 1, 1)])
def test_max_pool_ceil_mode(args):
    k, s, p = args
    compare(lambda lib, t: mod(lib).MaxPool2d(k, s, p, ceil_mode=True)(t), IMG)
    compare(lambda lib, t: fn(lib).max_pool2d(t, k, s, p, ceil_mode=True), IMG[:, :, :6, :5])


def test_dropout2d_zeroes_whole_channels():
    tc.manual_seed(0)
    x = tc.ones(20, 16, 3, 3, requires_grad=True)
    layer = nn.Dropout2d(0.25)
    out = layer(x)
    per_channel = out.data.reshape(20, 16, 9)
    assert np.all((per_channel == 0).all(-1) | (per_channel == 1 / 0.75).all(-1))
    kept = (per_channel[..., 0] != 0).mean()
    assert abs(kept - 0.75) < 0.1
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.data, out.data)
    layer.eval()
    assert layer(x) is x


# ---- containers and Module methods ----------------------------------------------------------

def test_module_list_and_dict():
    for lib in (tc, torch):
        m = mod(lib)
        layers = m.ModuleList([m.Linear(2, 3), m.ReLU()])
        layers.append(m.Linear(3, 1))
        layers.extend([m.Tanh()])
        layers.insert(1, m.Identity())
        assert len(layers) == 5 and isinstance(layers[-1], m.Tanh)
        assert isinstance(layers[1], m.Identity) and len(layers[1:3]) == 2
        d = m.ModuleDict({"a": m.Linear(2, 2), "b": m.ReLU()})
        d["c"] = m.Linear(2, 1)
        assert list(d.keys()) == ["a", "b", "c"] and "b" in d and len(d) == 3
        owner = m.Module()
        owner.layers, owner.heads = layers, d
        names = [n for n, _ in owner.named_parameters()]
        assert names == ["layers.0.weight", "layers.0.bias", "layers.3.weight",
                         "layers.3.bias", "heads.a.weight", "heads.a.bias", "heads.c.weight",
                         "heads.c.bias"]
        assert sum(p.numel() for p in owner.parameters()) == 9 + 4 + 6 + 3


def test_module_to_cpu_and_requires_grad_():
    for lib in (tc, torch):
        m = mod(lib).Linear(3, 2)
        weight = m.weight
        assert m.to(lib.float64) is m and m.weight is weight
        assert m.weight.dtype == lib.float64 and m.cpu() is m
        assert m.float().weight.dtype == lib.float32 and m.to("cpu") is m
        m.requires_grad_(False)
        assert not any(p.requires_grad for p in m.parameters())
        m.requires_grad_()
        assert all(p.requires_grad for p in m.parameters())


# ---- losses ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {}, {"reduction": "sum"}, {"reduction": "none"}, {"label_smoothing": 0.1},
    {"ignore_index": 4}, {"ignore_index": 1, "label_smoothing": 0.2, "reduction": "sum"},
    {"ignore_index": 0, "reduction": "none"},
])
def test_cross_entropy_options(kwargs):
    def run(lib, x):
        t = lib.tensor(TARGET)
        return fn(lib).cross_entropy(x, t, **kwargs) + mod(lib).CrossEntropyLoss(**kwargs)(x, t)

    compare(run, X)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_with_class_probabilities(smoothing):
    probs = rng.dirichlet(np.ones(5), size=4)
    compare(lambda lib, x, p: fn(lib).cross_entropy(x, p, label_smoothing=smoothing), X, probs)


def test_nll_loss_and_module():
    def run(lib, x):
        logp = fn(lib).log_softmax(x, dim=1)
        t = lib.tensor(TARGET)
        return (mod(lib).NLLLoss()(logp, t), fn(lib).nll_loss(logp, t, reduction="sum"),
                fn(lib).nll_loss(logp, t, ignore_index=2))

    compare(lambda lib, x: sum(run(lib, x)), X)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits_and_mse(reduction):
    y = rng.uniform(0, 1, X.shape)
    x = X * 20  # large logits: the stable form must not overflow
    x[0, 0] = 0.0
    compare(lambda lib, a, b: mod(lib).BCEWithLogitsLoss(reduction=reduction)(a, b), x, y)
    compare(lambda lib, a, b: fn(lib).binary_cross_entropy_with_logits(
        a, b, weight=lib.tensor(y[0]), reduction=reduction), x, y)
    compare(lambda lib, a, b: mod(lib).MSELoss(reduction=reduction)(a, b), X, y)
    compare(lambda lib, a, b: fn(lib).mse_loss(a, b, reduction=reduction), X, y)


# ---- gradient clipping ----------------------------------------------------------------------

@pytest.mark.parametrize("max_norm,norm_type", [(0.5, 2.0), (100.0, 2.0), (0.3, 1.0),
                                                (0.2, float("inf"))])
def test_clip_grad_norm(max_norm, norm_type):
    def run(lib):
        a, b = (lib.tensor(v, dtype=lib.float64, requires_grad=True) for v in (X, X[0]))
        ((a * a).sum() + (b * 3).sum()).backward()
        total = mod(lib).utils.clip_grad_norm_([a, b], max_norm, norm_type)
        return total, a.grad, b.grad

    assert_same(run(tc), run(torch))


def test_clip_grad_value():
    def run(lib):
        a = lib.tensor(X, dtype=lib.float64, requires_grad=True)
        (a * a).sum().backward()
        mod(lib).utils.clip_grad_value_(a, 0.7)
        return a.grad

    assert_same(run(tc), run(torch))


# ---- optimisers and schedulers ------------------------------------------------------------

def _train(lib, make_opt, steps=6, sched=None):
    torch.manual_seed(0)
    w0 = np.linspace(-1, 1, 10).reshape(2, 5)
    w = lib.tensor(w0, dtype=lib.float64, requires_grad=True)
    opt = make_opt(optim if lib is tc else torch.optim, [w])
    s = sched(optim.lr_scheduler if lib is tc else torch.optim.lr_scheduler, opt) if sched \
        else None
    x = lib.tensor(X, dtype=lib.float64)
    lrs = []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((x @ w.t()).tanh() ** 2).sum()
        loss.backward()
        opt.step()
        if s is not None:
            s.step()
            lrs.append(opt.param_groups[0]["lr"])
    return to_numpy(w), lrs


@pytest.mark.parametrize("make", [
    lambda o, p: o.RMSprop(p, lr=0.01),
    lambda o, p: o.RMSprop(p, lr=0.01, alpha=0.9, momentum=0.5, centered=True,
                           weight_decay=0.1),
    lambda o, p: o.Adam(p, lr=0.05, amsgrad=True),
    lambda o, p: o.AdamW(p, lr=0.05, amsgrad=True, weight_decay=0.1),
])
def test_optimisers(make):
    ours, theirs = _train(tc, make), _train(torch, make)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs", [
    {}, {"anneal_strategy": "linear"}, {"three_phase": True}, {"pct_start": 0.5},
])
def test_one_cycle_lr(kwargs):
    def make(o, p):
        return o.SGD(p, lr=0.1, momentum=0.9)

    def sched(s, opt):
        return s.OneCycleLR(opt, max_lr=0.5, total_steps=12, **kwargs)

    (w_ours, lr_ours), (w_theirs, lr_theirs) = (_train(lib, make, 11, sched)
                                                for lib in (tc, torch))
    np.testing.assert_allclose(lr_ours, lr_theirs, rtol=1e-12)
    np.testing.assert_allclose(w_ours, w_theirs, rtol=1e-10)


@pytest.mark.filterwarnings("ignore:Detected call of")  # torch: no optimizer.step() here
def test_one_cycle_with_adam_cycles_beta1_and_stops_at_the_end():
    for lib, o, s in ((tc, optim, optim.lr_scheduler),
                      (torch, torch.optim, torch.optim.lr_scheduler)):
        w = lib.zeros(2, requires_grad=True)
        opt = o.Adam([w], lr=0.1)
        sched = s.OneCycleLR(opt, max_lr=1.0, epochs=2, steps_per_epoch=2)
        betas = [opt.param_groups[0]["betas"][0]]
        for _ in range(4):
            sched.step()
            betas.append(opt.param_groups[0]["betas"][0])
        if lib is tc:
            ours = betas
    np.testing.assert_allclose(ours, betas)


def test_reduce_lr_on_plateau():
    metrics = [1.0, 0.9, 0.9, 0.95, 0.91, 0.92, 0.93, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    for kwargs in ({"patience": 1}, {"patience": 0, "cooldown": 2, "factor": 0.5},
                   {"mode": "max", "patience": 1, "threshold_mode": "abs", "min_lr": 0.02}):
        runs = []
        for lib, o, s in ((tc, optim, optim.lr_scheduler),
                          (torch, torch.optim, torch.optim.lr_scheduler)):
            opt = o.SGD([lib.zeros(1, requires_grad=True)], lr=0.1)
            sched = s.ReduceLROnPlateau(opt, **kwargs)
            lrs = []
            for m in metrics:
                sched.step(m)
                lrs.append(opt.param_groups[0]["lr"])
            runs.append(lrs + sched.get_last_lr())
        np.testing.assert_allclose(runs[0], runs[1], rtol=1e-12)


# ---- empty batches ------------------------------------------------------------------------

def test_empty_batches():
    def run(lib):
        m = mod(lib)
        torch.manual_seed(0)
        x = lib.zeros(0, 1, 6, 6, requires_grad=True)
        conv = m.Conv2d(1, 2, 3)
        h = m.Flatten()(conv(x))
        out = m.Linear(32, 3)(h)
        out.sum().backward()
        loss = fn(lib).cross_entropy(out, lib.zeros(0, dtype=lib.int64))
        return tuple(out.shape), tuple(h.shape), tuple(x.grad.shape), conv.weight.grad.abs().sum(
        ).item(), bool(loss.isnan()) if lib is torch else bool(np.isnan(loss.item()))

    assert run(tc) == run(torch)


# ---- data ----------------------------------------------------------------------------------

def _batches(lib, dataset, **kwargs):
    loader = (data.DataLoader if lib is tc else torch.utils.data.DataLoader)(
        dataset, batch_size=3, **kwargs)
    return [to_numpy(b) for b in loader]


def _same_batches(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert_same(tuple(a) if isinstance(a, (list, tuple)) else a,
                    tuple(b) if isinstance(b, (list, tuple)) else b)


def test_data_loader_batches_lists_as_pytorch():
    xs = rng.standard_normal((7, 2)).astype(np.float32)
    for lib in (tc, torch):
        pairs = [(lib.tensor(x), int(i % 3)) for i, x in enumerate(xs)]
        bare = [lib.tensor(x) for x in xs]
        floats = [(float(i), np.float32(i) * 2, np.arange(2) + i) for i in range(5)]
        dicts = [{"x": lib.tensor(x), "name": "a"} for x in xs[:4]]
        result = (_batches(lib, pairs), _batches(lib, bare), _batches(lib, floats),
                  [(d["x"], d["name"]) for d in _batches(lib, dicts)])
        if lib is tc:
            ours = result
    for a, b in zip(ours, result):
        _same_batches(a, b)


def test_tensor_dataset():
    x, y = rng.standard_normal((8, 3)), np.arange(8)
    runs = []
    for lib in (tc, torch):
        ds = (data.TensorDataset if lib is tc else torch.utils.data.TensorDataset)(
            lib.tensor(x, dtype=lib.float64), lib.tensor(y))
        assert len(ds) == 8
        runs.append((to_numpy(ds[2]), _batches(lib, ds, drop_last=True)))
    assert_same(runs[0][0], runs[1][0])
    _same_batches(runs[0][1], runs[1][1])
    with pytest.raises(ValueError, match="first size"):
        data.TensorDataset(tc.zeros(3), tc.zeros(4))
