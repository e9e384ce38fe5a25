"""``tc.save`` / ``tc.load``: state dicts and checkpoints in one ``.npz`` file.

Each array (or Tensor) becomes an npz member ``a0``, ``a1``...; the structure around them is a
JSON document stored in the member ``__structure__``. JSON keeps lists, strings, numbers, bools
and None as they are; everything else is an object with a ``"$type"``::

    {"$type": "dict", "items": [[key, value], ...]}   (keys keep their type, e.g. int)
    {"$type": "tuple", "items": [...]}
    {"$type": "array", "member": "a0"}                (also numpy scalars: "scalar": true)
    {"$type": "tensor", "member": "a1", "requires_grad": false}

Saving is atomic: the file is written under a temporary name in the same directory, flushed to
disk, then renamed onto ``path``, so ``path`` holds either the old file or the new one. Loading
never unpickles (``allow_pickle=False``): a file from a stranger cannot run code.
"""

from __future__ import annotations

import json
import math
import os
import uuid
import zipfile
from typing import IO, Any

import numpy as np

from .safetensors_io import is_safetensors_path, load_safetensors, save_safetensors
from .tensor import Tensor

FORMAT = "tinygrad_conv.save"
VERSION = 1
STRUCTURE = "__structure__"
ZIP_MAGIC = b"PK\x03\x04"
PathLike = str | os.PathLike


class CheckpointError(ValueError):
    """A file that ``tc.load`` cannot read: truncated, corrupt, or not a checkpoint."""


def save(obj: Any, path: PathLike) -> None:
    """Write ``obj`` (nested dicts/lists/tuples of ndarrays, Tensors, numpy scalars, ints,
    floats, strs, bools and None) to ``path``, atomically; the name is used exactly as given.
    A name ending in ``.safetensors`` writes a state dict in that format (safetensors_io)."""
    if is_safetensors_path(path):
        return save_safetensors(obj, path)
    arrays: dict[str, np.ndarray] = {}
    root = _encode(obj, arrays, "obj")
    doc = json.dumps({"format": FORMAT, "version": VERSION, "root": root}, allow_nan=False)
    arrays[STRUCTURE] = np.frombuffer(doc.encode("utf-8"), dtype=np.uint8)
    _atomic_write(os.fspath(path), arrays)


def load(path: PathLike) -> Any:
    """Read what ``save`` wrote. Raises FileNotFoundError if ``path`` is missing and
    CheckpointError (a ValueError) naming the file if it is truncated, corrupt or foreign.
    A ``.safetensors`` file gives its name -> ndarray dict (safetensors_io)."""
    if is_safetensors_path(path):
        return load_safetensors(path)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"tc.load: no such file: {path!r}")
    members = _read_members(path)
    if STRUCTURE not in members:
        raise CheckpointError(
            f"tc.load: {path!r} is an .npz file but not a tinygrad_conv checkpoint "
            f"(it has no {STRUCTURE!r} member); load it with np.load instead"
        )
    doc = _parse_structure(path, members.pop(STRUCTURE))
    try:
        return _decode(doc["root"], members)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"tc.load: {path!r} has a corrupt structure: {exc}") from exc


# ---- writing ----------------------------------------------------------------------------
def _encode(obj: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"$type": "float", "value": repr(obj)}
    if isinstance(obj, Tensor):
        member = _add_array(obj.data, arrays, where)
        return {"$type": "tensor", "member": member, "requires_grad": obj.requires_grad}
    if isinstance(obj, (np.ndarray, np.generic)):
        node = {"$type": "array", "member": _add_array(np.asarray(obj), arrays, where)}
        return {**node, "scalar": True} if isinstance(obj, np.generic) else node
    if isinstance(obj, dict):
        items = [[_encode_key(k, where), _encode(v, arrays, f"{where}[{k!r}]")]
                 for k, v in obj.items()]
        return {"$type": "dict", "items": items}
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else {"$type": "tuple", "items": items}
    raise TypeError(
        f"tc.save: cannot save {where} of type {type(obj).__name__}; use dicts, lists, tuples, "
        "arrays, Tensors, numbers, strings, bools and None"
    )


def _encode_key(key: Any, where: str) -> Any:
    if key is None or isinstance(key, (bool, int, float, str)):
        return _encode(key, {}, where)
    raise TypeError(f"tc.save: {where} has a key of type {type(key).__name__}: {key!r}")


def _add_array(arr: np.ndarray, arrays: dict[str, np.ndarray], where: str) -> str:
    if arr.dtype.hasobject:
        raise TypeError(f"tc.save: {where} is an object array, which cannot be saved safely")
    name = f"a{len(arrays)}"
    arrays[name] = arr
    return name


def _atomic_write(path: str, arrays: dict[str, np.ndarray]) -> None:
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)  # the umask applies, as for any new file
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def _write_npz(f: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    """The npz payload; to a file object, so numpy does not append '.npz' to the name."""
    np.savez(f, **arrays)


def _fsync_dir(folder: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- reading ----------------------------------------------------------------------------
def _read_members(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        head = f.read(len(ZIP_MAGIC))
    if head != ZIP_MAGIC:
        what = "is empty" if not head else "is not an .npz (zip) file"
        raise CheckpointError(
            f"tc.load: {path!r} {what}, so it is not a tinygrad_conv checkpoint (tc.save "
            "writes .npz files); it may be truncated, or a different kind of file"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise CheckpointError(
                f"tc.load: {path!r} holds pickled (object) data, which is refused because "
                "unpickling can run arbitrary code"
            ) from exc
        raise _corrupt(path, exc) from exc
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
        raise _corrupt(path, exc) from exc


def _corrupt(path: str, exc: BaseException) -> CheckpointError:
    return CheckpointError(
        f"tc.load: {path!r} is truncated or corrupt ({type(exc).__name__}: {exc}); it may "
        "be an interrupted download or copy, or not a tc.save file at all"
    )


def _parse_structure(path: str, raw: np.ndarray) -> dict[str, Any]:
    try:
        doc = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"tc.load: {path!r} has an unreadable structure: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "root" not in doc:
        raise CheckpointError(f"tc.load: {path!r} is not a tinygrad_conv checkpoint")
    if doc.get("version", 0) > VERSION:
        raise CheckpointError(
            f"tc.load: {path!r} was written by a newer tinygrad_conv (format version "
            f"{doc['version']}, this one reads up to {VERSION}); upgrade tinygrad_conv"
        )
    return doc


def _decode(node: Any, members: dict[str, np.ndarray]) -> Any:
    if isinstance(node, list):
        return [_decode(v, members) for v in node]
    if not isinstance(node, dict):
        return node
    kind = node["$type"]
    if kind == "dict":
        return {_decode(k, members): _decode(v, members) for k, v in node["items"]}
    if kind == "tuple":
        return tuple(_decode(v, members) for v in node["items"])
    if kind == "float":
        return float(node["value"])
    arr = members[node["member"]]
    if kind == "array":
        return arr[()] if node.get("scalar") else arr
    if kind == "tensor":
        t = Tensor._from_array(arr)
        return t.requires_grad_(True) if node["requires_grad"] else t
    raise ValueError(f"unknown node type {kind!r}")
