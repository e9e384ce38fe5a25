"""Finding the real MNIST files for tests.

A test module defines its fixture as

    @pytest.fixture(scope="session")
    def mnist_dir() -> Path:
        return require_mnist()

Looks in $TINYGRAD_CONV_DATA, then ../shared/data/mnist beside the repository. When neither
has the four files, a test that needs them is skipped, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tinygrad_conv.data import ALL_FILES

REPO = Path(__file__).resolve().parent.parent


def _has_mnist(folder: Path) -> bool:
    return all((folder / f"{n}.gz").is_file() or (folder / n).is_file() for n in ALL_FILES)


def find_mnist_dir() -> Path | None:
    """The first folder holding the four MNIST files, or None."""
    candidates = []
    if os.environ.get("TINYGRAD_CONV_DATA"):
        candidates.append(Path(os.environ["TINYGRAD_CONV_DATA"]).expanduser())
    candidates.append(REPO.parent / "shared" / "data" / "mnist")
    return next((c for c in candidates if _has_mnist(c)), None)


def require_mnist() -> Path:
    """The folder with the real MNIST files (skips the test without it; fails it in CI)."""
    found = find_mnist_dir()
    if found is None:
        reason = ("MNIST not found: set TINYGRAD_CONV_DATA to a folder with the four IDX files "
                  "or put them in ../shared/data/mnist")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found
