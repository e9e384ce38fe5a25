"""MNIST content verification: published checksums, the folder's MD5SUMS, the opt-out, and
unreadable files (issue 17)."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from _mnist import require_mnist

from tinygrad_conv import cli, data
from tinygrad_conv.data import MNIST, MNISTError, UnverifiedDataWarning

IMAGES, LABELS = data.TEST_FILES


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return require_mnist()


def raw(mnist_dir: Path, name: str) -> bytearray:
    return bytearray(gzip.decompress((mnist_dir / f"{name}.gz").read_bytes()))


def split_copy(mnist_dir: Path, folder: Path, gz: bool = True, **changed: bytes) -> Path:
    """The test split in ``folder`` (gzipped originals, or raw), ``changed`` replacing files."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in data.TEST_FILES:
        if name in changed:
            (folder / name).write_bytes(changed[name])
        elif gz:
            shutil.copy(mnist_dir / f"{name}.gz", folder)
        else:
            (folder / name).write_bytes(bytes(raw(mnist_dir, name)))
    return folder


def scribbled_images(mnist_dir: Path) -> bytes:
    images = raw(mnist_dir, IMAGES)
    noise = np.random.default_rng(0).integers(0, 256, 50 * 784, dtype=np.uint8)
    images[16 + 784 * 100: 16 + 784 * 150] = noise.tobytes()  # random bytes over 50 images
    return bytes(images)


def relabelled(mnist_dir: Path) -> bytes:
    labels = raw(mnist_dir, LABELS)
    for i in range(8, 1008):  # 1,000 labels changed, all still 0..9
        labels[i] = (labels[i] + 1) % 10
    return bytes(labels)


@pytest.mark.parametrize("kind", ["random bytes over 50 images", "1000 labels changed",
                                  "a valid gzip of corrupted data"])
def test_changed_content_is_caught_and_named(kind, mnist_dir, tmp_path):
    if kind == "1000 labels changed":
        name, content = LABELS, relabelled(mnist_dir)
    else:
        name, content = IMAGES, scribbled_images(mnist_dir)
    if kind.startswith("a valid gzip"):
        folder = split_copy(mnist_dir, tmp_path)
        (folder / f"{name}.gz").write_bytes(gzip.compress(content))
        bad = folder / f"{name}.gz"
    else:
        folder = split_copy(mnist_dir, tmp_path, **{name: content})
        bad = folder / name
    with pytest.raises(MNISTError) as info:
        MNIST(folder, train=False, download=False)
    message = str(info.value)
    assert str(bad) in message and "not the published original" in message
    assert hashlib.md5(bad.read_bytes()).hexdigest() in message
    assert "MD5SUMS" in message and "verify=False" in message and "--no-verify" in message


def test_raw_and_regzipped_originals_load(mnist_dir, tmp_path):
    folder = split_copy(mnist_dir, tmp_path / "raw", gz=False)
    assert len(MNIST(folder, train=False, download=False)) == 10000
    folder = split_copy(mnist_dir, tmp_path / "regz")
    regz = gzip.compress(bytes(raw(mnist_dir, LABELS)), compresslevel=1, mtime=0)
    (folder / f"{LABELS}.gz").write_bytes(regz)  # other .gz bytes, the same data
    assert len(MNIST(folder, train=False, download=False)) == 10000


def test_a_file_listed_in_the_folders_md5sums_loads(mnist_dir, tmp_path):
    content = relabelled(mnist_dir)
    folder = split_copy(mnist_dir, tmp_path, **{LABELS: content})
    md5 = hashlib.md5(content).hexdigest()
    (folder / "MD5SUMS").write_text(f"# ours\nnot a line\n{md5}  {LABELS}\n")
    ds = MNIST(folder, train=False, download=False)
    assert list(ds.labels[:1000]) == [(x + 1) % 10 for x in raw(mnist_dir, LABELS)[8:1008]]
    (folder / "MD5SUMS").write_text(f"{md5} *{LABELS}.gz\n")  # binary-mode line, other name
    with pytest.raises(MNISTError, match="not the published original"):
        MNIST(folder, train=False, download=False)


def test_a_listed_file_changed_after_listing(mnist_dir, tmp_path):
    folder = split_copy(mnist_dir, tmp_path, **{LABELS: relabelled(mnist_dir)})
    (folder / "MD5SUMS").write_text(f"{'0' * 32}  {LABELS}\n")
    with pytest.raises(MNISTError, match="lists 0{32}: the file changed after it was listed"):
        MNIST(folder, train=False, download=False)


def test_the_shared_folder_trusts_its_rebuilt_images_through_md5sums(mnist_dir, tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").symlink_to(mnist_dir / "train-images-idx3-ubyte.gz")
    shutil.copy(mnist_dir / "train-labels-idx1-ubyte.gz", tmp_path)
    with pytest.raises(MNISTError, match="train-images-idx3-ubyte.gz is not the published"):
        MNIST(tmp_path, train=True, download=False)
    shutil.copy(mnist_dir / "MD5SUMS", tmp_path)
    assert len(MNIST(tmp_path, train=True, download=False)) == 60000


def test_verify_false_loads_with_a_warning(mnist_dir, tmp_path):
    folder = split_copy(mnist_dir, tmp_path, **{IMAGES: scribbled_images(mnist_dir)})
    with pytest.warns(UnverifiedDataWarning, match=f"{IMAGES} is not the published original"):
        ds = MNIST(folder, train=False, download=False, verify=False)
    assert len(ds) == 10000


def test_cli_no_verify(mnist_dir, tmp_path, capsys):
    folder = tmp_path / "data"
    shutil.copytree(mnist_dir, folder, ignore=shutil.ignore_patterns("MD5SUMS"))
    argv = ["train", "--data-dir", str(folder), "--out", str(tmp_path / "run"), "--epochs", "1",
            "--limit-batches", "1", "--limit-test", "50", "--no-progress"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: MNIST:") and "--no-verify" in err and "Traceback" not in err
    assert cli.main([*argv, "--no-verify"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: MNIST:") and "train-images-idx3-ubyte.gz" in err


@pytest.mark.parametrize("what", ["file", "folder"])
def test_unreadable_data_is_a_clear_error(what, mnist_dir, tmp_path, monkeypatch, capsys):
    folder = split_copy(mnist_dir, tmp_path / "data")
    denied = PermissionError(13, "Permission denied")
    if what == "file":  # as root chmod cannot take read permission away: inject the error
        original = Path.read_bytes
        monkeypatch.setattr(Path, "read_bytes", lambda self: (
            (_ for _ in ()).throw(denied) if self.name.startswith("t10k-labels")
            else original(self)))
    else:
        monkeypatch.setattr(Path, "is_file", lambda self: (_ for _ in ()).throw(denied))
    with pytest.raises(MNISTError, match="cannot read .*Permission denied.*readable"):
        MNIST(folder, train=False, download=False)


def test_each_file_is_hashed_once_per_process(mnist_dir, tmp_path, monkeypatch):
    folder = split_copy(mnist_dir, tmp_path)
    MNIST(folder, train=False, download=False)
    calls = []
    monkeypatch.setattr(data.hashlib, "md5", lambda *a: calls.append(a) or hashlib.md5(*a))
    MNIST(folder, train=False, download=False)
    assert calls == []
