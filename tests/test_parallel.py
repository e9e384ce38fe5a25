"""The fast backend's batch-split and cache-blocked kernels give the naive loops' numbers.

Splitting only starts above a size threshold, which the small shapes elsewhere never reach:
here the threshold is lowered to 0 and three or two threads are forced, so every slice
boundary (including uneven ones: batch 5 over 3 or 2 threads) is exercised.
"""

import os
import threading

import numpy as np
import pytest

import tinygrad_conv as tc
import tinygrad_conv.functional as F
from tinygrad_conv import naive
from tinygrad_conv.backends.fast import kernels, parallel


@pytest.fixture(params=[3, 2], ids=["3 threads", "2 threads"])
def split_everything(request, monkeypatch, fast_backend):
    """Every kernel of the fast backend split over the thread pool, three or two threads."""
    threads = request.param
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    monkeypatch.setattr(parallel, "MIN_GEMM_WORK", 0)
    monkeypatch.setattr(parallel, "INNER_BLOCK", {"numpy": 7, "onednn": 7})
    monkeypatch.setenv("TINYGRAD_CONV_THREADS", str(threads))


def channels_last_memory(a: np.ndarray) -> np.ndarray:
    """The same (N, C, H, W) values, stored (N, H, W, C) as a conv's output is."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@pytest.fixture(params=["one block", "an image per block"])
def block_size(request, monkeypatch):
    """col2im_of_product's batch chunking: everything at once, or one image at a time."""
    if request.param == "an image per block":
        monkeypatch.setattr(kernels, "BLOCK_BYTES", 1)


@pytest.mark.parametrize("channels", [1, 5])  # offset-major X_col, pixel-major X_col
@pytest.mark.parametrize("layout", ["channels first", "channels last"])
@pytest.mark.parametrize("stride,padding,bias", [((1, 1), (1, 1), True), ((2, 1), (0, 2), True),
                                                 ((2, 1), (1, 0), False)])
def test_conv2d_split_matches_naive(split_everything, block_size, channels, layout, stride,
                                    padding, bias):
    """Both X_col layouts, from NCHW and from NHWC memory, with and without a bias."""
    rng = np.random.default_rng(1)
    data = rng.standard_normal((5, channels, 9, 12)).astype(np.float32)
    if layout == "channels last":
        data = channels_last_memory(data)
    x = tc.Tensor(data, requires_grad=True)
    w = tc.Tensor(rng.standard_normal((4, channels, 3, 3)), requires_grad=True)
    b = tc.Tensor(rng.standard_normal(4) if bias else np.zeros(4), requires_grad=bias)
    y = F.conv2d(x, w, b if bias else None, stride=stride, padding=padding)
    np.testing.assert_allclose(y.data, naive.conv2d(x.data, w.data, b.data, stride, padding),
                               rtol=1e-5, atol=1e-5)
    dout = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(dout)
    dx, dw, db = naive.conv2d_backward(dout, x.data, w.data, stride, padding)
    np.testing.assert_allclose(x.grad.data, dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w.grad.data, dw, rtol=1e-5, atol=1e-4)
    if bias:
        np.testing.assert_allclose(b.grad.data, db, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kept", [True, False])
def test_weight_grad_from_the_forwards_padded_input_or_its_own(split_everything, kept):
    """dW either reuses the padded x that the forward's threads filled or pads x itself."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 6, 7, 8)).astype(np.float32)
    w = rng.standard_normal((4, 6, 3, 3)).astype(np.float32)
    geometry = dict(kernel=(3, 3), stride=(1, 1), padding=(2, 1), dilation=(1, 1))
    out, columns = kernels.im2col_matmul(x, kernels.weight_rows(w), None, **geometry)
    assert columns is not None and not columns.offset_major
    dout = rng.standard_normal((5, 4, 9, 8)).astype(np.float32)
    dw_rows, db = kernels.im2col_grad_weight(kernels.flat_pixels(dout), x, **geometry,
                                             columns=columns if kept else None, bias=True)
    assert db is None  # pixel-major columns: db is left to its own GEMV
    dw = kernels.weight_from_rows(dw_rows, w.shape)
    np.testing.assert_allclose(dw, naive.conv2d_backward(dout, x, w, padding=(2, 1))[1],
                               rtol=1e-4, atol=1e-4)


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


def _max_pool_backward_by_loops(x, g, kernel, stride):
    """Each window's g to its first maximum: the definition, one window at a time."""
    dx = np.zeros_like(x)
    (kh, kw), (sh, sw) = kernel, stride
    for n, c, y, z in np.ndindex(*g.shape):
        patch = x[n, c, y * sh:y * sh + kh, z * sw:z * sw + kw]
        i, j = np.unravel_index(np.argmax(patch), patch.shape)  # argmax: the first maximum
        dx[n, c, y * sh + i, z * sw + j] += g[n, c, y, z]
    return dx


def _padded_view(a: np.ndarray) -> np.ndarray:
    """The same values as a view into a zero-padded channels-last buffer (conv2d's dX)."""
    n, c, h, w = a.shape
    buffer = np.zeros((n, h + 2, w + 2, c), a.dtype)
    buffer[:, 1:-1, 1:-1] = a.transpose(0, 2, 3, 1)
    return buffer[:, 1:-1, 1:-1].transpose(0, 3, 1, 2)


@pytest.mark.parametrize("layout", ["channels first", "channels last", "padded view"])
@pytest.mark.parametrize("kernel,stride", [((2, 2), (2, 2)), ((3, 3), (2, 2))])
def test_max_pool_backward_split_for_any_upstream_layout(split_everything, layout, kernel,
                                                        stride):
    """A flatten hands pooling a channels-first gradient, a conv's dX a view into its
    padded buffer, other ops contiguous channels-last memory."""
    rng = np.random.default_rng(4)
    data = channels_last_memory(rng.standard_normal((5, 3, 9, 8)).astype(np.float32))
    x = tc.Tensor(data, requires_grad=True)
    out = F.max_pool2d(x, kernel, stride)
    g = rng.standard_normal(out.shape).astype(np.float32)
    laid_out = {"channels first": g, "channels last": channels_last_memory(g),
                "padded view": _padded_view(g)}[layout]
    np.testing.assert_array_equal(laid_out, g)
    out.backward(laid_out)
    # overlapping windows sum in another order: float32 rounding apart
    np.testing.assert_allclose(x.grad.data, _max_pool_backward_by_loops(data, g, kernel, stride),
                               rtol=1e-6, atol=1e-6)


def test_thread_count_reads_the_environment(monkeypatch):
    monkeypatch.setenv("TINYGRAD_CONV_THREADS", "1")
    assert parallel.thread_count() == 1
    seen = []
    parallel.over_batch(seen.append, 4, 10**9)
    assert seen == [slice(0, 4)]  # one thread: one call over the whole batch


@pytest.mark.parametrize("m,k,n", [(40, 3, 5), (3, 40, 5), (5, 3, 40), (2, 200, 3), (1, 1, 1)])
def test_split_matmul_matches_numpy(split_everything, m, k, n):
    """Row, column and inner-axis splits (uneven over three threads) against one np.matmul."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    np.testing.assert_allclose(parallel.matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(parallel.matmul(b.T, a.T), (a @ b).T, rtol=1e-12, atol=1e-12)


def test_blas_is_held_to_one_thread_from_first_use_until_released(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = threadpoolctl.ThreadpoolController().select(user_api="blas")
    if not blas.lib_controllers:
        pytest.skip("no BLAS library that threadpoolctl can control")

    def counts() -> list[int]:
        return [lib.get_num_threads() for lib in blas.lib_controllers]

    monkeypatch.setenv("TINYGRAD_CONV_THREADS", "2")
    parallel.release_blas()  # whatever earlier tests held
    try:
        with blas.limit(limits=2):
            before = counts()
            monkeypatch.setenv("TINYGRAD_CONV_THREADS", "1")  # not splitting: left alone
            with parallel.blas_single_threaded():
                assert counts() == before
            monkeypatch.setenv("TINYGRAD_CONV_THREADS", "2")
            with parallel.blas_single_threaded():
                assert counts() == [1] * len(before)
                with parallel.blas_single_threaded():
                    pass
                assert counts() == [1] * len(before)
            assert counts() == [1] * len(before)  # held on: no thread woken to spin
            parallel.release_blas()
            assert counts() == before
            parallel.release_blas()  # twice: nothing more to give back
            assert counts() == before
    finally:
        parallel.release_blas()


def test_relu_backward_split_and_its_second_derivative(split_everything):
    """relu's backward op (g where x > 0), split over the batch, and differentiated again:
    for y = sum(w * relu(x) * x), dy/dx = 2 w relu(x) and d(sum(v * dy/dx))/dx = 2 w v [x > 0]."""
    rng = np.random.default_rng(4)
    data = channels_last_memory(rng.standard_normal((5, 3, 4, 4)))
    w, v = rng.standard_normal(data.shape), rng.standard_normal(data.shape)
    x = tc.Tensor(data, requires_grad=True, dtype=np.float64)
    (x.relu() * x * tc.Tensor(w, dtype=np.float64)).sum().backward(create_graph=True)
    g1 = x.grad
    np.testing.assert_allclose(g1.data, 2 * w * np.maximum(data, 0))
    x.grad = None
    (g1 * tc.Tensor(v, dtype=np.float64)).sum().backward()
    np.testing.assert_allclose(x.grad.data, 2 * w * v * (data > 0))
    assert tc.gradcheck(lambda t: t.relu() * t, [x])


def test_flat_pixels_is_a_view_of_channels_last_memory_and_right_for_any_layout():
    rng = np.random.default_rng(6)
    nchw = rng.standard_normal((4, 5, 3, 2))
    layouts = {"channels last": channels_last_memory(nchw), "channels first": nchw,
               "strided": rng.standard_normal((4, 5, 6, 2))[:, :, ::2],
               "H and W swapped": np.ascontiguousarray(nchw.transpose(0, 1, 3, 2))
               .transpose(0, 1, 3, 2)}
    for name, y in layouts.items():
        flat = kernels.flat_pixels(y)
        np.testing.assert_array_equal(flat, y.transpose(1, 0, 2, 3).reshape(5, -1), err_msg=name)
        assert np.shares_memory(flat, y) == (name == "channels last"), name


def test_blas_left_alone_for_products_that_onednn_runs(monkeypatch, backend):
    """Given the products' dtype, BLAS is held only if NumPy's BLAS will compute them."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = threadpoolctl.ThreadpoolController().select(user_api="blas")
    if not blas.lib_controllers:
        pytest.skip("no BLAS library that threadpoolctl can control")
    monkeypatch.setenv("TINYGRAD_CONV_THREADS", "2")
    float32_held = backend == "numpy"

    def counts() -> list[int]:
        return [lib.get_num_threads() for lib in blas.lib_controllers]

    parallel.release_blas()
    try:
        with blas.limit(limits=2):
            before = counts()
            with parallel.blas_single_threaded(np.dtype(np.float32)):
                assert counts() == ([1] * len(before) if float32_held else before)
            parallel.release_blas()
            with parallel.blas_single_threaded(np.dtype(np.float64)):
                assert counts() == [1] * len(before)
            parallel.release_blas()
            assert counts() == before
    finally:
        parallel.release_blas()


def test_a_worker_woken_on_the_callers_core_moves_off_it(monkeypatch):
    """Linux may wake a worker on the caller's own core (both slices would then share it):
    the worker then narrows its affinity to the caller's other cores before its slice."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    if len(allowed) < 2 or parallel._current_cpu is None:
        pytest.skip("needs Linux and two cores to move between")
    caller_cpu = min(allowed)
    monkeypatch.setattr(parallel, "_current_cpu", lambda: caller_cpu)  # always "on it"
    seen, caller_tid = {}, threading.get_native_id()

    def slice_work(s):
        seen[s.start] = os.sched_getaffinity(0)

    def in_a_fresh_thread():
        run = parallel._off_callers_core(slice_work, caller_cpu, caller_tid)
        run(slice(0, 1))

    thread = threading.Thread(target=in_a_fresh_thread)  # its affinity ends with it
    thread.start()
    thread.join()
    assert seen[0] == allowed - {caller_cpu}
    assert os.sched_getaffinity(0) == allowed  # the caller itself is left alone
