"""The spinning worker threads that over_batch hands slices to (parallel._Crew)."""

import os
import threading

import numpy as np
import pytest

from tinygrad_conv import parallel

THREADS = min(parallel._CORES, 3)  # workers spin only with no more threads than cores


@pytest.fixture
def crew(monkeypatch):
    if parallel._libgomp() is None or THREADS < 2:
        pytest.skip("needs libgomp and two cores: else work goes to the thread pool")
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    monkeypatch.setenv("TINYGRAD_CONV_THREADS", str(THREADS))


def _squares_by_slices(n: int) -> tuple[np.ndarray, list[int]]:
    """over_batch writing out[s] = s**2; also which threads ran a slice."""
    out = np.zeros(n)
    threads = []

    def work(s: slice) -> None:
        threads.append(threading.get_ident())
        out[s] = np.arange(s.start, s.stop) ** 2

    parallel.over_batch(work, n, n)
    return out, threads


def test_slices_run_on_every_thread_and_cover_the_batch(crew):
    out, threads = _squares_by_slices(10)
    np.testing.assert_array_equal(out, np.arange(10) ** 2)
    assert len(set(threads)) == THREADS


def test_a_workers_error_reaches_the_caller_and_the_crew_still_works(crew):
    def work(s: slice) -> None:
        if s.start > 0:
            raise ValueError(f"slice {s.start}")

    with pytest.raises(ValueError, match="slice"):
        parallel.over_batch(work, 9, 9)
    out, _ = _squares_by_slices(9)
    np.testing.assert_array_equal(out, np.arange(9) ** 2)


def test_a_nested_split_runs_on_the_thread_that_asked(crew):
    out = np.zeros((6, 4))

    def outer(s: slice) -> None:
        for row in range(s.start, s.stop):
            def inner(t: slice, row: int = row) -> None:
                out[row, t] = row * 10 + np.arange(t.start, t.stop)
            parallel.over_batch(inner, 4, 4)

    parallel.over_batch(outer, 6, 6)
    np.testing.assert_array_equal(out, np.arange(6)[:, None] * 10 + np.arange(4))


def test_resting_workers_wake_for_the_next_split(crew):
    _squares_by_slices(6)
    for _ in range(3):
        parallel.rest()
        parallel.rest()  # twice in a row is fine
        out, threads = _squares_by_slices(6)
        np.testing.assert_array_equal(out, np.arange(6) ** 2)
        assert len(set(threads)) == THREADS


def test_rests_and_splits_in_quick_succession_never_hang_or_rerun(crew):
    """A rest right before a hand-off (and two in a row) must neither lose the slice nor
    run it twice; run on a helper thread so that a hang fails the test instead."""
    failures = []

    def hammer() -> None:
        counts = np.zeros(THREADS * 4, dtype=np.int64)

        def work(s: slice) -> None:
            counts[s] += 1

        for round_ in range(2000):
            if round_ % 3:
                parallel.rest()
            if round_ % 7 == 0:
                parallel.rest()
            parallel.over_batch(work, len(counts), len(counts))
        if not np.all(counts == 2000):
            failures.append(counts)

    helper = threading.Thread(target=hammer, daemon=True)
    helper.start()
    helper.join(timeout=60)
    assert not helper.is_alive(), "a split or a rest hung"
    assert not failures, failures


def test_splits_from_two_threads_at_once_are_both_right(crew):
    results = {}

    def run(name: str) -> None:
        results[name] = [_squares_by_slices(30)[0] for _ in range(50)]

    others = [threading.Thread(target=run, args=(k,)) for k in "ab"]
    for t in others:
        t.start()
    for t in others:
        t.join()
    for runs in results.values():
        for out in runs:
            np.testing.assert_array_equal(out, np.arange(30) ** 2)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_workers_of_its_own(crew):
    _squares_by_slices(6)  # the parent's crew exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its copy of the crew has no threads behind it
        try:
            out, threads = _squares_by_slices(6)
            ok = np.array_equal(out, np.arange(6) ** 2) and len(set(threads)) == THREADS
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"


def test_more_threads_than_cores_go_to_the_thread_pool(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    monkeypatch.setenv("TINYGRAD_CONV_THREADS", str(parallel._CORES + 1))
    assert parallel._crew(parallel._CORES + 1) is None
    out, _ = _squares_by_slices(parallel._CORES + 1)  # the pool may reuse a thread
    np.testing.assert_array_equal(out, np.arange(parallel._CORES + 1) ** 2)
