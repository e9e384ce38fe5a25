"""Helpers of the conformance tests: run one snippet in tinygrad_conv and in PyTorch on the
same input values and compare what comes out (values, dtypes, grads, error types)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tinygrad_conv as tc

torch = pytest.importorskip("torch")


def leaves(lib: Any, arrays: tuple[np.ndarray, ...], grad: bool = True) -> list[Any]:
    """Fresh leaf tensors of ``lib`` holding copies of ``arrays`` (float ones need grad)."""
    out = []
    for a in arrays:
        a = np.array(a, copy=True)
        wants = grad and a.dtype.kind == "f"
        t = lib.tensor(a, requires_grad=wants) if lib is torch else tc.Tensor(
            a, requires_grad=wants, dtype=a.dtype)
        out.append(t)
    return out


def to_numpy(x: Any) -> Any:
    """A result of either library as NumPy / Python values (tuples stay tuples)."""
    if isinstance(x, (tuple, list)):
        return type(x)(to_numpy(v) for v in x) if not hasattr(x, "_fields") else tuple(
            to_numpy(v) for v in x)
    if isinstance(x, torch.Tensor):
        return x.detach().numpy()
    if isinstance(x, tc.Tensor):
        return x.data
    return x


def assert_same(ours: Any, theirs: Any, rtol: float = 1e-6, atol: float = 1e-7) -> None:
    """Equal values (within tolerance), shapes and dtypes, recursively through tuples."""
    ours, theirs = to_numpy(ours), to_numpy(theirs)
    if isinstance(theirs, tuple):
        assert isinstance(ours, (tuple, list)) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert_same(a, b, rtol, atol)
        return
    if isinstance(theirs, np.ndarray):
        assert isinstance(ours, np.ndarray), f"expected an array, got {type(ours).__name__}"
        assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
        assert ours.dtype == theirs.dtype, (ours.dtype, theirs.dtype)
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)
        return
    assert type(ours) is type(theirs), (type(ours), type(theirs))
    if isinstance(theirs, float):
        assert ours == pytest.approx(theirs, rel=rtol, abs=atol)
    else:
        assert ours == theirs


def compare(fn: Callable[..., Any], *arrays: np.ndarray, grad: bool = True,
            rtol: float = 1e-6, atol: float = 1e-7) -> None:
    """fn(lib, *tensors) in both libraries: same result; when it is a float tensor that
    needs grad, the same grads of (result * fixed weights).sum() too."""
    ours_in, theirs_in = leaves(tc, arrays, grad), leaves(torch, arrays, grad)
    ours, theirs = fn(tc, *ours_in), fn(torch, *theirs_in)
    assert_same(ours, theirs, rtol, atol)
    if isinstance(theirs, tuple) and hasattr(theirs, "values"):  # (values, indices)
        ours, theirs = ours[0], theirs[0]
    if not (isinstance(theirs, torch.Tensor) and theirs.requires_grad):
        return
    assert ours.requires_grad
    w = np.random.default_rng(7).standard_normal(theirs.shape)
    (theirs * torch.tensor(w, dtype=theirs.dtype)).sum().backward()
    (ours * tc.Tensor(w, dtype=ours.dtype)).sum().backward()
    for a, b in zip(ours_in, theirs_in):
        if b.requires_grad:
            assert (a.grad is None) == (b.grad is None)
            if b.grad is not None:
                assert_same(a.grad, b.grad, rtol, atol)


def same_error(fn: Callable[[Any], Any]) -> str:
    """fn(lib) raises in PyTorch; ours raises the same exception type. Returns our message."""
    with pytest.raises(Exception) as theirs:
        fn(torch)
    with pytest.raises(theirs.type) as ours:
        fn(tc)
    return str(ours.value)
