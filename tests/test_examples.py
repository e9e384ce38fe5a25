"""The example scripts run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _mnist import require_mnist

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.slow
def test_mnist_cnn_reads_the_data_dir_it_is_given(tmp_path):
    mnist = require_mnist()
    env = {**os.environ, "TINYGRAD_CONV_DATA": str(tmp_path / "not-here")}  # only the flag
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "mnist_cnn.py"), "--epochs", "1", "--limit-batches", "2",
         "--data-dir", str(mnist)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "epoch 1: test accuracy" in result.stdout
    assert list(tmp_path.iterdir()) == []  # wrote nothing where it ran
