"""Shared test settings: a modest Hypothesis profile so the suite stays fast on 2 cores."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# "core": the default, small shapes and few examples; "thorough": for a long local run
# (HYPOTHESIS_PROFILE=thorough pytest).
settings.register_profile(
    "core", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "core"))


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed-seed NumPy generator for test data (independent of tc.manual_seed)."""
    return np.random.default_rng(12345)


@pytest.fixture(params=["installed backend", "numpy"])
def backend(request, monkeypatch):
    """Run each test on the GEMM backend this machine has, then with oneDNN switched off;
    the value is ``gemm.backend()`` under that setting."""
    from tinygrad_conv.backends.fast import gemm

    if request.param == "numpy":
        monkeypatch.setenv("TINYGRAD_CONV_GEMM", "numpy")
    monkeypatch.setattr(gemm, "_state", {})  # load again under this environment
    return gemm.backend()


@pytest.fixture
def fast_backend(monkeypatch):
    """Run the test on the fast backend, whatever TINYGRAD_CONV_BACKEND says; its module."""
    from tinygrad_conv import backends

    fast = backends._load("fast")
    monkeypatch.setattr(backends, "_active", fast)
    return fast


@pytest.fixture
def reference_backend(monkeypatch):
    """Run the test on the reference backend; its module."""
    from tinygrad_conv import backends

    reference = backends._load("reference")
    monkeypatch.setattr(backends, "_active", reference)
    return reference


@pytest.fixture
def fusing(monkeypatch):
    """nn.Sequential fuses a ReLU then a MaxPool2d, whatever TINYGRAD_CONV_FUSE says (the
    op counts of the reference CNN's graph depend on it)."""
    from tinygrad_conv import nn

    monkeypatch.setattr(nn.Sequential, "fuse_relu_pool", True)
