"""``tc.save`` / ``tc.load``: state dicts and checkpoints in one ``.npz`` file.

Each array (or Tensor) becomes an npz member ``a0``, ``a1``...; the structure around them is a
JSON document stored in the member ``__structure__``. JSON keeps lists, strings, numbers, bools
and None as they are; everything else is an object with a ``"$type"``::

    {"$type": "dict", "items": [[key, value], ...]}   (keys keep their type, e.g. int)
    {"$type": "tuple", "items": [...]}
    {"$type": "array", "member": "a0"}                (also numpy scalars: "scalar": true)
    {"$type": "tensor", "member": "a1", "requires_grad": false}

Saving is atomic: the file is written under a temporary name (``.NAME.PID.RANDOM.tmp``) in the
same directory, flushed to disk, then renamed onto ``path``, so ``path`` holds either the old
file or the new one. Temporary files left by a killed save (whose process is gone) are removed
at the next save into that folder. Saving onto a symlink writes the file it points to; saving
over a file keeps its permission bits.

Loading never unpickles: a file from a stranger cannot run code. Every array member's declared
size is checked against the file's size before it is read, and only the members the structure
names are read. Anything that is not a checkpoint raises ``CheckpointError`` (a ValueError).
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Callable
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy_format

from ._files import write_atomic
from .safetensors_io import is_safetensors_path, load_safetensors, save_safetensors
from .tensor import Tensor

FORMAT = "tinygrad_conv.save"
VERSION = 1
STRUCTURE = "__structure__"
ZIP_MAGIC = b"PK\x03\x04"
PathLike = str | os.PathLike


class CheckpointError(ValueError):
    """A file that ``tc.load`` cannot read: truncated, corrupt, crafted, or not a checkpoint.

    A ValueError, so ``except ValueError`` clauses written before it existed still catch it."""


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
    write_atomic(os.fspath(path), lambda f: _write_npz(f, arrays))


def load(path: PathLike) -> Any:
    """Read what ``save`` wrote. Raises FileNotFoundError if ``path`` is missing (other
    OSErrors, e.g. no read permission, pass through) and ``CheckpointError`` (a ValueError)
    naming the file for anything else that is not a checkpoint: a folder, a truncated, corrupt
    or foreign file, a crafted one (pickled data, sizes the file cannot hold, a structure nested
    too deeply or naming what it does not have). A ``.safetensors`` file gives its
    name -> ndarray dict (safetensors_io)."""
    if is_safetensors_path(path):
        return load_safetensors(path)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"tc.load: no such file: {path!r}")
    if os.path.isdir(path):
        raise CheckpointError(f"tc.load: {path!r} is a folder, not a checkpoint file")
    _check_magic(path)
    try:
        with zipfile.ZipFile(path) as z:
            read = _member_reader(path, z)
            doc = _parse_structure(path, read(STRUCTURE))
            return _decode(doc["root"], read)
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"tc.load: {path!r} has a structure nested too deeply to be "
                              "a checkpoint") from None
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"tc.load: {path!r} has a corrupt structure: "
                              f"{type(exc).__name__}: {exc}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError,
            OverflowError, MemoryError) as exc:
        raise _corrupt(path, exc) from None


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


def _write_npz(f: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    """The npz payload; to a file object, so numpy does not append '.npz' to the name."""
    np.savez(f, **arrays)


# ---- reading ----------------------------------------------------------------------------
def _check_magic(path: str) -> None:
    with open(path, "rb") as f:
        head = f.read(len(ZIP_MAGIC))
    if head != ZIP_MAGIC:
        what = "is empty" if not head else "is not an .npz (zip) file"
        raise CheckpointError(
            f"tc.load: {path!r} {what}, so it is not a tinygrad_conv checkpoint (tc.save "
            "writes .npz files); it may be truncated, or a different kind of file"
        )


def _member_reader(path: str, z: zipfile.ZipFile) -> Callable[[str], np.ndarray]:
    """A function reading one array member by name, after checking its declared size."""
    file_size = os.path.getsize(path)
    infos = {info.filename: info for info in z.infolist()}

    def read(name: Any) -> np.ndarray:
        info = infos.get(f"{name}.npy") if isinstance(name, str) else None
        if info is None:
            if name == STRUCTURE:
                raise CheckpointError(
                    f"tc.load: {path!r} is an .npz file but not a tinygrad_conv checkpoint "
                    f"(it has no {STRUCTURE!r} member); load it with np.load instead")
            raise CheckpointError(f"tc.load: {path!r} names a member {name!r} it does not have")
        if info.file_size > file_size:
            raise CheckpointError(
                f"tc.load: {path!r}: member {name!r} declares {info.file_size} bytes but the "
                f"file has only {file_size} (tc.save stores members uncompressed); it is "
                "corrupt or crafted")
        with z.open(info) as f:
            return _read_npy(path, name, f, info.file_size)

    return read


def _read_npy(path: str, name: str, f: IO[bytes], member_size: int) -> np.ndarray:
    fmt = npy_format
    version = fmt.read_magic(f)
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f"member {name!r} has a .npy version {version} tc.save never writes")
    shape, fortran, dtype = readers[version](f)
    if dtype.hasobject:
        raise CheckpointError(
            f"tc.load: {path!r} holds pickled (object) data, which is refused because "
            "unpickling can run arbitrary code")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != member_size - f.tell():
        raise CheckpointError(
            f"tc.load: {path!r}: member {name!r} declares a {shape} {dtype} array "
            f"({nbytes} bytes) but holds only {member_size - f.tell()} bytes; it is corrupt "
            "or crafted")
    buf = np.empty(nbytes, dtype=np.uint8)
    view, got = memoryview(buf), 0
    while got < nbytes:  # straight into the array: no second copy of the data
        n = f.readinto(view[got:])
        if not n:
            raise EOFError(f"member {name!r} ends early")
        got += n
    arr = buf.view(dtype)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def _corrupt(path: str, exc: BaseException) -> CheckpointError:
    return CheckpointError(
        f"tc.load: {path!r} is truncated or corrupt ({type(exc).__name__}: {exc}); it may "
        "be an interrupted download or copy, or not a tc.save file at all"
    )


def _parse_structure(path: str, raw: np.ndarray) -> dict[str, Any]:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"tc.load: {path!r} has a structure member of the wrong kind")
    try:
        doc = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"tc.load: {path!r} has an unreadable structure: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "root" not in doc:
        raise CheckpointError(f"tc.load: {path!r} is not a tinygrad_conv checkpoint")
    version = doc.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"tc.load: {path!r} has a format version of {version!r}, "
                              "not a number")
    if version > VERSION:
        raise CheckpointError(
            f"tc.load: {path!r} was written by a newer tinygrad_conv (format version "
            f"{doc['version']}, this one reads up to {VERSION}); upgrade tinygrad_conv"
        )
    return doc


def _decode(node: Any, read: Callable[[str], np.ndarray]) -> Any:
    if isinstance(node, list):
        return [_decode(v, read) for v in node]
    if not isinstance(node, dict):
        return node
    kind = node["$type"]
    if kind == "dict":
        return {_decode(k, read): _decode(v, read) for k, v in node["items"]}
    if kind == "tuple":
        return tuple(_decode(v, read) for v in node["items"])
    if kind == "float":
        return float(node["value"])
    if kind not in ("array", "tensor"):
        raise ValueError(f"unknown node type {kind!r}")
    arr = read(node["member"])
    if kind == "array":
        return arr[()] if node.get("scalar") else arr
    if node["requires_grad"] and arr.dtype.kind != "f":
        raise ValueError(f"a {arr.dtype} tensor is marked requires_grad (floats only)")
    return Tensor._from_array(arr, requires_grad=bool(node["requires_grad"]))
