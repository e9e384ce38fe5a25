"""gemm.matmul against float64 products, for every layout it reads in place or copies,
with and without ``out`` and ``accumulate``, on whichever backend is installed and on the
NumPy fallback."""

import time

import numpy as np
import pytest

from tinygrad_conv.backends.fast import gemm


def views(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """2-D float32 views: contiguous rows, contiguous columns, strided, single rows and
    columns, reversed (which must be copied)."""
    base = rng.standard_normal((24, 18)).astype(np.float32)
    return {"rows": base, "columns": base.T, "row slice": base[:, 3:15],
            "column slice": base.T[2:12], "every other row": base[::2], "one row": base[:1],
            "one column": base[:, :1], "reversed": base[::-1], "both strided": base[::2, ::3]}


def reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a.astype(np.float64) @ b.astype(np.float64)


def assert_close(actual: np.ndarray, expected: np.ndarray, err_msg: str = "") -> None:
    """float32 rounding relative to the product's scale (sums over long inner axes)."""
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=2e-6 * scale, err_msg=err_msg)


def test_every_pair_of_layouts(backend):
    rng = np.random.default_rng(0)
    operands = views(rng)
    checked = 0
    for name_a, a in operands.items():
        for name_b, b in operands.items():
            for right in (b, b.T):
                if a.shape[1] != right.shape[0]:
                    continue
                product = gemm.matmul(a, right)
                assert product.shape == (a.shape[0], right.shape[1])
                assert product.dtype == np.float32
                assert_close(product, reference(a, right), f"{name_a} @ {name_b}")
                checked += 1
    assert checked >= 38  # every pair whose shapes align


@pytest.mark.parametrize("m,k,n", [(40, 7, 3), (3, 7, 40), (1, 50, 9), (64, 500, 9), (9, 1, 5)])
def test_into_out_and_accumulating(backend, m, k, n):
    """Products with few output columns take the transposed route on oneDNN."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    expected = reference(a, b)
    holder = np.full((m + 4, n + 6), 7.0, np.float32)
    out = holder[2:2 + m, 3:3 + n]  # a view with a row stride of its own
    assert gemm.matmul(a, b, out=out) is out
    assert_close(out, expected)
    gemm.matmul(a, b, out=out, accumulate=True)
    assert_close(out, 2 * expected)
    assert (holder[:2] == 7).all() and (holder[:, :3] == 7).all()  # nothing outside touched
    column_major = np.zeros((n, m), np.float32).T  # an out whose rows are not contiguous
    gemm.matmul(a, b, out=column_major, accumulate=True)
    assert_close(column_major, expected)


def test_float64_and_empty_products_use_numpy(backend):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((5, 4)), rng.standard_normal((4, 3))
    exact = gemm.matmul(a, b)
    assert exact.dtype == np.float64
    np.testing.assert_array_equal(exact, a @ b)  # float64 stays exact: NumPy's own product
    empty = gemm.matmul(np.ones((3, 0), np.float32), np.ones((0, 2), np.float32))
    np.testing.assert_array_equal(empty, np.zeros((3, 2)))


def test_backend_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("TINYGRAD_CONV_GEMM", "numpy")
    monkeypatch.setattr(gemm, "_state", {})
    assert gemm.backend() == "numpy"


def test_the_callers_openmp_setting_is_put_back(backend):
    """oneDNN's libgomp may be PyTorch's too: the main thread's OpenMP thread count must be
    what it was after a product, or PyTorch would run on one thread from then on."""
    if backend != "onednn":
        pytest.skip("only oneDNN uses OpenMP")
    get, set_ = gemm._state["omp_get"], gemm._state["omp_set"]
    before = get()
    try:
        set_(3)
        a = np.ones((64, 32), np.float32)
        gemm.matmul(a, a.T)
        assert get() == 3
    finally:
        set_(before)


def test_first_products_from_two_threads_at_once_match_later_ones(monkeypatch):
    """Loading is locked: a thread that finds it half done must not fall back to NumPy for
    its first product (NumPy rounds differently, so a run would not repeat bit for bit)."""
    from tinygrad_conv.backends.fast import kernels, parallel

    monkeypatch.setenv("TINYGRAD_CONV_THREADS", "2")
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    monkeypatch.setattr(gemm, "_state", {})  # both threads' first products load it
    find = gemm._find_dnnl

    def slow_find():  # widen the window in which the other thread finds loading under way
        time.sleep(0.05)
        return find()

    monkeypatch.setattr(gemm, "_find_dnnl", slow_find)
    rng = np.random.default_rng(5)
    # long sums (300) over wide blocks (32): the two libraries round them differently
    w_flat = rng.standard_normal((300, 9 * 32)).astype(np.float32)
    dout_flat = rng.standard_normal((6 * 10 * 10, 300)).astype(np.float32).T
    geometry = dict(kernel=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1))
    first = kernels.col2im_of_product(w_flat, dout_flat, (6, 32, 20, 20), **geometry)
    again = kernels.col2im_of_product(w_flat, dout_flat, (6, 32, 20, 20), **geometry)
    np.testing.assert_array_equal(first, again)
