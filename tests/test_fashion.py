"""Fashion-MNIST through MNIST's loader, on small IDX files the tests write (issue 18's item)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

import tinygrad_conv as tc
from tinygrad_conv import cli, data
from tinygrad_conv.data import FashionMNIST, MNISTError

COUNTS = {"train": 64, "t10k": 20}


def write_split_files(folder: Path, seed: int = 0, listed: bool = True) -> dict[str, np.ndarray]:
    """Small gzipped IDX files under the four standard names; an MD5SUMS listing them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays, sums = {}, []
    for split, n in COUNTS.items():
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for name, magic, arr in ((f"{split}-images-idx3-ubyte", 2051, images),
                                 (f"{split}-labels-idx1-ubyte", 2049, labels)):
            header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
            gz = gzip.compress(header + arr.tobytes(), mtime=0)
            (folder / f"{name}.gz").write_bytes(gz)
            sums.append(f"{hashlib.md5(gz).hexdigest()}  {name}.gz\n")
            arrays[name] = arr
    if listed:
        (folder / "MD5SUMS").write_text("".join(sums))
    return arrays


def test_fashion_mnist_reads_idx_files_with_its_own_classes_and_statistics(tmp_path):
    arrays = write_split_files(tmp_path)
    train = FashionMNIST(tmp_path, train=True, download=False)
    test = FashionMNIST(tmp_path, train=False, download=False)
    assert len(train) == 64 and len(test) == 20 and len(train.classes) == 10
    assert train.classes[9] == "Ankle boot"
    x, y = train[3]
    want = (arrays["train-images-idx3-ubyte"][3] / 255.0 - 0.2860) / 0.3530
    np.testing.assert_allclose(x[0], want, rtol=1e-6, atol=1e-6)
    assert y == arrays["train-labels-idx1-ubyte"][3]
    xb, yb = train.batch(np.array([3, 5]))
    np.testing.assert_array_equal(xb[0], x)
    assert repr(test).startswith("FashionMNIST(split='test', size=20")


def test_unlisted_files_are_checked_against_fashion_mnists_checksums(tmp_path):
    write_split_files(tmp_path, listed=False)
    with pytest.raises(MNISTError, match="not the published original's "
                                         "8d4fb7e6c68d591d4c3dfef9ec88bf0d"):
        FashionMNIST(tmp_path, train=True, download=False)
    with pytest.warns(data.UnverifiedDataWarning):
        assert len(FashionMNIST(tmp_path, train=False, download=False, verify=False)) == 20


def test_default_root_and_download_from_its_mirrors(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    write_split_files(mirror, listed=False)
    for name in data.TEST_FILES:  # pretend these small files are the published ones
        md5 = hashlib.md5((mirror / f"{name}.gz").read_bytes()).hexdigest()
        monkeypatch.setitem(data.FASHION_MD5, name, md5)
    monkeypatch.setattr(data, "FASHION_MIRRORS", ["http://127.0.0.1:9/", mirror.as_uri() + "/"])
    monkeypatch.setenv("TINYGRAD_CONV_FASHION_DATA", str(tmp_path / "cache"))
    ds = FashionMNIST(train=False)
    assert ds.root == tmp_path / "cache" and len(ds) == 20
    assert sorted(p.name for p in ds.root.iterdir()) == sorted(f"{n}.gz" for n in data.TEST_FILES)


def test_train_command_with_dataset_fashion_mnist(tmp_path, capsys):
    write_split_files(tmp_path / "fashion")
    argv = ["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "fashion"),
            "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "16",
            "--limit-batches", "2", "--no-progress"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "Fashion-MNIST from" in out and "64 training images, 2 batches of 16" in out
    assert "(20 images)" in out
    ckpt = tc.load(tmp_path / "run" / "checkpoint.npz")
    assert ckpt["config"]["dataset"] == "fashion-mnist"
    resume = ["train", "--resume", "--epochs", "2", "--data-dir", str(tmp_path / "fashion"),
              "--out", str(tmp_path / "run"), "--no-progress"]
    assert cli.main([*resume, "--dataset", "mnist"]) == 1
    assert "--dataset fashion-mnist, cannot continue it with mnist" in capsys.readouterr().err
    assert cli.main(resume) == 0
    assert tc.load(tmp_path / "run" / "checkpoint.npz")["epoch"] == 2
