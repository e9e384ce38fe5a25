"""``tc.save``/``tc.load`` of a ``.safetensors`` path: weights other frameworks read.

    tc.save(model.state_dict(), "model.safetensors")      # PyTorch: safetensors.torch.load_file
    model.load_state_dict(tc.load("model.safetensors"))   # + load_state_dict, and back

A safetensors file holds a flat mapping of names to arrays (a state dict) and nothing else: no
nesting, no code, so loading one cannot run anything. It goes through the ``safetensors``
package (``pip install 'tinygrad_conv[safetensors]'``), a compiled extension kept optional:
``tc.save`` of any other name needs none of it. The write is atomic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._files import write_atomic
from .tensor import Tensor

SUFFIX = ".safetensors"


class SafetensorsError(ValueError):
    """A ``.safetensors`` file that cannot be read, or an object it cannot hold."""


def is_safetensors_path(path: str | os.PathLike) -> bool:
    """True when ``path`` ends in ``.safetensors`` (any case)."""
    return os.fspath(path).lower().endswith(SUFFIX)


def _package() -> Any:
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError(
            "saving or loading a .safetensors file needs the safetensors package: "
            "pip install safetensors (or pip install 'tinygrad_conv[safetensors]'); "
            "tc.save to any other file name writes this library's own .npz format"
        ) from None
    return safetensors.numpy


def save_safetensors(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` (name -> ndarray or Tensor, e.g. ``model.state_dict()``) to ``path``."""
    if not isinstance(state, Mapping):
        raise TypeError(
            f"tc.save: a .safetensors file holds a flat dict of name -> array (a state_dict), "
            f"got a {type(state).__name__}; save other objects under a name not ending in "
            f"{SUFFIX}"
        )
    arrays = {}
    for name, value in state.items():
        if not isinstance(name, str):
            raise TypeError(f"tc.save: safetensors names must be strings, got {name!r}")
        arr = value.data if isinstance(value, Tensor) else value
        if not isinstance(arr, (np.ndarray, np.generic)) or arr.dtype.hasobject:
            raise TypeError(
                f"tc.save: entry {name!r} is a {type(value).__name__}; a .safetensors file "
                "holds only arrays and Tensors (save nested checkpoints as .npz)"
            )
        arrays[name] = np.array(arr, order="C", copy=not arr.flags.c_contiguous)  # keeps 0-d
    write_atomic(path, _package().save(arrays))


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read ``path``: name -> ndarray, ready for ``model.load_state_dict``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"tc.load: no such file: {path!r}")
    module = _package()
    with open(path, "rb") as f:
        data = f.read()
    try:
        return dict(module.load(data))
    except Exception as exc:  # the package raises its own SafetensorError, not a ValueError
        raise SafetensorsError(
            f"tc.load: {path!r} is not a readable .safetensors file ({exc}); it may be "
            "truncated or a different kind of file"
        ) from exc
