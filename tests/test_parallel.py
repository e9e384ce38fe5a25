"""Batch-split and cache-blocked kernels give the same numbers as the naive loops.

Splitting only starts above a size threshold, which the small shapes elsewhere never reach:
here the threshold is lowered to 0 and three threads are forced, so every slice boundary
(including uneven ones: batch 5 over 3 threads) is exercised.
"""

import numpy as np
import pytest

import tinygrad_conv as tc
import tinygrad_conv.functional as F
from tinygrad_conv import kernels, naive, parallel


@pytest.fixture
def split_everything(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    monkeypatch.setenv("TINYGRAD_CONV_THREADS", "3")


@pytest.fixture(params=["one block", "an image per block"])
def block_size(request, monkeypatch):
    """col2im_of_product's batch chunking: everything at once, or one image at a time."""
    if request.param == "an image per block":
        monkeypatch.setattr(kernels, "BLOCK_BYTES", 1)


@pytest.mark.parametrize("stride,padding", [((1, 1), (1, 1)), ((2, 1), (0, 2))])
def test_conv2d_split_matches_naive(split_everything, block_size, stride, padding):
    rng = np.random.default_rng(1)
    x = tc.Tensor(rng.standard_normal((5, 3, 9, 8)), requires_grad=True)
    w = tc.Tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    b = tc.Tensor(rng.standard_normal(4), requires_grad=True)
    y = F.conv2d(x, w, b, stride=stride, padding=padding)
    np.testing.assert_allclose(y.data, naive.conv2d(x.data, w.data, b.data, stride, padding),
                               rtol=1e-5, atol=1e-5)
    dout = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(dout)
    dx, dw, db = naive.conv2d_backward(dout, x.data, w.data, stride, padding)
    np.testing.assert_allclose(x.grad.data, dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w.grad.data, dw, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(b.grad.data, db, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kernel,stride,padding", [((2, 2), (2, 2), (0, 0)),
                                                   ((3, 3), (2, 2), (1, 1))])
def test_pools_and_relu_split_match_references(split_everything, kernel, stride, padding):
    rng = np.random.default_rng(2)
    data = rng.standard_normal((5, 3, 8, 7))
    x = tc.Tensor(data, requires_grad=True, dtype=np.float64)
    out = F.max_pool2d(x.relu(), kernel, stride, padding)
    expected = naive.max_pool2d(np.maximum(data, 0), kernel, stride, padding)
    np.testing.assert_array_equal(out.data, expected)
    avg = F.avg_pool2d(x, kernel, stride, padding)
    np.testing.assert_allclose(avg.data, naive.avg_pool2d(data, kernel, stride, padding))
    assert tc.gradcheck(lambda t: F.max_pool2d(t.relu(), kernel, stride, padding), [x])
    assert tc.gradcheck(lambda t: F.avg_pool2d(t, kernel, stride, padding), [x])


def test_thread_count_reads_the_environment(monkeypatch):
    monkeypatch.setenv("TINYGRAD_CONV_THREADS", "1")
    assert parallel.thread_count() == 1
    seen = []
    parallel.over_batch(seen.append, 4, 10**9)
    assert seen == [slice(0, 4)]  # one thread: one call over the whole batch
