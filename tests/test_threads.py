"""Threads, forks and interrupts: per-thread grad mode and module stack, two models trained
at once, a fork taken mid-training, and a KeyboardInterrupt at each point of a split.

Every test that could deadlock runs under a watchdog (faulthandler) that ends the run with
the threads' tracebacks instead of hanging.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
import time

import numpy as np
import pytest

import tinygrad_conv as tc
import tinygrad_conv.functional as F
from tinygrad_conv import engine, naive, nn, optim

WATCHDOG_SECONDS = 120


@pytest.fixture(autouse=True)
def watchdog():
    """A deadlock fails the run (with every thread's stack) rather than hanging CI."""
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def run_threads(*targets, timeout: float = 60.0) -> None:
    """Start one thread per target, join them all, and re-raise the first error."""
    errors: list[BaseException] = []

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as error:  # handed to the test
                errors.append(error)
        return run

    threads = [threading.Thread(target=guarded(fn), daemon=True) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a thread did not finish: deadlock?"
    if errors:
        raise errors[0]


def new_model(seed: int) -> nn.Module:
    """A small CNN initialised from ``seed`` (the global generator: made in one thread)."""
    tc.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def train(seed: int, steps: int = 4, model: nn.Module | None = None) -> list[np.ndarray]:
    """A small CNN trained a few SGD steps on data drawn from ``seed``; its parameters."""
    model = new_model(seed) if model is None else model
    opt = optim.SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = tc.tensor(rng.standard_normal((6, 1, 8, 8)).astype(np.float32))
        y = tc.tensor(rng.integers(0, 3, 6))
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return [p.data.copy() for p in model.parameters()]


def assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p, q)


# ---- per-thread state -----------------------------------------------------------------------


def test_a_no_grad_thread_beside_training_changes_nothing():
    expected = train(1)
    stop = threading.Event()

    def flip_grad_mode():
        while not stop.is_set():
            with tc.no_grad():
                assert not tc.is_grad_enabled()
                tc.ones(3) * 2  # records nothing, in this thread only

    results = []
    models = [new_model(1) for _ in range(3)]

    def trainer():
        try:
            for model in models:
                results.append(train(1, model=model))
        finally:
            stop.set()

    run_threads(flip_grad_mode, trainer)
    for got in results:
        assert_same(got, expected)
    assert tc.is_grad_enabled()


def test_grad_mode_set_in_one_thread_is_not_seen_in_another():
    seen = {}
    entered, checked = threading.Event(), threading.Event()

    def holder():
        with tc.no_grad():
            entered.set()
            checked.wait(30)
        seen["holder after"] = tc.is_grad_enabled()

    def other():
        entered.wait(30)
        seen["other"] = tc.is_grad_enabled()
        x = tc.ones(2, requires_grad=True)
        seen["records"] = (x * 3).requires_grad
        checked.set()

    run_threads(holder, other)
    assert seen == {"holder after": True, "other": True, "records": True}


@pytest.mark.parametrize("backend_name", ["fast", "reference"])
def test_two_threads_training_two_models_match_training_them_in_turn(backend_name):
    with tc.use_backend(backend_name):
        expected = {seed: train(seed, steps=6) for seed in (2, 3)}
        models = {seed: new_model(seed) for seed in (2, 3)}
        got = {}
        run_threads(*(lambda s=seed: got.__setitem__(s, train(s, 6, models[s]))
                      for seed in (2, 3)))
    for seed in (2, 3):
        assert_same(got[seed], expected[seed])


def test_module_stack_is_per_thread():
    """Ops record the modules of their own thread only (what the graph drawing frames)."""
    inside, recorded = threading.Event(), threading.Event()

    class Waits(nn.Module):
        def forward(self, x):
            inside.set()
            recorded.wait(30)
            return x

    blocker = Waits()
    scopes = {}

    def other():
        inside.wait(30)
        layer = nn.Linear(2, 2)
        out = layer(tc.ones(1, 2))
        scopes["other"] = out.op.scope
        recorded.set()

    run_threads(lambda: blocker(tc.ones(1)), other)
    assert len(scopes["other"]) == 1 and isinstance(scopes["other"][0], nn.Linear)
    assert engine.module_stack() == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_taken_while_another_thread_is_in_no_grad_trains_in_the_child():
    expected = train(4, steps=2)
    entered, release = threading.Event(), threading.Event()

    def holder():
        with tc.no_grad():
            entered.set()
            release.wait(30)

    t = threading.Thread(target=holder, daemon=True)
    t.start()
    entered.wait(30)
    try:
        pid = os.fork()
        if pid == 0:  # the child: grad mode on, the thread pool started anew, same result
            code = 1
            try:
                got = train(4, steps=2)
                same = all(np.array_equal(p, q) for p, q in zip(got, expected))
                code = 0 if tc.is_grad_enabled() and same else 3
            finally:
                os._exit(code)
        status = _wait_for(pid, timeout=60)
    finally:
        release.set()
        t.join(30)
    assert status == 0


def _wait_for(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child did not finish: deadlock?")


# ---- interrupts inside a split (the fast backend's thread pool) --------------------------


@pytest.fixture
def split_in_three(monkeypatch, fast_backend):
    """The fast backend's pool, three threads, splitting everything."""
    from tinygrad_conv.backends.fast import parallel

    monkeypatch.setenv("TINYGRAD_CONV_THREADS", "3")
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    monkeypatch.setattr(parallel, "MIN_GEMM_WORK", 0)
    return parallel


def conv_step_is_right() -> None:
    """A conv forward and backward after the interrupt gives the naive loops' numbers."""
    rng = np.random.default_rng(11)
    x_np = rng.standard_normal((5, 3, 7, 6))
    w_np = rng.standard_normal((4, 3, 3, 3))
    x = tc.tensor(x_np, requires_grad=True, dtype=np.float64)
    w = tc.tensor(w_np, requires_grad=True, dtype=np.float64)
    y = F.max_pool2d(F.conv2d(x, w, padding=1).relu(), 2)
    dout = rng.standard_normal(y.shape)
    y.backward(dout)
    conv = naive.conv2d(x_np, w_np, padding=(1, 1))
    pooled = naive.max_pool2d(np.maximum(conv, 0), (2, 2))
    np.testing.assert_allclose(y.data, pooled, atol=1e-10)
    check = tc.tensor(x_np, requires_grad=True, dtype=np.float64)
    with tc.use_backend("reference"):
        F.max_pool2d(F.conv2d(check, w.detach(), padding=1).relu(), 2).backward(dout)
    np.testing.assert_allclose(x.grad.data, check.grad.data, atol=1e-10)


def test_interrupt_in_the_callers_slice_waits_for_the_workers(split_in_three):
    finished = []

    def work(s: slice) -> None:
        if s.start == 0:
            raise KeyboardInterrupt
        time.sleep(0.2)
        finished.append(s.start)

    with pytest.raises(KeyboardInterrupt):
        split_in_three.over_batch(work, 6, 10**6)
    assert sorted(finished) == [2, 4]  # both workers had finished before it was raised
    conv_step_is_right()


def test_interrupt_while_waiting_for_the_workers_waits_on(split_in_three):
    finished = []
    main = threading.main_thread().ident

    def work(s: slice) -> None:
        if s.start == 0:
            return
        if s.start == 2:
            time.sleep(0.05)
            signal.pthread_kill(main, signal.SIGINT)  # Ctrl-C while the caller waits
        time.sleep(0.3)
        finished.append(s.start)

    with pytest.raises(KeyboardInterrupt):
        split_in_three.over_batch(work, 6, 10**6)
    assert sorted(finished) == [2, 4]
    conv_step_is_right()


def test_interrupt_while_handing_out_slices(split_in_three, monkeypatch):
    finished = []
    pool = split_in_three._executor(3)
    submit = pool.submit
    calls = []

    def interrupted_submit(fn, *args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return submit(fn, *args)

    def work(s: slice) -> None:
        time.sleep(0.2)
        finished.append(s.start)

    monkeypatch.setattr(pool, "submit", interrupted_submit)
    with pytest.raises(KeyboardInterrupt):
        split_in_three.over_batch(work, 6, 10**6)
    assert finished == [2]  # the one slice handed out had finished; slice 0 never ran
    monkeypatch.undo()
    conv_step_is_right()


def test_an_error_in_a_worker_reaches_the_caller_after_all_finished(split_in_three):
    finished = []

    def work(s: slice) -> None:
        if s.start == 2:
            raise ValueError("bad slice")
        time.sleep(0.1)
        finished.append(s.start)

    with pytest.raises(ValueError, match="bad slice"):
        split_in_three.over_batch(work, 6, 10**6)
    assert sorted(finished) == [0, 4]
    conv_step_is_right()


def test_no_buffer_outlives_its_split_in_a_worker(split_in_three):
    """After a split returns, the pool's threads hold nothing of it (issue: the last split's
    buffers stayed alive in a worker after training)."""
    import gc
    import weakref

    class Buffer:
        def __init__(self) -> None:
            self.data = np.zeros(1 << 20)

    def split_once() -> weakref.ref:
        buffer = Buffer()

        def work(s: slice) -> None:
            buffer.data[s] += 1

        split_in_three.over_batch(work, 6, 10**6)
        np.testing.assert_array_equal(buffer.data[:6], 1)
        return weakref.ref(buffer)

    alive = split_once()
    gc.collect()
    assert alive() is None
