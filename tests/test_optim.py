"""optim: updates against the formulas written out in NumPy, state dicts, schedulers."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tinygrad_conv as tc
from tinygrad_conv import nn, optim
from tinygrad_conv.optim import lr_scheduler

W0 = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
GRADS = [g.astype(np.float32) for g in np.random.default_rng(1).standard_normal((3, 4, 3))]


# ---- the update formulas, written out (float64) ----------------------------------------
def sgd_reference(lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    p, buf = W0.astype(np.float64), None
    for g in GRADS:
        g = g + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


def adam_reference(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    p, m, v = W0.astype(np.float64), 0.0, 0.0
    for t, g in enumerate(GRADS, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def run(opt_class, steps=3, **kwargs):
    p = nn.Parameter(W0)
    opt = opt_class([p], **kwargs)
    for g in GRADS[:steps]:
        p.grad = tc.Tensor(g)
        opt.step()
    return p, opt


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.1, momentum=0.8, nesterov=True),
    dict(lr=0.1, weight_decay=0.1),
    dict(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
]


@pytest.mark.parametrize("kwargs", SGD_CASES)
def test_sgd_matches_formula(kwargs):
    p, _ = run(optim.SGD, **kwargs)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.data, sgd_reference(**kwargs), rtol=1e-5, atol=1e-6)


ADAM_CASES = [
    dict(lr=0.01),
    dict(lr=0.01, betas=(0.8, 0.99), eps=0.1),  # a large eps: it is added after debiasing
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.01, betas=(0.3, 0.9)),  # 1 - beta1 >= 0.5: the lerp's other formula
]


@pytest.mark.parametrize("kwargs", ADAM_CASES)
def test_adam_matches_formula(kwargs):
    p, opt = run(optim.Adam, **kwargs)
    assert p.dtype == np.float32 and opt.state[p]["step"] == 3
    np.testing.assert_allclose(p.data, adam_reference(**kwargs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.5)])
def test_adamw_matches_formula(kwargs):
    p, _ = run(optim.AdamW, **kwargs)
    reference = adam_reference(decoupled=True, **{"weight_decay": 0.01, **kwargs})
    np.testing.assert_allclose(p.data, reference, rtol=1e-5, atol=1e-6)
    assert optim.AdamW([nn.Parameter(W0)]).defaults["weight_decay"] == 0.01


def test_params_without_grad_are_skipped_and_groups_have_own_lr():
    a, b, c = (nn.Parameter(W0) for _ in range(3))
    opt = optim.SGD([{"params": [a]}, {"params": [b, c], "lr": 0.5}], lr=0.1, momentum=0.9)
    a.grad, b.grad = tc.Tensor(GRADS[0]), tc.Tensor(GRADS[0])
    opt.step()
    np.testing.assert_allclose(a.data, W0 - 0.1 * GRADS[0], rtol=1e-6)
    np.testing.assert_allclose(b.data, W0 - 0.5 * GRADS[0], rtol=1e-6)
    np.testing.assert_array_equal(c.data, W0)
    assert c not in opt.state and opt.param_groups[1]["momentum"] == 0.9
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_step_records_no_graph_and_updates_in_place():
    p = nn.Parameter(W0)
    array = p.data
    opt = optim.Adam([p])
    p.grad = tc.Tensor(GRADS[0])
    opt.step()
    assert p.data is array and p.op is None and p.grad is not None


def test_step_calls_closure():
    p = nn.Parameter(W0)
    opt = optim.SGD([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == pytest.approx(float((W0.astype(np.float64) ** 2).sum()), rel=1e-5)
    np.testing.assert_allclose(p.data, W0 * 0.8, rtol=1e-6)


def test_constructor_errors():
    p = nn.Parameter(W0)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="single Tensor"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([p, p], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([p * 2], lr=0.1)
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD([p], lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([p], betas=(0.9, 1.0))


# ---- state dicts -----------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.01),
    lambda ps: optim.AdamW(ps, lr=0.01),
])
def test_state_dict_round_trip_continues_identically(tmp_path, make):
    first = [nn.Parameter(W0), nn.Parameter(W0[0])]
    opt = make(first)
    for g in GRADS[:2]:
        first[0].grad, first[1].grad = tc.Tensor(g), tc.Tensor(g[0])
        opt.step()
    tc.save(opt.state_dict(), tmp_path / "opt.npz")
    second = [nn.Parameter(p.data) for p in first]
    resumed = make(second)
    resumed.load_state_dict(tc.load(tmp_path / "opt.npz"))
    for params, o in ((first, opt), (second, resumed)):
        params[0].grad, params[1].grad = tc.Tensor(GRADS[2]), tc.Tensor(GRADS[2][0])
        o.step()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.data, b.data)


def test_state_dict_has_pytorchs_shape():
    p, opt = run(optim.Adam, steps=2, lr=0.01)
    q = nn.Parameter(W0)
    opt.add_param_group({"params": [q], "lr": 0.5})
    sd = opt.state_dict()
    assert sd["param_groups"] == [
        {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
         "amsgrad": False, "params": [0]},
        {"lr": 0.5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
         "amsgrad": False, "params": [1]},
    ]
    assert list(sd["state"]) == [0] and sd["state"][0]["step"] == 2
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], opt.state[p]["exp_avg"])
    assert sd["state"][0]["exp_avg"] is not opt.state[p]["exp_avg"]  # a copy


def test_load_state_dict_rejects_a_mismatch():
    _, opt = run(optim.SGD, lr=0.1, momentum=0.9)
    sd = opt.state_dict()
    two = optim.SGD([nn.Parameter(W0), nn.Parameter(W0)], lr=0.1)
    with pytest.raises(ValueError, match="group 0 has 1 parameters.*has 2"):
        two.load_state_dict(sd)
    other = optim.SGD([nn.Parameter(W0[:2])], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"momentum_buffer.*\(4, 3\).*\(2, 3\)"):
        other.load_state_dict(sd)


# ---- schedulers ------------------------------------------------------------------------
def lr_sequence(scheduler, opt, epochs):
    lrs = [scheduler.get_last_lr()[0]]
    for _ in range(epochs):
        opt.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
        assert opt.param_groups[0]["lr"] == lrs[-1]
    return lrs


def test_step_lr_sequence():
    opt = optim.SGD([nn.Parameter(W0)], lr=0.1)
    lrs = lr_sequence(lr_scheduler.StepLR(opt, step_size=3, gamma=0.5), opt, 10)
    np.testing.assert_allclose(lrs, [0.1 * 0.5 ** (e // 3) for e in range(11)], rtol=1e-12)


def test_cosine_annealing_sequence():
    opt = optim.Adam([nn.Parameter(W0)], lr=0.1)
    lrs = lr_sequence(lr_scheduler.CosineAnnealingLR(opt, T_max=6, eta_min=0.01), opt, 12)
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(13)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert lrs[6] == pytest.approx(0.01) and lrs[12] == pytest.approx(0.1)


def test_scheduler_state_dict_round_trip(tmp_path):
    opt = optim.SGD([nn.Parameter(W0)], lr=0.1)
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for _ in range(4):
        sched.step()
    tc.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "s.npz")
    opt2 = optim.SGD([nn.Parameter(W0)], lr=0.1)
    sched2 = lr_scheduler.CosineAnnealingLR(opt2, T_max=10)
    saved = tc.load(tmp_path / "s.npz")
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    assert sched2.last_epoch == 4 and sched2.get_last_lr() == sched.get_last_lr()
    sched.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_replan_keeps_the_steps_taken_and_follows_the_new_plan():
    opt = optim.SGD([nn.Parameter(W0)], lr=0.1)
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for _ in range(4):
        sched.step()
    sched.replan(0.05, T_max=20)
    expected = [0.05 * (1 + math.cos(math.pi * e / 20)) / 2 for e in range(4, 21)]
    lrs = lr_sequence(sched, opt, 16)
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert opt.param_groups[0]["initial_lr"] == 0.05 and sched.last_epoch == 20


def test_replan_of_step_lr_is_closed_form_and_rejects_unknown_settings():
    opt = optim.SGD([nn.Parameter(W0)], lr=0.1)
    sched = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(5):
        sched.step()
    sched.replan(1.0, step_size=3)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)  # 1.0 * 0.5 ** (5 // 3)
    with pytest.raises(ValueError, match="no setting named 'T_max'"):
        sched.replan(1.0, T_max=3)


# ---- end to end ------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.2, momentum=0.9),
    lambda ps: optim.Adam(ps, lr=0.02),
    lambda ps: optim.AdamW(ps, lr=0.02),
])
def test_small_mlp_loss_decreases(make):
    tc.manual_seed(0)
    data = np.random.default_rng(3)
    x = data.standard_normal((64, 2)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)  # XOR-like quadrants
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    opt, loss_fn = make(model.parameters()), nn.CrossEntropyLoss()
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
