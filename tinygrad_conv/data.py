"""Datasets and batching: MNIST from its IDX files, ``Subset`` and ``DataLoader``.

    from tinygrad_conv import data
    train = data.MNIST(train=True)             # 60,000 images, read from $TINYGRAD_CONV_DATA
    loader = data.DataLoader(train, batch_size=64, shuffle=True, seed=0)
    for x, y in loader:                         # x float32 (64, 1, 28, 28), y int64 (64,)
        ...

The IDX format (yann.lecun.com/exdb/mnist): a big-endian header, then the raw bytes.
Images: magic 2051, count, rows, cols (4 bytes each), then count*rows*cols uint8 pixels.
Labels: magic 2049, count, then count uint8 labels.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import os
import urllib.request
import uuid
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .distributed.sampler import DistributedSampler  # noqa: F401 - torch.utils.data's name
from .tensor import Tensor

# ---- where the files live and what they are --------------------------------------------

ENV_VAR = "TINYGRAD_CONV_DATA"
DEFAULT_ROOT = Path("~/.cache/tinygrad_conv/mnist")

TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
ALL_FILES = TRAIN_FILES + TEST_FILES

# md5 of the original published .gz files (what a download must match)
MD5 = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
# md5 of the IDX data inside them (a raw or re-gzipped copy of an original matches these)
RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# a folder's own list of trusted files, in the format `md5sum` writes and `md5sum -c` reads
CHECKSUMS_NAME = "MD5SUMS"

# tried in order; each holds the four .gz files under these names
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
DOWNLOAD_TIMEOUT = 10.0  # seconds per connection attempt

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
MEAN, STD = 0.1307, 0.3081

# pixel value -> normalised float32: a 256-entry table makes normalising a batch one lookup
_NORMALIZED = ((np.arange(256) / 255.0 - MEAN) / STD).astype(np.float32)
_SCALED = (np.arange(256) / 255.0).astype(np.float32)


class MNISTError(RuntimeError):
    """MNIST files missing, corrupt, changed or not downloadable; the message says which and
    what to do."""


class UnverifiedDataWarning(UserWarning):
    """A data file that is not the published original was loaded because ``verify=False``."""


def default_root() -> Path:
    """``$TINYGRAD_CONV_DATA`` if set, else ``~/.cache/tinygrad_conv/mnist``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else DEFAULT_ROOT.expanduser()


def _how_to_fix(root: Path) -> str:
    names = ", ".join(f"{n}.gz" for n in ALL_FILES)
    return (
        f"To fix: put the four MNIST files ({names}; gzipped or not) in {root}, "
        f"or point to a folder that has them: set {ENV_VAR}=/path/to/mnist, "
        "or pass --data-dir /path/to/mnist on the command line (root= in Python)."
    )


# ---- reading IDX files -----------------------------------------------------------------

# (path, size, mtime, magic) -> (array, md5 of the file, md5 of the IDX data): each file is
# read and hashed once per process while it stays unchanged
_cache: dict[tuple, tuple[np.ndarray, str, str]] = {}


def read_idx(path: str | os.PathLike, expect_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or raw, told apart by content) into a read-only uint8 array.

    Images come back as (N, rows, cols), labels as (N,). Checks the magic number, that the
    byte length matches the header, and (for images) that images are 28x28. Raises
    ``MNISTError`` naming the file on any problem (unreadable included). Does not check the
    content against checksums: ``MNIST`` does.
    """
    return _read_idx_digests(Path(path), expect_magic)[0]


def _read_idx_digests(path: Path, expect_magic: int | None) -> tuple[np.ndarray, str, str]:
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, expect_magic)
        raw = None if key in _cache else path.read_bytes()
    except OSError as e:
        raise MNISTError(_unreadable(path, e)) from None
    if raw is not None:
        if len(_cache) >= 8:
            _cache.pop(next(iter(_cache)))
        data = _decompress(path, raw)
        file_md5 = hashlib.md5(raw).hexdigest()
        data_md5 = file_md5 if data is raw else hashlib.md5(data).hexdigest()
        _cache[key] = (_parse_idx(path, data, expect_magic), file_md5, data_md5)
    return _cache[key]


def _unreadable(path: Path, e: OSError) -> str:
    return (f"MNIST: cannot read {path} ({e.strerror or e}). Make it readable (e.g. chmod u+r, "
            "and u+rx on its folder) or point --data-dir (root=) at a readable copy.")


def _decompress(path: Path, raw: bytes) -> bytes:
    if raw[:2] != b"\x1f\x8b":  # not gzip: the IDX bytes themselves
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise MNISTError(
            f"MNIST: {path} is not a valid gzip file ({e}): it is corrupt or was cut short "
            "while downloading. Delete it (it is downloaded again when download=True) or "
            "replace it with a good copy."
        ) from None


def _parse_idx(path: Path, buf: bytes, expect_magic: int | None) -> np.ndarray:
    fix = "Delete it (it is downloaded again when download=True) or replace it with a good copy."
    if len(buf) < 8:
        raise MNISTError(f"MNIST: {path} is too short to be an IDX file ({len(buf)} bytes). {fix}")
    magic = int.from_bytes(buf[0:4], "big")
    if magic not in (IMAGES_MAGIC, LABELS_MAGIC) or (expect_magic and magic != expect_magic):
        what = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}.get(expect_magic, "IDX")
        raise MNISTError(
            f"MNIST: {path} is not an MNIST {what} file: its magic number is {magic}, expected "
            f"{expect_magic or '2051 (images) or 2049 (labels)'}. {fix}"
        )
    ndim = 3 if magic == IMAGES_MAGIC else 1
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise MNISTError(f"MNIST: {path} is truncated inside its header. {fix}")
    dims = tuple(int.from_bytes(buf[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and dims[1:] != (28, 28):
        raise MNISTError(
            f"MNIST: {path} holds images of {dims[1]}x{dims[2]}, expected 28x28. {fix}"
        )
    expected = header + int(np.prod(dims))
    if len(buf) != expected:
        state = "truncated" if len(buf) < expected else "longer than its header says"
        raise MNISTError(
            f"MNIST: {path} is {state}: its header promises {dims[0]} "
            f"{'images' if ndim == 3 else 'labels'} ({expected} bytes) but the data has "
            f"{len(buf)} bytes. {fix}"
        )
    arr = np.frombuffer(buf, dtype=np.uint8, offset=header).reshape(dims)
    return arr  # read-only (a view of immutable bytes), so cached copies cannot be altered


# ---- downloading -----------------------------------------------------------------------

def download(root: str | os.PathLike, names: Sequence[str] = ALL_FILES,
             mirrors: Sequence[str] | None = None, timeout: float | None = None,
             md5: dict[str, str] | None = None) -> list[Path]:
    """Fetch ``names`` (IDX base names) as .gz files into ``root``, trying each mirror in order.

    Each download is checked against the original published md5 (``md5`` by name, default
    MNIST's ``MD5``) and written atomically (a
    temp file in ``root``, then ``os.replace``). Raises ``MNISTError`` listing every mirror
    tried and why it failed when a file cannot be fetched. Returns the written paths.
    """
    root = Path(root)
    mirrors = MIRRORS if mirrors is None else mirrors
    md5 = MD5 if md5 is None else md5
    timeout = DOWNLOAD_TIMEOUT if timeout is None else timeout
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MNISTError(f"MNIST: cannot create the data folder {root} ({e}). "
                         + _how_to_fix(root)) from None
    written, failed, unreachable = [], [], set()
    for name in names:
        target = root / f"{name}.gz"
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + f"/{name}.gz"
            if mirror in unreachable:  # do not wait for a dead mirror's timeout again
                failures.append(f"  {url}: skipped, unreachable for the previous file")
                continue
            try:
                _fetch(url, target, md5[name], timeout)
            except MNISTError as e:  # reached, but the bytes were wrong
                failures.append(f"  {url}: {e}")
                continue
            except (OSError, ValueError) as e:  # URLError and timeouts are OSErrors
                unreachable.add(mirror)
                failures.append(f"  {url}: {getattr(e, 'reason', None) or e}")
                continue
            written.append(target)
            break
        else:
            failed.append(f"could not download {target.name}; tried:\n" + "\n".join(failures))
    if failed:
        raise MNISTError(f"MNIST: download into {root} failed:\n" + "\n".join(failed) + "\n"
                         + _how_to_fix(root))
    return written


_download = download  # MNIST.__init__'s `download` argument shadows the function


def _fetch(url: str, target: Path, md5: str, timeout: float) -> None:
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.part"
    # O_EXCL: a fresh file; mode 0o666 minus the umask, as for any file the user creates
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 16):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise MNISTError(f"checksum mismatch (md5 {digest.hexdigest()}, expected {md5})")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _find(root: Path, name: str) -> Path | None:
    for candidate in (root / f"{name}.gz", root / name):
        try:
            if candidate.is_file():
                return candidate
        except OSError as e:  # e.g. a folder without read or search permission
            raise MNISTError(_unreadable(candidate, e)) from None
    return None


# ---- checking content ------------------------------------------------------------------

_md5sums_cache: dict[tuple, dict[str, str]] = {}


def folder_md5sums(folder: Path) -> dict[str, str]:
    """{file name: md5} from ``folder/MD5SUMS`` (as ``md5sum`` writes it; {} if absent).

    Lines that are not "<32 hex digits> <space or *><name>" are ignored, as ``md5sum -c``
    warns and skips them."""
    path = Path(folder) / CHECKSUMS_NAME
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _md5sums_cache:
            text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise MNISTError(_unreadable(path, e)) from None
    if key not in _md5sums_cache:
        sums = {}
        for line in text.splitlines():
            digest, _, name = line.partition(" ")
            name = name[1:] if name[:1] in (" ", "*") else name
            if len(digest) == 32 and all(c in "0123456789abcdefABCDEF" for c in digest) and name:
                sums[name] = digest.lower()
        _md5sums_cache[key] = sums
    return _md5sums_cache[key]


def _verify(path: Path, name: str, digests: tuple[str, str], verify: bool,
            published: tuple[dict[str, str], dict[str, str]]) -> None:
    """Check the file at ``path`` (IDX base name ``name``; ``digests``: md5 of the file and
    of its IDX data) is a published original or is listed with its md5 in its folder's
    MD5SUMS. Otherwise raise ``MNISTError`` naming the file and what to do, or with
    ``verify=False`` warn (``UnverifiedDataWarning``). ``published``: (md5 of the .gz files,
    md5 of their IDX data) by name."""
    file_md5, data_md5 = digests
    gz_md5, raw_md5 = published[0].get(name), published[1].get(name)
    if file_md5 in (gz_md5, raw_md5) or data_md5 == raw_md5:
        return
    listed = folder_md5sums(path.parent)
    if listed.get(path.name) == file_md5 or (path.name != name and listed.get(name) == data_md5):
        return
    sums = path.parent / CHECKSUMS_NAME
    if path.name in listed:
        problem = (f"its md5 is {file_md5}, but {sums} lists {listed[path.name]}: the file "
                   "changed after it was listed")
    else:
        raw_text = f" or {raw_md5} (its IDX data)" if raw_md5 else ""
        problem = (f"its md5 is {file_md5}, not the published original's {gz_md5} (.gz)"
                   f"{raw_text}: its content was changed or is corrupt")
    if not verify:
        warnings.warn(f"MNIST: {path} is not the published original ({problem}); loading it "
                      "anyway because verification is off (verify=False / --no-verify)",
                      UnverifiedDataWarning, stacklevel=3)
        return
    raise MNISTError(
        f"MNIST: {path} is not the published original file: {problem}. Delete it and download "
        "it again (download=True) or replace it with a good copy. If the file was changed on "
        f"purpose, add it to {sums} (cd {path.parent} && md5sum {path.name} >> "
        f"{CHECKSUMS_NAME}), or skip the check with verify=False (--no-verify)."
    )


# ---- datasets --------------------------------------------------------------------------

class MNIST:
    """The MNIST digits: 60,000 training or 10,000 test images of 28x28 gray pixels.

    ``ds[i] -> (x, y)``: x float32 (1, 28, 28), pixels / 255 then standardised with
    (x - 0.1307) / 0.3081 when ``normalize``; y an int in 0..9. The raw arrays are
    ``.images`` (uint8 (N, 28, 28), read-only) and ``.labels`` (int64 (N,)).
    ``ds.batch(indices)`` gives a whole batch in one NumPy op (``DataLoader`` uses it).

    ``root`` defaults to ``$TINYGRAD_CONV_DATA``, else ``~/.cache/tinygrad_conv/mnist``.
    Missing files are downloaded when ``download`` (checked against the published md5).
    Every file is checked against ``published`` (the md5 of the original .gz files and of the
    IDX data in them): it must be an original, or be listed with its md5 in the folder's
    ``MD5SUMS`` (as ``md5sum`` writes it); ``verify=False`` loads any well-formed file,
    with a warning for each that is not verified.
    """

    classes = tuple(str(d) for d in range(10))
    mean, std = MEAN, STD
    published = (MD5, RAW_MD5)  # md5 of the original .gz files, and of the IDX data in them
    _normalized = _NORMALIZED

    @property
    def mirrors(self) -> Sequence[str]:
        """Where missing files are downloaded from, tried in order (``data.MIRRORS``)."""
        return MIRRORS

    @staticmethod
    def default_root() -> Path:
        """The folder used when ``root`` is None (``data.default_root()``)."""
        return default_root()

    def __init__(self, root: str | os.PathLike | None = None, train: bool = True,
                 transform: Callable | None = None, target_transform: Callable | None = None,
                 download: bool = True, normalize: bool = True, verify: bool = True) -> None:
        self.transform, self.target_transform = transform, target_transform
        self.root = Path(root).expanduser() if root is not None else self.default_root()
        self.train, self.normalize = bool(train), bool(normalize)
        image_name, label_name = TRAIN_FILES if self.train else TEST_FILES
        if self.root.exists() and not self.root.is_dir():
            raise MNISTError(f"MNIST: {self.root} is a file, not a folder; pass the folder "
                             "holding the data files (--data-dir, root=)")
        missing = [n for n in (image_name, label_name) if _find(self.root, n) is None]
        if missing and download:
            _download(self.root, missing, mirrors=self.mirrors, md5=self.published[0])
        elif missing:
            listed = "\n".join(f"  {n}.gz (or {n})" for n in missing)
            raise MNISTError(
                f"MNIST: missing file(s) in {self.root}:\n{listed}\n{_how_to_fix(self.root)} "
                "Or pass download=True to fetch them."
            )
        image_path, label_path = _find(self.root, image_name), _find(self.root, label_name)
        self.images, *image_md5 = _read_idx_digests(image_path, IMAGES_MAGIC)
        labels, *label_md5 = _read_idx_digests(label_path, LABELS_MAGIC)
        self.labels = labels.astype(np.int64)
        if len(self.images) != len(self.labels):
            raise MNISTError(
                f"MNIST: {image_path} holds {len(self.images)} images but {label_path} holds "
                f"{len(self.labels)} labels; the two files do not belong together. Replace "
                "them with a matching pair."
            )
        if len(self.labels) and self.labels.max() > 9:
            raise MNISTError(
                f"MNIST: {label_path} has labels above 9; replace it with a good copy."
            )
        for path, name, digests in ((image_path, image_name, image_md5),
                                    (label_path, label_name, label_md5)):
            _verify(path, name, digests, verify, self.published)

    def __len__(self) -> int:
        return len(self.labels)

    def _table(self) -> np.ndarray:
        return self._normalized if self.normalize else _SCALED

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """(x float32 (1, 28, 28), y int)."""
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"MNIST indices must be integers, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"MNIST index {index} is out of range for {len(self)} images")
        x, y = self._table()[self.images[index]][None], int(self.labels[index])
        if self.transform is not None:
            x = self.transform(x)
        return x, (y if self.target_transform is None else self.target_transform(y))

    def batch(self, indices: Any) -> tuple[Any, ...]:
        """x float32 (B, 1, 28, 28) and y int64 (B,) for an integer index array of length B
        (item by item through ``default_collate`` when there are transforms)."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.transform is not None or self.target_transform is not None:
            return default_collate([self[int(i)] for i in idx])
        return self._table()[self.images[idx]][:, None], self.labels[idx]

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{type(self).__name__}(split={split!r}, size={len(self)}, root={str(self.root)!r})"


# ---- Fashion-MNIST: the same IDX files, of clothes ---------------------------------------

FASHION_ENV_VAR = "TINYGRAD_CONV_FASHION_DATA"
FASHION_DEFAULT_ROOT = Path("~/.cache/tinygrad_conv/fashion-mnist")
# md5 of the published .gz files (Zalando Research's fashion-mnist repository)
FASHION_MD5 = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_MIRRORS = ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530  # of the training pixels / 255


class FashionMNIST(MNIST):
    """Fashion-MNIST: 60,000 training and 10,000 test 28x28 gray images of 10 kinds of
    clothing, in MNIST's file names and format; everything as ``MNIST`` (verification,
    ``MD5SUMS``, ``verify=False``), with its own checksums, mirrors and mean/std.

    ``root`` defaults to ``$TINYGRAD_CONV_FASHION_DATA``, else
    ``~/.cache/tinygrad_conv/fashion-mnist``.
    """

    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
    mean, std = FASHION_MEAN, FASHION_STD
    published = (FASHION_MD5, {})  # the IDX data's md5 is not published: the .gz's only
    _normalized = ((np.arange(256) / 255.0 - FASHION_MEAN) / FASHION_STD).astype(np.float32)

    @property
    def mirrors(self) -> Sequence[str]:
        """``data.FASHION_MIRRORS``."""
        return FASHION_MIRRORS

    @staticmethod
    def default_root() -> Path:
        """``$TINYGRAD_CONV_FASHION_DATA``, else ``~/.cache/tinygrad_conv/fashion-mnist``."""
        env = os.environ.get(FASHION_ENV_VAR)
        return Path(env).expanduser() if env else FASHION_DEFAULT_ROOT.expanduser()


DATASETS = {"mnist": MNIST, "fashion-mnist": FashionMNIST}  # the train command's --dataset


class Subset:
    """The items of ``dataset`` at ``indices``, in that order (as ``torch.utils.data.Subset``)."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        if hasattr(dataset, "batch"):
            self.batch = lambda idx: dataset.batch(self.indices[np.asarray(idx, dtype=np.int64)])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(self.indices[index])]


class TensorDataset:
    """Item i is ``(t[i] for t in tensors)``: tensors (or arrays) with the same first size,
    as ``torch.utils.data.TensorDataset``."""

    def __init__(self, *tensors: Any) -> None:
        arrays = [t.data if isinstance(t, Tensor) else np.asarray(t) for t in tensors]
        if not arrays:
            raise ValueError("TensorDataset: pass at least one tensor")
        sizes = [len(a) if a.ndim else None for a in arrays]
        if None in sizes or len(set(sizes)) != 1:
            raise ValueError(f"TensorDataset: all tensors need the same first size, got "
                             f"shapes {[a.shape for a in arrays]}")
        self.tensors = tuple(Tensor._from_array(a) for a in arrays)

    def __len__(self) -> int:
        return len(self.tensors[0].data)

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(Tensor._from_array(np.asarray(t.data[index])) for t in self.tensors)

    def batch(self, indices: Any) -> tuple[Tensor, ...]:
        """The stacked items at an index array: one fancy index per tensor (dtypes kept)."""
        idx = np.asarray(indices, dtype=np.int64)
        return tuple(Tensor._from_array(t.data[idx]) for t in self.tensors)


# ---- batching --------------------------------------------------------------------------

def default_collate(batch: Sequence[Any]) -> Any:
    """Stack a list of items as PyTorch's default collate does: Tensors and arrays stack
    into a Tensor (B, ...); Python ints become int64, floats float64; tuples and lists are
    collated field by field (into a tuple), dicts key by key; strings stay a list."""
    elem = batch[0]
    if isinstance(elem, Tensor):
        return Tensor._from_array(np.stack([t.data for t in batch]))
    if isinstance(elem, (np.ndarray, np.generic, bool, int, float)):
        return Tensor._from_array(np.stack([np.asarray(v) for v in batch]))
    if isinstance(elem, str):
        return list(batch)
    if isinstance(elem, Mapping):
        return {k: default_collate([item[k] for item in batch]) for k in elem}
    if isinstance(elem, (tuple, list)):
        if any(len(item) != len(elem) for item in batch):
            raise RuntimeError("default_collate: each element in the batch should be of equal "
                               "size")
        fields = [default_collate(list(field)) for field in zip(*batch)]
        return type(elem)(*fields) if hasattr(elem, "_fields") else tuple(fields)
    raise TypeError(f"default_collate: batch items must be tensors, arrays, numbers, "
                    f"strings, dicts or sequences of them; got {type(elem).__name__}")


def collate(items: Sequence[tuple]) -> tuple[np.ndarray, ...]:
    """Stack a list of (x, y, ...) items field by field: [(x, y)] * B -> (X (B, ...), Y (B,))."""
    fields = zip(*items, strict=True)
    return tuple(np.stack([np.asarray(v) for v in field]) for field in fields)


def _to_tensor(arr: np.ndarray) -> Tensor:
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        return Tensor(arr, dtype=np.float32 if arr.dtype != np.float64 else np.float64)
    if arr.dtype.kind in "iu":
        return Tensor(arr, dtype=np.int64)
    return Tensor(arr)


class DataLoader:
    """Batches of a dataset of (x, y) pairs, as stacked Tensors.

    Yields (x, y) with x float32 (B, ...) and y int64 (B,): (B, 1, 28, 28) and (B,) for MNIST.
    With ``shuffle`` every epoch (every ``iter``) draws a new order from the loader's own
    generator, seeded from ``seed`` or, when ``seed`` is None, from ``tc.manual_seed``'s
    generator. ``len(loader)`` is the number of batches. A dataset with a ``batch(indices)``
    method (as ``MNIST``) is batched in one call; any other is indexed item by item.

    ``state_dict()`` / ``load_state_dict()`` save and restore the position, mid-epoch
    included, so a resumed run sees exactly the batches an uninterrupted one would.

    ``sampler`` (an iterable of indices with a length, such as ``DistributedSampler``) gives
    each epoch's order instead; it excludes ``shuffle``.
    """

    def __init__(self, dataset: Any, batch_size: int = 1, shuffle: bool = False,
                 sampler: Any = None, drop_last: bool = False, seed: int | None = None,
                 collate_fn: Callable | None = None) -> None:
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle; "
                             "the sampler decides the order (pass shuffle=False)")
        self.sampler = sampler
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.collate_fn = collate_fn
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        if seed is None:
            from .rng import generator

            seed = int(generator().integers(0, 2**63 - 1))
        self.generator = np.random.default_rng(seed)
        self._epoch: _Epoch | None = None  # the iteration in progress, if any
        self._skip = 0  # batches to skip at the next iter (set by load_state_dict)

    def __len__(self) -> int:
        n = len(self.dataset if self.sampler is None else self.sampler)
        b = self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        start_state = copy.deepcopy(self.generator.bit_generator.state)
        n = len(self.dataset)
        if self.sampler is not None:
            order = np.fromiter(self.sampler, dtype=np.int64, count=len(self.sampler))
        else:
            order = self.generator.permutation(n) if self.shuffle else np.arange(n)
        skip, self._skip = self._skip, 0
        self._epoch = _Epoch(self, order, start_state, skip)
        return self._epoch

    def fetch(self, indices: np.ndarray) -> Any:
        """The batch of the dataset items at ``indices``: ``collate_fn`` of the items, else
        the dataset's own ``batch`` (arrays become Tensors), else ``default_collate``."""
        if self.collate_fn is not None:
            return self.collate_fn([self.dataset[int(i)] for i in indices])
        if hasattr(self.dataset, "batch"):
            return tuple(a if isinstance(a, Tensor) else _to_tensor(a)
                         for a in self.dataset.batch(indices))
        return default_collate([self.dataset[int(i)] for i in indices])

    def state_dict(self) -> dict[str, Any]:
        """{"generator": the bit generator's state, "position": batches done this epoch}.

        Mid-epoch, the state is the one from the start of the epoch, so restoring it redraws
        the same order, and ``position`` batches of it are skipped.
        """
        if self._epoch is not None:
            return {"generator": copy.deepcopy(self._epoch.start_state),
                    "position": self._epoch.position}
        return {"generator": copy.deepcopy(self.generator.bit_generator.state), "position": 0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``; the next ``iter`` continues from where it was taken."""
        self.generator.bit_generator.state = copy.deepcopy(state["generator"])
        self._skip = int(state.get("position", 0))
        self._epoch = None


class _Epoch:
    """One pass over a DataLoader's order; ``close()`` marks the epoch finished early."""

    def __init__(self, loader: DataLoader, order: np.ndarray, start_state: dict,
                 position: int) -> None:
        self.loader, self.order, self.start_state = loader, order, start_state
        self.position = position

    def __iter__(self) -> _Epoch:
        return self

    def __len__(self) -> int:
        return len(self.loader) - self.position

    def __next__(self) -> tuple[Tensor, ...]:
        b = self.loader.batch_size
        if self.position >= len(self.loader):
            self.close()
            raise StopIteration
        indices = self.order[self.position * b: (self.position + 1) * b]
        self.position += 1
        return self.loader.fetch(indices)

    def close(self) -> None:
        if self.loader._epoch is self:
            self.loader._epoch = None
