"""Ready-made models."""

from __future__ import annotations

from . import nn


def reference_cnn() -> nn.Sequential:
    """The example MNIST CNN: (N, 1, 28, 28) images -> (N, 10) logits.

    Two 3x3 conv + ReLU + 2x2 max-pool stages (28 -> 14 -> 7 pixels, 32 then 64 channels),
    then a 3136 -> 128 -> 10 classifier. About 422k parameters.
    """
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),   # (N, 32, 28, 28)
        nn.ReLU(),
        nn.MaxPool2d(2),                  # (N, 32, 14, 14)
        nn.Conv2d(32, 64, 3, padding=1),  # (N, 64, 14, 14)
        nn.ReLU(),
        nn.MaxPool2d(2),                  # (N, 64, 7, 7)
        nn.Flatten(),                     # (N, 3136)
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 10),               # (N, 10) logits
    )
