"""``tc.save``/``tc.load`` of a ``.safetensors`` path: weights other frameworks read.

    tc.save(model.state_dict(), "model.safetensors")      # PyTorch: safetensors.torch.load_file
    model.load_state_dict(tc.load("model.safetensors"))   # + load_state_dict, and back

A safetensors file holds a flat mapping of names to arrays (a state dict) and nothing else: no
nesting, no code, so loading one cannot run anything. It goes through the ``safetensors``
package (``pip install 'tinygrad_conv[safetensors]'``), a compiled extension kept optional.
Without it, the few lines below read and write the same format in NumPy: an 8-byte
little-endian header length, a JSON header (per name: dtype, shape, byte offsets), then the
arrays' bytes. The write is atomic either way.
"""

from __future__ import annotations

import json
import os
import struct
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
    """``safetensors.numpy``, or this module's NumPy twin when the package is missing."""
    try:
        import safetensors.numpy
    except ImportError:
        return _NumpyFormat
    return safetensors.numpy


_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


class _NumpyFormat:
    """The safetensors layout in NumPy, used when the package is not installed."""

    @staticmethod
    def save(arrays: dict[str, np.ndarray]) -> bytes:
        header: dict[str, Any] = {}
        offset = 0
        for name, arr in arrays.items():
            code = _CODES.get(arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">"
                              else arr.dtype)
            if code is None:
                raise TypeError(f"tc.save: entry {name!r} has dtype {arr.dtype}, which a "
                                ".safetensors file cannot hold")
            header[name] = {"dtype": code, "shape": list(arr.shape),
                            "data_offsets": [offset, offset + arr.nbytes]}
            offset += arr.nbytes
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
        data = b"".join(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
                        for arr in arrays.values())
        return struct.pack("<Q", len(text)) + text + data

    @staticmethod
    def load(blob: bytes) -> dict[str, np.ndarray]:
        if len(blob) < 8:
            raise ValueError("shorter than the 8-byte header length")
        (size,) = struct.unpack("<Q", blob[:8])
        if 8 + size > len(blob):
            raise ValueError(f"its header claims {size} bytes, the file has {len(blob) - 8}")
        header = json.loads(blob[8:8 + size].decode("utf-8"))
        data = memoryview(blob)[8 + size:]
        out = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            dtype = np.dtype(_DTYPES[entry["dtype"]])
            begin, end = entry["data_offsets"]
            shape = tuple(entry["shape"])
            if not 0 <= begin <= end <= len(data) or end - begin != dtype.itemsize * int(
                    np.prod(shape, dtype=np.int64)):
                raise ValueError(f"entry {name!r} has byte offsets {begin}..{end} that do not "
                                 f"fit its shape {shape} and dtype or the file")
            out[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape).copy()
        return out


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
        # (the NumPy twin: ValueError, KeyError for an unknown dtype, JSON or Unicode errors)
        raise SafetensorsError(
            f"tc.load: {path!r} is not a readable .safetensors file ({exc}); it may be "
            "truncated or a different kind of file"
        ) from exc
