"""The framework's one random generator, seeded by ``tc.manual_seed``."""

from __future__ import annotations

from typing import Any

import numpy as np

_generator = {"rng": np.random.default_rng()}


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the generator used by randn/rand, dropout and parameter initialisation."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
    _generator["rng"] = np.random.default_rng(int(seed))
    return _generator["rng"]


def generator() -> np.random.Generator:
    """The current generator (replaced by each ``manual_seed`` call)."""
    return _generator["rng"]


def get_rng_state() -> dict:
    """The generator's state, a plain dict (saved in checkpoints so a resume is exact)."""
    return _generator["rng"].bit_generator.state


def set_rng_state(state: dict) -> None:
    """Restore a state from ``get_rng_state``."""
    _generator["rng"].bit_generator.state = state


def draw(method: str, shape: tuple[int, ...], dtype: Any = None) -> np.ndarray:
    """``shape`` samples of the generator's ``method`` ("standard_normal" or "random") as
    ``dtype`` (default float32). Float32 and float64 are drawn directly, so the only memory
    used is the result's; other dtypes are cast from a float64 draw."""
    from .tensor import DEFAULT_FLOAT

    dtype = np.dtype(dtype or DEFAULT_FLOAT)
    sample = getattr(_generator["rng"], method)
    if dtype in (np.float32, np.float64):
        return sample(shape, dtype=dtype)
    return sample(shape, dtype=np.float64).astype(dtype)
