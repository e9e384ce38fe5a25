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
    from tinygrad_conv import gemm

    if request.param == "numpy":
        monkeypatch.setenv("TINYGRAD_CONV_GEMM", "numpy")
    monkeypatch.setattr(gemm, "_state", {})  # load again under this environment
    return gemm.backend()
